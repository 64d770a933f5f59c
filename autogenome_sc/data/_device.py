"""Training chunks densified, preprocessed and scaled on the device from their CSR arrays.

On a GPU, densifying each chunk of cells on the host (scipy CSR -> dense float32), then
normalising, log-transforming and scaling it with NumPy, is slower than the compiled
training step that consumes it. With ``data.device_prepare`` on, the host only gathers the
chunk's rows as CSR (``values``, column ``indices`` and the row of each value, expanded
from ``indptr`` by ``np.repeat``, which costs less than a cumulative sum on the CPU backend),
sums each row (the library size, one pass over the values; on the host, so the sums do not
depend on the order of a GPU's atomic additions) and pads the stored values to a bucket
size; one compiled function per shape does the rest on the device:

1. the per-cell preprocessing of the stored values (a zero stays zero under every transform);
2. the scatter of the values into a dense ``[rows, genes]`` block, at the model's position
   of each gene (the genes of a selection or an alignment; the others are dropped);
3. the per-batch standardisation (``batch_key``), the per-gene scaling, its clip, and the
   padding rows of a short chunk set to zero, as :meth:`Pipeline.block` does on the host.

The numbers agree with the host path to float32 rounding (tested; XLA's log1p and NumPy's
differ in the last bit for a few percent of the values). The values of a chunk
are padded to one of 8 sizes per power of two, and an epoch uses one size (the largest its
chunks need, kept for the next epochs while it suffices), so the function compiles once or
twice per training run; :data:`TRACES` counts its compilations and the tests check it.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

from .._traces import Traces
from ._matrix import BackedCSR

#: A :class:`~autogenome_sc.data.Pipeline` (not imported for typing: ``_pipeline`` imports this module).
Pipeline = Any

#: Compilations of the preparation function, by (preprocessing, scaling, standardised, shape, padded values).
TRACES = Traces()
#: The smallest padded number of stored values per chunk.
MIN_NNZ = 1024


def enabled(setting: str) -> bool:
    """Whether ``data.device_prepare`` (``"auto"``, ``"on"`` or ``"off"``) prepares chunks on the device.

    ``"auto"`` does on GPUs and TPUs, not on the CPU backend: there the host path prepared
    chunks and ran epochs faster (figures in docs/scale.md and docs/benchmarks.md).
    """
    if setting == "on":
        return True
    if setting == "off":
        return False
    if setting != "auto":
        raise ValueError(f"Unknown device_prepare '{setting}'; choose 'auto', 'on' or 'off'.")
    return jax.default_backend() != "cpu"


def supported(pipeline: Pipeline) -> bool:
    """Whether ``pipeline``'s rows can be prepared on the device: a CSR matrix (in memory or on disk), not cached.

    Cached rows are already on the device during training; dense matrices keep the host path.
    """
    X = pipeline.source.X
    return pipeline.cache is None and (isinstance(X, BackedCSR) or (sp.issparse(X) and X.format == "csr"))


def nnz_bucket(n: int) -> int:
    """``n`` rounded up to one of 8 sizes per power of two (at least :data:`MIN_NNZ`): at most 12.5% padding."""
    n = max(int(n), MIN_NNZ)
    step = 1 << max((n - 1).bit_length() - 4, 0)
    return -(-n // step) * step


def row_lengths(pipeline: Pipeline) -> np.ndarray:
    """The number of stored values of every row of the source (from its row pointer, in memory)."""
    return np.diff(np.asarray(pipeline.source.X.indptr, dtype=np.int64))


def csr_rows(pipeline: Pipeline, idx: np.ndarray) -> sp.csr_matrix:
    """The source's rows ``idx`` (any order, repeats allowed) as CSR, never densified."""
    X = pipeline.source.X
    idx = np.asarray(idx, dtype=np.int64)
    if isinstance(X, BackedCSR):  # on disk: read in increasing order, then put the rows in place
        uniq, inverse = np.unique(idx, return_inverse=True)
        return X.take(uniq)[inverse]
    return sp.csr_matrix(X[idx])


