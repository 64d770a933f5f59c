"""Saving and loading trained model directories."""

from ._model import FORMAT, Model, read_model

__all__ = ["FORMAT", "Model", "read_model"]
