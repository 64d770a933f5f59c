"""Task types: what a model's outputs mean, for classification, regression and embedding.

A task owns its number of outputs, its default loss, how raw network outputs become
predictions, its test metrics, the one-line summary of them and what an explanation of it
means. ``ag.Model`` holds one (``Model.task_type``) and asks it instead of switching on the
task's name; the names themselves are in ``autogenome_sc/_names.py``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._names import TASKS
from ._metrics import classification_metrics, regression_metrics


@dataclass(frozen=True)
class TaskType(ABC):
    """The behaviour of one task (see the subclasses)."""

    name: str = ""
    #: The loss ``loss.name = "auto"`` resolves to ("elbo" is the VAE's own objective).
    default_loss: str = ""
    #: What ``ag.tl.explain`` attributes, or ``""`` when the task has nothing to explain.
    explains: str = ""

    @abstractmethod
    def n_out(self, classes: list[str] | None, n_genes: int) -> int:
        """Number of network outputs."""

    @abstractmethod
    def postprocess(
        self, out: np.ndarray, *, temperature: float = 1.0, target_mean: float = 0.0, target_std: float = 1.0
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Raw outputs (cells x outputs) to ``(predictions, probabilities or None)``."""

    @abstractmethod
    def metrics(self, y: np.ndarray, pred: np.ndarray, n_classes: int) -> dict[str, Any]:
        """Test metrics of predictions against targets."""

    @abstractmethod
    def headline(self, metrics: dict[str, Any]) -> str:
        """The metrics a log line shows."""


@dataclass(frozen=True)
class Classification(TaskType):
    """Classes from a softmax over one output per class; probabilities calibrated by a temperature."""

    name: str = "classification"
    default_loss: str = "cross_entropy"
    explains: str = "each class's probability (or logit)"

    def n_out(self, classes: list[str] | None, n_genes: int) -> int:
        if not classes:
            raise ValueError("A classification model needs its classes.")
        return len(classes)

    def postprocess(
        self, out: np.ndarray, *, temperature: float = 1.0, target_mean: float = 0.0, target_std: float = 1.0
    ) -> tuple[np.ndarray, np.ndarray | None]:
        out = out / temperature
        z = out - out.max(axis=1, keepdims=True)
        p = np.exp(z)
        p /= p.sum(axis=1, keepdims=True)
        return p.argmax(axis=1), p

    def metrics(self, y: np.ndarray, pred: np.ndarray, n_classes: int) -> dict[str, Any]:
        return classification_metrics(y, pred, n_classes)

    def headline(self, metrics: dict[str, Any]) -> str:
        return f"accuracy {metrics['accuracy']:.3f}, macro-F1 {metrics['macro_f1']:.3f}"


@dataclass(frozen=True)
class Regression(TaskType):
    """One standardised output, mapped back to the target's scale."""

    name: str = "regression"
    default_loss: str = "mse"
    explains: str = "the predicted value"

    def n_out(self, classes: list[str] | None, n_genes: int) -> int:
        return 1

    def postprocess(
        self, out: np.ndarray, *, temperature: float = 1.0, target_mean: float = 0.0, target_std: float = 1.0
    ) -> tuple[np.ndarray, np.ndarray | None]:
        return out[:, 0] * target_std + target_mean, None

    def metrics(self, y: np.ndarray, pred: np.ndarray, n_classes: int) -> dict[str, Any]:
        return regression_metrics(y, pred)

    def headline(self, metrics: dict[str, Any]) -> str:
        return f"R2 {metrics['r2']:.3f}, RMSE {metrics['rmse']:.3g}"


@dataclass(frozen=True)
class Embedding(TaskType):
    """No target: a latent space (the encoder's mean) and a reconstruction of every gene."""

    name: str = "embedding"
    default_loss: str = "elbo"
    explains: str = ""

    def n_out(self, classes: list[str] | None, n_genes: int) -> int:
        return n_genes  # the decoder reconstructs every gene

    def postprocess(
        self, out: np.ndarray, *, temperature: float = 1.0, target_mean: float = 0.0, target_std: float = 1.0
    ) -> tuple[np.ndarray, np.ndarray | None]:
        raise ValueError("This is an embedding model (Res-VAE/VAE): it has no predictions; use `model.embed`.")

    def metrics(self, y: np.ndarray, pred: np.ndarray, n_classes: int) -> dict[str, Any]:
        raise ValueError("An embedding model is scored by its ELBO and latent metrics, not by predictions.")

    def headline(self, metrics: dict[str, Any]) -> str:
        return f"ELBO {metrics['test_elbo']:.2f} per cell"


_TYPES: dict[str, TaskType] = {t.name: t for t in (Classification(), Regression(), Embedding())}
assert tuple(_TYPES) == TASKS  # one task type per name in _names.py


def task_type(name: str) -> TaskType:
    """The task type called ``name`` (one of ``autogenome_sc._names.TASKS``)."""
    if name not in _TYPES:
        raise ValueError(f"Unknown task {name!r}; expected one of {', '.join(_TYPES)}.")
    return _TYPES[name]