class DevicePrep:
    """The device constants of a pipeline (genes' positions, scaling, batch statistics) and its chunks.

    Parameters
    ----------
    pipeline
        A pipeline whose source :func:`supported` accepts.
    """

    def __init__(self, pipeline: Pipeline):
        self.pipeline = pipeline
        n_vars, n_model = pipeline.source.n_vars, pipeline.n_features
        col_map = np.full(n_vars, n_model, np.int32)  # n_model: out of bounds, dropped by the scatter
        al = pipeline.alignment
        query_pos = np.arange(n_vars) if al is None else np.asarray(al.query_pos, np.int64)
        model_pos = np.arange(n_vars) if al is None else np.asarray(al.model_pos, np.int64)
        col_map[query_pos] = model_pos
        consts: dict[str, Any] = {"col_map": col_map}
        scaler = pipeline.scaler
        if scaler is None:
            self.scaling = "finite"  # no scaler: non-finite values become 0, as Pipeline.block does
        elif scaler.kind == "none":
            self.scaling = "none"  # Scaler.transform leaves the rows as they are
        else:
            self.scaling = "clip"
            consts["shift"] = np.asarray(scaler.shift, np.float32)
            consts["scale"] = np.asarray(scaler.scale, np.float32)
            consts["bounds"] = np.asarray([scaler.lo, scaler.hi], np.float32)
        batches = pipeline.batches
        if batches is not None:  # the standardisation of the model's genes (0 where a model gene is missing)
            mean = np.zeros((len(batches.names), n_model), np.float32)
            scale = np.zeros((len(batches.names), n_model), np.float32)
            mean[:, model_pos] = batches.mean[:, query_pos]
            scale[:, model_pos] = batches.scale[:, query_pos]
            consts["batch_mean"], consts["batch_scale"] = mean, scale
        self.consts = jax.device_put(consts)
        self.n_model = n_model

    def chunk_nnz(self, chunks: list[np.ndarray]) -> int:
        """The largest number of stored values among ``chunks`` (each the source rows of one chunk)."""
        lengths = row_lengths(self.pipeline)
        return max((int(lengths[c].sum()) for c in chunks), default=0)

    def chunks(
        self, index_chunks: Iterator[tuple[np.ndarray, np.ndarray]], y: np.ndarray, batch_size: int, nnz_pad: int
    ) -> Iterator[tuple[jax.Array, np.ndarray, np.ndarray]]:
        """Yield ``(xs[K, B, G], ys[K, B], valid[K])`` from ``(idx[K, B], valid[K])``: ``xs`` prepared on the device.

        Runs on the prefetch thread: reading the rows, padding their arrays, the transfer and
        the dispatch of the compiled preparation overlap the training step of the previous chunk.
        """
        pipe = self.pipeline
        for idx, valid in index_chunks:
            k = idx.shape[0]
            n_rows = int(valid.sum()) * batch_size
            sel = idx.reshape(-1)[:n_rows]
            arrays = self.host_arrays(csr_rows(pipe, sel), sel, k * batch_size, nnz_pad)
            xs = _prepare(
                *jax.device_put(arrays),
                self.consts,
                shape=(k, batch_size, self.n_model),
                preprocess=pipe.preprocess,
                scaling=self.scaling,
            )
            yield xs, y[idx], valid

    def block(self, idx: np.ndarray) -> np.ndarray:
        """Rows ``idx`` prepared on the device: what :meth:`Pipeline.block` returns (one compilation per length)."""
        idx = np.asarray(idx, dtype=np.int64)
        need = int(row_lengths(self.pipeline)[idx].sum())
        chunk = (idx[None, :], np.ones(1, dtype=bool))
        ((xs, _, _),) = self.chunks(iter([chunk]), np.zeros(self.pipeline.source.n_obs), len(idx), nnz_bucket(need))
        return np.asarray(xs[0])

    def host_arrays(self, block: sp.csr_matrix, sel: np.ndarray, n_rows: int, nnz_pad: int) -> tuple:
        """``(values, indices, rows, library, batch codes, valid rows)`` of ``block`` padded to fixed shapes.

        ``block`` holds rows ``sel`` of the source; the chunk has ``n_rows`` rows (those after
        ``len(sel)`` are padding: empty) and ``nnz_pad`` stored values (the padding values are 0
        and belong to no row).
        """
        nnz = block.nnz
        if nnz > nnz_pad:
            raise ValueError(f"A chunk holds {nnz} stored values, more than its padded size {nnz_pad}.")
        data = np.asarray(block.data)
        if self.pipeline.preprocess == "log1p" and (data < 0).any():
            raise ValueError("log1p preprocessing was asked for, but the matrix has negative values.")
        values = np.zeros(nnz_pad, np.float32)
        values[:nnz] = data
        indices = np.zeros(nnz_pad, np.int32)
        indices[:nnz] = block.indices
        lengths = np.diff(block.indptr)
        rows = np.full(nnz_pad, n_rows, np.int32)  # n_rows: out of bounds, the padding values are dropped
        rows[:nnz] = np.repeat(np.arange(len(sel), dtype=np.int32), lengths)
        library = np.zeros(n_rows, np.float32)
        if self.pipeline.preprocess == "normalize_log1p":  # each row's sum, over all the source's genes
            full = np.flatnonzero(lengths > 0)
            if full.size:  # a row's entries run from its start to the next non-empty row's start
                library[full] = np.add.reduceat(values[:nnz], block.indptr[:-1][full])
        codes = np.zeros(n_rows, np.int32)
        if self.pipeline.batches is not None:
            codes[: len(sel)] = self.pipeline.batches.codes[sel]
        return values, indices, rows, library, codes, np.int32(len(sel))


