"""Running trials on a prepared problem, the leaderboard, and the winner (or ensemble of winners).

The data are prepared once per search; each trial draws a mode, an architecture and the
general hyperparameters, trains with :func:`autogenome_sc.train.fit`, reports the validation
metric after every epoch (so the pruner can stop it) and records its result in the study.
The test split is never looked at here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import jax
import numpy as np
import optuna
import pandas as pd
from optuna.trial import TrialState

from .. import _logging as logg
from ..data import TrainData
from ..nn import build_network
from ..train import FitResult, fit
from ._spaces import MODES, suggest
from ._study import Heartbeat, recover_stale_trials, uses_own_heartbeat, worker_name

COUNTED = (TrialState.COMPLETE, TrialState.PRUNED)
SURPLUS_ATTR = "ag_surplus"
DEFAULT_N_TRIALS = 30
DEFAULT_TIMEOUT = 240.0


class _Surplus(Exception):
    """A worker asked for a trial after the study already had its ``n_trials``."""


def direction(metric: str) -> str:
    """Optuna's direction for a validation metric."""
    return "maximize" if metric == "val_accuracy" else "minimize"


def trial_seed(rng: int) -> jax.Array:
    """Every trial starts from the same key (common random numbers), so a trial can be retrained."""
    return jax.random.key(rng)


