"""Per-gene 0-1 scaling (the paper's), fitted in one streaming pass over the training rows."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class MinMaxScaler:
    """x -> (x - min) / (max - min) per gene; constant genes map to 0."""

    min_: np.ndarray
    scale_: np.ndarray  # 1 / (max - min), 0 for constant genes

    @classmethod
    def fit_chunks(cls, chunks) -> MinMaxScaler:
        lo = hi = None
        for block in chunks:
            bmin, bmax = block.min(axis=0), block.max(axis=0)
            lo = bmin if lo is None else np.minimum(lo, bmin)
            hi = bmax if hi is None else np.maximum(hi, bmax)
        rng = (hi - lo).astype(np.float64)
        scale = np.divide(1.0, rng, out=np.zeros_like(rng), where=rng > 0)
        return cls(min_=lo.astype(np.float32), scale_=scale.astype(np.float32))

    @classmethod
    def identity(cls, n_vars: int) -> MinMaxScaler:
        return cls(min_=np.zeros(n_vars, np.float32), scale_=np.ones(n_vars, np.float32))

    def transform(self, block: np.ndarray) -> np.ndarray:
        block -= self.min_
        block *= self.scale_
        return block
