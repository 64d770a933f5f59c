from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData
from matplotlib.axes import Axes

from .._docs import AX_SHOW, doc_params
from ._utils import finish, get_uns, new_ax

_SPLITS = ("val", "test")


@doc_params(ax_show=AX_SHOW)
def reliability(
    adata: AnnData,
    *,
    key: str = "ag",
    split: str = "test",
    label_key: str | None = None,
    n_bins: int = 15,
    ax: Axes | None = None,
    show: bool | None = None,
) -> Axes | None:
    """Reliability diagram: accuracy against confidence, per confidence bin.

    A calibrated model lies on the diagonal: among cells predicted with confidence 0.8,
    80% are right. By default the diagram shows the held-out ``split`` of the training
    run stored by ``ag.tl.train`` or ``ag.tl.search``, before and after temperature
    scaling. With ``label_key`` it is computed from the cells of ``adata`` themselves (a
    labelled query after ``ag.tl.predict``), leaving out ``"Unassigned"`` cells.

    Parameters
    ----------
    adata
        Annotated data with ``adata.uns[key]["reliability"]`` or, with ``label_key``,
        ``.obs["ag_prediction"]`` and ``.obs["ag_confidence"]``.
    key
        The ``key_added`` of the training or prediction call.
    split
        ``"test"`` or ``"val"``: which held-out split of the training run to show.
    label_key
        Column of ``adata.obs`` with the true labels; the diagram is then computed from
        ``adata`` instead of the stored training run.
    n_bins
        Number of equal-width confidence bins (with ``label_key``; the stored run has 15).
    {ax_show}
    """
    if label_key is None:
        if split not in _SPLITS:
            raise ValueError(f"split must be one of {', '.join(map(repr, _SPLITS))}, got {split!r}.")
        rel = get_uns(adata, key, "reliability", "ag.tl.train")["reliability"]
        curves = {"before calibration": rel[split]["before"], "after calibration": rel[split]["after"]}
        title = f"{split} split of the training run"
    else:
        curves = {"calibrated": _bins_from_obs(adata, key, label_key, n_bins)}
        title = f"assigned cells vs adata.obs['{label_key}']"
    fig, ax = new_ax(ax, (4.5, 4.5))
    ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls=":", label="perfect calibration")
    for name, bins in curves.items():
        style: dict[str, Any] = {"color": "0.5", "ls": "--"} if name.startswith("before") else {"color": "C0"}
        count = np.asarray(bins["count"], float)
        ok = count > 0
        conf = np.asarray(bins["confidence_sum"], float)[ok] / count[ok]
        acc = np.asarray(bins["correct"], float)[ok] / count[ok]
        ece = float(
            np.abs(np.asarray(bins["correct"]) - np.asarray(bins["confidence_sum"])).sum() / max(count.sum(), 1)
        )
        ax.plot(conf, acc, marker="o", ms=4, label=f"{name} (ECE {ece:.3f})", **style)
        ax.scatter(conf, acc, s=8 + 120 * count[ok] / count.sum(), color=style["color"], alpha=0.3)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("confidence (mean in bin)")
    ax.set_ylabel("accuracy in bin")
    n = int(np.asarray(next(iter(curves.values()))["count"]).sum())
    ax.set_title(f"{title} ({n} cells)")
    ax.legend(loc="upper left", fontsize=8)
    return finish(fig, ax, show)


def _bins_from_obs(adata: AnnData, key: str, label_key: str, n_bins: int) -> dict:
    from .._keys import UNASSIGNED, Keys
    from ..train._confidence import confidence_bins

    keys = Keys(key)
    for col, run in ((keys.prediction, "ag.tl.predict"), (keys.confidence, "ag.tl.predict"), (label_key, None)):
        if col not in adata.obs:
            raise KeyError(f"Did not find adata.obs['{col}']." + (f" Run `{run}` first." if run else ""))
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins!r}.")
    pred = adata.obs[keys.prediction].astype(str).to_numpy()
    truth = adata.obs[label_key].astype(str).to_numpy()
    conf = adata.obs[keys.confidence].to_numpy(float)
    keep = (pred != UNASSIGNED) & pd.notna(adata.obs[label_key]).to_numpy() & np.isfinite(conf)
    if not keep.any():
        raise ValueError("No labelled, assigned cells to draw a reliability diagram from.")
    return confidence_bins(conf[keep], pred[keep] == truth[keep], n_bins)
