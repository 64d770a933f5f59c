"""``ag.tl.smooth_labels``: a vote on predicted labels, over the query's kNN graph or within its clusters."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from .. import _logging as logg
from .._checks import writable
from .._keys import Keys

_SELF_WEIGHT = 1.0 + 1e-6  # a cell's own label counts like its closest neighbour and wins ties


def smooth_labels(
    adata: AnnData,
    *,
    key: str = "ag",
    groupby: str | None = None,
    neighbors_key: str | None = None,
    copy: bool = False,
) -> AnnData | None:
    """Smooth predicted labels by a majority vote over each cell's neighbours, or within its cluster.

    Without ``groupby``, like CellTypist's majority voting but without over-clustering: every
    cell takes the label with the largest summed weight among itself and its neighbours in
    the graph of ``sc.pp.neighbors`` (edge weights from ``connectivities``; the cell's own
    label counts as much as its closest neighbour and wins ties). With ``groupby`` (a
    column of clusters the user already has, e.g. ``"leiden"``), every cell of a cluster
    takes the cluster's most frequent predicted label, as CellTypist's majority voting does
    over its own over-clustering (ties go to the label listed first). ``"Unassigned"`` takes
    part in the vote like any label, so a group of rejected cells stays rejected. A sparse
    matrix product over the graph, or one table of counts per cluster; no loop over cells or clusters.

    Parameters
    ----------
    adata
        Annotated data with ``.obs["ag_prediction"]`` (from ``ag.tl.predict`` or
        ``ag.tl.train``) and a neighbour graph from ``sc.pp.neighbors``.
    key
        The ``key_added`` of the prediction call.
    groupby
        A categorical column of ``adata.obs`` (clusters) to vote within; ``None`` votes over
        the neighbour graph. Cells without a group keep their own label.
    neighbors_key
        The ``key_added`` of ``sc.pp.neighbors``; ``None`` reads ``.obsp["connectivities"]``
        (not with ``groupby``).
    copy
        Return a copy instead of writing to ``adata``.

    Returns
    -------
    ``None``, or a copy when ``copy=True``, with

    ``.obs["ag_prediction_smoothed"]``
        The smoothed label (categorical, same categories as ``ag_prediction``).
    ``.obs["ag_vote_fraction"]``
        The share of the vote the winning label got: of the cluster's cells with
        ``groupby``, of the summed weights otherwise (1.0: unanimous).
    """
    keys = Keys(key)
    labels = _predicted_labels(adata, keys)
    if groupby is not None and neighbors_key is not None:
        raise ValueError("Pass groupby (vote within clusters) or neighbors_key (vote over a graph), not both.")
    groups = _groups(adata, groupby) if groupby is not None else None
    conn = _connectivities(adata, neighbors_key) if groups is None else None
    adata = writable(adata, copy)
    where = f"within adata.obs['{groupby}']" if groupby is not None else "over the neighbour graph"
    start = logg.info(f"smoothing adata.obs['{keys.prediction}'] {where}")
    codes = labels.cat.codes.to_numpy()
    k = len(labels.cat.categories)
    winner, top, total = _graph_vote(codes, k, conn) if groups is None else _group_vote(codes, k, groups)
    has_vote = total > 0
    smoothed = np.where(has_vote, winner, -1)
    adata.obs[keys.smoothed] = pd.Categorical.from_codes(smoothed, categories=labels.cat.categories)
    adata.obs[keys.vote_fraction] = np.where(has_vote, top / np.where(has_vote, total, 1.0), np.nan).astype(np.float32)
    changed = int((smoothed != codes).sum())
    logg.info(
        "    finished",
        time=start,
        deep=f"added '{keys.smoothed}', '{keys.vote_fraction}' (adata.obs); {changed} of {adata.n_obs} cells changed",
    )
    return adata if copy else None


def _predicted_labels(adata: AnnData, keys: Keys) -> pd.Series:
    """``obs["<key>_prediction"]``, checked to hold class labels."""
    if keys.prediction not in adata.obs:
        raise KeyError(f"Did not find adata.obs['{keys.prediction}']. Run `ag.tl.predict` first.")
    labels = adata.obs[keys.prediction]
    if not isinstance(labels.dtype, pd.CategoricalDtype):
        raise ValueError(f"adata.obs['{keys.prediction}'] holds values, not labels; only class labels can be voted.")
    return labels


def _graph_vote(codes: np.ndarray, k: int, conn) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(winning label, its votes, all votes)`` per cell: its own label and its neighbours', by edge weight."""
    n = len(codes)
    ok = codes >= 0  # missing labels cast no vote
    onehot = sp.csr_matrix((np.ones(ok.sum()), (np.flatnonzero(ok), codes[ok])), shape=(n, k))
    votes = sp.csr_matrix(sp.csr_matrix(conn, dtype=np.float64) @ onehot + _SELF_WEIGHT * onehot)
    winner = np.asarray(votes.argmax(axis=1)).ravel()
    total = np.asarray(votes.sum(axis=1)).ravel()
    top = votes.max(axis=1).toarray().ravel()
    return winner, top, total


def _group_vote(codes: np.ndarray, k: int, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(winning label, its votes, all votes)`` per cell: the labels of its group; a cell without one keeps its own.

    A groups x labels table of counts (one bincount), then each cell reads its group's row.
    """
    ok = codes >= 0  # missing labels cast no vote
    member = groups >= 0
    m = int(groups.max()) + 1 if member.any() else 0
    voting = member & ok
    table = np.bincount(groups[voting] * k + codes[voting], minlength=m * k).reshape(m, k)
    safe = np.where(member, groups, 0)  # a cell without a group keeps its own label (one vote)
    own = ok.astype(np.float64)
    winner = np.where(member, table.argmax(axis=1)[safe] if m else 0, codes)
    top = np.where(member, table.max(axis=1)[safe] if m else 0, own)
    total = np.where(member, table.sum(axis=1)[safe] if m else 0, own)
    return winner, top, total


def _groups(adata: AnnData, groupby: str) -> np.ndarray:
    """The group code of every cell (-1: none), from a column of ``adata.obs``."""
    if groupby not in adata.obs.columns:
        raise KeyError(f"groupby '{groupby}' is not a column of adata.obs; run e.g. `sc.tl.leiden` first.")
    col = adata.obs[groupby]
    if not isinstance(col.dtype, pd.CategoricalDtype):
        if pd.api.types.is_float_dtype(col.dtype):
            raise ValueError(f"adata.obs['{groupby}'] holds numbers, not groups; pass a column of clusters.")
        col = col.astype("category")
    return col.cat.codes.to_numpy().astype(np.int64)


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
