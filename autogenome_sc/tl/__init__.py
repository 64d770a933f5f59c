"""Tools: train, search, predict, explain (``ag.tl``)."""

from ._explain import explain
from ._predict import predict
from ._train import train

__all__ = ["explain", "predict", "train"]
