"""Tools: train, search, predict (``ag.tl``)."""

from ._predict import predict
from ._smooth import smooth_labels
from ._train import train
from ._vae import train_vae

__all__ = ["predict", "smooth_labels", "train", "train_vae"]
