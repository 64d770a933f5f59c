from __future__ import annotations

import numpy as np
from anndata import AnnData
from matplotlib.axes import Axes

from .._docs import AX_SHOW, doc_params
from ._utils import finish, get_uns, new_ax


@doc_params(ax_show=AX_SHOW)
def confusion_matrix(
    adata: AnnData,
    *,
    key: str = "ag",
    normalize: bool = True,
    ax: Axes | None = None,
    show: bool | None = None,
) -> Axes | None:
    """Plot the test-split confusion matrix stored by ``ag.tl.train`` or ``ag.tl.search``.

    Parameters
    ----------
    adata
        Annotated data with ``adata.uns[key]["metrics"]["confusion_matrix"]``.
    key
        The ``key_added`` of the training call.
    normalize
        Show each true class's row as fractions (counts are annotated either way).
    {ax_show}
    """
    uns = get_uns(adata, key, "metrics", "ag.tl.train")
    if "confusion_matrix" not in uns["metrics"]:
        raise ValueError(f"adata.uns['{key}'] holds a regression model; there is no confusion matrix.")
    cm = np.asarray(uns["metrics"]["confusion_matrix"], dtype=float)
    classes = [str(c) for c in uns["classes"]]
    shown = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1) if normalize else cm
    n = len(classes)
    fig, ax = new_ax(ax, (0.5 * n + 3, 0.5 * n + 2.5))
    im = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    for i in range(n):
        for j in range(n):
            if cm[i, j]:
                ax.text(
                    j,
                    i,
                    f"{int(cm[i, j])}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if shown[i, j] > 0.6 * shown.max() else "black",
                )
    ax.set_xticks(range(n), classes, rotation=90)
    ax.set_yticks(range(n), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    acc = uns["metrics"].get("accuracy")
    ax.set_title(f"test split (accuracy {acc:.3f})" if acc is not None else "test split")
    fig.colorbar(im, ax=ax, fraction=0.046, label="fraction of true class" if normalize else "cells")
    return finish(fig, ax, show)
