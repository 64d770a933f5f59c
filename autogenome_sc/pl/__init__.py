"""Plots (``ag.pl``): read only from AnnData, never retrain."""

from ._confusion import confusion_matrix
from ._history import training_history

__all__ = ["confusion_matrix", "training_history"]
