"""Flax modules only (no training code)."""

from ._fc import ACTIVATIONS, MLP, MODELS, Ensemble, FCUnit, RFCNDenseNet, RFCNResNet, build_network

__all__ = ["ACTIVATIONS", "MLP", "MODELS", "Ensemble", "FCUnit", "RFCNDenseNet", "RFCNResNet", "build_network"]
