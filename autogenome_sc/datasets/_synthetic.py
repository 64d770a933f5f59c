"""Realistic synthetic single-cell counts, generated and written to h5ad chunk by chunk."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData
from anndata.io import read_h5ad, sparse_dataset, write_elem

from .. import _logging as logg

_BLOCK = 1000  # cells per random stream, so the counts do not depend on chunk_size


def synthetic(
    n_obs: int = 10_000,
    n_vars: int = 2000,
    *,
    n_types: int = 8,
    path: str | Path | None = None,
    markers_per_type: int | None = None,
    mean_library_size: float = 1500.0,
    dispersion: float = 4.0,
    effect_size: float = 0.3,
    n_batches: int = 1,
    batch_effect: float = 0.5,
    chunk_size: int = 20_000,
    rng: int = 0,
) -> AnnData:
    """Negative-binomial counts with cell-type gene programs and varying library size.

    Every gene has a baseline expression drawn from a heavy-tailed distribution; every cell
    type up-regulates its own set of marker genes by ``1 + effect_size * LogNormal(0, 0.5)``
    fold (about 1.3x at the default, where a linear model labels most but not all cells
    correctly: docs/benchmarks.md) and slightly down-regulates the others' markers; cell
    types have unequal abundances; library sizes vary log-normally between cells
    (coefficient of variation about 0.5). Counts are gamma-Poisson (negative binomial) with
    per-gene dispersion. The result looks like a 2000-highly-variable-gene scRNA-seq matrix:
    sparse CSR, about three quarters zeros.

    With ``path``, cells are generated and appended to the h5ad file ``chunk_size`` at a
    time, so a million cells never sit in memory at once, and the file is returned opened
    backed (``anndata.read_h5ad(path, backed="r")``).

    Parameters
    ----------
    n_obs
        Number of cells.
    n_vars
        Number of genes.
    n_types
        Number of cell types (``obs["cell_type"]``).
    path
        Write an h5ad file here (overwritten if it exists) and return it opened backed.
        Without it, the data are returned in memory.
    markers_per_type
        Marker genes per cell type; by default 5% of the genes.
    mean_library_size
        Mean total counts per cell.
    dispersion
        Mean inverse dispersion (theta) of the negative binomial; smaller is noisier.
    effect_size
        Strength of the marker programs; larger makes the cell types easier to tell apart.
    n_batches
        Number of batches (``obs["batch"]``, cells drawn at random, so every batch holds every
        type in about the same proportions). Each batch multiplies every gene by its own
        ``LogNormal(0, batch_effect)`` factor and scales its library sizes by
        ``LogNormal(0, batch_effect)``: a run or protocol effect.
    batch_effect
        Strength of the batch effects (``n_batches > 1``).
    chunk_size
        Cells generated (and written) at a time (rounded up to a multiple of 1000).
    rng
        Seed: the same seed gives the same counts, whatever ``chunk_size``.

    Returns
    -------
    AnnData with raw counts in ``X`` (float32 CSR), ``obs["cell_type"]`` (categorical),
    ``obs["library_size"]``, ``obs["batch"]`` (with ``n_batches > 1``) and ``var["marker_of"]`` (the type a gene marks, or ``""``).
    In backed mode (``path`` given) ``X`` stays on disk.
    """
    markers = _check_arguments(
        n_obs, n_vars, n_types, markers_per_type, mean_library_size, dispersion, effect_size, n_batches, batch_effect,
        chunk_size,
    )  # fmt: skip
    g = np.random.default_rng(np.random.SeedSequence(rng).spawn(1)[0])
    program, theta, marker_of = _gene_programs(g, n_vars, n_types, markers, effect_size, dispersion)
    cell_type, library = _cell_types_and_libraries(g, n_types, n_obs, mean_library_size)
    batch, gene_factor, library = _batch_effects(rng, n_vars, n_batches, batch_effect, library)
    counts = _Counts(program, theta, cell_type, batch, gene_factor, library, rng, chunk_size)
    obs, var = _annotations(n_types, n_batches, cell_type, library, batch, marker_of)
    return AnnData(X=counts.matrix(), obs=obs, var=var) if path is None else _write_backed(Path(path), obs, var, counts)


def _check_arguments(
    n_obs, n_vars, n_types, markers_per_type, mean_library_size, dispersion, effect_size, n_batches, batch_effect,
    chunk_size,
) -> int:  # fmt: skip
    """Every argument of :func:`synthetic`, one sentence each; the number of marker genes per type."""
    if n_obs < 1 or n_vars < 1:
        raise ValueError(f"n_obs and n_vars must be positive, got {n_obs} and {n_vars}.")
    if not 1 <= n_types <= n_obs:
        raise ValueError(f"n_types must be between 1 and n_obs ({n_obs}), got {n_types}.")
    markers = max(1, n_vars // 20) if markers_per_type is None else int(markers_per_type)
    if markers * n_types > n_vars:
        raise ValueError(f"{n_types} types x {markers} markers need more than the {n_vars} genes.")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}.")
    for name, value in (("mean_library_size", mean_library_size), ("dispersion", dispersion)):
        if not value > 0:
            raise ValueError(f"{name} must be positive, got {value}.")
    if not effect_size >= 0:
        raise ValueError(f"effect_size must be 0 or more, got {effect_size}.")
    if isinstance(n_batches, bool) or not isinstance(n_batches, int | np.integer) or not 1 <= n_batches <= n_obs:
        raise ValueError(f"n_batches must be an integer between 1 and n_obs ({n_obs}), got {n_batches!r}.")
    if not batch_effect >= 0:
        raise ValueError(f"batch_effect must be 0 or more, got {batch_effect}.")
    return markers


def _type_names(n_types: int) -> list[str]:
    return [f"type_{t}" for t in range(n_types)]


def _gene_programs(
    g: np.random.Generator, n_vars: int, n_types: int, markers: int, effect_size: float, dispersion: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(expression proportions per type, per-gene inverse dispersion, the type each gene marks or "")``.

    Heavy-tailed baseline proportions; each type's marker block up, the other types' markers down.
    """
    base = g.lognormal(0.0, 1.6, n_vars)
    genes = g.permutation(n_vars)[: markers * n_types].reshape(n_types, markers)
    program = np.ones((n_types, n_vars))
    marker_of = np.full(n_vars, "", dtype=object)
    types = _type_names(n_types)
    for t in range(n_types):
        program[:, genes[t]] *= 0.7
        program[t, genes[t]] = 1.0 + effect_size * g.lognormal(0.0, 0.5, markers)
        marker_of[genes[t]] = types[t]
    program *= base
    program /= program.sum(axis=1, keepdims=True)  # per type, expression proportions
    theta = dispersion * g.lognormal(0.0, 0.5, n_vars)
    return program, theta, marker_of


