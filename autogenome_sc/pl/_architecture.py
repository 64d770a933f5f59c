from __future__ import annotations

import numpy as np
from anndata import AnnData
from matplotlib.axes import Axes
from matplotlib.patches import FancyArrowPatch

from .._docs import AX_SHOW, doc_params
from ._utils import finish, get_uns, new_ax


@doc_params(ax_show=AX_SHOW)
def architecture(adata: AnnData, *, key: str = "ag", ax: Axes | None = None, show: bool | None = None) -> Axes | None:
    """Draw the RRFCN architecture found by ENAS as a DAG (like the paper's Fig. 3a).

    Nodes are boxes labelled with their width, left to right from the input to the output;
    chain edges (node ``i - 1`` to node ``i``) are straight arrows, skip connections arcs
    above them (a node concatenates all its inputs).

    Parameters
    ----------
    adata
        Annotated data with ``adata.uns[key]["best"]["architecture"]``.
    key
        The ``key_added`` of the training call.
    {ax_show}
    """
    uns = get_uns(adata, key, "best", 'ag.tl.train(adata, label_key, model="enas")')
    if "architecture" not in uns["best"]:
        raise KeyError(f"Did not find adata.uns['{key}']['best']['architecture']. Run ENAS first.")
    arch = uns["best"]["architecture"]
    if "edges" not in arch:
        raise ValueError(
            f"The model in adata.uns['{key}'] is a {arch.get('model', 'network')}, not an RRFCN found by ENAS; "
            "ag.pl.architecture draws ENAS architectures (train with model='enas' or search mode 'enas')."
        )
    widths = np.asarray(arch["widths"]).astype(int)
    edges = np.asarray(arch["edges"]).astype(int).reshape(-1, 2)
    n = len(widths)
    fig, ax = new_ax(ax, (1.4 * (n + 2), 3.2))
    box = {"boxstyle": "round,pad=0.35", "fc": "#dbe9f6", "ec": "#2b5d8a"}
    io_box = {"boxstyle": "round,pad=0.35", "fc": "#eeeeee", "ec": "#666666"}
    xs = np.arange(n + 2, dtype=float)
    ax.text(xs[0], 0, "input", ha="center", va="center", bbox=io_box, zorder=3)
    for i, w in enumerate(widths):
        ax.text(xs[i + 1], 0, f"FC {i}\n{w}", ha="center", va="center", bbox=box, zorder=3)
    ax.text(xs[-1], 0, "output", ha="center", va="center", bbox=io_box, zorder=3)

    def arrow(a, b, rad, color, lw):
        ax.add_patch(
            FancyArrowPatch(
                (a, 0.0),
                (b, 0.0),
                connectionstyle=f"arc3,rad={rad}",
                arrowstyle="-|>",
                mutation_scale=12,
                shrinkA=22,
                shrinkB=22,
                color=color,
                lw=lw,
                zorder=2,
            )
        )

    arrow(xs[0], xs[1], 0.0, "#444444", 1.2)
    arrow(xs[-2], xs[-1], 0.0, "#444444", 1.2)
    n_skip = 0
    for s, t in edges:
        if t == s + 1:
            arrow(xs[s + 1], xs[t + 1], 0.0, "#444444", 1.2)
        else:
            arrow(xs[s + 1], xs[t + 1], -0.35, "#c0392b", 1.0)
            n_skip += 1
    span = max((t - s for s, t in edges), default=1)
    ax.set_xlim(xs[0] - 0.6, xs[-1] + 0.6)
    ax.set_ylim(-0.45, 0.19 * span + 0.35)
    ax.set_title(f"RRFCN: {n} FC units, {n_skip} skip connection{'s' if n_skip != 1 else ''}")
    ax.axis("off")
    return finish(fig, ax, show)
