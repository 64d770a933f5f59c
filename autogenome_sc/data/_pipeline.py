"""From AnnData rows to model-ready float32 blocks, and minibatch chunks for the trainer."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ._align import GeneAlignment
from ._matrix import MatrixSource, apply_preprocessing, rows_per_chunk
from ._prefetch import prefetch
from ._scale import MinMaxScaler


@dataclass
class Pipeline:
    """Rows -> preprocessing (per cell) -> gene alignment -> per-gene 0-1 scaling."""

    source: MatrixSource
    preprocess: str
    scaler: MinMaxScaler | None = None
    alignment: GeneAlignment | None = None

    @property
    def n_features(self) -> int:
        return self.alignment.n_model if self.alignment is not None else self.source.n_vars

    def block(self, idx: np.ndarray, *, scale: bool = True) -> np.ndarray:
        x = apply_preprocessing(self.source.rows(idx), self.preprocess)
        if self.alignment is not None:
            x = self.alignment.apply(x)
        if scale and self.scaler is not None:
            x = self.scaler.transform(x)
        return x

    def fit_scaler(self, idx: np.ndarray, chunk_mb: float) -> MinMaxScaler:
        per = rows_per_chunk(self.n_features, chunk_mb)
        chunks = (self.block(idx[s : s + per], scale=False) for s in range(0, len(idx), per))
        self.scaler = MinMaxScaler.fit_chunks(chunks)
        return self.scaler

    def eval_batches(self, idx: np.ndarray, batch_size: int, prefetch_depth: int = 2):
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
    """The prepared training problem: pipeline, targets and split."""

    pipeline: Pipeline
    y: np.ndarray
    split: np.ndarray
    task: str
    classes: list[str] | None
    chunk_mb: float = 64.0
    shuffle: str = "auto"  # "cells", "blocks" or "auto" (see DataConfig.shuffle)
    prefetch: int = 2
    idx: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self):
        self.idx = {s: np.flatnonzero(self.split == s) for s in ("train", "val", "test")}

    @property
    def n_out(self) -> int:
        return len(self.classes) if self.task == "classification" else 1

    def batch_size_for(self, requested: int) -> int:
        """The training batch: the requested size, or the whole training split if smaller."""
        return int(min(requested, len(self.idx["train"])))

    def steps_per_chunk(self, batch_size: int) -> tuple[int, int]:
        """(steps per epoch, steps per device chunk): chunks are bounded by ``chunk_mb``."""
        steps = len(self.idx["train"]) // batch_size
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

    def train_chunks(self, batch_size: int, rng: np.random.Generator):
        """Yield ``(xs[K, B, G], ys[K, B], valid[K])`` covering one shuffled epoch.

        Every chunk has the same K, so the compiled epoch step is reused; padding steps are
        marked invalid and leave the state unchanged. The last partial batch is dropped
        (the shuffle changes every epoch). Chunks are prepared ``prefetch`` ahead on a
        background thread; the order, hence the result, is the same without it.
        """
        steps, k = self.steps_per_chunk(batch_size)
        perm = self.epoch_order(rng, k * batch_size)[: steps * batch_size]
        return prefetch(self._chunks(perm, steps, k, batch_size), self.prefetch)

    def _chunks(self, perm: np.ndarray, steps: int, k: int, batch_size: int):
        for s in range(0, steps, k):
            n_steps = min(k, steps - s)
            sel = perm[s * batch_size : (s + n_steps) * batch_size]
            x = self.pipeline.block(sel).reshape(n_steps, batch_size, -1)
            y = self.y[sel].reshape(n_steps, batch_size)
            valid = np.ones(k, dtype=bool)
            if n_steps < k:
                pad = k - n_steps
                x = np.concatenate([x, np.zeros((pad, *x.shape[1:]), x.dtype)])
                y = np.concatenate([y, np.zeros((pad, batch_size), y.dtype)])
                valid[n_steps:] = False
            yield x, y, valid
