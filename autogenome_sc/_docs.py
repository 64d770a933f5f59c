"""Docstring pieces shared by the public functions (in the style of scanpy's ``_doc_params``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable)

#: ``ax``/``show`` and the Returns section of a function that draws into one Axes.
AX_SHOW = """ax
        Axes to draw into; a new figure otherwise.
    show
        Show the figure; when ``False`` return the Axes. Default: show it in an interactive
        session only. To save it: ``ax.figure.savefig(path)`` on the Axes returned.

    Returns
    -------
    The Axes when ``show=False``, else ``None``."""


#: ``layer``, ``use_raw``, ``split_key`` and ``key_added`` of the training tools.
INPUT_SPLIT_KEY = """layer
        Use ``adata.layers[layer]`` instead of ``adata.X``.
    use_raw
        Use ``adata.raw.X`` (and ``adata.raw.var_names``).
    split_key
        Column of ``adata.obs`` holding ``"train"``/``"val"``/``"test"`` to use instead of a new split.
    key_added
        Prefix of every key written (see Returns)."""

#: ``gene_symbols`` and ``genes`` of the supervised training tools.
GENES = """gene_symbols
        Column of ``adata.var`` (of ``adata.raw.var`` with ``use_raw``) whose names identify
        the genes instead of ``var_names``, as scanpy's ``gene_symbols``. The model records
        it: ``ag.tl.predict`` matches a query by the same column when the query has it.
        Ensembl IDs are matched with or without their version suffix (``ENSG00000141510.17``).
    genes
        Train on these genes only: a list of names, or a query AnnData whose ``var_names``
        are taken (a targeted panel: Xenium, MERFISH, CosMx). Matched like a query's genes;
        counts are normalised over the kept genes, as the panel's are. Default: every gene."""

#: ``batch_key`` of the supervised training tools.
BATCH_KEY = """batch_key
        Column of ``adata.obs`` naming each cell's batch (a run, a sample, a processing
        batch). Each batch is standardised gene by gene on its own training cells before the
        model's scaling, and a query's batches on themselves at prediction (``ag.tl.predict``),
        which removes batch effects that shift or stretch genes. It also removes what a batch's
        cells share, so it helps where batches hold similar mixtures of classes and can hurt
        where a batch holds one class (a warning says so; see ``docs/label_transfer.md``)."""

#: ``key`` and ``n_genes`` of the plots of ``ag.tl.explain`` results.
EXPLAIN_KEY_GENES = """key
        The ``key`` of the ``ag.tl.explain`` call.
    n_genes
        Number of genes shown."""


def doc_params(**pieces: str) -> Callable[[F], F]:
    """Fill ``{name}`` placeholders of the decorated function's docstring with ``pieces``.

    Placeholders are replaced literally (no ``str.format``), so other braces in a docstring
    are left alone.
    """

    def decorate(fn: F) -> F:
        doc = fn.__doc__
        if doc is None:  # python -OO strips docstrings
            return fn
        for name, text in pieces.items():
            if "{" + name + "}" not in doc:
                raise ValueError(f"{fn.__name__}'s docstring has no {{{name}}} placeholder")
            doc = doc.replace("{" + name + "}", text)
        fn.__doc__ = doc
        return fn

    return decorate


#: ``n_trials`` and ``timeout`` of a search (``ag.tl.search``, ``search.run_search``).
SEARCH_BUDGET = """n_trials
        Trials the study should have in total (finished or pruned, over all runs and
        workers). Default: the config's; else none for a labelled search (``timeout``'s
        default bounds it), 30 for the Res-VAE's.
    timeout
        Seconds for the trials and the selection of the winner (the running trial is stopped
        at its next epoch); the final model's fit comes after it and is reported separately.
        Default: the config's; with neither ``n_trials`` nor ``timeout`` anywhere, 60 s (the
        Res-VAE's search, without labels: 30 trials or 240 s, whichever comes first)."""

#: ``storage``, ``study_name`` and ``run_dir``: where a search's Optuna study lives.
SEARCH_STUDY = """storage
        ``None`` (a journal file in ``run_dir``), an Optuna storage URL such as
        ``"postgresql://user:password@host/db"`` (heartbeat-based retry of killed workers),
        or an Optuna storage object.
    study_name
        Name of the study to create or continue; default: a new name from ``label_key``
        and the time.
    run_dir
        Folder of the journal files; default ``ag_runs`` under the current directory."""
