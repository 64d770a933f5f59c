"""Read the results of ``ag.tl.explain`` back from AnnData as pandas / shap objects."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from anndata import AnnData

from .._keys import strings

if TYPE_CHECKING:
    import shap


def _explain_uns(adata: AnnData, key: str, what: str) -> dict:
    if not isinstance(adata, AnnData):
        raise TypeError(f"Expected an AnnData object, got {type(adata).__name__}.")
    if key not in adata.uns or what not in adata.uns[key]:
        raise KeyError(f"Did not find adata.uns['{key}']['{what}']. Run `ag.tl.explain` first.")
    return adata.uns[key][what]


def importance_df(adata: AnnData, group: str | None = None, *, key: str = "ag") -> pd.DataFrame | pd.Series:
    """Gene importance written by ``ag.tl.explain``, as a DataFrame (genes x classes + ``"overall"``).

    Class names may contain ``/`` (e.g. ``"CD4+/CD25 T Reg"``), which h5ad cannot store as
    DataFrame column names, so ``adata.uns[key]["importance"]`` holds plain arrays; this
    function turns them into a DataFrame.

    Parameters
    ----------
    adata
        Annotated data after ``ag.tl.explain``.
    group
        Return only this class's column (or ``"overall"``), sorted from most important.
    key
        The ``key`` of the ``ag.tl.explain`` call.

    Returns
    -------
    A DataFrame indexed by gene with one column per class and ``"overall"`` (the sum of
    the class columns), or, with ``group``, a Series sorted in decreasing order.
    """
    imp = _explain_uns(adata, key, "importance")
    df = pd.DataFrame(
        np.asarray(imp["values"]),
        index=pd.Index(strings(imp["genes"]), dtype=object, name="gene"),
        columns=[str(c) for c in imp["groups"]],
    )
    if group is None:
        return df
    if group not in df.columns:
        raise KeyError(f"Unknown group '{group}'; adata.uns['{key}']['importance'] has {list(df.columns)}.")
    return df[group].sort_values(ascending=False)


def explanation(adata: AnnData, *, key: str = "ag") -> shap.Explanation:
    """The stored SHAP values of ``ag.tl.explain`` as a ``shap.Explanation``.

    Values and data are stored as float16; use ``ag.tl.explain(..., return_explanation=True)``
    for full precision.

    Parameters
    ----------
    adata
        Annotated data after ``ag.tl.explain``.
    key
        The ``key`` of the ``ag.tl.explain`` call.

    Returns
    -------
    A ``shap.Explanation`` with ``values`` (cells, genes, outputs), ``base_values``
    (cells, outputs), ``data`` (the model's scaled inputs), ``feature_names`` and
    ``output_names``; slice one class with ``exp[:, :, "CD19+ B"]``.
    """
    import shap

    s = _explain_uns(adata, key, "shap")
    values = np.asarray(s["values"], dtype=np.float32)
    base = np.asarray(s["base_values"], dtype=np.float32)
    return shap.Explanation(
        values=values,
        base_values=np.broadcast_to(base, (values.shape[0], values.shape[2])).copy(),
        data=np.asarray(s["data"], dtype=np.float32),
        feature_names=[str(g) for g in s["feature_names"]],
        output_names=[str(c) for c in s["output_names"]],
    )
