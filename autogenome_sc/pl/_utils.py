from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt
from anndata import AnnData

from .. import _logging as logg

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
_EXTENSIONS = (".svg", ".pdf", ".png")


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


def check_save(save: bool | str | None) -> None:
    """``save`` as scanpy takes it: ``None``, ``True``/``False`` or a file-name suffix (one sentence otherwise)."""
    if save is not None and not isinstance(save, bool | str):
        raise TypeError(f"save must be True, False, None or a file-name suffix, not {type(save).__name__}.")


def finish(
    fig: Figure | SubFigure, ax: Axes, show: bool | None, save: bool | str | None = None, writekey: str = "ag"
) -> Axes | None:
    """Save the figure (``save``, as scanpy's plots do), show it (``show``), and return the Axes unless shown.

    ``save=True`` writes ``scanpy.settings.figdir / f"{writekey}{plot_suffix}.{file_format_figs}"``; a
    string is appended to ``writekey``, and its ending ``.svg``, ``.pdf`` or ``.png`` chooses the format;
    ``None`` follows ``scanpy.settings.autosave``. A saved figure is closed, as scanpy does. ``show=None``
    shows the figure in an interactive session only (scanpy's ``settings.autoshow`` is not read: a script
    gets the Axes back).
    """
    import scanpy as sc

    check_save(save)
    ext = None
    if isinstance(save, str):
        for suffix in _EXTENSIONS:
            if save.endswith(suffix):
                ext, save = suffix[1:], save[: -len(suffix)]
                break
        writekey, save = writekey + save, True
    if save is None:
        save = bool(sc.settings.autosave)
    if show is None:
        show = plt.isinteractive()
    figure = fig.figure if fig.figure is not None else fig  # a SubFigure's parent Figure
    if save:
        path = Path(sc.settings.figdir) / f"{writekey}{sc.settings.plot_suffix}.{ext or sc.settings.file_format_figs}"
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, bbox_inches="tight")
        logg.info(f"saving figure to file {path}")
    if show:
        plt.show()
    if save:
        plt.close(figure)
    return None if show else ax
