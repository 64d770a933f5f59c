"""Running trials on a prepared problem, the leaderboard, and the winner (or ensemble of winners).

The data are prepared once per search; each trial draws a mode, an architecture and the
general hyperparameters, trains with :func:`autogenome_sc.train.fit`, reports the validation
metric after every epoch (so the pruner can stop it) and records its result in the study.
The test split is never looked at here.
"""

from __future__ import annotations

import dataclasses
import inspect
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, cast

import jax
import numpy as np
import optuna
import pandas as pd
from optuna.trial import TrialState

from .. import _logging as logg
from ..data import TrainData
from ..nn import build_network
from ..nn._fc import canonical
from ..train import FitResult, fit, make_apply, predict_arrays
from ..train._loop import eval_batch
from ._spaces import MODES, TrialConfig, suggest
from ._study import PORTFOLIO_ATTR, Heartbeat, recover_stale_trials, uses_own_heartbeat, worker_name

if TYPE_CHECKING:
    from ..config._schema import Config

COUNTED = (TrialState.COMPLETE, TrialState.PRUNED)
SURPLUS_ATTR = "ag_surplus"
DEFAULT_N_TRIALS = 30
DEFAULT_TIMEOUT = 240.0


class _Surplus(Exception):
    """A worker asked for a trial after the study already had its ``n_trials``."""


def direction(metric: str) -> Literal["minimize", "maximize"]:
    """Optuna's direction for a validation metric."""
    return "maximize" if metric == "val_accuracy" else "minimize"


def trial_seed(rng: int) -> jax.Array:
    """Every trial starts from the same key (common random numbers), so a trial can be retrained."""
    return jax.random.key(rng)


@dataclass
class Fitted:
    """One trained configuration: what it was, its weights, the data variant it read, its validation outputs."""

    config: TrialConfig
    arch: dict  # the architecture trained (ENAS: the one it found)
    result: FitResult
    data: TrainData  # the problem with this configuration's scaling and genes
    val_out: np.ndarray | None = None  # network outputs on the validation split


