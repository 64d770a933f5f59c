"""Flax modules only (no training code)."""

from ._fc import ACTIVATIONS, MLP, MODELS, FCUnit, RFCNDenseNet, RFCNResNet, build_network

__all__ = ["ACTIVATIONS", "MLP", "MODELS", "FCUnit", "RFCNDenseNet", "RFCNResNet", "build_network"]
