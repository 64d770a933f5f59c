"""Plots (``ag.pl``): read only from AnnData, never retrain."""

from ._confusion import confusion_matrix
from ._history import training_history
from ._search import search_history

__all__ = ["confusion_matrix", "search_history", "training_history"]
