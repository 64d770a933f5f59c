"""Tools: train, search, predict, explain (``ag.tl``)."""

from ._explain import explain
from ._predict import predict
from ._search import search
from ._smooth import smooth_labels
from ._train import train
from ._vae import train_vae

__all__ = ["explain", "predict", "search", "smooth_labels", "train", "train_vae"]
