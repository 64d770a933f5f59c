"""Flax modules only (no training code)."""

from ._enas import RRFCN, Controller, SuperNet
from ._fc import ACTIVATIONS, MLP, MODELS, Ensemble, FCUnit, RFCNDenseNet, RFCNResNet, build_network
from ._vae import LIKELIHOODS, VAE_MODELS, ResVAE, build_vae, layer_widths, nb_log_prob

MODELS["rrfcn"] = RRFCN  # saved ENAS winners load through build_network like any other model

__all__ = [
    "ACTIVATIONS",
    "LIKELIHOODS",
    "MLP",
    "MODELS",
    "RRFCN",
    "VAE_MODELS",
    "Controller",
    "Ensemble",
    "FCUnit",
    "RFCNDenseNet",
    "RFCNResNet",
    "ResVAE",
    "SuperNet",
    "build_network",
    "build_vae",
    "layer_widths",
    "nb_log_prob",
]
