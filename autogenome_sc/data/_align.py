"""Align a query's genes to a model's genes by name (or Ensembl ID without its version)."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .._logging import warn

#: An Ensembl ID with a version suffix (``ENSG00000141510.17``, ``ENSMUSG00000059552.8``): the ID is group 1.
_ENSEMBL_VERSION = re.compile(r"^(ENS[A-Z]*[GTPER]\d{6,})\.\d+$")


def strip_version(names: pd.Index) -> pd.Index:
    """``names`` with Ensembl version suffixes removed (``ENSG00000141510.17`` -> ``ENSG00000141510``); others as they are."""
    return pd.Index([_unversioned(str(n)) for n in names], dtype=object)


def _unversioned(name: str) -> str:
    m = _ENSEMBL_VERSION.match(name)
    return m.group(1) if m else name


@dataclass
class GeneAlignment:
    """Where each model gene is found in the query (-1: missing, padded with zeros)."""

    query_pos: np.ndarray  # positions in the query of the genes found
    model_pos: np.ndarray  # their positions in the model
    n_model: int
    identity: bool
    n_unversioned: int = 0  # of the genes found, those matched only once Ensembl version suffixes were removed

    @property
    def fraction_missing(self) -> float:
        return 1.0 - len(self.model_pos) / self.n_model

    @property
    def n_found(self) -> int:
        return len(self.model_pos)

    def report(self, matched_by: str) -> dict[str, object]:
        """What ``uns[key]["prediction"]["genes"]`` records: the overlap and how it was matched."""
        return {
            "matched_by": matched_by,
            "n_model": int(self.n_model),
            "n_found": int(self.n_found),
            "n_exact": int(self.n_found - self.n_unversioned),
            "n_unversioned": int(self.n_unversioned),
            "n_missing": int(self.n_model - self.n_found),
        }

    def describe(self, matched_by: str) -> str:
        """The one log line of :meth:`report`."""
        how = f" ({self.n_unversioned} without their Ensembl version suffix)" if self.n_unversioned else ""
        missing = self.n_model - self.n_found
        rest = f", {missing} missing set to zero" if missing else ""
        return f"    genes: {self.n_found} of the model's {self.n_model} found by {matched_by}{how}{rest}"

    def apply(self, block: np.ndarray) -> np.ndarray:
        if self.identity:
            return block
        out = np.zeros((block.shape[0], self.n_model), dtype=block.dtype)
        out[:, self.model_pos] = block[:, self.query_pos]
        return out


def match_genes(query_names: pd.Index, model_names: pd.Index) -> tuple[np.ndarray, int]:
    """The position in ``query_names`` of each of ``model_names`` (-1: not there) and how many matched unversioned.

    Names are matched exactly first; the rest by their Ensembl ID without the version suffix, on
    either side (``ENSG00000141510.17`` finds ``ENSG00000141510`` and ``ENSG00000141510.16``). An
    unversioned ID that two query genes share matches neither.
    """
    query_names, model_names = pd.Index(query_names), pd.Index(model_names)
    pos = query_names.get_indexer(model_names)
    missing = pos < 0
    if not missing.any():
        return pos, 0
    q_ids = strip_version(query_names)
    unique = ~q_ids.duplicated(keep=False)
    lookup = pd.Index(q_ids[unique])
    q_pos = np.flatnonzero(unique)
    taken = np.zeros(len(query_names), bool)
    taken[pos[~missing]] = True
    hit = lookup.get_indexer(strip_version(model_names[missing]))
    found = np.full(len(hit), -1)
    found[hit >= 0] = q_pos[hit[hit >= 0]]
    found[(found >= 0) & taken[np.maximum(found, 0)]] = -1  # a query gene already matched exactly
    _, first = np.unique(found, return_index=True)  # each query gene matches one model gene at most
    dup = np.ones(len(found), bool)
    dup[first] = False
    found[dup] = -1
    pos = pos.copy()
    pos[missing] = found
    return pos, int((found >= 0).sum())


def align_genes(query_names: pd.Index, model_names: pd.Index, min_overlap: float) -> GeneAlignment:
    """Match genes by name (then by Ensembl ID without version): reorder, pad missing with zeros, refuse by overlap."""
    model_names = pd.Index(model_names)
    if len(query_names) == len(model_names) and (query_names == model_names).all():
        idx = np.arange(len(model_names))
        return GeneAlignment(idx, idx, len(model_names), identity=True)
    pos, n_unversioned = match_genes(query_names, model_names)
    found = pos >= 0
    n_found = int(found.sum())
    frac = n_found / len(model_names)
    if frac < min_overlap:
        raise ValueError(
            f"The query shares only {n_found} of the model's {len(model_names)} genes ({frac:.0%}); at least "
            f"{min_overlap:.0%} are needed. Check that both use the same gene identifiers (symbols vs Ensembl IDs; "
            "pass gene_symbols= to match by a column of .var)."
        )
    if n_found < len(model_names):
        warn(
            f"{len(model_names) - n_found} of the model's {len(model_names)} genes ({1 - frac:.1%}) are missing "
            "from the query and were set to zero.",
        )
    return GeneAlignment(
        pos[found], np.flatnonzero(found), len(model_names), identity=False, n_unversioned=n_unversioned
    )
