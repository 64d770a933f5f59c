"""From AnnData rows to model-ready float32 blocks, and minibatch chunks for the trainer."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field

import jax
import numpy as np
import pandas as pd

from ._align import GeneAlignment
from ._batches import BatchStandardizer
from ._device import DevicePrep, enabled, nnz_bucket, supported
from ._matrix import MatrixSource, apply_preprocessing, rows_per_chunk
from ._prefetch import prefetch
from ._scale import GeneStats, Scaler

#: Problems whose preprocessed matrix is at most this many MB are kept in memory for training.
CACHE_MB = 256


@dataclass
class Pipeline:
    """Rows -> preprocessing (per cell) -> per-batch standardisation -> genes -> per-gene scaling.

    The per-batch standardisation is there with a ``batch_key``; the genes are an alignment to
    a model's genes or a selection; the scaling is bounded.
    """

    source: MatrixSource
    preprocess: str
    scaler: Scaler | None = None
    alignment: GeneAlignment | None = None
    cache: np.ndarray | None = None  # what block() returns for every row, when it is small (training only)
    batches: BatchStandardizer | None = None

    @property
    def n_features(self) -> int:
        return self.alignment.n_model if self.alignment is not None else self.source.n_vars

    @property
    def var_names(self) -> pd.Index:
        """The genes the model reads, in order (a training pipeline's selection of the source's genes)."""
        if self.alignment is None or self.alignment.identity:
            return self.source.var_names
        return self.source.var_names[self.alignment.query_pos]

    def block(self, idx: np.ndarray, *, scale: bool = True) -> np.ndarray:
        if self.cache is not None and (scale or self.scaler is None):
            return self.cache[np.asarray(idx, dtype=np.int64)]
        x = apply_preprocessing(self.source.rows(idx), self.preprocess)
        if self.batches is not None:
            x = self.batches.apply(x, idx)
        if self.alignment is not None:
            x = self.alignment.apply(x)
        if scale and self.scaler is not None:
            x = self.scaler.transform(x)
        elif not np.isfinite(x).all():  # an overflow in preprocessing: nothing non-finite reaches a network
            np.nan_to_num(x, copy=False, nan=0.0, posinf=0.0, neginf=0.0)
        return x

    def fit_stats(self, idx: np.ndarray, chunk_mb: float, y: np.ndarray | None = None, n_classes: int = 0) -> GeneStats:
        """Per-gene statistics of the unscaled rows ``idx``, in one streaming pass (with class labels ``y[idx]``)."""
        per = rows_per_chunk(self.n_features, chunk_mb)
        starts = range(0, len(idx), per)
        chunks = (self.block(idx[s : s + per], scale=False) for s in starts)
        labels = None if y is None else (y[idx[s : s + per]] for s in starts)
        return GeneStats.fit_chunks(chunks, labels, n_classes)

    def fit_scaler(self, idx: np.ndarray, chunk_mb: float, how: str = "minmax") -> Scaler:
        self.scaler = self.fit_stats(idx, chunk_mb).scaler(how)
        return self.scaler

    def eval_batches(
        self, idx: np.ndarray, batch_size: int, prefetch_depth: int = 2
    ) -> Iterator[tuple[np.ndarray, int]]:
        """Yield ``(x, n_valid)``: fixed-shape batches, the last padded with zeros, prepared ahead."""
        return prefetch(self._eval_batches(idx, batch_size), prefetch_depth)

    def _eval_batches(self, idx: np.ndarray, batch_size: int):
        for s in range(0, len(idx), batch_size):
            sel = idx[s : s + batch_size]
            x = self.block(sel)
            if len(sel) < batch_size:
                x = np.concatenate([x, np.zeros((batch_size - len(sel), x.shape[1]), x.dtype)])
            yield x, len(sel)


@dataclass
class TrainData:
    """The prepared training problem: pipeline, targets and split.

    ``inputs`` is the (scaling, number of genes) the pipeline applies; :meth:`with_inputs`
    gives the same problem with another choice (statistics fitted on the training split, once),
    and :meth:`cv_folds` the problems of a k-fold cross-validation on train + validation.
    """

    pipeline: Pipeline
    y: np.ndarray
    split: np.ndarray
    task: str
    classes: list[str] | None
    chunk_mb: float = 64.0
    shuffle: str = "auto"  # "cells", "blocks" or "auto" (see DataConfig.shuffle)
    prefetch: int = 2
    device_prepare: str = "auto"  # "auto", "on" or "off" (see DataConfig.device_prepare)
    inputs: tuple[str, int | None] = ("none", None)
    idx: dict[str, np.ndarray] = field(default_factory=dict)
    _base: TrainData | None = field(default=None, repr=False)
    _variants: dict = field(default_factory=dict, repr=False)
    _stats: GeneStats | None = field(default=None, repr=False)
    _nnz_pad: int = field(default=0, repr=False)  # the padded stored values of a chunk prepared on the device

    def __post_init__(self):
        self.idx = {s: np.flatnonzero(self.split == s) for s in ("train", "val", "test")}

    @property
    def n_out(self) -> int:
        if self.task == "classification":
            assert self.classes is not None  # classification data always has its classes
            return len(self.classes)
        return 1

    @property
    def base(self) -> TrainData:
        """The same problem without scaling or gene selection (the rows as preprocessed)."""
        return self if self._base is None else self._base

    def gene_stats(self) -> GeneStats:
        """Statistics of the preprocessed training rows (computed once)."""
        base = self.base
        base.cache_rows()
        if base._stats is None:
            labels = base.y if base.task == "classification" else None
            base._stats = base.pipeline.fit_stats(base.idx["train"], base.chunk_mb, labels, base.n_out)
        return base._stats

    def cache_rows(self) -> bool:
        """Keep every preprocessed row in memory when the matrix is small (at most ``CACHE_MB``).

        Small problems are then read from memory by every trial, fold and epoch instead of being
        read and preprocessed again each time; the cache is shared by the folds of a cross-validation.
        """
        base = self.base
        pipe = base.pipeline
        if pipe.cache is None and not pipe.source.backed:
            n_obs, n_vars = pipe.source.n_obs, pipe.n_features
            if n_obs * n_vars * 4 <= CACHE_MB * 2**20:
                per = rows_per_chunk(n_vars, base.chunk_mb)
                out = np.empty((n_obs, n_vars), np.float32)
                for s in range(0, n_obs, per):
                    out[s : s + per] = pipe.block(np.arange(s, min(s + per, n_obs)))
                pipe.cache = out
        return pipe.cache is not None

    def with_inputs(self, scaling: str, n_genes: int | None = None, genes_by: str = "variance") -> TrainData:
        """The same problem with per-gene ``scaling`` and ``n_genes`` genes (``None``: all).

        The genes kept are the most variable ones, or (``genes_by="f_test"``, classification)
        those whose ANOVA F statistic against the classes is largest. Both scaling and genes
        are fitted on the training split only; the result is cached, so every trial of a
        search that makes the same choice reuses it.
        """
        base = self.base
        n_vars = base.pipeline.n_features
        if n_genes is not None and int(n_genes) >= n_vars:
            n_genes = None
        if n_genes is None:
            genes_by = "variance"  # every gene: the ranking does not matter
        key = (scaling, None if n_genes is None else int(n_genes), genes_by)
        if key[:2] == base.inputs and base.pipeline.scaler is None:
            return base
        if key not in base._variants:
            stats = self.gene_stats()
            alignment = None
            if key[1] is not None:
                genes = stats.top_genes(key[1], genes_by)
                alignment = GeneAlignment(genes, np.arange(len(genes)), len(genes), identity=False)
                stats = stats.subset(genes)
            scaler = stats.scaler(scaling)
            pipe = Pipeline(
                base.pipeline.source, base.pipeline.preprocess, scaler, alignment, batches=base.pipeline.batches
            )
            if base.pipeline.cache is not None:  # the variant's rows, scaled once
                rows = base.pipeline.cache if alignment is None else base.pipeline.cache[:, alignment.query_pos]
                pipe.cache = scaler.transform(np.array(rows, dtype=np.float32, copy=True))
            base._variants[key] = dataclasses.replace(
                base, pipeline=pipe, inputs=key[:2], _base=base, _variants={}, _stats=None
            )
        return base._variants[key]

    def cv_folds(self, k: int, seed: int) -> list[TrainData]:
        """``k`` problems whose training and validation splits are the folds of train + validation.

        Folds are stratified by class (classification) and drawn from ``seed``; the test split
        is the same in every fold. Each fold is a base problem: :meth:`with_inputs` fits its
        scaling on that fold's training cells.
        """
        base = self.base
        pool = np.concatenate([base.idx["train"], base.idx["val"]])
        pool.sort()
        rng = np.random.default_rng(seed)
        fold_of = np.empty(len(pool), np.int64)
        if base.task == "classification":
            for c in np.unique(base.y[pool]):
                members = np.flatnonzero(base.y[pool] == c)
                perm = rng.permutation(members)
                offset = rng.integers(k)  # small classes do not always land in the first folds
                fold_of[perm] = (np.arange(len(perm)) + offset) % k
        else:
            fold_of[rng.permutation(len(pool))] = np.arange(len(pool)) % k
        folds = []
        for f in range(k):
            split = base.split.copy()
            split[pool] = np.where(fold_of == f, "val", "train")
            folds.append(base._with_split(split))
        return folds

    def merged(self) -> TrainData:
        """The base problem with train + validation as its training split (no validation cells)."""
        base = self.base
        return base._with_split(np.where(base.split == "val", "train", base.split))

    def _with_split(self, split: np.ndarray) -> TrainData:
        self.cache_rows()
        pipe = dataclasses.replace(self.pipeline)  # shares the cached rows, if any
        return dataclasses.replace(self, pipeline=pipe, split=split, _base=None, _variants={}, _stats=None)

    def batch_size_for(self, requested: int) -> int:
        """The training batch: the requested size, or the whole training split if smaller."""
        return int(max(1, min(requested, len(self.idx["train"]))))

    def steps_per_chunk(self, batch_size: int, min_steps: int = 1) -> tuple[int, int]:
        """(steps per epoch, steps per device chunk): chunks are bounded by ``chunk_mb``.

        An epoch is at least ``min_steps`` minibatches: on a small training split it makes
        several passes over the cells (each shuffled anew). So problems of similar small
        sizes (the folds of a cross-validation, the trials before it) share the epoch's shape.
        """
        per_pass = max(1, len(self.idx["train"]) // batch_size)
        steps = max(per_pass, int(min_steps))
        max_steps = max(1, rows_per_chunk(self.pipeline.n_features, self.chunk_mb) // batch_size)
        n_chunks = -(-steps // max_steps)
        return steps, -(-steps // n_chunks)

    def epoch_order(self, rng: np.random.Generator, chunk_rows: int) -> np.ndarray:
        """The training cells in this epoch's order (see ``DataConfig.shuffle``).

        'blocks' cuts the (sorted) training cells into runs of neighbours, at least 256 runs
        per chunk of ``chunk_rows``, shuffles the runs, then shuffles cells within each chunk:
        a chunk is then read from disk in about 256 contiguous slices instead of one read per cell.
        """
        train = self.idx["train"]
        how = self.shuffle
        if how == "auto":
            how = "cells" if len(train) <= chunk_rows else "blocks"
        if how == "cells":
            return rng.permutation(train)
        run = max(1, chunk_rows // 256)
        n_runs = -(-len(train) // run)
        pos = (rng.permutation(n_runs)[:, None] * run + np.arange(run)).ravel()
        order = train[pos[pos < len(train)]]
        for s in range(0, len(order), chunk_rows):  # one shuffle per chunk, not per cell
            order[s : s + chunk_rows] = rng.permutation(order[s : s + chunk_rows])
        return order

    def _epoch_perm(self, batch_size: int, rng: np.random.Generator, min_steps: int) -> tuple[np.ndarray, int, int]:
        steps, k = self.steps_per_chunk(batch_size, min_steps)
        per_pass = max(1, len(self.idx["train"]) // batch_size)
        if steps == per_pass:
            perm = self.epoch_order(rng, k * batch_size)[: steps * batch_size]
        else:
            n_pass = -(-steps // per_pass)
            passes = [self.epoch_order(rng, k * batch_size)[: per_pass * batch_size] for _ in range(n_pass)]
            perm = np.concatenate(passes)[: steps * batch_size]
        return perm, steps, k

    def train_chunks(
        self, batch_size: int, rng: np.random.Generator, min_steps: int = 1
    ) -> Iterator[tuple[np.ndarray | jax.Array, np.ndarray, np.ndarray]]:
        """Yield ``(xs[K, B, G], ys[K, B], valid[K])`` covering one shuffled epoch.

        Every chunk has the same K, so the compiled epoch step is reused; padding steps are
        marked invalid and leave the state unchanged. The last partial batch of each pass is
        dropped (the shuffle changes every pass). Chunks are prepared ``prefetch`` ahead on a
        background thread; the order, hence the result, is the same without it. When
        :meth:`prepares_on_device`, ``xs`` is a device array densified, preprocessed and
        scaled there from the chunk's CSR arrays (see :mod:`autogenome_sc.data._device`);
        its values agree with the host's to float32 rounding.
        """
        perm, steps, k = self._epoch_perm(batch_size, rng, min_steps)
        if self.prepares_on_device():
            prep = DevicePrep(self.pipeline)
            rows = [idx[: int(valid.sum())].ravel() for idx, valid in _index_chunks(perm, steps, k, batch_size)]
            need = prep.chunk_nnz(rows)
            if need < 2**31 - 1:  # int32 positions on the device
                if not need <= self._nnz_pad < 2 * need:  # else the size of earlier epochs: no new compilation
                    self._nnz_pad = nnz_bucket(need)
                chunks = prep.chunks(_index_chunks(perm, steps, k, batch_size), self.y, batch_size, self._nnz_pad)
                return prefetch(chunks, self.prefetch)
        return prefetch(self._chunks(perm, steps, k, batch_size), self.prefetch)

    def prepares_on_device(self) -> bool:
        """Whether :meth:`train_chunks` prepares the chunks on the device (``device_prepare`` and a CSR source).

        Dense matrices and rows cached in memory keep the host path.
        """
        return enabled(self.device_prepare) and supported(self.pipeline)

    def train_index_chunks(
        self, batch_size: int, rng: np.random.Generator, min_steps: int = 1
    ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Like :meth:`train_chunks`, with the rows' positions ``idx[K, B]`` in place of the rows.

        For problems whose rows are cached (:meth:`cache_rows`): the trainer keeps the cached
        matrix on the device and gathers each minibatch there. The order is the same.
        """
        perm, steps, k = self._epoch_perm(batch_size, rng, min_steps)
        for idx, valid in _index_chunks(perm, steps, k, batch_size):
            yield idx.astype(np.int32), self.y[idx], valid

    def _chunks(self, perm: np.ndarray, steps: int, k: int, batch_size: int):
        for idx, valid in _index_chunks(perm, steps, k, batch_size):
            n_steps = int(valid.sum())
            sel = idx[:n_steps].ravel()
            x = self.pipeline.block(sel).reshape(n_steps, batch_size, -1)
            if n_steps < k:
                x = np.concatenate([x, np.zeros((k - n_steps, *x.shape[1:]), x.dtype)])
            yield x, self.y[idx], valid


def _index_chunks(perm: np.ndarray, steps: int, k: int, batch_size: int):
    """``(idx[K, B], valid[K])`` per chunk of an epoch; padding steps repeat row ``perm[0]`` and are invalid."""
    for s in range(0, steps, k):
        n_steps = min(k, steps - s)
        idx = np.full((k, batch_size), perm[0], dtype=np.int64)
        idx[:n_steps] = perm[s * batch_size : (s + n_steps) * batch_size].reshape(n_steps, batch_size)
        valid = np.zeros(k, dtype=bool)
        valid[:n_steps] = True
        yield idx, valid
