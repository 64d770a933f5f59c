"""Losses: cross entropy, MSE, and a pairwise AUC surrogate for imbalanced binary labels."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax


def cross_entropy(out: jax.Array, y: jax.Array, label_smoothing: float = 0.0) -> jax.Array:
    """Softmax cross entropy with integer labels and optional label smoothing."""
    n = out.shape[-1]
    onehot = jax.nn.one_hot(y, n)
    target = onehot * (1.0 - label_smoothing) + label_smoothing / n  # a traced smoothing is fine
    return optax.softmax_cross_entropy(out, target).mean()


def weighted_cross_entropy(out, y, label_smoothing, class_weight):
    """Cross entropy with each cell weighed by its class's weight (``class_weight[y]``), averaged over cells."""
    n = out.shape[-1]
    target = jax.nn.one_hot(y, n) * (1.0 - label_smoothing) + label_smoothing / n
    return (optax.softmax_cross_entropy(out, target) * class_weight[y]).mean()


def balanced_weights(y: np.ndarray, n_classes: int) -> np.ndarray:
    """``n / (n_classes * n_c)`` for each class ``c`` of ``y`` (1 for a class absent from ``y``), float32."""
    counts = np.bincount(np.asarray(y, np.int64), minlength=n_classes).astype(np.float64)
    w = np.where(counts > 0, len(y) / (n_classes * np.maximum(counts, 1.0)), 1.0)
    return w.astype(np.float32)


def mse(out: jax.Array, y: jax.Array, label_smoothing: float = 0.0) -> jax.Array:
    """Mean squared error of a single regression output."""
    return jnp.mean((out[:, 0] - y) ** 2)


def auc_surrogate(out: jax.Array, y: jax.Array, label_smoothing: float = 0.0) -> jax.Array:
    """Pairwise logistic AUC surrogate: mean softplus(-(s_pos - s_neg)) over positive/negative pairs.

    The score is ``out[:, 1] - out[:, 0]``. A batch without both classes falls back to
    cross entropy, so every step has a gradient.
    """
    s = out[:, 1] - out[:, 0]
    pos = (y == 1).astype(out.dtype)
    neg = 1.0 - pos
    pair = pos[:, None] * neg[None, :]
    n_pairs = pair.sum()
    pairwise = (jax.nn.softplus(-(s[:, None] - s[None, :])) * pair).sum() / jnp.maximum(n_pairs, 1.0)
    return jnp.where(n_pairs > 0, pairwise, cross_entropy(out, y))


LOSSES = {"cross_entropy": cross_entropy, "mse": mse, "auc": auc_surrogate}


def host_loss(name: str, out: np.ndarray, y: np.ndarray) -> float:
    """The validation loss used for early stopping (no label smoothing), in numpy."""
    if name == "mse":
        return float(np.mean((out[:, 0] - y) ** 2))
    logp = out - out.max(axis=1, keepdims=True)
    logp = logp - np.log(np.exp(logp).sum(axis=1, keepdims=True))
    ce = float(-logp[np.arange(len(y)), y].mean())
    if name == "auc":
        from sklearn.metrics import roc_auc_score

        if len(np.unique(y)) == 2:
            return 1.0 - float(roc_auc_score(y, out[:, 1] - out[:, 0]))
    return ce
