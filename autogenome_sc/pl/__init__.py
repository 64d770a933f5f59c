"""Plots (``ag.pl``): read only from AnnData, never retrain."""

from ._architecture import architecture
from ._confusion import confusion_matrix
from ._history import training_history

__all__ = ["architecture", "confusion_matrix", "training_history"]
