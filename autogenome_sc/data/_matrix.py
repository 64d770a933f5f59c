"""Access to an AnnData matrix by rows, never densifying more than a chunk of rows."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData
from anndata.abc import CSCDataset, CSRDataset

from .._logging import warn

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

    X: Any  # ndarray, scipy sparse, BackedCSR or BackedDense: anything indexable by rows
    var_names: pd.Index
    layer: str | None = None  # adata.layers[layer] ...
    use_raw: bool = False  # ... or adata.raw.X; neither: adata.X
    gene_symbols: str | None = None  # the column of .var the names were read from (None: var_names)
    panel: dict[str, int] | None = None  # with genes=: how many were asked for, kept, matched without version

    @property
    def matched_by(self) -> str:
        """Where the gene names come from, as logs and ``uns`` name it: ``var_names`` or ``var['symbol']``."""
        var = "raw.var" if self.use_raw else "var"
        return f"{var}_names" if self.gene_symbols is None else f"{var}['{self.gene_symbols}']"

    @property
    def where(self) -> str:
        """Where the matrix lives in AnnData, as logs and ``uns[key]["preprocessing"]["matrix"]`` name it."""
        return matrix_name(self.layer, self.use_raw)

    @property
    def n_obs(self) -> int:
        return self.X.shape[0]

    @property
    def n_vars(self) -> int:
        return self.X.shape[1]

    @property
    def backed(self) -> bool:
        """Whether the matrix stays on disk (backed AnnData), read a chunk of rows at a time."""
        return is_backed(self.X)

    def rows(self, idx: np.ndarray) -> np.ndarray:
        """Dense float32 rows ``idx`` (any order, repeats allowed), densifying only those rows."""
        idx = np.asarray(idx, dtype=np.int64)
        if self.backed:
            uniq, inverse = np.unique(idx, return_inverse=True)  # on disk: read in increasing order
            block = self.X.take(uniq)
            return _dense32(block)[inverse]
        return _dense32(self.X[idx])

    def data_blocks(self, chunk_mb: float) -> Iterator[tuple[int, int, np.ndarray]]:
        """Yield the stored values of consecutive rows, chunk by chunk, with their first and last row.

        For sparse matrices only the non-zero values are read; dense ones are densified by chunks.
        """
        per = rows_per_chunk(self.n_vars, chunk_mb)
        for start in range(0, self.n_obs, per):
            stop = min(start + per, self.n_obs)
            block = self.X[start:stop]
            if sp.issparse(block):
                values = np.asarray(block.data)
            else:
                values = _dense32(block).ravel()
            yield start, stop - 1, values


class BackedCSR:
    """Rows of an on-disk CSR matrix, read straight from its HDF5/zarr group.

    anndata's ``CSRDataset.__getitem__`` looks up package metadata to validate indices on
    every call (anndata 0.12), which costs far more than the HDF5 read of a few rows itself
    (docs/benchmarks.md); a chunk of cells needs a few hundred reads, so they are made here
    from the group's arrays.
    """

    def __init__(self, dataset: CSRDataset, reopen=None):
        self._reopen = reopen  # gives the dataset again if anndata closed and reopened the file
        self._set(dataset)
        self.shape = tuple(dataset.shape)
        self.indptr = np.asarray(dataset.group["indptr"][:], dtype=np.int64)  # 8 bytes per cell

    def _set(self, dataset: CSRDataset) -> None:
        self.data, self.indices = dataset.group["data"], dataset.group["indices"]

    def _arrays(self):
        handle = getattr(self.data, "id", None)
        if handle is not None and not handle.valid and self._reopen is not None:
            self._set(self._reopen())  # e.g. after adata.to_memory() closed the file
        return self.data, self.indices

    def __getitem__(self, rows: slice) -> sp.csr_matrix:
        start, stop, step = rows.indices(self.shape[0])
        if step != 1:
            raise IndexError("BackedCSR reads contiguous row slices; use take() for others.")
        return self.take(np.arange(start, max(start, stop)))

    def take(self, rows: np.ndarray, merge_gap: int = 16) -> sp.csr_matrix:
        """Rows ``rows`` (sorted, unique): one read per run of rows at most ``merge_gap`` apart."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size == 0:
            return sp.csr_matrix((0, self.shape[1]), dtype=np.float32)
        seg_start = np.flatnonzero(np.r_[True, np.diff(rows) > merge_gap])
        seg_lo = self.indptr[rows[seg_start]]  # element span of each run of nearby rows
        seg_hi = self.indptr[rows[np.r_[seg_start[1:], rows.size] - 1] + 1]
        spans = list(zip(seg_lo.tolist(), seg_hi.tolist(), strict=True))
        data_ds, indices_ds = self._arrays()
        data = np.concatenate([data_ds[lo:hi] for lo, hi in spans])
        indices = np.concatenate([indices_ds[lo:hi] for lo, hi in spans])
        # Where each wanted row's entries sit in the concatenated spans, then one gather.
        seg_of_row = np.repeat(np.arange(seg_start.size), np.diff(np.r_[seg_start, rows.size]))
        offset = np.r_[0, np.cumsum(seg_hi - seg_lo)[:-1]]
        first = self.indptr[rows] - seg_lo[seg_of_row] + offset[seg_of_row]
        lens = self.indptr[rows + 1] - self.indptr[rows]
        indptr = np.r_[0, np.cumsum(lens)]
        gather = np.repeat(first - indptr[:-1], lens) + np.arange(indptr[-1])
        return sp.csr_matrix((data[gather], indices[gather], indptr), shape=(rows.size, self.shape[1]))


