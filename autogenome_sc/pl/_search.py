from __future__ import annotations

import numpy as np
from anndata import AnnData
from matplotlib.axes import Axes

from .._docs import AX_SHOW, doc_params
from ._utils import finish, get_uns, mode_colour, new_ax


@doc_params(ax_show=AX_SHOW)
def search_history(adata: AnnData, *, key: str = "ag", ax: Axes | None = None, show: bool | None = None) -> Axes | None:
    """Plot the validation metric of every trial in order, coloured by mode, with the best so far.

    Each built-in mode has a colour of its own (the same in every plot); a registered mode gets one
    of tab20's lighter colours.

    Finished trials are filled dots, pruned trials hollow (their last reported value);
    failed trials are left out. The line follows the best finished trial so far.

    Parameters
    ----------
    adata
        Annotated data with ``adata.uns[key]["leaderboard"]`` from ``ag.tl.search``.
    key
        The ``key_added`` of the search.
    {ax_show}
    """
    uns = get_uns(adata, key, "leaderboard", "ag.tl.search")
    board = uns["leaderboard"]
    metric = str(uns.get("best", {}).get("metric", "val_loss"))
    fig, ax = new_ax(ax, (6, 3.5))
    shown = board[board["state"].isin(["complete", "pruned"]) & np.isfinite(board["value"].astype(float))]
    modes = sorted(str(m) for m in shown["mode"].unique())
    for mode, rows in shown.groupby("mode", sort=True):
        colour = mode_colour(str(mode), modes)
        done = rows[rows["state"] == "complete"]
        pruned = rows[rows["state"] == "pruned"]
        ax.scatter(done["trial"], done["value"], color=colour, label=f"{mode}", s=25, zorder=3)
        if len(pruned):
            ax.scatter(
                pruned["trial"],
                pruned["value"],
                facecolors="none",
                edgecolors=colour,
                s=25,
                zorder=3,
                label=f"{mode} (pruned)",
            )
    done = shown[shown["state"] == "complete"].sort_values("trial")
    if len(done):
        vals = done["value"].to_numpy(float)
        best = np.maximum.accumulate(vals) if metric == "val_accuracy" else np.minimum.accumulate(vals)
        ax.step(done["trial"], best, where="post", color="black", lw=1, label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(f"validation {metric.removeprefix('val_').replace('_', ' ')}")
    if metric == "val_loss" and len(shown) and shown["value"].min() > 0:
        ax.set_yscale("log")
    ax.legend(frameon=False, fontsize=8, loc="best")
    return finish(fig, ax, show)
