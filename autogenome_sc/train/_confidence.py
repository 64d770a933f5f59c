"""Confidence numerics: temperature scaling, calibration error, and the novelty score.

Everything here works on host numpy arrays of logits, probabilities, embeddings and blocks
of the model's input; the work is a few matrix products (no loop over cells).

Temperature scaling (Guo et al. 2017) divides the logits by one scalar ``T`` fitted on
the validation split by minimising the negative log-likelihood; it changes no
prediction, only how sure the model says it is.

The novelty score behind ``ag_uncertainty`` combines four pieces of evidence, each
standardised on the reference's held-out cells (median 0, 90th percentile 1):

* the **distance to the reference in input space**: the mean Euclidean distance of the cell
  to its :data:`KNN_NEIGHBOURS` nearest training cells (at most :data:`KNN_POINTS` of them
  kept, every class kept), in the first :data:`KNN_DIMS` principal components of the model's
  own input on its :data:`KNN_GENES` most variable genes, z-scored gene by gene on the
  training cells. It rises for cells unlike any reference cell, even when the network is
  confidently wrong about them: a network's own representation maps an unseen type onto the
  known classes it resembles, so distances in it tell unseen types apart less well
  (docs/confidence.md has the comparison);
* the **Mahalanobis distance** in the same components: the squared distance to the nearest
  class mean of the kept cells, under one within-class covariance shared by the classes
  (Ledoit-Wolf shrinkage). It reads the shape of the classes, which the neighbour distance
  does not: a cell a little off a class's axis of variation is far, one along it is near.
  The two distances weigh :data:`DIST_WEIGHTS` (half each: docs/confidence.md);
* ``1 - p_max``, the calibrated probability the model gives to any other class, weighted by
  :data:`CONF_WEIGHT`: it rises for cells between two reference classes;
* the same of a second, simple classifier, a logistic regression on the kept reference cells'
  components (:data:`LR_C`), weighted by :data:`CONF_WEIGHT`: where it and the model disagree
  or it is unsure, the cell is less like the reference (it helps most on a continuum, such as
  a time course; docs/confidence.md).

With ``query_aware`` (``ag.tl.predict``), a fifth term reads the query as a whole, weighted
by :data:`QUERY_WEIGHT`:

* the **density ratio**: the log of the cell's mean distance to its nearest reference cells over
  its mean distance to its nearest other query cells, the two neighbour counts matched to the
  two sets' sizes (:func:`matched_neighbours`), so that for a query drawn like the reference
  it is about 0 whatever the sizes. A type the reference lacks lies far from the reference and
  close to the other cells of its type in the query. The reference cells are weighted to the
  query's composition (as the reference-space classifier estimates it), so that a known type
  far more common in the query than in the reference is less novel for that alone. Up to
  1,000 held-out reference cells are kept with their scores; their ratios are read in the same
  query, alongside its cells, and standardise the term; the sum is ranked among theirs. It
  makes a cell's score depend on the cells beside it in the query (docs/confidence.md).

The sum is turned into ``ag_uncertainty`` in (0, 1) by its rank among the held-out cells (a
conformal p-value subtracted from one, with exponential tails outside the observed range so
that the order of every cell is kept): a cell with uncertainty 0.95 is more unusual than
about 95% of held-out reference cells.

Models saved before the Mahalanobis distance (no ``"maha_means"``) keep the neighbour distance
alone, at full weight. Models saved before the input-space distance (no ``"points"`` in their
statistics) keep their own score: the diagonal Mahalanobis distance of the embedding to the nearest class
centroid plus ``1 - p_max`` (:func:`novelty_raw`).
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax

N_BINS = 15
_MAX_REFERENCE = 1000  # quantiles of the validation scores kept in the model
#: Input-space novelty: neighbours averaged, principal components, reference cells kept.
KNN_NEIGHBOURS = 10
KNN_DIMS = 50
KNN_POINTS = 5000
#: The genes of the input space: the most variable of the model's input over the training cells.
KNN_GENES = 2000
#: Training cells read densely (float32) to fit the z-scores and the principal axes: at most this many,
#: and at most :data:`KNN_FIT_VALUES` values (40 MB) unless that leaves fewer than 500 cells. Bounded,
#: so what calibration holds does not grow with the training cells.
KNN_FIT_CELLS = 5000
KNN_FIT_VALUES = 10_000_000
#: The weight of each ``1 - p_max`` (the model's, the reference-space classifier's) beside the distance.
CONF_WEIGHT = 0.5
#: The weights of the two distances (to the nearest cells, Mahalanobis to the nearest class mean), each standardised.
DIST_WEIGHTS = (0.5, 0.5)
#: The inverse penalty of the reference-space logistic regression (scikit-learn's ``C``).
LR_C = 0.1
_KNN_ROWS = 2048  # query cells per block of distances to the reference cells
#: The weight of the standardised density ratio of ``query_aware`` (docs/benchmarks.md: 0.25 and 0.5 measured).
QUERY_WEIGHT = 0.5
#: The fewest query cells the density ratio is read with, and the fewest held-out reference cells a model
#: keeps to calibrate it with (a model with fewer cannot read a query as a whole).
QUERY_MIN_CELLS = 50
QUERY_MIN_HELD_OUT = 10
#: Query cells whose neighbourhoods the density ratio compares: a larger query compares a random subset
#: of this many (fixed seed), so its cost grows linearly with the query and a block of distances to
#: them stays at 80 MB (float32).
QUERY_POOL = 10_000
#: The density ratio's reference is recomposed like the query: each class's weight at most this many
#: times, and at least its inverse, its share of the kept reference cells.
QUERY_RECOMPOSE_CLIP = 10.0


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


def _robust_scales(v: np.ndarray) -> tuple[np.ndarray | float, np.ndarray | float]:
    """:func:`_robust_scale` of ``v``, or of each column of a 2-D ``v`` (then two arrays)."""
    if v.ndim == 1:
        return _robust_scale(v)
    loc, scale = zip(*(_robust_scale(c) for c in v.T), strict=True)
    return np.asarray(loc), np.asarray(scale)


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


def uncertainty(
    emb: np.ndarray | None,
    confidence: np.ndarray,
    state: dict,
    dist: np.ndarray | None = None,
    lr_confidence: np.ndarray | None = None,
    density: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """``ag_uncertainty`` in (0, 1): the rank of a cell's novelty score among the held-out reference cells.

    ``dist`` and ``lr_confidence``: the cells' input-space distances and the reference-space
    classifier's largest probability (:func:`input_evidence`), for statistics fitted with them
    (:func:`fit_input_novelty`); statistics without (older models) read ``emb``. ``density``:
    the density ratios of the query's cells and of the kept held-out cells read with them
    (:func:`input_evidence` with ``query=True``), for statistics with the query term
    (:func:`has_query_term`): the score adds it, standardised on the held-out cells, and is
    ranked among their scores with it.
    """
    if dist is not None:
        assert lr_confidence is not None  # both come from input_evidence
        s = input_novelty_raw(dist, confidence, lr_confidence, state)
        if density is not None and has_query_term(state):
            return _rank_with_query(s, density, state)
    else:
        assert emb is not None  # statistics of the embedding read it
        s = novelty_raw(emb, confidence, state)
    return rank_of(s, state)


def has_query_term(state: dict) -> bool:
    """Whether novelty statistics keep held-out cells to read a query's density ratio with (``query_aware``)."""
    return "held_out_raw" in state


