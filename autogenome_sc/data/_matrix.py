"""Access to an AnnData matrix by rows, never densifying more than a chunk of rows."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

#: Input kinds found by :func:`detect_input` and the transform each gets.
PREPROCESSING = {
    "counts": "normalize_log1p",  # raw counts: normalise to 1e4 per cell, then log1p
    "normalized": "log1p",  # non-integer, non-negative, large: e.g. CP10k or TPM
    "log": "none",  # log-expression
    "scaled": "none",  # has negative values: z-scored or otherwise centred
    "binary": "none",  # 0/1, e.g. mutation status
}


@dataclass
class MatrixSource:
    """The matrix a model reads, with the names of its columns."""

    X: object
    var_names: pd.Index
    where: str  # "X", "layers['counts']" or "raw.X"

    @property
    def n_obs(self) -> int:
        return self.X.shape[0]

    @property
    def n_vars(self) -> int:
        return self.X.shape[1]

    def rows(self, idx: np.ndarray) -> np.ndarray:
        """Dense float32 rows ``idx`` (any order), densifying only those rows."""
        idx = np.asarray(idx)
        order = np.argsort(idx, kind="stable")
        sorted_idx = idx[order]
        block = self.X[sorted_idx]  # backed datasets need increasing indices
        if sp.issparse(block):
            block = block.toarray()
        elif hasattr(block, "to_memory"):
            block = block.to_memory()
            block = block.toarray() if sp.issparse(block) else block
        block = np.asarray(block, dtype=np.float32)
        out = np.empty_like(block)
        out[order] = block
        return out

    def chunks(self, idx: np.ndarray, rows_per_chunk: int):
        """Yield ``(positions, dense_rows)`` for consecutive chunks of ``idx``."""
        for start in range(0, len(idx), rows_per_chunk):
            sel = idx[start : start + rows_per_chunk]
            yield sel, self.rows(sel)


def get_source(adata: AnnData, *, layer: str | None = None, use_raw: bool = False) -> MatrixSource:
    """Choose the matrix: ``adata.X``, ``adata.layers[layer]`` or ``adata.raw.X``."""
    if not isinstance(adata, AnnData):
        raise TypeError(f"Expected an AnnData object, got {type(adata).__name__}.")
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise ValueError(f"The AnnData object is empty ({adata.n_obs} cells x {adata.n_vars} genes).")
    if layer is not None and use_raw:
        raise ValueError("Pass either `layer` or `use_raw=True`, not both.")
    if use_raw:
        if adata.raw is None:
            raise ValueError("use_raw=True but adata.raw is None.")
        X, var_names, where = adata.raw.X, adata.raw.var_names, "raw.X"
    elif layer is not None:
        if layer not in adata.layers:
            have = ", ".join(map(repr, adata.layers.keys())) or "none"
            raise KeyError(f"Layer '{layer}' is not in adata.layers (available: {have}).")
        X, var_names, where = adata.layers[layer], adata.var_names, f"layers['{layer}']"
    else:
        X, var_names, where = adata.X, adata.var_names, "X"
    if X is None:
        raise ValueError(f"adata.{where} is None: there is no matrix to learn from.")
    if var_names.has_duplicates:
        dup = var_names[var_names.duplicated()].unique()[:5].tolist()
        raise ValueError(f"adata has duplicated var_names (e.g. {dup}); run `adata.var_names_make_unique()` first.")
    if sp.issparse(X) and X.format == "csc":
        X = X.tocsr()  # row access; a sparse copy, never densified
    return MatrixSource(X=X, var_names=pd.Index(var_names.astype(str)), where=where)


def rows_per_chunk(n_vars: int, chunk_mb: float) -> int:
    """How many densified float32 rows fit in ``chunk_mb`` megabytes (at least 1)."""
    return max(1, int(chunk_mb * 2**20 // (4 * max(n_vars, 1))))


def check_finite_and_detect(source: MatrixSource, chunk_mb: float, n_detect: int = 2000) -> str:
    """One pass over all rows: refuse NaN/inf, and detect the input kind from the first rows.

    Returns one of the keys of :data:`PREPROCESSING`.
    """
    n = source.n_obs
    X = source.X
    if sp.issparse(X):
        data = X.data
        if not np.isfinite(data).all():
            bad = int((~np.isfinite(data)).sum())
            raise ValueError(f"adata.{source.where} holds {bad} NaN or infinite values; remove or impute them first.")
        sample = data[: X.indptr[min(n, n_detect)]]
        has_zeros_only = sample.size == 0
        sample = np.concatenate([sample, [0.0]]) if has_zeros_only else sample
    else:
        sample = None
        per = rows_per_chunk(source.n_vars, chunk_mb)
        for sel, block in source.chunks(np.arange(n), per):
            if not np.isfinite(block).all():
                bad = int((~np.isfinite(block)).sum())
                raise ValueError(
                    f"adata.{source.where} holds NaN or infinite values ({bad} in rows {sel[0]}-{sel[-1]}); "
                    "remove or impute them first."
                )
            if sample is None:
                sample = block[:n_detect].ravel()
    return _kind(np.asarray(sample, dtype=np.float64))


def _kind(values: np.ndarray) -> str:
    if values.size == 0:
        return "log"
    if values.min() < 0:
        return "scaled"
    integer = np.all(np.abs(values - np.round(values)) < 1e-6)
    vmax = values.max()
    if integer and vmax <= 1:
        return "binary"
    if integer:
        return "counts"
    if vmax > 50:
        return "normalized"
    return "log"


def apply_preprocessing(block: np.ndarray, how: str) -> np.ndarray:
    """Row-wise preprocessing of a dense block (in place where possible)."""
    if how == "none":
        return block
    if how == "normalize_log1p":
        lib = block.sum(axis=1, keepdims=True)
        lib[lib == 0] = 1.0
        block = block * (1e4 / lib)
        return np.log1p(block, out=block)
    if how == "log1p":
        if (block < 0).any():
            raise ValueError("log1p preprocessing was asked for, but the matrix has negative values.")
        return np.log1p(block, out=block)
    raise ValueError(f"Unknown preprocessing '{how}'.")