@dataclass
class Searcher:
    """Runs trials of one study on one prepared problem, in this process."""

    study: optuna.Study
    data: TrainData
    cfg: Config
    modes: list[str]
    rng: int
    keep: int = 1  # how many best trained configurations to keep in memory
    results: dict[int, Fitted] = field(default_factory=dict)
    n_trials: int | None = None
    deadline: float | None = None
    reserve: Callable[[], float] | None = None  # () -> seconds to keep free before the deadline
    _reserved: float = 0.0
    _first_epochs: list[float] = field(default_factory=list)
    _values: dict[int, float] = field(default_factory=dict)
    _complete_seen: bool = False

    @property
    def metric(self) -> str:
        return self.cfg.search.metric

    @property
    def n_vars(self) -> int:
        return int(self.data.base.pipeline.n_features)

    def _n_counted(self, states=COUNTED, before: int | None = None) -> int:
        trials = self.study.get_trials(deepcopy=False, states=states)
        return sum(1 for t in trials if not t.user_attrs.get(SURPLUS_ATTR) and (before is None or t.number < before))

    def n_counted(self) -> int:
        """Finished or pruned trials of the study (the ones ``n_trials`` counts)."""
        return self._n_counted()

    def config_of(self, trial: optuna.trial.FrozenTrial) -> TrialConfig:
        """A trial's configuration, drawn again from its parameters."""
        # a trial of a study begun before batch_norm was searched had BatchNorm (an unused entry is ignored)
        fixed = optuna.trial.FixedTrial({"batch_norm": True, **trial.params}, number=trial.number)
        # FixedTrial offers Trial's suggest_* API without subclassing optuna.Trial
        return suggest(fixed, self.cfg, self.modes, self.n_vars, self.data.task)  # type: ignore[arg-type]

    def objective(self, trial: optuna.Trial) -> float:
        n_target = self.n_trials
        if n_target is not None:
            taken = self._n_counted((*COUNTED, TrialState.RUNNING), before=trial.number)
            if taken >= n_target:
                trial.set_user_attr(SURPLUS_ATTR, True)
                self.study.stop()
                raise _Surplus(f"the study already has its {n_target} trials")
        tc = suggest(trial, self.cfg, self.modes, self.n_vars, self.data.task)
        trial.set_user_attr("architecture", tc.arch)
        trial.set_user_attr("worker", worker_name())
        start = time.perf_counter()
        reports = MODES[tc.mode].prune if tc.mode in MODES else True
        # The portfolio's networks report their epochs (later trials are judged against them) but run to
        # their end: on qPCR, Hyperband stopped the one trained as scikit-learn's MLP at epoch 6 of a
        # one-cycle schedule in one fold, where in the next it was the second-best trial and the MLP
        # is the best peer (docs/benchmarks.md).
        prunable = reports and not trial.user_attrs.get(PORTFOLIO_ATTR, False)

        def report(epoch: int, metrics: dict) -> None:
            if epoch == 0:  # compiling and the first epoch: what starting another trial costs before it can stop
                self._first_epochs.append(time.perf_counter() - start)
            stop = False
            if reports:
                trial.report(float(metrics[self.metric]), epoch)
                stop = trial.should_prune() and prunable  # asked either way: the pruner records the trial's rungs
            over = self._past_deadline() and self._has_complete()
            if over:  # the time budget also stops the running trial, at an epoch boundary
                trial.set_user_attr("stopped_by_timeout", True)
            if over or stop:
                trial.set_user_attr("epochs", epoch + 1)
                trial.set_user_attr("seconds", time.perf_counter() - start)
                raise optuna.TrialPruned()

        own = uses_own_heartbeat(self.study)
        with Heartbeat(self.study, trial, self.cfg.search.heartbeat_interval, enabled=own):
            try:
                fitted = self.train(tc, report, f"trial {trial.number} ({tc.mode})")
                trial.set_user_attr("architecture", fitted.arch)
            except FloatingPointError as e:
                trial.set_user_attr("diverged", True)
                trial.set_user_attr("failure", str(e))
                trial.set_user_attr("seconds", time.perf_counter() - start)
                raise optuna.TrialPruned() from None
            except (optuna.TrialPruned, _Surplus):
                raise
            except Exception as e:  # noqa: BLE001 - one bad configuration must not end the search
                trial.set_user_attr("failure", f"{type(e).__name__}: {e}"[:500])
                trial.set_user_attr("seconds", time.perf_counter() - start)
                logg.debug(f"trial {trial.number} failed:\n{traceback.format_exc()}")
                raise
        result = fitted.result
        if result.stopped_at_deadline:
            trial.set_user_attr("stopped_by_timeout", True)
            if tc.mode in MODES and MODES[tc.mode].run is not None:  # its own loop: all of it is what a start costs
                self._first_epochs.append(time.perf_counter() - start)
        hist = result.history
        value = _value_at_best(result, self.metric)
        trial.set_user_attr("val_loss", float(result.best_val_loss))
        if "val_accuracy" in hist:
            trial.set_user_attr("val_accuracy", float(hist["val_accuracy"][result.best_epoch]))
        trial.set_user_attr("best_epoch", int(result.best_epoch))
        trial.set_user_attr("epochs", len(hist["epoch"]))
        seconds = time.perf_counter() - start
        trial.set_user_attr("seconds", seconds)
        if np.isfinite(result.epoch_seconds):  # the cost of a run once compiled (a fold of its CV)
            trial.set_user_attr("rerun_seconds", float(result.epoch_seconds) * len(hist["epoch"]))
        self._remember(trial.number, value, fitted)
        return value

    def _has_complete(self) -> bool:
        """Whether the study has a finished trial (the time budget never stops the first one)."""
        if not self._complete_seen:
            self._complete_seen = bool(self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
        return self._complete_seen

    def _remember(self, number: int, value: float, fitted: Fitted) -> None:
        sign = -1.0 if direction(self.metric) == "maximize" else 1.0
        self.results[number] = fitted
        self._values[number] = sign * value
        if len(self.results) > self.keep:
            worst = max(self.results, key=lambda n: self._values[n])
            del self.results[worst]

    def _past_deadline(self, starting: bool = False) -> bool:
        """Whether trials should stop: the timeout passed, less the time kept for what follows.

        ``starting``: whether a new trial may start, which also needs the time a trial takes
        to reach its first epoch (mostly compiling), the median of those seen so far.
        """
        if self.deadline is None:
            return False
        margin = float(np.median(self._first_epochs)) if starting and self._first_epochs else 0.0
        return time.perf_counter() + self._reserved + margin > self.deadline

    def _own_loop_deadline(self) -> float | None:
        """When a trial of a mode with its own loop (ENAS) must be done: ``search.enas_share`` of the time left."""
        if self.deadline is None:
            return None
        now = time.perf_counter()
        return now + self.cfg.search.enas_share * max(self.deadline - self._reserved - now, 0.0)

    def run(
        self,
        n_trials: int | None,
        timeout: float | None,
        *,
        reserve: Callable[[], float] | None = None,
        progress: bool = True,
    ) -> None:
        """Run trials in this process until the study has ``n_trials`` counted trials or ``timeout`` passes.

        ``reserve()``, if given, is the number of seconds to keep free at the end of ``timeout``
        (for cross-validation); it is asked again after every trial and epoch.
        """
        self.n_trials = n_trials
        self.reserve = reserve
        self._reserved = reserve() if reserve is not None else 0.0
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
            if self.reserve is not None:
                self._reserved = self.reserve()
            now = self._n_counted()
            bar.n = now
            best = _safe_best(study)
            if best is not None:
                bar.set_postfix({self.metric: f"{best:.4f}"}, refresh=False)
            bar.refresh()
            if n_trials is not None and self._n_counted((*COUNTED, TrialState.RUNNING)) >= n_trials:
                study.stop()
            if self._past_deadline(starting=True):
                study.stop()

        old = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.ERROR)  # our bar says what Optuna's log would
        try:
            self.study.optimize(
                self.objective,
                n_trials=None,  # the study-wide count is enforced by `after` and `objective`
                timeout=timeout,
                callbacks=[after],
                catch=(_Surplus, Exception),  # a failed trial is recorded (with its reason) and the search goes on
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

    def top_trials(self, k: int | None = None) -> list[optuna.trial.FrozenTrial]:
        """The ``k`` best COMPLETE trials by the validation metric (all of them for ``None``)."""
        done = [
            t
            for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.value is not None and np.isfinite(t.value)
        ]
        reverse = direction(self.metric) == "maximize"
        done.sort(key=lambda t: (-cast(float, t.value) if reverse else t.value, t.number))  # value: not None above
        return done if k is None else done[:k]

    def first_failure(self) -> str | None:
        """The reason the first failed (or diverged) trial of the study gave, if any."""
        for t in sorted(self.study.get_trials(deepcopy=False), key=lambda t: t.number):
            why = t.user_attrs.get("failure")
            if why:
                return f"trial {t.number} ({t.params.get('mode', '?')}): {why}"
        return None

    def fitted_of(self, trial: optuna.trial.FrozenTrial) -> Fitted:
        """The trial's trained configuration: from memory, or retrained from its parameters."""
        if trial.number in self.results:
            return self.results[trial.number]
        logg.info(f"    retraining trial {trial.number} (run by another worker) from its parameters")
        tc = self.config_of(trial)
        found = trial.user_attrs.get("architecture")
        if tc.mode == "enas" and found and found.get("model") == "rrfcn":  # retrain what its ENAS search found
            tc = dataclasses.replace(tc, mode="rrfcn", arch=found)
        return self.train(tc, None, f"retrain {trial.number}")

    def result_of(self, trial: optuna.trial.FrozenTrial) -> tuple[dict, FitResult]:
        """The trial's architecture and fitted weights (see :meth:`fitted_of`)."""
        fitted = self.fitted_of(trial)
        return fitted.arch, fitted.result

    def train(
        self,
        tc: TrialConfig,
        report: Callable[[int, dict], None] | None,
        desc: str,
        data: TrainData | None = None,
        seed_offset: int = 0,
        **fit_kw: Any,
    ) -> Fitted:
        """Train one configuration on ``data`` (default: the search's problem) with its scaling and genes.

        ``seed_offset`` > 0 draws another initialisation (the folds of a cross-validation);
        ``fit_kw`` go to :func:`autogenome_sc.train.fit`.
        """
        base = self.data if data is None else data
        runner = MODES[tc.mode].run if tc.mode in MODES else None
        supervised = tc.mode not in MODES or MODES[tc.mode].supervised
        problem = base.with_inputs(tc.scaling, tc.n_genes, tc.genes_by) if supervised else base
        key = trial_seed(self.rng)
        if seed_offset:
            key = jax.random.fold_in(key, seed_offset)
        if runner is not None:
            cfg = self.cfg.model_copy(update={"loss": tc.loss})
            extra = {}
            if "deadline" in inspect.signature(runner).parameters:  # a mode with its own loop that can keep time
                extra["deadline"] = self._own_loop_deadline() if report is not None else None
            arch, result = runner(problem, tc.arch, tc.trainer, cfg, key, report, **extra)
        else:
            arch = tc.arch
            net = build_network(arch, problem.n_out)
            result = fit(net, problem, tc.trainer, tc.loss, key, callback=report, desc=desc, **fit_kw)
        fitted = Fitted(tc, arch, result, problem)
        if supervised and len(problem.idx["val"]):
            fitted.val_out = outputs_of(fitted, problem.idx["val"])
        return fitted


def outputs_of(fitted: Fitted, idx: np.ndarray) -> np.ndarray:
    """Network outputs (logits, or standardised regression values) of rows ``idx`` of ``fitted.data``."""
    net = canonical(build_network(fitted.arch, fitted.data.n_out))  # evaluation ignores the dropout rates
    out, _ = predict_arrays(make_apply(net), fitted.result.variables, fitted.data.pipeline, idx, eval_batch(len(idx)))
    return out


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
            "stopped_by_timeout": bool(t.user_attrs.get("stopped_by_timeout", False)),
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
