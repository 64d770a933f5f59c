from __future__ import annotations

from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
from anndata import AnnData

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure, SubFigure


def get_uns(adata: AnnData, key: str, what: str, run: str) -> dict:
    """``adata.uns[key]``, or a sentence naming the call to run first."""
    if key not in adata.uns or (what and what not in adata.uns[key]):
        where = f"adata.uns['{key}']" + (f"['{what}']" if what else "")
        raise KeyError(f"Did not find {where}. Run `{run}` first.")
    return adata.uns[key]


def new_ax(ax: Axes | None, figsize: tuple[float, float]) -> tuple[Figure | SubFigure, Axes]:
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
    return ax.figure, ax


def finish(fig: Figure | SubFigure, ax: Axes, show: bool | None) -> Axes | None:
    if show is None:
        show = plt.isinteractive()
    if show:
        plt.show()
        return None
    return ax