def is_backed(X) -> bool:
    """Whether ``X`` is an on-disk array of a backed AnnData (HDF5 dataset or sparse dataset)."""
    return isinstance(X, BackedCSR | BackedDense)


class BackedDense:
    """Rows of an on-disk dense matrix (an HDF5 dataset): one read per run of nearby rows."""

    def __init__(self, dataset, reopen=None):
        self.dataset, self._reopen = dataset, reopen
        self.shape = tuple(dataset.shape)

    def _ds(self):
        if not self.dataset.id.valid and self._reopen is not None:
            self.dataset = self._reopen()  # anndata closed and reopened the file
        return self.dataset

    def __getitem__(self, rows: slice) -> np.ndarray:
        return self._ds()[rows]

    def take(self, rows: np.ndarray, merge_gap: int = 16) -> np.ndarray:
        """Rows ``rows`` (sorted, unique)."""
        ds = self._ds()
        breaks = np.flatnonzero(np.diff(rows) > merge_gap) + 1
        parts = [ds[int(seg[0]) : int(seg[-1]) + 1][seg - seg[0]] for seg in np.split(rows, breaks)]
        return np.concatenate(parts)


def _dense32(block) -> np.ndarray:
    if sp.issparse(block):
        block = block.toarray()
    return np.asarray(block, dtype=np.float32)


def get_source(
    adata: AnnData,
    *,
    layer: str | None = None,
    use_raw: bool = False,
    gene_symbols: str | None = None,
    genes: Any = None,
) -> MatrixSource:
    """Choose the matrix: ``adata.X``, ``adata.layers[layer]`` or ``adata.raw.X``.

    Its genes are named by ``var_names`` or by the column ``gene_symbols`` of ``.var`` (of
    ``.raw.var`` with ``use_raw``); ``genes`` (names, or an AnnData whose ``var_names`` are
    taken) keeps only those genes, matched as a query's genes are (see :func:`match_genes`).
    """
    if not isinstance(adata, AnnData):
        raise TypeError(f"Expected an AnnData object, got {type(adata).__name__}.")
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise ValueError(f"The AnnData object is empty ({adata.n_obs} cells x {adata.n_vars} genes).")
    if layer is not None and use_raw:
        raise ValueError("Pass either `layer` or `use_raw=True`, not both.")
    if use_raw:
        if adata.raw is None:
            raise ValueError("use_raw=True but adata.raw is None.")
        X, var_names = adata.raw.X, adata.raw.var_names
        var = adata.raw.var
    elif layer is not None:
        if layer not in adata.layers:
            have = ", ".join(map(repr, adata.layers.keys())) or "none"
            raise KeyError(f"Layer '{layer}' is not in adata.layers (available: {have}).")
        X, var_names = adata.layers[layer], adata.var_names
    else:
        X, var_names = adata.X, adata.var_names
    if not use_raw:
        var = adata.var
    if gene_symbols is not None:
        var_names = _symbols(var, gene_symbols, "raw.var" if use_raw else "var")
    where = matrix_name(layer, use_raw)
    if X is None:
        raise ValueError(f"adata.{where} is None: there is no matrix to learn from.")
    if var_names.has_duplicates:
        dup = var_names[var_names.duplicated()].unique()[:5].tolist()
        if gene_symbols is not None:
            raise ValueError(
                f"adata.var['{gene_symbols}'] names some genes twice (e.g. {dup}); match by var_names instead, or "
                "make the column unique first."
            )
        raise ValueError(f"adata has duplicated var_names (e.g. {dup}); run `adata.var_names_make_unique()` first.")
    if isinstance(X, CSCDataset):
        raise ValueError(
            f"adata.{where} is a CSC sparse matrix on disk (backed mode), which can only be read by genes; "
            "rewrite it by cells (CSR) first, e.g. `adata = adata.to_memory(); adata.X = adata.X.tocsr()`, "
            "or load it into memory."
        )
    if sp.issparse(X) and X.format == "csc":
        X = X.tocsr()  # row access; a sparse copy, never densified
    reopen = (lambda: adata.raw.X) if use_raw else (lambda: adata.X)
    if isinstance(X, CSRDataset):
        X = BackedCSR(X, reopen)
    elif isinstance(X, h5py.Dataset):
        X = BackedDense(X, reopen)
    names = pd.Index(var_names.astype(str))
    panel = None
    if genes is not None:
        X, names, panel = _panel(X, names, genes, where)
    return MatrixSource(
        X=X, var_names=names, layer=layer, use_raw=bool(use_raw), gene_symbols=gene_symbols, panel=panel
    )