def _cell_types_and_libraries(
    g: np.random.Generator, n_types: int, n_obs: int, mean_library_size: float
) -> tuple[np.ndarray, np.ndarray]:
    """Each cell's type (unequal abundances) and library size (log-normal)."""
    abundance = g.dirichlet(np.full(n_types, 2.0))
    cell_type = g.choice(n_types, size=n_obs, p=abundance)
    library = mean_library_size * g.lognormal(-0.125, 0.5, n_obs)
    return cell_type, library


def _batch_effects(
    rng: int, n_vars: int, n_batches: int, batch_effect: float, library: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(each cell's batch, each batch's gene factors, the library sizes scaled by batch)``.

    Drawn from their own stream: the cells' types and counts stay those of ``n_batches=1``.
    """
    n_obs = len(library)
    if n_batches == 1:
        return np.zeros(n_obs, np.int64), np.ones((1, n_vars)), library
    bgen = np.random.default_rng([rng, 6007])
    batch = bgen.integers(0, n_batches, n_obs)
    gene_factor = bgen.lognormal(0.0, batch_effect, (n_batches, n_vars))
    return batch, gene_factor, library * bgen.lognormal(0.0, batch_effect, n_batches)[batch]


def _annotations(
    n_types: int, n_batches: int, cell_type: np.ndarray, library: np.ndarray, batch: np.ndarray, marker_of: np.ndarray
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``obs`` (cell type, library size, batch) and ``var`` (the type a gene marks)."""
    n_obs, n_vars = len(cell_type), len(marker_of)
    obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical.from_codes(cell_type, categories=_type_names(n_types)),
            "library_size": library.astype(np.float32),
        },
        index=pd.Index([f"cell_{i}" for i in range(n_obs)]),
    )
    if n_batches > 1:
        obs["batch"] = pd.Categorical.from_codes(batch, categories=[f"batch_{b}" for b in range(n_batches)])
    var = pd.DataFrame({"marker_of": marker_of.astype(str)}, index=pd.Index([f"gene_{j}" for j in range(n_vars)]))
    return obs, var


@dataclass
class _Counts:
    """Gamma-Poisson counts, generated ``_BLOCK`` cells at a time, each block from its own random stream."""

    program: np.ndarray  # types x genes expression proportions
    theta: np.ndarray  # per-gene inverse dispersion
    cell_type: np.ndarray
    batch: np.ndarray
    gene_factor: np.ndarray  # batches x genes
    library: np.ndarray
    rng: int
    chunk_size: int

    def starts(self) -> range:
        """The first cell of every chunk: ``chunk_size`` rounded up to a multiple of ``_BLOCK``."""
        return range(0, len(self.cell_type), -(-self.chunk_size // _BLOCK) * _BLOCK)

    def block(self, start: int) -> sp.csr_matrix:
        """Cells ``[start, start + _BLOCK)``, from their own random stream."""
        stop = min(start + _BLOCK, len(self.cell_type))
        bg = np.random.default_rng([self.rng, start // _BLOCK, 7919])
        mu = self.program[self.cell_type[start:stop]] * self.gene_factor[self.batch[start:stop]]
        mu = mu * self.library[start:stop, None]
        return sp.csr_matrix(bg.poisson(bg.gamma(self.theta, mu / self.theta)).astype(np.float32))

    def chunk(self, start: int) -> sp.csr_matrix:
        """The cells of the chunk that begins at ``start``."""
        stop = min(start + self.starts().step, len(self.cell_type))
        return sp.vstack([self.block(b) for b in range(start, stop, _BLOCK)], format="csr")

    def matrix(self) -> sp.csr_matrix:
        """All cells, in memory."""
        return sp.vstack([self.chunk(s) for s in self.starts()], format="csr")


def _write_backed(path: Path, obs: pd.DataFrame, var: pd.DataFrame, counts: _Counts) -> AnnData:
    """``obs`` and ``var`` written first, then ``X`` appended chunk by chunk; the file opened backed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    AnnData(obs=obs, var=var).write_h5ad(path)  # obs/var first, X appended by chunks
    with h5py.File(path, "a") as f:
        for s in logg.progress(counts.starts(), desc="writing cells"):
            part = counts.chunk(s)
            if s == 0:
                write_elem(f, "X", part)  # resizable: anndata sets maxshape=(None,)
                X = sparse_dataset(f["X"])
            else:
                X.append(part)
    return read_h5ad(path, backed="r")
