"""Plots (``ag.pl``): read only from AnnData, never retrain."""

from ._confusion import confusion_matrix
from ._history import training_history
from ._reliability import reliability

__all__ = ["confusion_matrix", "reliability", "training_history"]
