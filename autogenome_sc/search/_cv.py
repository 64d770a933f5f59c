"""Held-out outputs of the most promising configurations: k-fold cross-validation, or the validation split.

On small classification data the candidates (:func:`candidates`) are re-scored by stratified
k-fold cross-validation on train + validation (:func:`cross_validate`): each fold model trains
as long as its trial did and predicts its held-out fold after every epoch; one number of
epochs, the best by pooled out-of-fold loss, is chosen for all folds (no fold stops early on
its own held-out cells), so every cell of train + validation gets one out-of-fold output per
configuration. Elsewhere the trials' own models are scored on the validation split
(:func:`on_validation`).
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import TYPE_CHECKING, cast

import numpy as np
from scipy.special import log_softmax, logsumexp

from .. import _logging as logg
from ..data import TrainData
from ._budget import Budget
from ._choose import Scored, best_single, outputs_loss, scores
from ._driver import Searcher
from ._record import TrialRecord
from ._spaces import is_floor, is_solved

if TYPE_CHECKING:
    from ..config._schema import SearchConfig
    from ._spaces import TrialConfig


class _OutOfTime(Exception):
    """The search's deadline (and its grace) passed during a cross-validation fit."""


def use_cv(data: TrainData, search_cfg: SearchConfig) -> int:
    """The number of folds cross-validation will use on ``data`` (0: choose on the validation split)."""
    if data.task != "classification" or search_cfg.cv_folds < 2:
        return 0
    pool = np.concatenate([data.idx["train"], data.idx["val"]])
    if len(pool) > search_cfg.cv_max_cells:
        return 0
    smallest = int(np.bincount(data.y[pool], minlength=data.n_out).min())
    k = min(search_cfg.cv_folds, smallest)
    return k if k >= 2 else 0


def candidates(searcher: Searcher, n: int, more: int = 0) -> list:
    """The floors, the ``n`` best other trials (distinct settings), then ``more`` next best.

    The floors are the best linear trials (on all genes and on a gene selection) and the best
    trial of each solved family (``logistic``, ``svm``): all cost seconds to re-score.

    The linear mode is represented by its best trial on all genes and its best on a gene
    selection: they are the floors no search may fall below, and they cost seconds. The
    validation split that ranks trials holds a dozen cells on small data: on a microarray
    proxy it ranked the linear model on 500 F-test genes (the best model of the other folds)
    below the one on all genes, which was then the only linear model re-scored and chosen.
    The ``n`` other slots go to the best trials of the other modes; linear trials fill only
    the slots those leave empty. Once linear trials were no longer pruned, variants of the
    logistic regression (another learning rate or penalty) filled the top three on qPCR and
    pushed every network out of the cross-validation, where the MLP was the best model
    (docs/benchmarks.md).
    """
    top = [t for t in searcher.top_trials() if _trainable(t)]
    distinct, seen = [], set()
    for t in top:
        key = json.dumps(t.params, sort_keys=True, default=str)
        if key not in seen:
            seen.add(key)
            distinct.append(t)
    floors = []
    for selected in (False, True):
        best = next(
            (t for t in distinct if t.params.get("mode") == "linear" and bool(t.params.get("n_genes")) == selected),
            None,
        )
        if best is not None:
            floors.append(best)
    for name in dict.fromkeys(str(t.params.get("mode")) for t in distinct if _solved(t)):
        # the best trial of each solved family (logistic, svm) is a floor too: a solve costs seconds, and on
        # the suite's wide real data (HSMM, ALL) the linear SVM was the peer to beat (docs/benchmarks.md)
        floors.append(next(t for t in distinct if t.params.get("mode") == name))
    others = [t for t in distinct if t.params.get("mode") != "linear" and t not in floors]
    if searcher.cfg.search.cv_one_per_mode:  # the best of each mode first, then the next best of any
        leads = [next(t for t in others if t.params.get("mode") == m) for m in dict.fromkeys(_modes(others))]
        others = leads + [t for t in others if t not in leads]
    spare = [t for t in distinct if t.params.get("mode") == "linear" and t not in floors]
    chosen = others[:n] + spare[: max(n - len(others), 0)]
    chosen = sorted(chosen + floors, key=distinct.index)  # in the order the validation split ranks them
    rest = [t for t in others[n:] + spare if t not in chosen]  # other modes first
    return chosen + rest[:more]


