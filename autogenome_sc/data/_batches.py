"""Per-batch standardisation: each batch's genes centred and scaled on that batch's own cells.

With ``batch_key``, every gene of every cell is standardised with the mean and standard
deviation of that gene in the cell's batch, after the per-cell preprocessing (normalising,
log1p) and before the model's own per-gene scaling. A reference batch is described by its
training cells (all its cells if it has fewer than two there); a query batch by all of its
own cells, since a query has no training split. A batch effect that shifts or stretches each
gene's values (a processing batch of a microarray, a library-size or capture difference
between single-cell runs) is then removed before the network sees the cells.

What it cannot do: a batch whose cells are of one or a few types has a mean that is those
types' profile, and standardising removes it. Where batches differ in their composition, it
can cost more accuracy than the batch effect did (docs/benchmarks.md: leave-one-batch-out
on the bladder-cancer microarray, where three of five batches hold one class each).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from anndata import AnnData

from .._logging import warn
from ._labels import obs_column
from ._scale import ABS_TOL, REL_TOL


def read_batches(adata: AnnData, batch_key: str) -> tuple[np.ndarray, list[str]]:
    """The batch of every cell (codes into the sorted batch names) from ``adata.obs[batch_key]``."""
    if not isinstance(batch_key, str):
        raise TypeError(f"batch_key must be the name of a column of adata.obs, got {type(batch_key).__name__}.")
    col = obs_column(adata, batch_key, "batch_key", "give every cell a batch (cells of one run or sample share one)")
    cat = pd.Categorical(col.astype(str))
    return cat.codes.astype(np.int32), [str(c) for c in cat.categories]


@dataclass
class BatchStandardizer:
    """``x -> (x - mean[batch]) * scale[batch]`` per gene, with the statistics of each batch's cells."""

    key: str
    names: list[str]
    codes: np.ndarray  # (n_obs,) the batch of every row of the source
    mean: np.ndarray  # (n_batches, n_vars) float32
    scale: np.ndarray  # (n_batches, n_vars) float32: 1 / SD, 0 for a gene constant within the batch

    @classmethod
    def fit(
        cls, key: str, names: list[str], codes: np.ndarray, rows_of, rows: np.ndarray, n_vars: int, chunk_rows: int
    ) -> BatchStandardizer:
        """Statistics of rows ``rows`` (one streaming pass, ``chunk_rows`` at a time), per batch.

        ``rows_of(idx)`` returns the preprocessed dense rows ``idx``. A batch without any of
        ``rows`` is described by all of its cells.
        """
        n_b = len(names)
        counts = np.bincount(codes[rows], minlength=n_b)
        missing = np.flatnonzero(counts < 2)
        if len(missing):  # a batch with fewer than two of the given rows: all of its cells
            rows = np.concatenate([rows, np.flatnonzero(np.isin(codes, missing))])
            rows = np.unique(rows)
        counts = np.bincount(codes[rows], minlength=n_b).astype(np.float64)
        too_small = [names[b] for b in range(n_b) if counts[b] < 2 and (codes == b).any()]
        if too_small:
            raise ValueError(
                f"Batch(es) {', '.join(map(repr, too_small[:5]))} of adata.obs['{key}'] hold a single cell; "
                "per-batch statistics need at least two cells per batch (merge it with a similar batch)."
            )
        ref = None
        total = np.zeros((n_b, n_vars))
        sq = np.zeros((n_b, n_vars))
        for s in range(0, len(rows), chunk_rows):
            idx = rows[s : s + chunk_rows]
            x = np.asarray(rows_of(idx), np.float64)
            if ref is None:
                ref = x.mean(axis=0)  # shifted sums keep the variance exact for genes with a large offset
            d = x - ref
            onehot = np.zeros((len(idx), n_b))
            onehot[np.arange(len(idx)), codes[idx]] = 1.0
            total += onehot.T @ d
            sq += onehot.T @ (d * d)
        assert ref is not None  # every batch has rows, so there is at least one chunk
        n = np.maximum(counts, 1.0)[:, None]
        mean_d = total / n
        sd = np.sqrt(np.maximum(sq / n - mean_d * mean_d, 0.0))
        mean = ref + mean_d
        tol = np.maximum(REL_TOL * np.abs(mean), ABS_TOL)
        scale = np.divide(1.0, sd, out=np.zeros_like(sd), where=sd > tol)
        return cls(key, list(names), np.asarray(codes, np.int32), mean.astype(np.float32), scale.astype(np.float32))

    def apply(self, x: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """Standardise rows ``x`` (the source's rows ``idx``) in place on their batches' statistics."""
        b = self.codes[np.asarray(idx, np.int64)]
        x -= self.mean[b]
        x *= self.scale[b]
        return x


def warn_single_class_batches(codes: np.ndarray, names: list[str], y: np.ndarray, rows: np.ndarray, key: str) -> None:
    """Warn when a batch's training cells are all of one class: standardising the batch removes that class's profile."""
    one = [names[b] for b in np.unique(codes[rows]) if len(np.unique(y[rows][codes[rows] == b])) == 1]
    if one:
        warn(
            f"Batch(es) {', '.join(map(repr, one[:5]))} of adata.obs['{key}'] hold one class each: standardising "
            "a batch on itself removes what its cells share, here their class. Check held-out batches with and "
            "without batch_key (docs/benchmarks.md shows such a case)."
        )
