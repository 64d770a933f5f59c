"""Confidence numerics: temperature scaling, calibration error, and the novelty score.

Everything here works on host numpy arrays of logits, probabilities and embeddings that
the model has already computed; the work is a few matrix products (no loop over cells).

Temperature scaling (Guo et al. 2017) divides the logits by one scalar ``T`` fitted on
the validation split by minimising the negative log-likelihood; it changes no
prediction, only how sure the model says it is.

The novelty score behind ``ag_uncertainty`` combines two pieces of evidence, each
standardised on the validation split (median 0, 90th percentile 1):

* the squared Mahalanobis distance, with a diagonal covariance shared by all classes, of
  the cell's embedding (``X_ag``) to the nearest class centroid, both fitted on the
  training split: it rises for cells unlike any reference class, even when the network
  is confidently wrong about them;
* ``1 - p_max``, the calibrated probability the model gives to any other class: it rises
  for cells between two reference classes.

The sum is turned into ``ag_uncertainty`` in [0, 1) by its rank among the validation
cells (a conformal p-value subtracted from one, with exponential tails outside the
observed range so that the order of every cell is kept): a cell with uncertainty 0.95 is
more unusual than about 95% of held-out reference cells.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax

N_BINS = 15
_MAX_REFERENCE = 1000  # quantiles of the validation scores kept in the model


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The temperature ``T`` minimising the mean negative log-likelihood of ``softmax(logits / T)``.

    The likelihood is convex in ``1/T``, so a bounded scalar search over ``log T`` in
    ``[log 0.01, log 100]`` finds the optimum.
    """
    logits = np.asarray(logits, np.float64)
    y = np.asarray(y, np.int64)
    rows = np.arange(len(y))

    def nll(log_t: float) -> float:
        return float(-log_softmax(logits / np.exp(log_t), axis=1)[rows, y].mean())

    res = minimize_scalar(nll, bounds=(np.log(0.01), np.log(100.0)), method="bounded", options={"xatol": 1e-6})
    return float(np.exp(res.x))