def _rank_with_query(s: np.ndarray, density: tuple[np.ndarray, np.ndarray], state: dict) -> np.ndarray:
    """The rank of ``s`` + the weighted standardised density ratio among the held-out cells' same sum.

    The held-out cells' ratios were read in the same query as the cells', so this is the rank
    among cells like the reference, in this query: a conformal p-value again.
    """
    query, held = (np.asarray(d, np.float64) for d in density)
    loc, scale = _robust_scale(held)
    w = float(state["query_weight"])
    reference = np.asarray(state["held_out_raw"], np.float64) + w * (held - loc) / scale
    m = min(len(reference), _MAX_REFERENCE)
    ranks = {"reference": np.quantile(reference, (np.arange(m) + 0.5) / m), "tail": _robust_scale(reference)[1]}
    return rank_of(s + w * (query - loc) / scale, ranks)


def rank_of(s: np.ndarray, state: dict) -> np.ndarray:
    """The rank of novelty scores ``s`` among the reference scores of ``state``, in (0, 1) with exponential tails.

    The rank among ``m`` reference scores is taken as among ``m + 1`` (the cell's own one
    more, as in a conformal p-value): the share of new cells like the reference above a level
    ``t`` is then at most ``1 - t``, however few reference scores there are. Without it, 57
    held-out cells put 5.8% of such cells above 0.95 (docs/confidence.md).
    """
    ref = np.asarray(state["reference"], np.float64)
    m = len(ref)
    levels = (np.arange(m) + 0.5) / m
    tail = float(state["tail"])
    u = np.interp(s, ref, levels)
    lo, hi = s < ref[0], s > ref[-1]
    u[lo] = levels[0] * np.exp((s[lo] - ref[0]) / tail)
    u[hi] = 1.0 - (1.0 - levels[-1]) * np.exp(-(s[hi] - ref[-1]) / tail)
    return (u * m + 0.5) / (m + 1)


