"""``ag.tl.search``: AutoML over the paper's networks with Optuna (resumable, distributed)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from anndata import AnnData

from .. import _logging as logg
from .. import config as _config
from .._checks import check_count, check_file_name, check_rng, check_timeout
from .._docs import BATCH_KEY, INPUT_SPLIT_KEY, doc_params
from ..data._hierarchy import label_levels
from ..search import leaderboard, open_study
from ..search._select import GRACE, cv_seconds, final_model, select, use_cv
from ._finish import finish
from ._results import log_finished
from ._train import _log_input, hierarchy_of


@doc_params(input_split_key=INPUT_SPLIT_KEY, batch_key=BATCH_KEY)
def search(
    adata: AnnData,
    label_key: str | Sequence[str] | None = None,
    *,
    modes: str | list[str] | tuple[str, ...] | None = None,
    n_trials: int | None = None,
    timeout: float | None = None,
    layer: str | None = None,
    use_raw: bool = False,
    split_key: str | None = None,
    batch_key: str | None = None,
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

    The data are prepared once (split 8:1:1, stratified). The study starts with a short
    portfolio of known-good settings; each trial then draws a mode (linear, MLP,
    RFCN-ResNet or RFCN-DenseNet), its architecture from the paper's search spaces, the
    general hyperparameters (learning rate, batch size, momentum, weight decay or L2 penalty,
    dropout, label smoothing) and the input (0-1 or z-score scaling, all genes or the most
    variable or class-separating ones, fitted on the training split), with Optuna's TPE
    sampler seeded from ``rng``; it trains with early stopping, reports the validation metric
    after every epoch, and is pruned early (Hyperband by default) when it looks worse than
    its peers.

    The winner is chosen on held-out predictions: on small classification data (at most
    ``search.cv_max_cells`` cells in train + validation) the best configurations and the best
    linear one are re-scored by k-fold cross-validation on train + validation, and the final
    model, the best of them or an ensemble of them chosen on their out-of-fold predictions,
    is trained on train + validation; otherwise the choice is made on the validation split.
    The test split is never used to choose: the winner is evaluated once on it, saved, and
    written to ``adata`` exactly like :func:`autogenome_sc.tl.train`. See
    ``docs/searching.md``.

    The study lives in an Optuna journal file in ``run_dir`` unless ``storage`` names a
    database. Calling again with the same ``study_name`` continues it: finished trials are
    kept and count toward ``n_trials``; trials of a killed process are failed and retried.
    Several processes or machines may share one study (see ``autogenome-sc worker``).

    Parameters
    ----------
    adata
        Annotated data matrix (cells x genes), dense or sparse.
    label_key
        Column of ``adata.obs`` to learn, or a list of columns from coarse to fine (a label
        hierarchy, see :func:`autogenome_sc.tl.train`). ``None`` asks for an unsupervised search of the
        Res-VAE (mode ``"resvae"``) over the paper's space, judged by the validation ELBO.
    modes
        Supervised: any of ``"linear"``, ``"mlp"``, ``"resnet"``, ``"densenet"`` and ``"enas"``
        (each ENAS trial is a whole ENAS search over ``models.enas`` plus the retraining of its
        winner; the paper's ENAS defaults are sized for a GPU). Default: the config's
        ``search.modes``, else the first four, plus ``"enas"`` when JAX runs on a GPU or TPU.
        Unsupervised: ``"resvae"``.
    n_trials
        Trials the study should have in total (finished or pruned, over all runs and
        workers). Default: the config's, else 30.
    timeout
        Seconds for the trials and the selection of the winner (the running trial is stopped
        at its next epoch); the final model's fit comes after it and is reported separately.
        Default: the config's; with neither ``n_trials`` nor ``timeout`` anywhere, 30 trials
        or 240 s, whichever comes first.
    {input_split_key}
    {batch_key}
        Supervised search only.
    config
        Expert-mode configuration (dict or JSON path); its ``search`` section holds the
        spaces, metric, pruner and ensemble size. See :func:`autogenome_sc.config.default`.
    storage
        ``None`` (a journal file in ``run_dir``), an Optuna storage URL such as
        ``"postgresql://user:password@host/db"`` (heartbeat-based retry of killed workers),
        or an Optuna storage object.
    study_name
        Name of the study to create or continue; default: a new name from ``label_key``
        and the time.
    run_dir
        Folder of the journal files; default ``ag_runs`` under the current directory.
    eval_key
        Unsupervised search: a column of ``adata.obs`` used only to score the winner's latent
        space (Davies-Bouldin, silhouette, Leiden ARI/NMI), never in training.
    reconstruct
        Unsupervised search: also write ``.layers["ag_reconstruction"]``.
    rng
        Seed of the split, the sampler and every trial's training.
    copy
        Return a copy instead of writing to ``adata``.

    Returns
    -------
    ``None``, or a copy of ``adata`` when ``copy=True``, with everything
    :func:`autogenome_sc.tl.train` writes (``.obs["ag_prediction"]``, ``.obs["ag_confidence"]``,
    ``.obs["ag_split"]``, ``.obsm["X_ag"]``, ``.uns["ag"]`` with ``params``, ``config``,
    ``metrics`` on the test split, ``history``, ``model_path``) and in ``.uns["ag"]``:

    ``"leaderboard"``
        DataFrame, one row per trial: ``trial``, ``mode``, ``state``, ``value`` (the
        validation metric), ``val_loss``, ``val_accuracy``, ``best_epoch``, ``epochs``,
        ``seconds``, ``retry_of``, one column per hyperparameter and, for re-scored trials,
        ``cv_loss``, ``cv_accuracy``, ``cv_macro_f1``, ``cv_weight`` (``heldout_*`` when
        chosen on the validation split).
    ``"best"``
        The winning trial (an ensemble's heaviest member): ``trial``, ``mode``, ``value``,
        ``metric``, ``params``, ``architecture``, ``ensemble`` (the trials in the final model),
        ``study_name``, ``storage``.
    ``"selection"``
        How the winner was chosen: ``method`` (``"cv"`` or ``"validation"``), ``n_folds``,
        ``chosen`` (``"single"`` or ``"ensemble"``), ``final`` (``"bag"``, ``"refit"`` or
        ``"trial"``), ``n_cells``, ``table`` (held-out loss, accuracy, macro-F1, weight and
        epochs of each re-scored configuration), ``search_seconds`` (what ``timeout``
        bounds), ``selection_seconds``, ``final_seconds`` and ``notes``.
    """
    if not isinstance(adata, AnnData):
        raise TypeError(f"Expected an AnnData object, got {type(adata).__name__}.")
    rng = check_rng(rng)
    n_trials, timeout = check_count(n_trials, "n_trials"), check_timeout(timeout)
    study_name = check_file_name(study_name, "study_name")
    cfg = _config.validate(config)
    label_key, levels = label_levels(label_key)
    supervised = label_key is not None
    if supervised and (eval_key is not None or reconstruct):
        raise ValueError("eval_key and reconstruct are for unsupervised search (label_key=None).")
    if not supervised and batch_key is not None:
        raise ValueError("batch_key is for supervised search (with a label_key); the Res-VAE does not take one yet.")
    if eval_key is not None and eval_key not in adata.obs.columns:
        raise KeyError(f"eval_key '{eval_key}' is not a column of adata.obs.")
    adata = adata.copy() if copy else adata
    what = f"adata.obs['{label_key}']" if supervised else "a Res-VAE latent space"
    start = logg.info(f"searching models for {what}")
    t0 = time.perf_counter()
    keep = max(cfg.search.ensemble, cfg.search.cv_configs + 1) if supervised else 1
    opened = open_study(
        adata,
        label_key,
        cfg=cfg,
        modes=modes,
        n_trials=n_trials,
        timeout=timeout,
        layer=layer,
        use_raw=use_raw,
        split_key=split_key,
        batch_key=batch_key,
        storage=storage,
        study_name=study_name,
        run_dir=run_dir,
        rng=rng,
        keep=keep,
    )
    hierarchy = None
    if supervised:
        _log_input(opened.data, opened.kind)
        hierarchy = hierarchy_of(adata, levels, opened.data)
    s = opened.searcher
    n_folds = use_cv(opened.data, opened.cfg.search) if supervised else 0
    reserve = None
    if opened.timeout is not None and n_folds:  # keep what cross-validating the best trials will take
        timeout_s = opened.timeout

        def reserve() -> float:
            return cv_seconds(s, n_folds, opened.cfg.search.cv_share, timeout_s)

    s.run(opened.n_trials, opened.timeout, reserve=reserve)
    s.wait_for_others()
    for _ in range(3):  # a worker that died after we stopped leaves a retry waiting: run it here
        if opened.timeout is not None or opened.n_trials is None or s.n_counted() >= opened.n_trials:
            break
        s.run(opened.n_trials, None)
        s.wait_for_others()
    if not s.top_trials(1):
        why = s.first_failure()
        if why is not None:
            raise RuntimeError(f"No trial of study '{s.study.study_name}' completed; the first failure was {why}.")
        raise RuntimeError(
            f"No trial of study '{s.study.study_name}' completed (all pruned); "
            "raise n_trials or timeout, or widen the search spaces."
        )
    board = leaderboard(s.study)
    if supervised:
        assert label_key is not None  # supervised means a label_key
        deadline = None if opened.timeout is None else t0 + opened.timeout
        grace = 0.0 if opened.timeout is None else GRACE * opened.timeout
        sel = select(s, deadline=deadline, seed=int(rng), grace=grace)
        search_seconds = time.perf_counter() - t0
        t_final = time.perf_counter()
        arch, result, data = final_model(sel, s, final=opened.cfg.search.final)
        final_seconds = time.perf_counter() - t_final
        lead = sel.scored[int(np.argmax(sel.weights))]
        best = s.study.trials[lead.trial]
        members = [sc.trial for sc, w in zip(sel.scored, sel.weights, strict=True) if w > 0]
        extra = {
            "leaderboard": _with_selection(board, sel),
            "best": _best(best, opened, s, lead.fits[0].arch, members, board),
            "selection": _selection_uns(sel, opened.cfg.search.final, search_seconds, final_seconds),
        }
        held = None
        if sel.method == "cv":
            assert sel.held_out is not None  # select() records the outputs of its choice
            held = (sel.rows, sel.held_out)
        model = finish(
            adata, data, opened.kind, arch, result, opened.cfg,
            label_key=label_key, key_added=key_added, rng=rng, extra_uns=extra, held_out=held, hierarchy=hierarchy,
        )  # fmt: skip
        how = "cross-validation" if sel.method == "cv" else "the validation split"
        form = f"an ensemble of trials {members}" if sel.chosen == "ensemble" else f"trial {lead.trial} ({lead.mode})"
        if sel.method == "cv":
            form += " (" + ("its fold models averaged" if opened.cfg.search.final == "bag" else "refitted") + ")"
        for note in sel.notes:
            logg.info(f"    {note}")
        chose = f"{s.n_counted()} trials and {how} in {search_seconds:.0f}s chose {form}"
        log_finished(start, model, f"{chose}; final model {final_seconds:.0f}s")
        return adata if copy else None

    (best,) = s.top_trials(1)
    arch, result = s.result_of(best)
    extra = {"leaderboard": board, "best": _best(best, opened, s, arch, [best.number], board)}
    model = finish(
        adata, opened.data, opened.kind, arch, result, opened.cfg,
        key_added=key_added, rng=rng, reconstruct=reconstruct, eval_key=eval_key, extra_uns=extra,
    )  # fmt: skip
    log_finished(
        start, model, f"best: trial {best.number} ({best.params['mode']}), {cfg.search.metric} {best.value:.4f}"
    )
    return adata if copy else None