def _symbols(var: pd.DataFrame, column: str, where: str) -> pd.Index:
    """The gene names of the column ``column`` of ``var`` (``adata.var`` or ``adata.raw.var``), checked."""
    if not isinstance(column, str):
        raise TypeError(f"gene_symbols must be the name of a column of adata.{where}, not {type(column).__name__}.")
    if column not in var.columns:
        have = ", ".join(map(repr, var.columns[:10])) or "none"
        raise KeyError(f"gene_symbols='{column}' is not a column of adata.{where} (columns: {have}).")
    values = var[column]
    if values.isna().any():
        raise ValueError(
            f"adata.{where}['{column}'] has {int(values.isna().sum())} missing gene names; fill them first."
        )
    return pd.Index(values.astype(str).to_numpy())


def _panel(X: Any, names: pd.Index, genes: Any, where: str) -> tuple[Any, pd.Index, dict[str, int]]:
    """The columns of ``X`` of the genes in ``genes`` (names, or an AnnData's var_names), in ``X``'s order."""
    from ._align import match_genes

    asked = pd.Index(genes.var_names if isinstance(genes, AnnData) else _names_of(genes)).astype(str).unique()
    pos, n_unversioned = match_genes(names, asked)
    keep = np.sort(pos[pos >= 0])
    if len(keep) == 0:
        raise ValueError(
            f"None of the {len(asked)} genes in genes= is among the {len(names)} of adata.{where}; check that both "
            "use the same gene identifiers (gene_symbols= matches by a column of .var)."
        )
    if is_backed(X):
        raise ValueError("genes= needs the matrix in memory; load it first with `adata = adata.to_memory()`.")
    X = X[:, keep]
    if sp.issparse(X):
        X = sp.csr_matrix(X)
    panel = {"n_asked": len(asked), "n_kept": len(keep), "n_unversioned": n_unversioned, "n_reference": len(names)}
    return X, names[keep], panel


def _names_of(genes: Any) -> list[str]:
    if isinstance(genes, str) or not hasattr(genes, "__iter__"):
        raise TypeError(f"genes must be a list of gene names or an AnnData (a query), not {type(genes).__name__}.")
    return [str(g) for g in genes]


def matrix_name(layer: str | None, use_raw: bool) -> str:
    """``"X"``, ``"layers['counts']"`` or ``"raw.X"``: the matrix ``layer``/``use_raw`` choose, as messages name it."""
    if use_raw:
        return "raw.X"
    return "X" if layer is None else f"layers['{layer}']"


def rows_per_chunk(n_vars: int, chunk_mb: float) -> int:
    """How many densified float32 rows fit in ``chunk_mb`` megabytes (at least 1)."""
    return max(1, int(chunk_mb * 2**20 // (4 * max(n_vars, 1))))


def check_finite_and_detect(source: MatrixSource, chunk_mb: float, n_detect: int = 2000) -> str:
    """One pass over all rows: refuse NaN/inf, and detect the input kind from the first rows.

    Returns one of the keys of :data:`PREPROCESSING`.
    """
    for first, last, values in source.data_blocks(chunk_mb):
        if not np.isfinite(values).all():
            bad = int((~np.isfinite(values)).sum())
            raise ValueError(
                f"adata.{source.where} holds NaN or infinite values ({bad} in rows {first}-{last}); "
                "remove or impute them first."
            )
    head = source.X[: min(n_detect, rows_per_chunk(source.n_vars, chunk_mb), source.n_obs)]
    sample = head.data if sp.issparse(head) else _dense32(head).ravel()
    if sample.size == 0:  # a sparse head with no stored values: all zeros
        sample = np.zeros(1, np.float32)
    values = np.asarray(sample, dtype=np.float64)
    kind = _kind(values)
    if kind == "scaled":
        negative = values < 0
        rest = values[~negative]
        if negative.mean() < 0.01 and rest.size and np.all(np.abs(rest - np.round(rest)) < 1e-6):
            warn(
                f"adata.{source.where} looks like counts but holds {int(negative.sum())} negative value(s) among the "
                f"{values.size} read to detect its kind, so it is treated as scaled values (no normalisation, no "
                "log1p). If it is a counts matrix, fix those values first."
            )
    return kind


def zero_fraction(source: MatrixSource, chunk_mb: float, n_rows: int = 2000) -> float:
    """The fraction of zero entries in the first ``n_rows`` rows (a stored explicit zero counts as zero)."""
    head = source.X[: min(n_rows, rows_per_chunk(source.n_vars, chunk_mb), source.n_obs)]
    size = head.shape[0] * head.shape[1]
    if size == 0:
        return 1.0
    nonzero = int(np.count_nonzero(head.data)) if sp.issparse(head) else int(np.count_nonzero(_dense32(head)))
    return 1.0 - nonzero / size


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
        block *= 1e4 / lib  # blocks are fresh copies of the rows: transform in place
        return np.log1p(block, out=block)
    if how == "log1p":
        if (block < 0).any():
            raise ValueError("log1p preprocessing was asked for, but the matrix has negative values.")
        return np.log1p(block, out=block)
    raise ValueError(f"Unknown preprocessing '{how}'.")
