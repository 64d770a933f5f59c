"""``ag.tl.smooth_labels``: a neighbourhood vote on predicted labels over the query's kNN graph."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from .. import _logging as logg
from .._keys import Keys

_SELF_WEIGHT = 1.0 + 1e-6  # a cell's own label counts like its closest neighbour and wins ties


def smooth_labels(
    adata: AnnData,
    *,
    key: str = "ag",
    neighbors_key: str | None = None,
    copy: bool = False,
) -> AnnData | None:
    """Smooth predicted labels by a weighted majority vote over each cell's neighbours.

    Like CellTypist's majority voting, but without over-clustering: every cell takes the
    label with the largest summed weight among itself and its neighbours in the graph of
    ``sc.pp.neighbors`` (edge weights from ``connectivities``; the cell's own label
    counts as much as its closest neighbour and wins ties). ``"Unassigned"`` takes part in
    the vote like any label, so a group of rejected cells stays rejected. One sparse
    matrix product; no loop over cells.

    Parameters
    ----------
    adata
        Annotated data with ``.obs["ag_prediction"]`` (from ``ag.tl.predict`` or
        ``ag.tl.train``) and a neighbour graph from ``sc.pp.neighbors``.
    key
        The ``key_added`` of the prediction call.
    neighbors_key
        The ``key_added`` of ``sc.pp.neighbors``; ``None`` reads ``.obsp["connectivities"]``.
    copy
        Return a copy instead of writing to ``adata``.

    Returns
    -------
    ``None``, or a copy when ``copy=True``, with

    ``.obs["ag_prediction_smoothed"]``
        The smoothed label (categorical, same categories as ``ag_prediction``).
    """
    keys = Keys(key)
    if keys.prediction not in adata.obs:
        raise KeyError(f"Did not find adata.obs['{keys.prediction}']. Run `ag.tl.predict` first.")
    labels = adata.obs[keys.prediction]
    if not isinstance(labels.dtype, pd.CategoricalDtype):
        raise ValueError(f"adata.obs['{keys.prediction}'] holds values, not labels; only class labels can be voted.")
    conn = _connectivities(adata, neighbors_key)
    adata = adata.copy() if copy else adata
    start = logg.info(f"smoothing adata.obs['{keys.prediction}'] over the neighbour graph")
    codes = labels.cat.codes.to_numpy()
    n, k = adata.n_obs, len(labels.cat.categories)
    ok = codes >= 0  # missing labels cast no vote
    onehot = sp.csr_matrix((np.ones(ok.sum()), (np.flatnonzero(ok), codes[ok])), shape=(n, k))
    votes = sp.csr_matrix(conn, dtype=np.float64) @ onehot + _SELF_WEIGHT * onehot
    winner = np.asarray(votes.argmax(axis=1)).ravel()
    has_vote = np.asarray(votes.sum(axis=1)).ravel() > 0
    smoothed = np.where(has_vote, winner, -1)
    adata.obs[keys.smoothed] = pd.Categorical.from_codes(smoothed, categories=labels.cat.categories)
    changed = int((smoothed != codes).sum())
    logg.info("    finished", time=start, deep=f"added '{keys.smoothed}' (adata.obs); {changed} of {n} cells changed")
    return adata if copy else None


def _connectivities(adata: AnnData, neighbors_key: str | None):
    uns_key = "neighbors" if neighbors_key is None else neighbors_key
    if neighbors_key is not None and uns_key not in adata.uns:
        raise KeyError(
            f"Did not find adata.uns['{uns_key}']. Run `sc.pp.neighbors(adata, key_added='{uns_key}')` first."
        )
    obsp_key = adata.uns.get(uns_key, {}).get("connectivities_key", "connectivities")
    if obsp_key not in adata.obsp:
        raise KeyError(f"Did not find adata.obsp['{obsp_key}']. Run `sc.pp.neighbors` first.")
    return adata.obsp[obsp_key]
