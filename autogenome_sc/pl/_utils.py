from __future__ import annotations

import matplotlib.pyplot as plt
from anndata import AnnData


def get_uns(adata: AnnData, key: str, what: str, run: str) -> dict:
    """``adata.uns[key]``, or a sentence naming the call to run first."""
    if key not in adata.uns or (what and what not in adata.uns[key]):
        where = f"adata.uns['{key}']" + (f"['{what}']" if what else "")
        raise KeyError(f"Did not find {where}. Run `{run}` first.")
    return adata.uns[key]


def new_ax(ax, figsize):
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
    return ax.figure, ax


def finish(fig, ax, show):
    if show is None:
        show = plt.isinteractive()
    if show:
        plt.show()
        return None
    return ax
