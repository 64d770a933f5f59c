"""Flax modules only (no training code)."""

from ._enas import RRFCN, Controller, SuperNet
from ._fc import (
    ACTIVATIONS,
    MLP,
    MODELS,
    Ensemble,
    FCUnit,
    InputTransform,
    Linear,
    RFCNDenseNet,
    RFCNResNet,
    build_network,
    member_input,
)
from ._trees import Trees
from ._vae import LIKELIHOODS, VAE_MODELS, ResVAE, build_vae, layer_widths, nb_log_prob

MODELS["rrfcn"] = RRFCN  # saved ENAS winners load through build_network like any other model
MODELS["trees"] = Trees  # boosted trees fitted by scikit-learn, evaluated in JAX (train/_trees.py)

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
    "InputTransform",
    "Linear",
    "RFCNDenseNet",
    "RFCNResNet",
    "ResVAE",
    "SuperNet",
    "Trees",
    "build_network",
    "build_vae",
    "layer_widths",
    "member_input",
    "nb_log_prob",
]
