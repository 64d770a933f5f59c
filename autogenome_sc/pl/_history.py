from __future__ import annotations

import numpy as np
from anndata import AnnData
from matplotlib.axes import Axes

from .._docs import AX_SHOW, doc_params
from ._utils import finish, get_uns, new_ax


@doc_params(ax_show=AX_SHOW)
def training_history(
    adata: AnnData, *, key: str = "ag", ax: Axes | None = None, show: bool | None = None
) -> Axes | None:
    """Plot training and validation loss per epoch, marking the epoch whose weights were kept.

    Parameters
    ----------
    adata
        Annotated data with ``adata.uns[key]["history"]``.
    key
        The ``key_added`` of the training call.
    {ax_show}
    """
    uns = get_uns(adata, key, "history", "ag.tl.train")
    h = uns["history"]
    fig, ax = new_ax(ax, (5, 3.5))
    ax.plot(h["epoch"], h["train_loss"], label="train loss")
    ax.plot(h["epoch"], h["val_loss"], label="validation loss")
    best = uns["metrics"].get("best_epoch")
    if best is not None:
        ax.axvline(best, color="grey", ls="--", lw=1, label=f"kept (epoch {int(best)})")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_yscale("log" if np.min(h["val_loss"]) > 0 else "linear")
    ax.legend(frameon=False)
    return finish(fig, ax, show)
