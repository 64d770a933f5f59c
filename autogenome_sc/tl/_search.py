"""``ag.tl.search``: AutoML over the paper's networks with Optuna (resumable, distributed)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any

from anndata import AnnData

from .. import _logging as logg
from .. import config as _config
from .._checks import check_count, check_file_name, check_key_added, check_rng, check_timeout, writable
from .._docs import BATCH_KEY, GENES, INPUT_SPLIT_KEY, SEARCH_BUDGET, SEARCH_STUDY, doc_params
from .._names import Preset
from ..config import Config
from ..config._presets import preset_modes, with_preset
from ..data import TrainData
from ..data._hierarchy import Hierarchy, label_levels
from ..search import check_storage, run_search
from ._finish import finish
from ._results import log_finished
from ._train import _log_input, hierarchy_of


@doc_params(input_split_key=INPUT_SPLIT_KEY, batch_key=BATCH_KEY, genes=GENES, budget=SEARCH_BUDGET, study=SEARCH_STUDY)
def search(
    adata: AnnData,
    label_key: str | Sequence[str] | None = None,
    *,
    modes: str | list[str] | tuple[str, ...] | None = None,
    preset: Preset | None = None,
    n_trials: int | None = None,
    timeout: float | None = None,
    layer: str | None = None,
    use_raw: bool = False,
    split_key: str | None = None,
    batch_key: str | None = None,
    gene_symbols: str | None = None,
    genes: Sequence[str] | AnnData | None = None,
    key_added: str = "ag",
    config: dict[str, Any] | str | Path | None = None,
    storage: str | Any | None = None,
    study_name: str | None = None,
    run_dir: str | Path | None = None,
    eval_key: str | None = None,
    reconstruct: bool = False,
    rng: int = 0,
    copy: bool = False,
) -> AnnData | None:
    """Search architectures and hyperparameters, then evaluate and save the winner.

    Trials draw a mode, its architecture, hyperparameters and input (Optuna's TPE sampler) and may be pruned. The
    winner, one configuration or an ensemble chosen on held-out predictions, is evaluated once on the test split, saved
    and written like :func:`autogenome_sc.tl.train`. The same ``study_name`` continues a study (see docs/searching.md).

    Parameters
    ----------
    adata
        Annotated data matrix (cells x genes), dense or sparse.
    label_key
        Column of ``adata.obs`` to learn, or a list of columns from coarse to fine (a label
        hierarchy, see :func:`autogenome_sc.tl.train`). ``None``: an unsupervised search of the
        Res-VAE (mode ``"resvae"``), judged by the validation ELBO.
    modes
        Any of ``"linear"``, ``"logistic"``, ``"svm"`` (solved, classification), ``"mlp"``, ``"resnet"``, ``"densenet"``,
        ``"enas"`` or ``"resvae"`` (unsupervised); see docs/searching.md. Default: ``search.modes``, else the first six
        where they can learn the problem (``"logistic"``, ``"svm"``: a matrix of 256 MB at most), ``"enas"`` on a GPU.
    preset
        A budget, model families and ensemble depth by one word, filling in only what ``modes``,
        ``n_trials``, ``timeout`` and ``config`` leave unset: ``"fast"`` (30 s; the linear
        families and the MLP; two configurations cross-validated, ensembles of two at most),
        ``"default"`` (as without a preset: 60 s) or ``"best"`` (15 minutes; five
        configurations cross-validated, ensembles of up to five). See docs/searching.md.
    {budget}
    {input_split_key}
    {batch_key}
        Supervised search only.
    {genes}
        Supervised search only.
    config
        Expert-mode configuration (dict or JSON path), see :func:`autogenome_sc.config.default`.
    {study}
    eval_key
        Unsupervised search: a column of ``adata.obs`` that scores the latent space (never trained on).
    reconstruct
        Unsupervised search: also write ``.layers["ag_reconstruction"]``.
    rng
        Seed of the split, the sampler and every trial's training.
    copy
        Return a copy instead of writing to ``adata``.

    Returns
    -------
    ``None``, or a copy of ``adata`` when ``copy=True``, with what :func:`autogenome_sc.tl.train` writes, and in
    ``.uns["ag"]``: ``["leaderboard"]`` (a row per trial), ``["best"]``, ``["selection"]`` (see docs/searching.md).
    """
    cfg, label_key, levels, rng = _checked(
        adata, label_key, config, rng, eval_key, reconstruct, batch_key, gene_symbols, genes
    )
    n_trials, timeout, study_name = _budget_args(n_trials, timeout, study_name)  # before the first log line
    cfg = with_preset(cfg, preset, budget_given=n_trials is not None or timeout is not None)
    check_storage(storage)
    key_added = check_key_added(key_added)
    adata = writable(adata, copy)
    start = logg.info(f"searching models for {_subject(label_key)}" + (f" (preset '{preset}')" if preset else ""))
    out = run_search(
        adata, label_key, cfg=cfg, modes=modes, n_trials=n_trials, timeout=timeout, layer=layer, use_raw=use_raw,
        split_key=split_key, batch_key=batch_key, storage=storage, study_name=study_name, run_dir=run_dir, rng=rng,
        gene_symbols=gene_symbols, genes=genes, prepared=None if label_key is None else partial(_prepared, adata, levels),
        preset_modes=preset_modes(preset),
    )  # fmt: skip
    model = finish(
        adata, out.data, out.kind, out.arch, out.result, out.cfg, label_key=label_key, key_added=key_added, rng=rng,
        extra_uns=out.uns, held_out=out.held_out, hierarchy=out.prepared, reconstruct=reconstruct, eval_key=eval_key,
    )  # fmt: skip
    for note in out.notes:
        logg.info(f"    {note}")
    log_finished(start, model, out.summary)
    return adata if copy else None


def _checked(
    adata, label_key, config, rng, eval_key, reconstruct, batch_key, gene_symbols, genes
) -> tuple[Config, str | None, list[str], int]:
    """The validated config, the (finest) label key and its levels, and the seed; one sentence on bad input.

    ``n_trials``, ``timeout`` and ``study_name`` are checked by :func:`_budget_args`.
    """
    if not isinstance(adata, AnnData):
        raise TypeError(f"Expected an AnnData object, got {type(adata).__name__}.")
    rng = check_rng(rng)
    cfg = _config.validate(config)
    label_key, levels = label_levels(label_key)
    if label_key is not None and (eval_key is not None or reconstruct):
        raise ValueError("eval_key and reconstruct are for unsupervised search (label_key=None).")
    for name, value in (("batch_key", batch_key), ("gene_symbols", gene_symbols), ("genes", genes)):
        if label_key is None and value is not None:
            raise ValueError(f"{name} is for supervised search (with a label_key); the Res-VAE does not take one yet.")
    if eval_key is not None and eval_key not in adata.obs.columns:
        raise KeyError(f"eval_key '{eval_key}' is not a column of adata.obs.")
    return cfg, label_key, levels, rng


def _budget_args(n_trials, timeout, study_name) -> tuple[int | None, float | None, str | None]:
    return check_count(n_trials, "n_trials"), check_timeout(timeout), check_file_name(study_name, "study_name")


def _subject(label_key: str | None) -> str:
    return f"adata.obs['{label_key}']" if label_key is not None else "a Res-VAE latent space"


def _prepared(adata: AnnData, levels: list[str], data: TrainData, kind: str) -> Hierarchy | None:
    """Once the data are prepared, before any trial: say what the input looked like; the checked label hierarchy."""
    _log_input(data, kind)
    return hierarchy_of(adata, levels, data)
