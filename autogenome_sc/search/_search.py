"""A search end to end: open the study, run the trials, choose, build the final model (:func:`run_search`).

``ag.tl.search`` checks its arguments, calls :func:`run_search` and writes the
:class:`~autogenome_sc.search._outcome.SearchOutcome` into AnnData; ``autogenome-sc worker``
only opens the study and runs trials (:func:`~autogenome_sc.search._run.open_study`).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._docs import SEARCH_BUDGET, SEARCH_STUDY, doc_params
from ._budget import Budget
from ._cv import cv_need, use_cv
from ._final import final_model
from ._outcome import SearchOutcome, best_record, chose_line, selection_record, with_selection
from ._record import leaderboard
from ._run import Opened, open_study
from ._select import select

if TYPE_CHECKING:
    from anndata import AnnData

    from ..config._schema import Config
    from ..data import TrainData
    from ._driver import Searcher


@doc_params(budget=SEARCH_BUDGET, study=SEARCH_STUDY)
def run_search(
    adata: AnnData,
    label_key: str | None,
    *,
    cfg: Config,
    modes: str | Sequence[str] | None = None,
    n_trials: int | None = None,
    timeout: float | None = None,
    layer: str | None = None,
    use_raw: bool = False,
    split_key: str | None = None,
    batch_key: str | None = None,
    gene_symbols: str | None = None,
    genes: Any = None,
    storage: str | Path | Any | None = None,
    study_name: str | None = None,
    run_dir: str | Path | None = None,
    rng: int = 0,
    prepared: Callable[[TrainData, str], Any] | None = None,
    preset_modes: Sequence[str] | None = None,
) -> SearchOutcome:
    """Search models for ``adata.obs[label_key]`` (``None``: the Res-VAE) and build the final model.

    Prepares the data once and opens the study (:func:`open_study`), runs trials within the
    budget (:class:`Budget`; trials left by dead workers are retried here), then chooses on
    held-out predictions (:func:`select`, supervised) and trains the final model
    (:func:`final_model`). Nothing is written to ``adata``, and the test split is not used.

    Parameters
    ----------
    adata, label_key, modes, layer, use_raw, split_key, batch_key, gene_symbols, genes, rng
        As in :func:`autogenome_sc.tl.search`.
    cfg
        The validated configuration.
    {budget}
    {study}
    prepared
        Called with the prepared problem and its input kind before any trial runs (to log the
        input, to check what needs the prepared labels); what it returns is the outcome's
        ``prepared``.
    preset_modes
        A preset's model families: they narrow the default modes (see :func:`open_study`).

    Returns
    -------
    The final model, the records for ``adata.uns`` and a line for the log.
    """
    start = time.perf_counter()
    supervised = label_key is not None
    keep = max(cfg.search.ensemble, cfg.search.cv_configs + 1) if supervised else 1
    opened = open_study(
        adata, label_key, cfg=cfg, modes=modes, n_trials=n_trials, timeout=timeout, layer=layer, use_raw=use_raw,
        split_key=split_key, batch_key=batch_key, storage=storage, study_name=study_name, run_dir=run_dir, rng=rng,
        keep=keep, gene_symbols=gene_symbols, genes=genes, preset_modes=preset_modes,
    )  # fmt: skip
    before = prepared(opened.data, opened.kind) if prepared is not None else None
    s = opened.searcher
    budget = Budget.of(opened.timeout, opened.cfg.search, start=start)
    n_folds = use_cv(opened.data, opened.cfg.search) if supervised else 0
    if budget.timed and n_folds:  # keep what cross-validating the best trials will take
        budget.keep_for_cv(lambda: cv_need(s, n_folds))
    run_trials(s, opened.n_trials, budget)
    board = leaderboard(s.study)
    if not supervised:
        return _best_trial(opened, board, before)
    return _chosen(opened, board, budget, int(rng), before)


def run_trials(searcher: Searcher, n_trials: int | None, budget: Budget) -> None:
    """Run trials until the study has ``n_trials`` or the budget says stop; at least one must have completed."""
    searcher.run(n_trials, budget)
    searcher.wait_for_others()
    for _ in range(3):  # a worker that died after we stopped leaves a retry waiting: run it here
        done = n_trials is None or searcher.n_counted() >= n_trials
        if budget.timed or done or searcher.stopped_by_failures or searcher.stopped_stagnant is not None:
            break
        searcher.run(n_trials, budget)
        searcher.wait_for_others()
    name = searcher.study.study_name
    if searcher.stopped_by_failures is not None:
        if not searcher.top_trials(1):
            raise RuntimeError(f"The search of study '{name}' stopped: {searcher.stopped_by_failures}.")
        warnings.warn(
            f"The search of study '{name}' stopped early: {searcher.stopped_by_failures}; "
            "the model is chosen among the trials that completed.",
            stacklevel=3,
        )
    if searcher.top_trials(1):
        return
    why = searcher.first_failure()
    if why is not None:
        raise RuntimeError(f"No trial of study '{name}' completed; the first failure was {why}.")
    raise RuntimeError(
        f"No trial of study '{name}' completed (all pruned); raise n_trials or timeout, or widen the search spaces."
    )


def _chosen(opened: Opened, board, budget: Budget, seed: int, before: Any) -> SearchOutcome:
    """A supervised search's outcome: chosen on held-out predictions, then the final model trained."""
    s = opened.searcher
    sel = select(s, seed=seed, budget=budget)
    if s.stopped_stagnant is not None:
        sel.notes.insert(0, f"trials stopped after {s.n_counted()}: {s.stopped_stagnant}")
    assert budget.start is not None  # set when the budget was made
    search_seconds = time.perf_counter() - budget.start
    t_final = time.perf_counter()
    final = opened.cfg.search.final
    arch, result, data = final_model(sel, s, final=final)
    final_seconds = time.perf_counter() - t_final
    lead, metric = sel.lead, opened.cfg.search.metric
    best = best_record(
        s.study.trials[lead.trial], metric, s, opened.storage_name, lead.fits[0].arch, sel.members, board
    )
    uns = {
        "leaderboard": with_selection(board, sel),
        "best": best,
        "selection": selection_record(sel, final, search_seconds, final_seconds),
    }
    summary = chose_line(sel, final, s.n_counted(), search_seconds, final_seconds)
    return SearchOutcome(s, data, opened.kind, arch, result, opened.cfg, uns, summary, sel, list(sel.notes), before)


def _best_trial(opened: Opened, board, before: Any) -> SearchOutcome:
    """An unsupervised search's outcome: the best trial by its validation ELBO, its own model."""
    s = opened.searcher
    (best,) = s.top_trials(1)
    arch, result = s.result_of(best)
    metric = opened.cfg.search.metric
    uns = {"leaderboard": board, "best": best_record(best, metric, s, opened.storage_name, arch, [best.number], board)}
    summary = f"best: trial {best.number} ({best.params['mode']}), {metric} {best.value:.4f}"
    return SearchOutcome(s, opened.data, opened.kind, arch, result, opened.cfg, uns, summary, prepared=before)