@partial(jax.jit, static_argnames=("shape", "preprocess", "scaling"))
def _prepare(
    values: jax.Array,
    indices: jax.Array,
    rows: jax.Array,
    library: jax.Array,
    codes: jax.Array,
    n_valid: jax.Array,
    consts: dict[str, jax.Array],
    *,
    shape: tuple[int, int, int],
    preprocess: str,
    scaling: str,
) -> jax.Array:
    """The dense ``[K, B, G]`` chunk of padded CSR rows: what :meth:`Pipeline.block` gives, on the device."""
    TRACES[(preprocess, scaling, "batch_mean" in consts, shape, values.shape[0])] += 1  # runs only while tracing
    k, b, g = shape
    n_rows = k * b
    v = values
    if preprocess == "normalize_log1p":
        factor = 1e4 / jnp.where(library == 0, 1.0, library)  # a zero row's library is taken as 1
        v = jnp.log1p(v * jnp.take(factor, rows, mode="clip"))
    elif preprocess == "log1p":
        v = jnp.log1p(v)
    elif preprocess != "none":
        raise ValueError(f"Unknown preprocessing '{preprocess}'.")
    col = jnp.take(consts["col_map"], indices, mode="clip")
    x = jnp.zeros((n_rows, g), jnp.float32).at[rows, col].add(v, mode="drop")  # out of bounds: dropped
    if "batch_mean" in consts:
        x = (x - jnp.take(consts["batch_mean"], codes, axis=0)) * jnp.take(consts["batch_scale"], codes, axis=0)
    if scaling == "clip":
        x = (x - consts["shift"]) * consts["scale"]  # inf * 0 (an overflowed constant gene) gives NaN: 0 below
        x = jnp.where(jnp.isnan(x), 0.0, jnp.clip(x, consts["bounds"][0], consts["bounds"][1]))
    elif scaling == "finite":
        x = jnp.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    x = jnp.where((jnp.arange(n_rows) < n_valid)[:, None], x, 0.0)  # the padding steps of a short chunk
    return x.reshape(k, b, g)