# ---------------------------------------------------------------------------- input-space novelty
def _dense_rows(block, rows: np.ndarray) -> np.ndarray:
    """``block(rows)`` (the model's input of those cells) as float32, read in pieces of :data:`_KNN_ROWS` cells."""
    parts = [np.asarray(block(rows[s : s + _KNN_ROWS]), np.float32) for s in range(0, len(rows), _KNN_ROWS)]
    return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)


def _kept_points(y: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Positions of at most ``n`` of the cells labelled ``y``: every class, each up to an equal share, then the rest."""
    if len(y) <= n:
        return np.arange(len(y))
    classes = np.unique(y)
    share = int(np.ceil(n / len(classes)))
    kept = [rng.permutation(np.flatnonzero(y == c))[:share] for c in classes]
    chosen = np.concatenate(kept)
    if len(chosen) > n:
        chosen = rng.permutation(chosen)[:n]
    elif len(chosen) < n:
        rest = np.setdiff1d(np.arange(len(y)), chosen)
        chosen = np.concatenate([chosen, rng.permutation(rest)[: n - len(chosen)]])
    return np.sort(chosen)


def fit_input_space(block, train_rows: np.ndarray, y_train: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    """The input-space part of the novelty statistics: the projection and the kept reference cells.

    ``block(rows)`` returns the model's input of those cells (dense, genes in the model's
    order). The z-scores and principal axes are fitted on at most :data:`KNN_FIT_CELLS`
    training cells (drawn with ``seed``; see :data:`KNN_FIT_VALUES`); the projection folds both into one
    matrix: ``coordinates = input[:, genes] @ projection - offset``.
    """
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(seed)
    train_rows = np.asarray(train_rows)
    x0 = np.asarray(block(train_rows[:1]))
    n_genes = x0.shape[1]
    n_fit = int(min(len(train_rows), KNN_FIT_CELLS, max(500, KNN_FIT_VALUES // max(n_genes, 1))))
    fit_rows = train_rows if n_fit >= len(train_rows) else np.sort(rng.choice(train_rows, n_fit, replace=False))
    x = _dense_rows(block, fit_rows)
    genes = np.arange(n_genes)
    if n_genes > KNN_GENES:  # thousands of near-constant genes would each weigh as much as a marker, once z-scored
        genes = np.sort(np.argsort(-x.var(axis=0, dtype=np.float64), kind="stable")[:KNN_GENES])
        x = np.ascontiguousarray(x[:, genes])
    mu = x.mean(axis=0, dtype=np.float64)
    sd = x.std(axis=0, dtype=np.float64)
    sd = np.where(sd > 1e-6, sd, 1.0)  # a constant gene moves nothing
    x -= mu.astype(np.float32)
    x /= sd.astype(np.float32)
    d = int(min(KNN_DIMS, len(genes), len(fit_rows) - 1))
    pca = PCA(max(d, 1), random_state=seed).fit(x)
    comps = np.asarray(pca.components_, np.float64)
    projection = (comps / sd[None, :]).T
    offset = (mu / sd + pca.mean_) @ comps.T
    keep = _kept_points(np.asarray(y_train), KNN_POINTS, rng)
    state = {
        "genes": genes.astype(np.int64),
        "projection": projection.astype(np.float32),
        "offset": offset.astype(np.float32),
        "point_class": np.asarray(y_train, np.int32)[keep],
        "k": np.asarray(KNN_NEIGHBOURS, np.int64),
    }
    state["points"] = project(block, train_rows[keep], state)
    state.update(_reference_classifier(state["points"], state["point_class"], seed))
    state.update(_class_gaussians(state["points"], state["point_class"]))
    return state


def _class_gaussians(points: np.ndarray, classes: np.ndarray) -> dict[str, np.ndarray]:
    """The Mahalanobis distance's statistics: a whitening of the shared within-class covariance, the whitened class means.

    The covariance of the kept cells' residuals from their class means, shrunk by Ledoit-Wolf
    (scikit-learn), eigenvalues floored at a millionth of their mean or of the cells' own mean
    variance (classes of one cell each have no residuals); ``maha_whiten`` maps coordinates to a
    space where it is the identity, ``maha_means`` are the class means there (one row per class of
    ``np.unique(classes)``, the reference-space classifier's order). Both in float64: a whitening of
    small eigenvalues is large, and float32 would round the distance of a class's own mean off 0.
    """
    from sklearn.covariance import ledoit_wolf

    x = np.asarray(points, np.float64)
    present, at = np.unique(classes, return_inverse=True)
    means = np.zeros((len(present), x.shape[1]))
    np.add.at(means, at, x)
    means /= np.bincount(at, minlength=len(present))[:, None]
    cov = ledoit_wolf(x - means[at], assume_centered=True)[0]
    lam, vec = np.linalg.eigh(cov)
    lam = np.maximum(lam, 1e-6 * max(float(lam.mean()), float(x.var(axis=0).mean()), 1e-12))
    whiten = vec / np.sqrt(lam)[None, :]
    return {"maha_whiten": whiten, "maha_means": means @ whiten}


def _mahalanobis(q: np.ndarray, state: dict) -> np.ndarray:
    """Squared Mahalanobis distance of each row of coordinates ``q`` to the nearest class mean (:func:`_class_gaussians`)."""
    w = np.asarray(state["maha_whiten"], np.float64)
    means = np.asarray(state["maha_means"], np.float64)
    z = np.asarray(q, np.float64) @ w
    return np.maximum(_sq_distances_to(z, means, (means * means).sum(axis=1)).min(axis=1), 0.0)


def _reference_classifier(points: np.ndarray, classes: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """A multinomial logistic regression of the kept cells' classes on their components (its classes, weights)."""
    from sklearn.linear_model import LogisticRegression

    present = np.unique(classes)
    d = points.shape[1]
    if len(present) < 2:  # one class: sure of it everywhere
        return {"lr_classes": present.astype(np.int32), "lr_coef": np.zeros((d, 1), np.float32),
                "lr_intercept": np.zeros(1, np.float32)}  # fmt: skip
    lr = LogisticRegression(C=LR_C, max_iter=1000, random_state=seed).fit(points, classes)
    coef, intercept = np.asarray(lr.coef_, np.float64), np.asarray(lr.intercept_, np.float64)
    if len(present) == 2:  # scikit-learn keeps one row for two classes: the first class's logit is 0
        coef, intercept = np.vstack([np.zeros_like(coef), coef]), np.r_[0.0, intercept]
    return {
        "lr_classes": present.astype(np.int32),
        "lr_coef": coef.T.astype(np.float32),
        "lr_intercept": intercept.astype(np.float32),
    }


def project(block, rows: np.ndarray, state: dict) -> np.ndarray:
    """Coordinates of the cells ``rows`` in the reference's principal components (cells x components, float32)."""
    W = np.asarray(state["projection"], np.float32)
    b = np.asarray(state["offset"], np.float32)
    genes = np.asarray(state["genes"])
    parts = [
        np.asarray(block(rows[s : s + _KNN_ROWS]), np.float32)[:, genes] @ W - b for s in range(0, len(rows), _KNN_ROWS)
    ]
    return np.concatenate(parts) if parts else np.zeros((0, W.shape[1]), np.float32)


def matched_neighbours(n_others: int, n_reference: int, k: int = KNN_NEIGHBOURS) -> tuple[int, int]:
    """Neighbour counts ``(among the other query cells, among the reference cells)`` for the density ratio.

    ``k`` in the smaller set, and in the larger as many as cover the same share of it, so the
    two mean distances reach equally far into sets drawn alike, whatever their sizes.
    """
    k = max(1, min(k, n_others, n_reference))
    if n_others <= n_reference:
        return k, min(n_reference, int(round(k * n_reference / n_others)))
    return min(n_others, int(round(k * n_others / n_reference))), k


def _sq_distances_to(q: np.ndarray, pts: np.ndarray, sq_pts: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances of every row of ``q`` to every row of ``pts`` (``sq_pts``: their squared norms)."""
    return (q * q).sum(axis=1)[:, None] + sq_pts[None, :] - 2.0 * (q @ pts.T)


def _mean_nearest(q: np.ndarray, pts: np.ndarray, sq_pts: np.ndarray, k: int, skip_first: np.ndarray | None = None):
    """Mean distance of each row of ``q`` to its ``k`` nearest rows of ``pts``; ``skip_first``: rows that drop their nearest."""
    d2 = _sq_distances_to(q, pts, sq_pts)
    if skip_first is None:
        near = np.partition(d2, k - 1, axis=1)[:, :k]
        return np.sqrt(np.maximum(near, 0.0)).mean(axis=1, dtype=np.float64)
    near = np.sqrt(np.maximum(np.sort(np.partition(d2, k, axis=1)[:, : k + 1], axis=1), 0.0))
    # a query cell in the pool is its own nearest: it drops that one, the others their farthest of k + 1
    return np.where(skip_first, near[:, 1:].mean(axis=1, dtype=np.float64), near[:, :k].mean(axis=1, dtype=np.float64))


def _weighted_mean_nearest(q: np.ndarray, pts: np.ndarray, sq_pts: np.ndarray, weight: np.ndarray, mass: float):
    """Mean distance of each row of ``q`` to its nearest rows of ``pts``, each weighing ``weight``, up to ``mass`` in all.

    The last neighbour counts with the part of its weight that completes the mass. With every
    weight 1 and a whole ``mass``, the mean distance to the ``mass`` nearest.
    """
    d2 = _sq_distances_to(q, pts, sq_pts)
    m = int(min(len(pts), np.ceil(mass / weight.min()) + 1))  # enough neighbours to hold the mass
    idx = np.argpartition(d2, m - 1, axis=1)[:, :m]
    near = np.take_along_axis(d2, idx, axis=1)
    order = np.argsort(near, axis=1)
    near = np.sqrt(np.maximum(np.take_along_axis(near, order, axis=1), 0.0)).astype(np.float64)
    w = weight[np.take_along_axis(idx, order, axis=1)].astype(np.float64)
    counted = np.clip(mass - (np.cumsum(w, axis=1) - w), 0.0, w)
    return (near * counted).sum(axis=1) / counted.sum(axis=1)


def _recomposed_weights(pool_probs: np.ndarray, state: dict) -> np.ndarray:
    """A weight per kept reference cell: its class's share of the query over its share of the kept cells.

    The query's shares are the reference-space classifier's mean probabilities over the query's
    cells, each ratio clipped to between 1 / :data:`QUERY_RECOMPOSE_CLIP` and
    :data:`QUERY_RECOMPOSE_CLIP`; the weights sum to the number of kept cells. So the reference
    the density ratio compares with is composed like the query, and a known type far more
    common in the query than in the reference is not, for that alone, more novel.
    """
    lr_classes = np.asarray(state["lr_classes"])
    at = np.searchsorted(lr_classes, np.asarray(state["point_class"]))
    ref_share = np.bincount(at, minlength=len(lr_classes)) / len(at)
    query_share = np.asarray(pool_probs, np.float64).mean(axis=0)
    ratio = np.clip(query_share / np.maximum(ref_share, 1e-12), 1 / QUERY_RECOMPOSE_CLIP, QUERY_RECOMPOSE_CLIP)
    weight = ratio[at]
    return weight * len(weight) / weight.sum()


def _drawn(n: int, size: int) -> np.ndarray:
    """Sorted positions of at most ``size`` of ``n`` cells: all, or ``size`` drawn with seed 0 (the same every time)."""
    if n <= size:
        return np.arange(n)
    return np.sort(np.random.default_rng(0).choice(n, size, replace=False))


def kept_held_out(n: int) -> np.ndarray | None:
    """Positions of the held-out cells kept for ``query_aware``: all, or :data:`_MAX_REFERENCE` drawn (seed 0).

    ``None`` with fewer than :data:`QUERY_MIN_HELD_OUT`: too few to rank by.
    """
    return None if n < QUERY_MIN_HELD_OUT else _drawn(n, _MAX_REFERENCE)


def _pool_of(n: int, size: int) -> np.ndarray:
    """Which of ``n`` query cells make up the pool the density ratio compares with: all, or ``size`` drawn (seed 0)."""
    in_pool = np.zeros(n, bool)
    in_pool[_drawn(n, size)] = True
    return in_pool


class _DensityReader:
    """The density ratio of query cells against the kept reference cells of ``state``, with ``pool`` as the query.

    ``pool``: the coordinates of the query cells compared with (a cell of the pool is not its own
    neighbour). The reference cells are weighted to the pool's composition
    (:func:`_recomposed_weights`); the neighbour counts are :func:`matched_neighbours`.
    """

    def __init__(self, pool: np.ndarray, state: dict):
        self.pts = np.asarray(state["points"], np.float32)
        self.sq_pts = (self.pts * self.pts).sum(axis=1)
        self.pool = np.asarray(pool, np.float32)
        self.sq_pool = (self.pool * self.pool).sum(axis=1)
        self.k_query, self.k_ref = matched_neighbours(len(self.pool) - 1, len(self.pts))
        coef, intercept = np.asarray(state["lr_coef"], np.float32), np.asarray(state["lr_intercept"], np.float32)
        self.weight = _recomposed_weights(softmax(np.asarray(self.pool @ coef + intercept, np.float64), axis=1), state)

    def __call__(self, q: np.ndarray, in_pool: np.ndarray | None = None) -> np.ndarray:
        """The log density ratio of the cells at coordinates ``q``; ``in_pool``: which of them are in the pool.

        ``None``: the kept held-out cells, all in the pool and perhaps in the query as well (a user
        predicting on the reference's own cells): each skips every copy of itself, so that it is
        not read as denser than the query's cells are.
        """
        d_ref = _weighted_mean_nearest(q, self.pts, self.sq_pts, self.weight, self.k_ref)
        if in_pool is None:
            d_query = _mean_nearest_other(q, self.pool, self.sq_pool, self.k_query)
        else:
            d_query = _mean_nearest(q, self.pool, self.sq_pool, self.k_query, skip_first=in_pool)
        return np.log(np.maximum(d_ref, 1e-6)) - np.log(np.maximum(d_query, 1e-6))


def _mean_nearest_other(q: np.ndarray, pool: np.ndarray, sq_pool: np.ndarray, k: int, copies: int = 2) -> np.ndarray:
    """Mean distance of each row of ``q`` to its ``k`` nearest rows of ``pool`` that are not the same cell.

    A row of ``pool`` at (float32) distance 0 is the same cell: up to ``copies`` of them are
    skipped (itself, and the query's copy of it); ``k`` of the rest are averaged.
    """
    k = min(k, len(pool) - copies)
    sq_q = (q * q).sum(axis=1)
    d2 = _sq_distances_to(q, pool, sq_pool)
    near = np.sort(np.partition(d2, k + copies - 1, axis=1)[:, : k + copies], axis=1)
    same = (near[:, :copies] <= 1e-5 * (2.0 * sq_q[:, None] + 1.0)).sum(axis=1)  # rounding of |q|^2 + |p|^2 - 2qp
    cols = same[:, None] + np.arange(k)[None, :]
    return np.sqrt(np.maximum(np.take_along_axis(near, cols, axis=1), 0.0)).mean(axis=1, dtype=np.float64)


def input_evidence(block, rows: np.ndarray, state: dict, *, query: bool = False) -> tuple[np.ndarray, ...]:
    """Each cell's distances to the reference, and the reference-space classifier's probabilities.

    The distances: the mean distance to the ``k`` nearest reference cells, and, for statistics
    with them (``"maha_means"``), the squared Mahalanobis distance to the nearest class mean
    (:func:`_mahalanobis`) beside it, as a second column. Block by block of cells; the
    probabilities are over ``state["lr_classes"]``. ``query``: the cells ``rows`` are one query (at least :data:`QUERY_MIN_CELLS` of them, and statistics
    that keep held-out cells): also each one's density ratio, the log of its mean distance to
    the reference cells over its mean distance to the other query cells (at most
    :data:`QUERY_POOL` of them, drawn with a fixed seed, and the kept held-out cells), at
    :func:`matched_neighbours`, the reference cells weighted to the query's composition
    (:func:`_recomposed_weights`); and the kept held-out cells' ratios, read in the same query.
    Four arrays then.
    """
    # float32 throughout: the squared distances of z-scored components (tens) lose about 1e-5 of their
    # size to rounding, far below the gaps between neighbours, at much less time than float64
    # (docs/confidence.md, "Cost")
    pts = np.asarray(state["points"], np.float32)
    k = int(min(int(state["k"]), len(pts)))
    sq_pts = (pts * pts).sum(axis=1)
    coef, intercept = np.asarray(state["lr_coef"], np.float32), np.asarray(state["lr_intercept"], np.float32)
    rows = np.asarray(rows)
    query = query and len(rows) >= QUERY_MIN_CELLS
    query = query and has_query_term(state)
    if query:  # the query's pool and the kept held-out cells, who are read with it
        in_pool = _pool_of(len(rows), QUERY_POOL)
        held = np.asarray(state["held_out_points"], np.float32)
        reader = _DensityReader(np.concatenate([project(block, rows[in_pool], state), held]), state)
    dist, probs, density = [], [], []
    maha = "maha_means" in state
    for s in range(0, len(rows), _KNN_ROWS):
        q = project(block, rows[s : s + _KNN_ROWS], state)
        near = _mean_nearest(q, pts, sq_pts, k)
        dist.append(np.stack([near, _mahalanobis(q, state)], axis=1) if maha else near)
        probs.append(softmax(np.asarray(q @ coef + intercept, np.float64), axis=1).astype(np.float32))
        if query:
            density.append(reader(q, in_pool[s : s + _KNN_ROWS]))
    if not dist:
        return np.zeros((0, 2) if maha else 0), np.zeros((0, coef.shape[1]))
    if query:
        held_density = reader(held)
        return np.concatenate(dist), np.concatenate(probs), np.concatenate(density), held_density
    return np.concatenate(dist), np.concatenate(probs)


def input_novelty_raw(dist: np.ndarray, confidence: np.ndarray, lr_confidence: np.ndarray, state: dict) -> np.ndarray:
    """The novelty score of input-space statistics: standardised distance + weighted standardised ``1 - p_max``.

    Both ``1 - p_max``, the model's and the reference-space classifier's, weigh :data:`CONF_WEIGHT`.
    Two columns of distances (:func:`input_evidence`) are each standardised and weigh
    ``state["dist_weights"]`` (:data:`DIST_WEIGHTS`).
    """
    z_dist = (np.asarray(dist, np.float64) - state["dist_loc"]) / state["dist_scale"]
    if z_dist.ndim == 2:
        z_dist = z_dist @ np.asarray(state["dist_weights"], np.float64)
    z_conf = (1.0 - np.asarray(confidence, np.float64) - state["conf_loc"]) / state["conf_scale"]
    z_lr = (1.0 - np.asarray(lr_confidence, np.float64) - state["lr_loc"]) / state["lr_scale"]
    return z_dist + float(state["conf_weight"]) * (z_conf + z_lr)


def fit_input_novelty(
    space: dict[str, np.ndarray],
    dist_ref: np.ndarray,
    confidence_ref: np.ndarray,
    lr_confidence_ref: np.ndarray,
    held_out_points: np.ndarray | bool | None = None,
) -> dict[str, np.ndarray]:
    """Standardise the distance and both ``1 - p_max`` on the held-out reference cells; keep their scores' quantiles.

    ``space``: :func:`fit_input_space`'s statistics (kept in the result; a hierarchy's coarser
    levels pass ``{}`` and read the finest level's). ``held_out_points``: the coordinates
    (:func:`project`) of the held-out cells at :func:`kept_held_out`'s positions, or ``True`` at a
    coarser level: those cells' scores are kept (and their coordinates), for ``query_aware`` to
    read a query's density ratio with. Returns what :func:`uncertainty` needs.
    """
    state: dict = dict(space)
    dist_ref = np.asarray(dist_ref, np.float64)
    state["dist_loc"], state["dist_scale"] = _robust_scales(dist_ref)
    if dist_ref.ndim == 2:
        state["dist_weights"] = np.asarray(DIST_WEIGHTS, np.float64)
    state["conf_loc"], state["conf_scale"] = _robust_scale(1.0 - np.asarray(confidence_ref, np.float64))
    state["lr_loc"], state["lr_scale"] = _robust_scale(1.0 - np.asarray(lr_confidence_ref, np.float64))
    state["conf_weight"] = CONF_WEIGHT
    raw = input_novelty_raw(dist_ref, confidence_ref, lr_confidence_ref, state)
    m = min(len(raw), _MAX_REFERENCE)
    state["reference"] = np.quantile(raw, (np.arange(m) + 0.5) / m)
    state["tail"] = _robust_scale(raw)[1]
    if held_out_points is not None:
        kept = kept_held_out(len(raw))
        if kept is not None:
            state["held_out_raw"] = raw[kept]
            state["query_weight"] = QUERY_WEIGHT
            if not isinstance(held_out_points, bool):
                assert len(held_out_points) == len(kept)  # projected at kept_held_out's positions
                state["held_out_points"] = np.asarray(held_out_points, np.float32)
    return {k: np.asarray(v) for k, v in state.items()}
