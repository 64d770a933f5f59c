"""Flax modules only (no training code)."""

from ._enas import RRFCN, Controller, SuperNet
from ._fc import ACTIVATIONS, MLP, MODELS, FCUnit, RFCNDenseNet, RFCNResNet, build_network

MODELS["rrfcn"] = RRFCN  # saved ENAS winners load through build_network like any other model

__all__ = [
    "ACTIVATIONS",
    "MLP",
    "MODELS",
    "RRFCN",
    "Controller",
    "FCUnit",
    "RFCNDenseNet",
    "RFCNResNet",
    "SuperNet",
    "build_network",
]