def _modes(trials: list) -> list[str]:
    return [str(t.params.get("mode")) for t in trials]


def seeds_of(trial, search_cfg: SearchConfig) -> int:
    """Networks trained per fold for ``trial``: ``search.cv_seeds`` for networks with hidden layers, else one.

    The linear mode converges to nearly the same model from any initialisation, and the solved
    families and the trees are fitted, not initialised at random: a second model per fold would
    cost their time and average nothing away.
    """
    mode = trial.params.get("mode")
    if mode == "linear" or is_solved(mode) or search_cfg.cv_seeds <= 1:
        return 1
    return int(search_cfg.cv_seeds)


def fold_seconds(data: TrainData, trial, k: int, seeds: int = 1) -> float:
    """What the ``k`` folds of ``trial``'s cross-validation should take: its rerun time, scaled to the larger folds.

    ``seeds``: the models each fold trains (:func:`seeds_of`).
    """
    pool = len(data.idx["train"]) + len(data.idx["val"])
    ratio = pool * (k - 1) / k / max(len(data.idx["train"]), 1)
    return k * seeds * TrialRecord.from_trial(trial).rerun_cost * ratio


def cv_need(searcher: Searcher, k: int) -> float:
    """Seconds the cross-validation of the current candidates should take, unpadded (see :meth:`Budget.cv_seconds`)."""
    need = 0.0
    for t in candidates(searcher, searcher.cfg.search.cv_configs):
        need += fold_seconds(searcher.data, t, k, seeds_of(t, searcher.cfg.search))
    return need


def _average(outs: list[np.ndarray], task: str) -> np.ndarray:
    """One output per cell from several models' ``outs`` (epochs x cells x outputs each).

    For classification, the log of their averaged class probabilities: logits whose softmax is
    that average, as an ensemble averages its members. Otherwise their mean.
    """
    if len(outs) == 1:
        return outs[0]
    stacked = np.stack([np.asarray(o, np.float64) for o in outs])
    if task != "classification":
        return stacked.mean(axis=0).astype(np.float32)
    logp = log_softmax(stacked, axis=-1)
    return (logsumexp(logp, axis=0) - np.log(len(outs))).astype(np.float32)


def _solved(trial) -> bool:
    return is_floor(trial.params.get("mode"))


def cheap_first(trials: list) -> list:
    """``trials`` with the floors first: the solved families' (about a second each), then the linear mode's.

    The rest keep their order, as do the trials within each group (by mode, not by measured
    time, so that the same search re-scores in the same order). The linear mode's floors can
    take tens of seconds on wide data: on HSMM (47,192 genes) a 60 s search's time ran out
    during the linear mode's cross-validation, before the SVM's, when they went in the
    validation split's order.
    """
    return sorted(trials, key=lambda t: 0 if _solved(t) else 1 if t.params.get("mode") == "linear" else 2)


def _trainable(trial) -> bool:
    """ENAS trials are re-scored through the architecture they found."""
    if trial.params.get("mode") != "enas":
        return True
    found = TrialRecord.from_trial(trial).architecture or {}
    return found.get("model") == "rrfcn"


def config_of(searcher: Searcher, trial) -> TrialConfig:
    """The configuration to train again for ``trial`` (an ENAS trial: the RRFCN it found)."""
    tc = searcher.config_of(trial)
    if tc.mode == "enas":
        found = TrialRecord.from_trial(trial).architecture
        assert found is not None  # only ENAS trials that found an architecture are candidates (_trainable)
        tc = dataclasses.replace(tc, mode="rrfcn", arch=found)
    return tc


def best_epoch(curves: np.ndarray, y: np.ndarray, task: str, n_out: int, search_cfg: SearchConfig) -> int:
    """The epoch whose pooled out-of-fold outputs ``curves[epoch]`` are best, by ``search.cv_epochs_by``."""
    if search_cfg.cv_epochs_by == "loss" or task != "classification" or len(curves) == 1:
        return int(np.argmin([outputs_loss(c, y, task) for c in curves]))
    return best_single([scores(c, y, task, n_out) for c in curves], y, search_cfg.select_by)


