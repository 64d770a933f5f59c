"""A trained model and its inference (``ag.Model``, ``ag.read_model``)."""

from ._model import Model, read_model

__all__ = ["Model", "read_model"]