@dataclass
class Searcher:
    """Runs trials of one study on one prepared problem, in this process."""

    study: optuna.Study
    data: TrainData
    cfg: object
    modes: list[str]
    rng: int
    keep: int = 1  # how many best FitResults to keep in memory
    results: dict[int, FitResult] = field(default_factory=dict)
    n_trials: int | None = None
    deadline: float | None = None

    @property
    def metric(self) -> str:
        return self.cfg.search.metric

    def _n_counted(self, states=COUNTED, before: int | None = None) -> int:
        trials = self.study.get_trials(deepcopy=False, states=states)
        return sum(1 for t in trials if not t.user_attrs.get(SURPLUS_ATTR) and (before is None or t.number < before))

    def n_counted(self) -> int:
        """Finished or pruned trials of the study (the ones ``n_trials`` counts)."""
        return self._n_counted()

    def objective(self, trial: optuna.Trial) -> float:
        n_target = self.n_trials
        if n_target is not None:
            taken = self._n_counted((*COUNTED, TrialState.RUNNING), before=trial.number)
            if taken >= n_target:
                trial.set_user_attr(SURPLUS_ATTR, True)
                self.study.stop()
                raise _Surplus(f"the study already has its {n_target} trials")
        mode, arch, trainer = suggest(trial, self.cfg, self.modes)
        trial.set_user_attr("architecture", arch)
        trial.set_user_attr("worker", worker_name())
        start = time.perf_counter()

        def report(epoch: int, metrics: dict) -> None:
            trial.report(float(metrics[self.metric]), epoch)
            over = self.deadline is not None and time.perf_counter() > self.deadline and self._has_complete()
            if over:  # the time budget also stops the running trial, at an epoch boundary
                trial.set_user_attr("stopped_by_timeout", True)
            if over or trial.should_prune():
                trial.set_user_attr("epochs", epoch + 1)
                trial.set_user_attr("seconds", time.perf_counter() - start)
                raise optuna.TrialPruned()

        own = uses_own_heartbeat(self.study)
        with Heartbeat(self.study, trial, self.cfg.search.heartbeat_interval, enabled=own):
            try:
                arch, result = self._train(mode, arch, trainer, report, f"trial {trial.number} ({mode})")
                trial.set_user_attr("architecture", arch)
            except FloatingPointError:
                trial.set_user_attr("diverged", True)
                trial.set_user_attr("seconds", time.perf_counter() - start)
                raise optuna.TrialPruned() from None
        hist = result.history
        value = _value_at_best(result, self.metric)
        trial.set_user_attr("val_loss", float(result.best_val_loss))
        if "val_accuracy" in hist:
            trial.set_user_attr("val_accuracy", float(hist["val_accuracy"][result.best_epoch]))
        trial.set_user_attr("best_epoch", int(result.best_epoch))
        trial.set_user_attr("epochs", len(hist["epoch"]))
        trial.set_user_attr("seconds", time.perf_counter() - start)
        self._remember(trial.number, value, result)
        return value

    def _has_complete(self) -> bool:
        """Whether the study has a finished trial (the time budget never stops the first one)."""
        if not getattr(self, "_complete_seen", False):
            self._complete_seen = bool(self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
        return self._complete_seen

    def _remember(self, number: int, value: float, result: FitResult) -> None:
        sign = -1.0 if direction(self.metric) == "maximize" else 1.0
        self.results[number] = result
        self._values = getattr(self, "_values", {})
        self._values[number] = sign * value
        if len(self.results) > self.keep:
            worst = max(self.results, key=lambda n: self._values[n])
            del self.results[worst]

    def run(self, n_trials: int | None, timeout: float | None, *, progress: bool = True) -> None:
        """Run trials in this process until the study has ``n_trials`` counted trials or ``timeout`` passes."""
        self.n_trials = n_trials
        self.deadline = None if timeout is None else time.perf_counter() + timeout
        recover_stale_trials(self.study, self.cfg.search)
        done = self._n_counted()
        if n_trials is not None and done >= n_trials:
            logg.info(f"    study '{self.study.study_name}' already has {done} of {n_trials} trials")
            return
        total = None if n_trials is None else n_trials
        bar = logg.progress(total=total, desc=f"search '{self.study.study_name}'", leave=True)
        bar.update(done)

        def after(study: optuna.Study, frozen: optuna.trial.FrozenTrial) -> None:
            recover_stale_trials(study, self.cfg.search)
            now = self._n_counted()
            bar.n = now
            best = _safe_best(study)
            if best is not None:
                bar.set_postfix({self.metric: f"{best:.4f}"}, refresh=False)
            bar.refresh()
            if n_trials is not None and self._n_counted((*COUNTED, TrialState.RUNNING)) >= n_trials:
                study.stop()

        old = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # our bar says what Optuna's log would
        try:
            self.study.optimize(
                self.objective,
                n_trials=None,  # the study-wide count is enforced by `after` and `objective`
                timeout=timeout,
                callbacks=[after],
                catch=(_Surplus,),
                gc_after_trial=False,
                show_progress_bar=False,
            )
        finally:
            optuna.logging.set_verbosity(old)
            bar.close()

    def wait_for_others(self, max_wait: float | None = None) -> None:
        """Wait until no trial of another worker is RUNNING (stale ones are failed on the way)."""
        max_wait = max_wait if max_wait is not None else 10 * self.cfg.search.grace_period
        t0 = time.time()
        while self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if time.time() - t0 > max_wait:
                logg.info("    stopped waiting for running trials of other workers")
                return
            recover_stale_trials(self.study, self.cfg.search)
            time.sleep(1.0)

    def top_trials(self, k: int) -> list[optuna.trial.FrozenTrial]:
        """The ``k`` best COMPLETE trials by the validation metric."""
        done = [
            t
            for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.value is not None and np.isfinite(t.value)
        ]
        reverse = direction(self.metric) == "maximize"
        done.sort(key=lambda t: (-t.value if reverse else t.value, t.number))
        return done[:k]

    def result_of(self, trial: optuna.trial.FrozenTrial) -> tuple[dict, FitResult]:
        """The trial's architecture and fitted weights: from memory, or retrained from its parameters."""
        fixed = optuna.trial.FixedTrial(trial.params, number=trial.number)
        _, arch, trainer = suggest(fixed, self.cfg, self.modes)
        if trial.number in self.results:  # ENAS trials store the architecture they found
            return trial.user_attrs.get("architecture", arch), self.results[trial.number]
        logg.info(f"    retraining trial {trial.number} (run by another worker) from its parameters")
        return self._train(trial.params["mode"], arch, trainer, None, f"retrain {trial.number}")

    def _train(self, mode: str, arch: dict, trainer, report, desc: str) -> tuple[dict, FitResult]:
        """Train one trial's model: the mode's own runner, or ``fit`` of ``build_network(arch)``."""
        runner = MODES[mode].run
        if runner is not None:
            return runner(self.data, arch, trainer, self.cfg, trial_seed(self.rng), report)
        net = build_network(arch, self.data.n_out)
        return arch, fit(net, self.data, trainer, self.cfg.loss, trial_seed(self.rng), callback=report, desc=desc)


def _value_at_best(result: FitResult, metric: str) -> float:
    if metric == "val_loss":
        return float(result.best_val_loss)
    return float(result.history[metric][result.best_epoch])


def _safe_best(study: optuna.Study) -> float | None:
    try:
        return float(study.best_value)
    except ValueError:
        return None


def leaderboard(study: optuna.Study) -> pd.DataFrame:
    """One row per trial (surplus ones left out): mode, state, metrics, seconds, hyperparameters.

    h5ad-safe: numeric columns are float (NaN where a parameter does not apply to the mode),
    text columns are strings (empty where it does not apply).
    """
    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.user_attrs.get(SURPLUS_ATTR):
            continue
        seconds = t.user_attrs.get("seconds")
        if seconds is None and t.datetime_start is not None and t.datetime_complete is not None:
            seconds = (t.datetime_complete - t.datetime_start).total_seconds()
        row = {
            "trial": t.number,
            "mode": t.params.get("mode", ""),
            "state": t.state.name.lower(),
            "value": t.value if t.state == TrialState.COMPLETE else _last(t),
            "val_loss": t.user_attrs.get("val_loss"),
            "val_accuracy": t.user_attrs.get("val_accuracy"),
            "best_epoch": t.user_attrs.get("best_epoch"),
            "epochs": t.user_attrs.get("epochs", len(t.intermediate_values) or None),
            "seconds": seconds,
            "retry_of": t.system_attrs.get("failed_trial"),
            "worker": t.user_attrs.get("worker"),
        }
        row.update({k: v for k, v in sorted(t.params.items()) if k != "mode"})
        rows.append(row)
    df = pd.DataFrame(rows)
    if df.empty:
        return pd.DataFrame({"trial": np.zeros(0, np.int64)})
    for col in df.columns:
        df[col] = _h5ad_column(df[col])
    return df.sort_values("trial").reset_index(drop=True)


def _last(t: optuna.trial.FrozenTrial) -> float | None:
    if not t.intermediate_values:
        return None
    return t.intermediate_values[max(t.intermediate_values)]


def _h5ad_column(s: pd.Series) -> pd.Series:
    vals = [v for v in s if v is not None and not (isinstance(v, float) and np.isnan(v))]
    if all(isinstance(v, bool | np.bool_) for v in vals) and vals:
        return s.map(lambda v: "" if v is None or (isinstance(v, float) and np.isnan(v)) else str(bool(v)))
    if all(isinstance(v, int | float | np.integer | np.floating) for v in vals):
        if len(vals) == len(s) and all(isinstance(v, int | np.integer) for v in vals):
            return s.astype(np.int64)
        return pd.to_numeric(s, errors="coerce").astype(np.float64)
    return s.map(lambda v: "" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)).astype(str)