def on_validation(searcher: Searcher, n: int) -> list[Scored]:
    """The ``n`` best trials' own models, with their outputs on the validation split."""
    out = []
    for t in searcher.top_trials(n):
        fitted = searcher.fitted_of(t)
        if fitted.val_out is None:
            continue
        epochs = [int(fitted.result.best_epoch)]
        out.append(Scored(t.number, t.params.get("mode", ""), [fitted], fitted.val_out, epochs, 0.0))
    return out


def cross_validate(
    searcher: Searcher, trials: list, k: int, seed: int, budget: Budget, notes: list[str]
) -> tuple[list[Scored], np.ndarray]:
    """Out-of-fold outputs of ``trials`` on train + validation (the rows returned), while the budget lasts.

    A configuration whose folds would not finish in time is not started; one whose time runs
    out midway ends the cross-validation. ``notes`` gets a line for each configuration left out.
    """
    data = searcher.data
    folds = data.cv_folds(k, seed)
    rows = np.sort(np.concatenate([data.idx["train"], data.idx["val"]]))
    pos = np.full(len(data.y), -1, np.int64)
    pos[rows] = np.arange(len(rows))
    fold_of = np.zeros(len(rows), np.int64)  # the fold that holds each row out: the scores of each fold
    for f, fold in enumerate(folds):
        fold_of[pos[fold.idx["val"]]] = f

    def stop_at_deadline(epoch: int, metrics: dict) -> None:
        if budget.cv_overrun():
            raise _OutOfTime

    scored: list[Scored] = []
    bar = logg.progress(total=len(trials) * k, desc=f"cross-validating {len(trials)} configurations ({k} folds)")
    for t in trials:
        tc = config_of(searcher, t)
        seeds = seeds_of(t, searcher.cfg.search)
        guess = fold_seconds(data, t, k, seeds)
        if not budget.cv_fits(guess):
            left = budget.left()
            notes.append(
                f"trial {t.number} not cross-validated: its {k} folds would take about {guess:.0f}s, {left:.0f}s were left"
            )
            bar.update(k)
            continue
        started = time.perf_counter()
        n_epochs = int(TrialRecord.from_trial(t).epochs or tc.trainer.max_epochs)
        curves = np.zeros((n_epochs, len(rows), data.n_out), np.float32)  # held-out outputs after each epoch
        fits = []
        try:
            for f, fold in enumerate(folds):
                per_seed = []
                for s in range(seeds):
                    # seed offsets f + 1 (the first model of each fold, as with one seed), then f + 1 + k, ...
                    fitted = searcher.train(
                        tc, stop_at_deadline, f"cv trial {t.number} fold {f + 1}/{k}", data=fold,
                        seed_offset=f + 1 + s * k, stop_after=n_epochs, keep_last=True,
                        own_deadline=budget.cv_deadline(),
                    )  # fmt: skip
                    # fit(keep_last=True) on a fold with held-out rows records every epoch's outputs; a mode with
                    # its own loop may run longer than the trial did (the trees boost until their fold's loss
                    # stalls): the trial's epochs bound the choice, as stop_after bounds a network's
                    outs = cast(np.ndarray, fitted.result.val_outputs)[:n_epochs]
                    if len(outs) < n_epochs:  # it stopped early: its last outputs stand for the later epochs
                        outs = np.concatenate([outs, np.repeat(outs[-1:], n_epochs - len(outs), axis=0)])
                    per_seed.append(outs)
                    fits.append(fitted)
                curves[:, pos[fold.idx["val"]]] = _average(per_seed, data.task)
                bar.update(1)
        except _OutOfTime:
            notes.append(f"trial {t.number}: the time budget ran out during its cross-validation")
            bar.update(k - len(fits) // seeds)
            break
        except FloatingPointError as e:
            notes.append(f"trial {t.number} left out: {e}")
            bar.update(k - len(fits) // seeds)
            continue
        # the number of epochs: the best on the pooled held-out outputs (no fold stops early on its own fold)
        best = best_epoch(curves, data.y[rows], data.task, data.n_out, searcher.cfg.search)
        seconds = time.perf_counter() - started
        scored.append(Scored(t.number, t.params.get("mode", ""), fits, curves[best], [best], seconds, fold_of))
    bar.close()
    return scored, rows
