from __future__ import annotations

from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
from anndata import AnnData

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure, SubFigure

#: A colour of its own for each built-in search mode (tab10), the same in every plot and run.
MODE_COLOURS = {
    "mlp": "tab:blue",
    "resnet": "tab:orange",
    "densenet": "tab:green",
    "enas": "tab:red",
    "resvae": "tab:purple",
    "linear": "tab:brown",
    "logistic": "tab:pink",
    "svm": "tab:gray",
    "trees": "tab:olive",
}
#: For registered modes: tab10's last colour, then tab20's light ones (unlike every built-in colour).
_OTHER_COLOURS = ("tab:cyan", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#dbdb8d")


def mode_colour(mode: str, shown: list[str]) -> str:
    """The colour of ``mode``: its own for a built-in mode; for a registered one, by its place among those ``shown``."""
    if mode in MODE_COLOURS:
        return MODE_COLOURS[mode]
    registered = sorted(m for m in shown if m not in MODE_COLOURS)
    return _OTHER_COLOURS[registered.index(mode) % len(_OTHER_COLOURS)]


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
    """Show the figure (``show``; ``None``: in an interactive session only) or return its Axes.

    No plot writes a file itself (the design: plot functions never take ``save=``, they read AnnData only): save the
    returned Axes' figure, ``ax.figure.savefig(path)``.
    """
    if show is None:
        show = plt.isinteractive()
    if show:
        plt.show()
        return None
    return ax
