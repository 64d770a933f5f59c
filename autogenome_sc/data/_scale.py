"""Per-gene input scaling fitted on the training rows, bounded on every other row.

Two scalings, both fitted in one streaming pass over the training rows (:class:`GeneStats`):

* ``"minmax"`` (the paper's): ``(x - min) / (max - min)``, clipped to [0, 1], the training range;
* ``"zscore"`` (as CellTypist and ``sc.pp.scale(max_value=10)``): ``(x - mean) / sd``, clipped to [-10, 10].

A gene whose training range (or standard deviation) is below a small tolerance carries no
signal and maps to 0 on every row: float32 denormals (values down to 1e-45) or a gene that is
zero in every training cell can no longer be blown up by a scale of 1e42 into inf or into
values of millions on validation, test or query cells. The clip bounds what the scaling does
to rows outside the training range, so a query gives the same labels as one clipped by hand.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Clip bounds of each scaling: the training range for min-max, 10 SD for z-scores.
CLIP = {"minmax": (0.0, 1.0), "zscore": (-10.0, 10.0)}
SCALINGS = ("minmax", "zscore", "none")
#: A gene is constant when its spread is below this fraction of its own magnitude (1e-6 is about 16
#: float32 units in the last place) or of the median spread of the genes that vary.
REL_TOL = 1e-6
#: ... or below this absolute floor, whatever the data's scale: float32 denormals (< 1.2e-38) always are.
ABS_TOL = 1e-30


@dataclass
class GeneStats:
    """Per-gene min, max, mean and variance of the training rows (float64), from one streaming pass."""

    n: int
    min_: np.ndarray
    max_: np.ndarray
    mean_: np.ndarray
    var_: np.ndarray
    f_: np.ndarray | None = None  # ANOVA F statistic of each gene against the classes (classification)

    @classmethod
    def fit_chunks(cls, chunks, labels=None, n_classes: int = 0) -> GeneStats:
        """Statistics of the rows of ``chunks``; with ``labels`` (one array per chunk) also the F statistic."""
        n, lo, hi, total, sq, ref = 0, None, None, None, None, None
        class_n = class_sum = class_sq = None
        labels = iter(labels) if labels is not None else None
        for block in chunks:
            b = np.asarray(block, np.float64)
            yb = next(labels) if labels is not None else None
            if b.shape[0] == 0:
                continue
            bmin, bmax = b.min(axis=0), b.max(axis=0)
            lo = bmin if lo is None else np.minimum(lo, bmin)
            hi = bmax if hi is None else np.maximum(hi, bmax)
            # shifted sums keep the variance exact for genes with a large common offset
            if total is None:
                ref = b[0].copy()
                total, sq = np.zeros_like(ref), np.zeros_like(ref)
                if yb is not None:
                    class_n = np.zeros(n_classes)
                    class_sum, class_sq = np.zeros((n_classes, len(ref))), np.zeros((n_classes, len(ref)))
            assert ref is not None  # set with ``total`` by the first non-empty block
            d = b - ref
            total += d.sum(axis=0)
            sq += (d * d).sum(axis=0)
            n += b.shape[0]
            if yb is not None:
                onehot = np.eye(n_classes)[np.asarray(yb, np.int64)]
                class_n += onehot.sum(axis=0)
                class_sum += onehot.T @ d
                class_sq += onehot.T @ (d * d)
        if n == 0:
            raise ValueError("Scaling statistics need at least one training row.")
        # a non-empty block set every accumulator
        assert lo is not None and hi is not None and total is not None and sq is not None and ref is not None
        mean_d = total / n
        var = np.maximum(sq / n - mean_d * mean_d, 0.0)
        f = None
        if class_n is not None:
            assert class_sum is not None and class_sq is not None  # set with ``class_n``
            present = class_n > 0
            cn, cs, cq = class_n[present][:, None], class_sum[present], class_sq[present]
            between = (cs * cs / cn).sum(axis=0) - n * mean_d * mean_d
            within = np.maximum(cq.sum(axis=0) - (cs * cs / cn).sum(axis=0), 0.0)
            k = int(present.sum())
            dof_b, dof_w = max(k - 1, 1), max(n - k, 1)
            f = np.divide(between / dof_b, within / dof_w, out=np.zeros_like(between), where=within > 0)
            f[(within <= 0) & (between > 0)] = np.inf  # perfectly separated by class
        return cls(n=n, min_=lo, max_=hi, mean_=ref + mean_d, var_=var, f_=f)

    def subset(self, genes: np.ndarray) -> GeneStats:
        """The statistics of genes ``genes`` only."""
        f = None if self.f_ is None else self.f_[genes]
        return GeneStats(self.n, self.min_[genes], self.max_[genes], self.mean_[genes], self.var_[genes], f)

    def constant(self, spread: np.ndarray) -> np.ndarray:
        """Genes whose ``spread`` (range or SD) is below the tolerance: no signal in the training rows.

        The tolerance is the largest of ``REL_TOL`` times the gene's magnitude, ``REL_TOL`` times
        the median spread of the genes that vary (robust to a few huge genes) and ``ABS_TOL``.
        """
        varying = spread[np.isfinite(spread) & (spread > ABS_TOL)]
        typical = float(np.median(varying)) if varying.size else 0.0
        magnitude = np.maximum(np.abs(self.min_), np.abs(self.max_))
        tol = np.maximum(np.maximum(REL_TOL * magnitude, REL_TOL * typical), ABS_TOL)
        return ~(spread > tol)

    def scaler(self, how: str) -> Scaler:
        """The fitted :class:`Scaler` of scaling ``how`` (``"minmax"``, ``"zscore"`` or ``"none"``)."""
        if how == "none":
            return Scaler.identity(len(self.min_))
        if how == "minmax":
            spread, shift = self.max_ - self.min_, self.min_
        elif how == "zscore":
            spread, shift = np.sqrt(self.var_), self.mean_
        else:
            raise ValueError(f"Unknown scaling '{how}'; choose one of {', '.join(SCALINGS)}.")
        const = self.constant(spread)
        scale = np.divide(1.0, spread, out=np.zeros_like(spread), where=~const)
        lo, hi = CLIP[how]
        return Scaler(shift.astype(np.float32), scale.astype(np.float32), lo, hi, how)

    def top_genes(self, n_genes: int, by: str = "variance") -> np.ndarray:
        """Positions of the ``n_genes`` top genes, sorted: the most variable, or by ``"f_test"`` against the classes."""
        if by == "f_test":
            if self.f_ is None:
                raise ValueError("Genes can be ranked by an F test only for classification.")
            score = self.f_
        elif by == "variance":
            score = self.var_
        else:
            raise ValueError(f"Unknown gene ranking '{by}'; choose 'variance' or 'f_test'.")
        score = np.where(self.constant(np.sqrt(self.var_)), -1.0, np.nan_to_num(score, nan=0.0, posinf=np.inf))
        order = np.argsort(-score, kind="stable")[:n_genes]
        return np.sort(order)


@dataclass
class Scaler:
    """``x -> clip((x - shift) * scale, lo, hi)`` per gene; a constant gene (scale 0) maps to 0."""

    shift: np.ndarray
    scale: np.ndarray
    lo: float = -np.inf
    hi: float = np.inf
    kind: str = "minmax"

    @property
    def min_(self) -> np.ndarray:  # the names models store
        return self.shift

    @property
    def scale_(self) -> np.ndarray:
        return self.scale

    @property
    def clip(self) -> tuple[float, float] | None:
        return None if self.kind == "none" else (float(self.lo), float(self.hi))

    @classmethod
    def identity(cls, n_vars: int) -> Scaler:
        return cls(np.zeros(n_vars, np.float32), np.ones(n_vars, np.float32), -np.inf, np.inf, "none")

    @classmethod
    def fit_chunks(cls, chunks, how: str = "minmax") -> Scaler:
        return GeneStats.fit_chunks(chunks).scaler(how)

    def transform(self, block: np.ndarray) -> np.ndarray:
        """Scale ``block`` in place; never returns a non-finite value."""
        if self.kind == "none":
            return block
        block -= self.shift
        with np.errstate(invalid="ignore", over="ignore"):
            block *= self.scale  # inf * 0 (an overflowed constant gene) gives NaN, set to 0 below
        np.clip(block, self.lo, self.hi, out=block)
        np.nan_to_num(block, copy=False, nan=0.0)
        return block


MinMaxScaler = Scaler  # the name earlier versions used
