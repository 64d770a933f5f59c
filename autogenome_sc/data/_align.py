"""Align a query's genes to a model's genes by name."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .._logging import warn


@dataclass
class GeneAlignment:
    """Where each model gene is found in the query (-1: missing, padded with zeros)."""

    query_pos: np.ndarray  # positions in the query of the genes found
    model_pos: np.ndarray  # their positions in the model
    n_model: int
    identity: bool

    @property
    def fraction_missing(self) -> float:
        return 1.0 - len(self.model_pos) / self.n_model

    def apply(self, block: np.ndarray) -> np.ndarray:
        if self.identity:
            return block
        out = np.zeros((block.shape[0], self.n_model), dtype=block.dtype)
        out[:, self.model_pos] = block[:, self.query_pos]
        return out


def align_genes(query_names: pd.Index, model_names: pd.Index, min_overlap: float) -> GeneAlignment:
    """Match genes by name: reorder, pad missing with zeros, warn or refuse by overlap."""
    model_names = pd.Index(model_names)
    if len(query_names) == len(model_names) and (query_names == model_names).all():
        idx = np.arange(len(model_names))
        return GeneAlignment(idx, idx, len(model_names), identity=True)
    pos = pd.Index(query_names).get_indexer(model_names)
    found = pos >= 0
    n_found = int(found.sum())
    frac = n_found / len(model_names)
    if frac < min_overlap:
        raise ValueError(
            f"The query shares only {n_found} of the model's {len(model_names)} genes ({frac:.0%}); at least "
            f"{min_overlap:.0%} are needed. Check that both use the same gene identifiers (symbols vs Ensembl IDs)."
        )
    if n_found < len(model_names):
        warn(
            f"{len(model_names) - n_found} of the model's {len(model_names)} genes ({1 - frac:.1%}) are missing "
            "from the query and were set to zero.",
        )
    return GeneAlignment(pos[found], np.flatnonzero(found), len(model_names), identity=False)
