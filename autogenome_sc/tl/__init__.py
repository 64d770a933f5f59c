"""Tools: train, search, predict (``ag.tl``)."""

from ._predict import predict
from ._smooth import smooth_labels
from ._train import train

__all__ = ["predict", "smooth_labels", "train"]
