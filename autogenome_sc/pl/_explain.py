from __future__ import annotations

import numpy as np
import pandas as pd
from anndata import AnnData
from matplotlib.axes import Axes

from .._docs import AX_SHOW, EXPLAIN_KEY_GENES, doc_params
from ..get import importance_df
from ._utils import finish, get_uns, new_ax


def _top(adata: AnnData, group: str | None, key: str, n_genes: int):
    if isinstance(n_genes, bool) or not isinstance(n_genes, int | np.integer) or n_genes < 1:
        raise ValueError(f"n_genes must be a positive integer, got {n_genes!r}.")
    get_uns(adata, key, "importance", "ag.tl.explain")
    df = importance_df(adata, key=key)
    col = "overall" if group is None else group
    if col not in df.columns:
        classes = [c for c in df.columns if c != "overall"]
        raise KeyError(f"Unknown group '{group}'; the explained classes are {classes}.")
    return df, df[col].sort_values(ascending=False).index[: int(n_genes)]


@doc_params(explain_key_genes=EXPLAIN_KEY_GENES, ax_show=AX_SHOW)
def importance(
    adata: AnnData,
    group: str | None = None,
    *,
    key: str = "ag",
    n_genes: int = 20,
    ax: Axes | None = None,
    show: bool | None = None,
) -> Axes | None:
    """Bar chart of the most important genes for one class (or overall), from ``ag.tl.explain``.

    Parameters
    ----------
    adata
        Annotated data after ``ag.tl.explain``.
    group
        A class; ``None`` ranks genes by the ``"overall"`` importance (sum over classes).
    {explain_key_genes}
    {ax_show}
    """
    df, genes = _top(adata, group, key, n_genes)
    vals = df.loc[genes, "overall" if group is None else group].to_numpy()
    fig, ax = new_ax(ax, (5, 0.25 * len(genes) + 1.2))
    y = np.arange(len(genes))[::-1]
    ax.barh(y, vals, color="#1f77b4")
    ax.set_yticks(y, list(genes))
    ax.set_ylim(-0.6, len(genes) - 0.4)
    ax.set_xlabel("importance (sum of |SHAP| over the class's cells)")
    ax.set_title(group if group is not None else "all classes")
    return finish(fig, ax, show)


@doc_params(explain_key_genes=EXPLAIN_KEY_GENES, ax_show=AX_SHOW)
def shap_summary(
    adata: AnnData,
    group: str | None = None,
    *,
    key: str = "ag",
    n_genes: int = 20,
    ax: Axes | None = None,
    show: bool | None = None,
) -> Axes | None:
    """SHAP summary of ``ag.tl.explain``: a beeswarm for one class, or stacked importance bars for all.

    With ``group``, each explained cell is a dot at its SHAP value for that class's
    output, coloured by the gene's (scaled) expression, for the ``n_genes`` genes most
    important for the class (the AutoGenome paper's Fig. 3c), drawn by
    ``shap.plots.beeswarm`` in the order of the class's importance. Without ``group``, the genes
    with the largest overall importance are shown as bars stacked by class (Fig. 3b).

    Parameters
    ----------
    adata
        Annotated data after ``ag.tl.explain``.
    group
        A class; ``None`` shows all classes.
    {explain_key_genes}
    {ax_show}
    """
    df, genes = _top(adata, group, key, n_genes)
    if group is not None:
        return _beeswarm(adata, group, genes, key, ax, show)
    y = np.arange(len(genes))[::-1]
    classes = [c for c in df.columns if c != "overall"]
    fig, ax = new_ax(ax, (7, 0.25 * len(genes) + 1.2))
    colors = _palette(len(classes))
    left = np.zeros(len(genes))
    for c, color in zip(classes, colors, strict=True):
        w = df.loc[genes, c].to_numpy()
        ax.barh(y, w, left=left, color=color, label=c)
        left += w
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    ax.set_xlabel("importance (sum of |SHAP| over each class's cells)")
    ax.set_title("all classes")
    ax.set_yticks(y, list(genes))
    ax.set_ylim(-0.6, len(genes) - 0.4)
    return finish(fig, ax, show)