def _best(trial, opened, searcher, arch: dict, members: list[int], board) -> dict:
    return {
        "trial": trial.number,
        "mode": trial.params["mode"],
        "value": float(trial.value),
        "metric": opened.cfg.search.metric,
        "params": dict(trial.params),
        "architecture": arch,
        "ensemble": np.asarray(members, dtype=np.int64),
        "study_name": searcher.study.study_name,
        "storage": opened.storage_name,
        "n_trials": int(((board["state"] == "complete") | (board["state"] == "pruned")).sum()),
    }


def _with_selection(board, sel) -> Any:
    """The leaderboard with each re-scored trial's held-out loss, accuracy, macro-F1 and ensemble weight."""
    if board.empty:
        return board
    table = sel.table().set_index("trial")
    prefix = "cv_" if sel.method == "cv" else "heldout_"
    board = board.copy()
    for col in ("loss", "accuracy", "macro_f1", "weight"):
        board[prefix + col] = board["trial"].map(table[col]).astype(np.float64)
    return board


def _selection_uns(sel, final: str, search_seconds: float, final_seconds: float) -> dict:
    return {
        "method": sel.method,
        "n_folds": int(sel.k),
        "chosen": sel.chosen,
        "final": final if sel.method == "cv" else "trial",
        "n_cells": int(len(sel.rows)),
        "table": sel.table(),
        "search_seconds": float(search_seconds),
        "selection_seconds": float(sel.seconds),
        "final_seconds": float(final_seconds),
        "notes": np.asarray(sel.notes, dtype=str) if sel.notes else np.zeros(0, dtype=str),
    }
