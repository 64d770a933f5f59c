"""Tools: train, search, predict (``ag.tl``)."""

from ._predict import predict
from ._train import train

__all__ = ["predict", "train"]