def _beeswarm(adata: AnnData, group: str, genes: pd.Index, key: str, ax: Axes | None, show: bool | None):
    """``shap.plots.beeswarm`` of one class's output for ``genes``, in the order given (most important on top)."""
    import shap

    s = get_uns(adata, key, "shap", "ag.tl.explain")["shap"]
    outputs = [str(c) for c in s["output_names"]]
    col = {str(g): j for j, g in enumerate(s["feature_names"])}
    gi = np.asarray([col[g] for g in genes])
    exp = shap.Explanation(
        np.asarray(s["values"][:, gi, outputs.index(group)], dtype=np.float32),
        data=np.asarray(s["data"][:, gi], dtype=np.float32),
        feature_names=list(genes),
    )
    fig, ax = new_ax(ax, (6, 0.3 * len(genes) + 1.5))
    shap.plots.beeswarm(
        exp, max_display=len(genes), order=np.arange(len(genes)), ax=ax, show=False, plot_size=None,
        color_bar_label="expression (scaled)", group_remaining_features=False,
    )  # fmt: skip
    ax.set_xlabel(f"SHAP value for '{group}'")
    ax.set_title(group)
    return finish(fig, ax, show)


def _palette(n: int):
    import matplotlib.pyplot as plt

    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
    return [cmap(i % cmap.N) for i in range(n)]


@doc_params(explain_key_genes=EXPLAIN_KEY_GENES)
def shap_dotplot(
    adata: AnnData,
    n_genes: int = 5,
    *,
    key: str = "ag",
    groupby: str | None = None,
    use_raw: bool | None = None,
    layer: str | None = None,
    ax: Axes | None = None,
    show: bool | None = None,
) -> dict[str, Axes] | None:
    """Dot plot of each class's most important genes by SHAP, drawn by ``sc.pl.dotplot``.

    For every explained class, its ``n_genes`` most important genes (``ag.tl.explain``'s
    importance: the sum of absolute SHAP values over the class's cells); the dots show, per group of
    cells, the fraction expressing each gene and its mean expression, as marker plots do.

    Parameters
    ----------
    adata
        Annotated data after ``ag.tl.explain``.
    {explain_key_genes}
    groupby
        Column of ``adata.obs`` whose groups are the rows; default the label column the
        model was trained on when ``adata`` has it, else the predictions
        (``obs["<key>_prediction"]``).
    use_raw
        Draw ``adata.raw`` (``None``: when present), as in ``sc.pl.dotplot``.
    layer
        Draw this layer of ``adata`` instead of ``X``.
    ax
        Axes to draw into; a new figure otherwise.
    show
        Show the figure; when ``False`` return the axes.

    Returns
    -------
    The dict of axes ``sc.pl.dotplot`` returns (``"mainplot_ax"``, ...) when ``show=False``,
    else ``None``.
    """
    import scanpy as sc

    from .._keys import Keys

    df, _ = _top(adata, None, key, n_genes)
    # the explained classes: those with an importance (the others' columns are empty)
    classes = [c for c in df.columns if c != "overall" and np.nansum(np.abs(df[c].to_numpy())) > 0]
    markers = {c: list(df[c].sort_values(ascending=False).index[: int(n_genes)]) for c in classes}
    if groupby is None:
        label_key = adata.uns.get(key, {}).get("params", {}).get("label_key")
        groupby = label_key if label_key in adata.obs.columns else Keys(key).prediction
    if groupby not in adata.obs.columns:
        raise KeyError(f"groupby '{groupby}' is not a column of adata.obs; pass the column of groups to draw.")
    raw = adata.raw is not None if use_raw is None else use_raw
    names = adata.raw.var_names if raw and adata.raw is not None else adata.var_names
    missing = sorted({g for genes in markers.values() for g in genes} - set(names))
    if missing:
        where = "adata.raw" if raw else "adata"
        raise KeyError(
            f"{len(missing)} explained gene(s) are not in {where}.var_names ({', '.join(missing[:3])}); "
            "draw from the matrix ag.tl.explain read (use_raw or layer)."
        )
    if not isinstance(adata.obs[groupby].dtype, pd.CategoricalDtype):
        raise ValueError(
            f"adata.obs['{groupby}'] is not categorical; convert it first: "
            f"adata.obs['{groupby}'] = adata.obs['{groupby}'].astype('category')."
        )
    axes = sc.pl.dotplot(adata, markers, groupby, use_raw=raw, layer=layer, ax=ax, show=False, dendrogram=False)
    main = axes["mainplot_ax"]
    return None if finish(main.figure, main, show) is None else axes
