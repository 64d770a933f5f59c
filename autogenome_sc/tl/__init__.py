"""Tools: train, search, predict (``ag.tl``)."""

from ._predict import predict
from ._search import search
from ._train import train

__all__ = ["predict", "search", "train"]
