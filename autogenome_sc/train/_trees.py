"""Gradient-boosted trees: scikit-learn's ``HistGradientBoostingClassifier``, turned into arrays JAX evaluates.

Why scikit-learn's and not XGBoost (the paper's baseline): on the benchmark's real data sets it
was the more accurate of the two with their defaults (HSMM 0.937 against 0.915, ALL 0.873
against 0.865; docs/benchmarks.md), and it is a dependency already. Its trees are read out of the
fitted model (:func:`tree_arrays`) into the constants of :class:`~autogenome_sc.nn.Trees`, so the
model that saves, loads and predicts is ours, evaluated in JAX, and no scikit-learn object is kept.

A fit adds boosting stages on the training split, :data:`STEP` at a time, until the validation
loss has not improved for :data:`PATIENCE` stages or ``max_iter`` is reached; each stage is an
"epoch": the validation split's outputs after every stage (``val_outputs``) choose the number of
stages, as a network's epochs are chosen, and cross-validation reads them the same way. A fit without a validation split (a refit on every labelled cell) runs exactly
``max_iter`` stages: the refit is told the number cross-validation chose.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ..data import TrainData
from ._epochs import FitResult
from ._losses import balanced_weights, host_loss

#: With a validation split, stages are added this many at a time (scikit-learn's ``warm_start``) ...
STEP = 10
#: ... until the validation loss has not improved for this many stages (or ``max_iter`` is reached).
PATIENCE = 20


def fit_trees(
    data: TrainData,
    settings: dict[str, Any],
    *,
    class_weight: str = "none",
    seed: int = 0,
    deadline: float | None = None,
) -> tuple[dict, FitResult]:
    """Boost trees on the training split of ``data``; the architecture and weights of :class:`~autogenome_sc.nn.Trees`.

    Parameters
    ----------
    data
        A classification problem whose preprocessed matrix fits in memory.
    settings
        ``learning_rate``, ``max_leaf_nodes``, ``l2_regularization``, ``max_iter`` (the number of
        boosting stages), ``max_features`` (the share of genes drawn at each split; default 1, all of
        them) and ``max_bins`` (the bins of each gene's values; default 255) of
        ``HistGradientBoostingClassifier``.
    class_weight
        ``"balanced"`` weighs each training cell by ``n / (n_classes * n_c)``.
    seed
        The seed of scikit-learn's genes drawn at each split (``max_features`` below 1) and of its
        binning subsample (above 200,000 cells).
    deadline
        A ``time.perf_counter()`` time after which no more stages are added.

    Returns
    -------
    ``(architecture, FitResult)``: ``{"model": "trees", "n_trees", "n_nodes", "depth"}`` of the
    stages up to the best validation loss (all stages without a validation split), and a result
    whose history has one entry per stage.
    """
    from sklearn.ensemble import HistGradientBoostingClassifier

    from ._solvers import _matrix  # the in-memory matrix the solved families read

    if data.task != "classification":
        raise ValueError(f"The 'trees' mode classifies; this problem is a {data.task}.")
    x = _matrix(data)
    train, val = data.idx["train"], data.idx["val"]
    present = np.unique(data.y[train])
    if len(present) < 2:
        raise ValueError("The 'trees' mode needs training cells of at least two classes.")
    weights = None
    if class_weight == "balanced":
        weights = balanced_weights(data.y[train], data.n_out)[data.y[train]]
    max_bins = int(settings.get("max_bins", 255))
    model = HistGradientBoostingClassifier(
        learning_rate=float(settings["learning_rate"]),
        max_iter=int(settings["max_iter"]) if len(val) == 0 else min(STEP, int(settings["max_iter"])),
        max_leaf_nodes=int(settings["max_leaf_nodes"]),
        l2_regularization=float(settings["l2_regularization"]),
        max_features=float(settings.get("max_features", 1.0)),
        max_bins=max_bins,
        early_stopping=False,
        warm_start=True,
        random_state=int(seed),
    )
    t0 = time.perf_counter()
    raw = np.asarray(x[train], np.float32)
    edges = bin_edges(raw, max_bins)
    x_train = binned(raw, edges)
    x_val = binned(np.asarray(x[val], np.float32), edges)
    history: dict[str, list] = {"epoch": [], "train_seconds": [], "val_loss": [], "val_accuracy": []}
    val_out = None
    while True:
        model.fit(x_train, data.y[train], sample_weight=weights)
        if len(val) == 0:
            break
        val_out = np.stack([_logits(d, present, data.n_out) for d in model.staged_decision_function(x_val)])
        losses = [host_loss("cross_entropy", o, data.y[val]) for o in val_out]
        best = int(np.argmin(losses))
        stalled = len(losses) - 1 - best >= PATIENCE
        late = deadline is not None and time.perf_counter() > deadline
        if stalled or late or model.max_iter >= int(settings["max_iter"]):
            break
        model.max_iter = min(model.max_iter + STEP, int(settings["max_iter"]))
    seconds = time.perf_counter() - t0
    stages = len(model._predictors)
    if val_out is not None:
        history["val_loss"] = [host_loss("cross_entropy", o, data.y[val]) for o in val_out]
        history["val_accuracy"] = [float((o.argmax(1) == data.y[val]).mean()) for o in val_out]
        best = int(np.argmin(history["val_loss"]))
    else:
        history["val_loss"] = history["val_accuracy"] = [float("nan")] * stages
        best = stages - 1
    history["epoch"] = list(range(stages))
    history["train_seconds"] = [seconds / stages] * stages
    arch, variables = tree_arrays(model, present, data.n_out, stages=best + 1, edges=edges)
    train_out = np.asarray(_logits(model.decision_function(x_train), present, data.n_out))
    history["train_loss"] = [host_loss("cross_entropy", train_out, data.y[train])] * stages
    result = FitResult(
        variables={"params": variables, "batch_stats": {}},
        history={k: np.asarray(v) for k, v in history.items()},
        best_epoch=best,
        best_val_loss=float(history["val_loss"][best]),
        n_traces={},
        epoch_seconds=seconds / stages,
        val_outputs=None if val_out is None else val_out.astype(np.float32),
    )
    return arch, result


def bin_edges(x: np.ndarray, max_bins: int) -> np.ndarray:
    """Each gene's bin edges as scikit-learn places them without weights: ``(max_bins - 1, genes)``, NaN where unused.

    A gene with at most ``max_bins`` distinct values keeps them (its column is all NaN); the others
    get scikit-learn's unweighted quantiles (``averaged_inverted_cdf``), duplicates kept. :func:`binned`
    then gives scikit-learn at most ``max_bins`` values per gene, which it bins by their midpoints and
    never by weighted quantiles: with sample weights (balanced classes) and more distinct values
    than bins, scikit-learn 1.9 computes each quantile of each gene in a Python loop, 5-6 s per fit on
    pbmc68k_reduced and 50 s on 5,000 genes of the ALL microarray (docs/benchmarks.md), at every
    step of a fit. The bins are the unweighted ones with or without weights, placed on every
    training cell (scikit-learn places its own on a subsample of 200,000 above that).
    """
    x = np.asarray(x, np.float64)  # scikit-learn bins float64 values
    edges = np.full((max(max_bins - 1, 0), x.shape[1]), np.nan)
    if len(x) == 0 or max_bins < 2:
        return edges
    ordered = np.sort(x, axis=0)
    distinct = 1 + (np.diff(ordered, axis=0) != 0).sum(axis=0)
    many = np.flatnonzero(distinct > max_bins)
    if len(many):
        q = np.linspace(0, 100, max_bins + 1)[1:-1]
        edges[:, many] = np.percentile(ordered[:, many], q, axis=0, method="averaged_inverted_cdf")
    return edges


def binned(x: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """``x`` (float64) with each value of a binned gene replaced by its bin's upper edge (the top bin: a value well above).

    scikit-learn then splits between two such values where the gene's edge lies; :func:`tree_arrays`
    puts that edge back as the threshold, so the trees read the genes' own values.
    """
    out = np.asarray(x, np.float64).copy()
    cols = np.flatnonzero(~np.isnan(edges[0])) if len(edges) else np.zeros(0, np.int64)
    if len(cols) == 0:
        return out
    e = edges[:, cols]
    top = e[-1] + np.maximum(1.0, np.abs(e[-1]))  # well above every edge: the top bin's stand-in
    step = max(1, 2**24 // max(e.size, 1))  # rows at a time: about 16M comparisons
    for start in range(0, len(out), step):
        v = out[start : start + step, cols]
        idx = (v[:, None, :] > e[None, :, :]).sum(axis=1)  # the bin: how many edges lie below the value
        reps = np.where(idx < len(e), np.take_along_axis(e, np.minimum(idx, len(e) - 1), axis=0), top)
        out[start : start + step, cols] = reps
    return out


def _logits(decision: np.ndarray, present: np.ndarray, n_out: int) -> np.ndarray:
    """scikit-learn's raw scores as logits over every class (a class absent from training: far below the rest)."""
    d = np.asarray(decision, np.float64)
    if d.ndim == 1:  # two classes: the score of the second one
        d = np.stack([np.zeros_like(d), d], axis=1)
    out = np.full((d.shape[0], n_out), -30.0)
    out[:, present] = d
    return out


def tree_arrays(
    model: Any, present: np.ndarray, n_out: int, stages: int, edges: np.ndarray | None = None
) -> tuple[dict, dict]:
    """The first ``stages`` boosting stages of a fitted ``HistGradientBoostingClassifier`` as :class:`~autogenome_sc.nn.Trees`.

    ``present``: the classes (0 .. ``n_out`` - 1) the model was fitted on, in its order. With two
    of them scikit-learn grows one tree per stage, for the second class's logit. ``edges``: the
    bin edges of a model fitted on :func:`binned` values; a split of a binned gene then gets the
    largest edge below scikit-learn's threshold, so the trees read the genes' own values.
    """
    per_stage = model._predictors[:stages]
    nodes = [p.nodes for stage in per_stage for p in stage]
    k = len(per_stage[0])
    outputs = [int(present[1])] if k == 1 else [int(c) for c in present]
    tree_class = np.array([outputs[i % k] for i in range(len(nodes))], np.float32)
    n_nodes = max(len(n) for n in nodes)
    arrays = {name: np.zeros((len(nodes), n_nodes), np.float32) for name in ("feature", "threshold", "value")}
    own = np.broadcast_to(np.arange(n_nodes, dtype=np.float32), (len(nodes), n_nodes))
    arrays["left"], arrays["right"] = own.copy(), own.copy()  # padding and leaves point at themselves
    depth = 1
    for t, n in enumerate(nodes):
        m = len(n)
        split = ~n["is_leaf"].astype(bool)
        arrays["feature"][t, :m] = np.where(split, n["feature_idx"], 0)
        threshold = np.asarray(n["num_threshold"], np.float64)
        if edges is not None and len(edges):
            e = edges[:, n["feature_idx"]]  # each node's gene's edges (NaN: not binned)
            below = (e <= threshold[None, :]).sum(axis=0) - 1  # the midpoint's lower neighbour, or itself
            edge = np.take_along_axis(e, np.maximum(below, 0)[None, :], axis=0)[0]
            threshold = np.where(split & ~np.isnan(e[0]) & (below >= 0), edge, threshold)
        arrays["threshold"][t, :m] = np.where(split, _floor32(threshold), 0.0)
        arrays["left"][t, :m] = np.where(split, n["left"], np.arange(m))
        arrays["right"][t, :m] = np.where(split, n["right"], np.arange(m))
        arrays["value"][t, :m] = np.where(split, 0.0, n["value"])
        depth = max(depth, int(n["depth"].max()))
    base = np.full(n_out, -30.0, np.float32)  # classes absent from training: far below the others
    base[int(present[0])] = 0.0  # with two classes, the first one's logit (the tree scores the second)
    base[outputs] = np.asarray(model._baseline_prediction, np.float64).ravel()
    arch = {"model": "trees", "n_trees": len(nodes), "n_nodes": int(n_nodes), "depth": depth}
    return arch, {**arrays, "tree_class": tree_class, "base": base}


def _floor32(threshold: np.ndarray) -> np.ndarray:
    """The largest float32 at most each float64 threshold: ``v <= t`` then holds exactly when ``v <= floor32(t)`` for float32 ``v``."""
    t32 = np.asarray(threshold, np.float64).astype(np.float32)
    up = t32.astype(np.float64) > threshold
    t32[up] = np.nextafter(t32[up], np.float32(-np.inf))
    # a threshold above float32's range sends every cell left: the largest float32 does the same
    return np.clip(t32, np.finfo(np.float32).min, np.finfo(np.float32).max)
