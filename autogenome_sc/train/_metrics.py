"""Test-split metrics, computed by scikit-learn."""

from __future__ import annotations

import numpy as np
from sklearn import metrics as skm


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> dict:
    """Accuracy, macro-F1, balanced accuracy, per-class F1 and the confusion matrix (rows: truth)."""
    labels = np.arange(n_classes)
    return {
        "accuracy": float(skm.accuracy_score(y_true, y_pred)),
        "macro_f1": float(skm.f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "balanced_accuracy": float(skm.balanced_accuracy_score(y_true, y_pred)),
        "f1_per_class": skm.f1_score(y_true, y_pred, labels=labels, average=None, zero_division=0).astype(float),
        "confusion_matrix": skm.confusion_matrix(y_true, y_pred, labels=labels).astype(np.int64),
        "n_test": int(len(y_true)),
    }


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    """MSE, RMSE, R^2 and Pearson correlation."""
    mse = float(skm.mean_squared_error(y_true, y_pred))
    r = float(np.corrcoef(y_true, y_pred)[0, 1]) if np.std(y_pred) > 0 else 0.0
    return {
        "mse": mse,
        "rmse": mse**0.5,
        "r2": float(skm.r2_score(y_true, y_pred)),
        "pearson": r,
        "n_test": int(len(y_true)),
    }
