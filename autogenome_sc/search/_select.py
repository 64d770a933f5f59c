"""Choosing the final model: held-out re-scoring of the best configurations, single or ensemble.

A validation split of 70 cells cannot tell good configurations apart, so on small data
(classification, at most ``search.cv_max_cells`` cells in train + validation) the most
promising configurations of the study (the ``search.cv_configs`` best non-linear ones by the
validation metric, plus the best linear ones) are re-scored by stratified k-fold
cross-validation on train + validation (``_cv.py``); on larger data, or for regression, the
trials' own models are scored on the validation split.

The winner is chosen on those held-out outputs (``_choose.py``) among the best single
configuration and an ensemble of the top configurations, built by greedy forward selection
with replacement (Caruana et al. 2004) on the held-out log-loss and kept only when it beats
the best single configuration. "Best" is, by default (``search.select_by="accuracy_f1"``),
the higher mean of out-of-fold accuracy and macro-F1, ties broken by log-loss: the final
model's confidences are calibrated afterwards, so a configuration is not chosen for being
better calibrated (by log-loss alone, a network won over a clearly more accurate logistic
regression on binary mutation-like data, in every fold). On the benchmark suite it did as well
as or better than ``"loss_or_accuracy"`` (log-loss unless the other is clearly more accurate)
on macro-F1 on every data set but qPCR (docs/benchmarks.md). Each configuration's outputs are
divided by a temperature of its own, fitted on them, before its loss is taken or it joins an
ensemble; ``"within_noise"`` prefers, where the best configurations are within the noise of
the held-out cells, their ensemble or the simplest of them (``_choose.py``).

The final model is then built from the choice by ``_final.py``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import cast

import numpy as np
import pandas as pd

from .._names import Chosen, SelectionMethod
from ._budget import Budget
from ._choose import FOLD_COLUMNS, Scored, Scores, Stack, choose, scores, stacked
from ._cv import candidates, cheap_first, cross_validate, on_validation, use_cv
from ._driver import Searcher


@dataclass
class Selection:
    """What the final model is made of, and how it was chosen."""

    method: SelectionMethod
    rows: np.ndarray  # the cells whose held-out outputs chose it
    y: np.ndarray
    task: str
    scored: list[Scored]
    weights: np.ndarray  # one per scored configuration, summing to 1
    chosen: Chosen
    k: int = 0
    seconds: float = 0.0
    held_out: np.ndarray | None = None  # outputs of the chosen combination on `rows`
    notes: list[str] = field(default_factory=list)
    stack: Stack | None = None  # the meta-learner of a stacked choice

    @property
    def temperatures(self) -> list[float] | None:
        """What each configuration's outputs are divided by in the final model: an ensemble's or stack's own, else none."""
        return [s.temperature for s in self.scored] if self.chosen in ("ensemble", "stack") else None

    def table(self) -> pd.DataFrame:
        """One row per scored configuration: held-out loss, accuracy, macro-F1, ensemble weight, temperature.

        After a cross-validation also the means of accuracy and macro-F1 over the folds and
        their standard errors (``fold_accuracy``, ``fold_accuracy_se``, ``fold_macro_f1``,
        ``fold_macro_f1_se``; NaN on the validation split). Every number is float64 but the trial.
        """
        folds = [cast(Scores, s.scores).over_folds() for s in self.scored]
        return pd.DataFrame(
            {
                "trial": np.asarray([s.trial for s in self.scored], np.int64),
                "mode": [s.mode for s in self.scored],
                "loss": np.asarray([s.loss for s in self.scored], np.float64),
                "accuracy": np.asarray([s.accuracy for s in self.scored], np.float64),
                "macro_f1": np.asarray([s.macro_f1 for s in self.scored], np.float64),
                **{k: np.asarray([f[k] for f in folds], np.float64) for k in FOLD_COLUMNS},
                "temperature": np.asarray([s.temperature for s in self.scored], np.float64),
                "weight": np.asarray(self.weights, np.float64),
                "epochs": np.asarray([float(s.epochs[0]) + 1 for s in self.scored], np.float64),
                "seconds": np.asarray([s.seconds for s in self.scored], np.float64),
            }
        )

    @property
    def lead(self) -> Scored:
        """The heaviest configuration of the choice (the only one of a single choice)."""
        return self.scored[int(np.argmax(self.weights))]

    @property
    def members(self) -> list[int]:
        """The trials in the final model."""
        return [s.trial for s, w in zip(self.scored, self.weights, strict=True) if w > 0]


def select(searcher: Searcher, *, seed: int, budget: Budget | None = None) -> Selection:
    """Score the best configurations on held-out predictions and choose single or ensemble.

    No configuration starts its cross-validation when it would not end before the budget's
    deadline; one that started may finish within the budget's grace (default: no time limit).
    """
    budget = Budget(None) if budget is None else budget
    cfg = searcher.cfg.search
    data = searcher.data
    k = use_cv(data, cfg)
    start = time.perf_counter()
    notes: list[str] = []
    method: SelectionMethod = "cv"
    if k:  # the floors first (they are cheap), the best cv_configs next; more while the budget lasts
        wanted = candidates(searcher, cfg.cv_configs, cfg.cv_configs if budget.timed else 0)
        wanted = cheap_first(wanted)
        scored, rows = cross_validate(searcher, wanted, k, seed, budget, notes)
        if not scored:
            notes.append("no configuration finished its cross-validation in time: chosen on the validation split")
    if not k or not scored:
        method, k = "validation", 0
        rows = data.idx["val"]
        scored = on_validation(searcher, max(cfg.ensemble, 1))
    y = data.y[rows]
    for s in scored:
        s.score_on(y, data.task, data.n_out)
    weights, chosen, combo = choose(scored, y, data.task, cfg.ensemble, cfg.select_by)
    stack = None
    if method == "cv" and data.task == "classification" and cfg.stack_margin is not None and cfg.ensemble >= 2:
        stack = stacked(scored, y, data.n_out)
        best = scores(combo, y, data.task, data.n_out)  # the choice's own held-out score
        if stack is not None and stack.scores.score > best.score + cfg.stack_margin:
            weights = np.zeros(len(scored))
            weights[stack.members] = 1.0 / len(stack.members)
            chosen, combo = "stack", stack.held_out
        else:
            stack = None
    return Selection(
        method, rows, y, data.task, scored, weights, chosen, k, time.perf_counter() - start, combo, notes, stack
    )
