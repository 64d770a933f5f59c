"""Plots (``ag.pl``): read only from AnnData, never retrain."""

from ._architecture import architecture
from ._confusion import confusion_matrix
from ._explain import importance, shap_dotplot, shap_summary
from ._history import training_history
from ._reliability import reliability
from ._search import search_history

__all__ = [
    "architecture",
    "confusion_matrix",
    "importance",
    "reliability",
    "search_history",
    "shap_dotplot",
    "shap_summary",
    "training_history",
]