def softmax_t(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Class probabilities of ``logits / temperature``."""
    return softmax(np.asarray(logits, np.float64) / temperature, axis=1)


def reliability_bins(probs: np.ndarray, y: np.ndarray, n_bins: int = N_BINS) -> dict[str, np.ndarray]:
    """Per confidence bin (equal width on [0, 1]): cells, summed confidence, correct predictions."""
    return confidence_bins(probs.max(axis=1), probs.argmax(axis=1) == y, n_bins)


def confidence_bins(confidence: np.ndarray, correct: np.ndarray, n_bins: int = N_BINS) -> dict[str, np.ndarray]:
    """Per confidence bin (equal width on [0, 1]) from each cell's confidence and correctness."""
    conf = np.asarray(confidence, np.float64)
    correct = np.asarray(correct, np.float64)
    b = np.clip(np.ceil(conf * n_bins).astype(np.int64) - 1, 0, n_bins - 1)
    return {
        "count": np.bincount(b, minlength=n_bins).astype(np.int64),
        "confidence_sum": np.bincount(b, weights=conf, minlength=n_bins),
        "correct": np.bincount(b, weights=correct, minlength=n_bins),
    }


def ece_from_bins(bins: dict) -> float:
    """Expected calibration error: the cell-weighted mean |accuracy - confidence| over the bins."""
    count = np.asarray(bins["count"], np.float64)
    if count.sum() == 0:
        return float("nan")
    gap = np.abs(np.asarray(bins["correct"]) - np.asarray(bins["confidence_sum"]))
    return float(gap.sum() / count.sum())


def expected_calibration_error(probs: np.ndarray, y: np.ndarray, n_bins: int = N_BINS) -> float:
    """Top-label expected calibration error with ``n_bins`` equal-width bins (15 by default)."""
    return ece_from_bins(reliability_bins(np.asarray(probs), np.asarray(y), n_bins))


# ---------------------------------------------------------------------------- novelty
def _sq_distances(emb: np.ndarray, state: dict) -> np.ndarray:
    """Squared diagonal-Mahalanobis distance of every cell to every class centroid (cells x classes)."""
    x = np.asarray(emb, np.float64)
    w = np.asarray(state["inv_var"], np.float64)
    mu = np.asarray(state["centroids"], np.float64)
    d2 = (x * x) @ w[:, None] - 2.0 * x @ (mu * w).T + ((mu * mu) @ w)[None, :]
    d2 = np.maximum(d2, 0.0)
    present = np.asarray(state["present"], bool)
    d2[:, ~present] = np.inf
    return d2


def _robust_scale(v: np.ndarray) -> tuple[float, float]:
    med = float(np.median(v))
    scale = float(np.quantile(v, 0.9) - med)
    return med, scale if scale > 1e-12 else 1.0


#: Cells per block in the novelty computations, so float64 temporaries stay small at any size.
_ROWS = 65536


def _min_sq_distance(emb: np.ndarray, state: dict) -> np.ndarray:
    """Distance to the nearest class centroid, block by block of cells."""
    return np.concatenate([_sq_distances(emb[s : s + _ROWS], state).min(axis=1) for s in range(0, len(emb), _ROWS)])


def novelty_raw(emb: np.ndarray, confidence: np.ndarray, state: dict) -> np.ndarray:
    """The combined novelty score (standardised distance + standardised ``1 - p_max``)."""
    dist = _min_sq_distance(emb, state)
    z_dist = (dist - state["dist_loc"]) / state["dist_scale"]
    z_conf = (1.0 - np.asarray(confidence, np.float64) - state["conf_loc"]) / state["conf_scale"]
    return z_dist + z_conf


def fit_novelty(
    emb_train: np.ndarray,
    y_train: np.ndarray,
    n_classes: int,
    emb_val: np.ndarray,
    confidence_val: np.ndarray,
    train_rows: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Fit class centroids and a shared diagonal covariance on the training split, standardise on validation.

    With ``train_rows``, the training cells are ``emb_train[train_rows]`` (labels ``y_train``),
    read block by block instead of copied. Returns the arrays :func:`uncertainty` needs
    (saved with the model).
    """
    rows = np.arange(len(emb_train)) if train_rows is None else np.asarray(train_rows)
    n, d = len(rows), emb_train.shape[1]
    counts = np.bincount(y_train, minlength=n_classes).astype(np.float64)
    sums = np.zeros((n_classes, d))
    for s in range(0, n, _ROWS):  # blocks of cells: float64 copies of one block at a time
        onehot = np.eye(n_classes)[y_train[s : s + _ROWS]]
        sums += onehot.T @ np.asarray(emb_train[rows[s : s + _ROWS]], np.float64)
    centroids = sums / np.maximum(counts, 1)[:, None]
    sq = np.zeros(d)
    for s in range(0, n, _ROWS):
        resid = np.asarray(emb_train[rows[s : s + _ROWS]], np.float64) - centroids[y_train[s : s + _ROWS]]
        sq += (resid * resid).sum(axis=0)
    var = sq / max(n, 1)  # the residuals have mean 0 by construction
    var = var + 1e-3 * var.mean() + 1e-12  # floor: dead units of the embedding must not blow up
    state = {"centroids": centroids, "inv_var": 1.0 / var, "present": counts > 0}
    dist = _min_sq_distance(emb_val, state)
    state["dist_loc"], state["dist_scale"] = _robust_scale(dist)
    state["conf_loc"], state["conf_scale"] = _robust_scale(1.0 - np.asarray(confidence_val, np.float64))
    raw = novelty_raw(emb_val, confidence_val, state)
    m = min(len(raw), _MAX_REFERENCE)
    levels = (np.arange(m) + 0.5) / m  # Hazen plotting positions
    state["reference"] = np.quantile(raw, levels)
    med, tail = _robust_scale(raw)
    state["tail"] = tail
    return {k: np.asarray(v) for k, v in state.items()}


def uncertainty(emb: np.ndarray, confidence: np.ndarray, state: dict) -> np.ndarray:
    """``ag_uncertainty`` in [0, 1): the rank of a cell's novelty score among the validation cells."""
    s = novelty_raw(emb, confidence, state)
    ref = np.asarray(state["reference"], np.float64)
    m = len(ref)
    levels = (np.arange(m) + 0.5) / m
    tail = float(state["tail"])
    u = np.interp(s, ref, levels)
    lo, hi = s < ref[0], s > ref[-1]
    u[lo] = levels[0] * np.exp((s[lo] - ref[0]) / tail)
    u[hi] = 1.0 - (1.0 - levels[-1]) * np.exp(-(s[hi] - ref[-1]) / tail)
    return u
