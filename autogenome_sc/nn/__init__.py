"""Flax modules only (no training code)."""

from ._fc import ACTIVATIONS, MLP, MODELS, FCUnit, RFCNDenseNet, RFCNResNet, build_network
from ._vae import LIKELIHOODS, VAE_MODELS, ResVAE, build_vae, layer_widths, nb_log_prob

__all__ = [
    "ACTIVATIONS",
    "LIKELIHOODS",
    "MLP",
    "MODELS",
    "VAE_MODELS",
    "FCUnit",
    "RFCNDenseNet",
    "RFCNResNet",
    "ResVAE",
    "build_network",
    "build_vae",
    "layer_widths",
    "nb_log_prob",
]
