"""Tools: train, search, predict (``ag.tl``)."""

from ._predict import predict
from ._train import train
from ._vae import train_vae

__all__ = ["predict", "train", "train_vae"]
