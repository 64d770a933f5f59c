"""Running trials on a prepared problem (:class:`Searcher`), and training a configuration again.

The data are prepared once per search; each trial draws a mode, an architecture and the
general hyperparameters, trains with :func:`autogenome_sc.train.fit` (or its mode's own
``run``), reports the validation metric after every epoch (so the pruner can stop it) and
records its result in the study as a :class:`~autogenome_sc.search._record.TrialRecord`.
When to stop is asked of the search's :class:`~autogenome_sc.search._budget.Budget`. The test
split is never looked at here.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, cast

import jax
import numpy as np
import optuna
from optuna.trial import TrialState

from .. import _logging as logg
from ..data import TrainData
from ..nn import build_network
from ..nn._fc import canonical
from ..train import FitResult, fit, make_apply, predict_arrays
from ..train._loop import compile_fit, eval_batch
from ._budget import Budget
from ._record import TrialRecord
from ._spaces import MODES, Report, TrialConfig, suggest
from ._study import Heartbeat, recover_stale_trials, uses_own_heartbeat, worker_name

if TYPE_CHECKING:
    from ..config._schema import Config

COUNTED = (TrialState.COMPLETE, TrialState.PRUNED)
#: A supervised search without a budget anywhere runs this many seconds of trials and selection (the final
#: fit comes after). On the benchmark suite: the accuracy of the earlier default of 30 trials or 240 s,
#: 0.6 points under its macro-F1 (docs/benchmarks.md, "The default budget: 60 s").
DEFAULT_TIMEOUT = 60.0
#: The Res-VAE search (no labels) without a budget: this many trials or :data:`DEFAULT_VAE_TIMEOUT`, whichever comes first.
DEFAULT_N_TRIALS = 30
DEFAULT_VAE_TIMEOUT = 240.0
#: Trials in a row that failed (raised, not pruned) after which a search stops: something is wrong with every one.
MAX_FAILED_IN_ROW = 10


class _Surplus(Exception):
    """A worker asked for a trial after the study already had its ``n_trials``."""


def direction(metric: str) -> Literal["minimize", "maximize"]:
    """Optuna's direction for a validation metric."""
    return "maximize" if metric == "val_accuracy" else "minimize"


def stagnant(trials: list, metric: str, patience: int, tol: float) -> bool:
    """Whether ``patience`` finished trials in a row, after the portfolio's, left the best value where it was.

    A trial moves the best value when it beats it by more than ``tol`` of it (relative); a
    smaller gain is taken as the best but counts as no progress (on a validation split of a few
    dozen cells it is within noise). Pruned trials count as no progress. While the portfolio's
    trials still wait, or before any trial completed, the search is never stagnant. Optuna's own
    ``optuna.terminator`` is deprecated since Optuna 4.9 (to be removed in 6.0), so the rule is ours.
    """
    if any(t.state == TrialState.WAITING for t in trials):
        return False
    sign = 1.0 if direction(metric) == "minimize" else -1.0
    best: float | None = None
    since = 0
    for t in sorted((t for t in trials if t.state in COUNTED), key=lambda t: t.number):
        value = float(t.value) if t.state == TrialState.COMPLETE and t.value is not None else np.nan
        if np.isfinite(value) and (best is None or sign * (best - value) > tol * abs(best)):
            best, since = value, 0
            continue
        if np.isfinite(value) and best is not None and sign * (best - value) > 0:
            best = value
        if not TrialRecord.from_trial(t).portfolio:
            since += 1
    return best is not None and since >= patience


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
    seed_offset: int = 0  # what Searcher.train drew its initialisation with (a bag trains it again the same way)


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
    budget: Budget = field(default_factory=lambda: Budget(None))  # the running trials' time (see run)
    _values: dict[int, float] = field(default_factory=dict)
    _complete_seen: bool = False
    _failed_in_row: list[str] = field(default_factory=list)  # this run's latest failures in a row, as sentences
    #: Why :meth:`run` stopped early: ``MAX_FAILED_IN_ROW`` trials in a row failed (the first one's reason).
    stopped_by_failures: str | None = None
    stopped_stagnant: str | None = None  # why the last run stopped before its budget (search.stagnation)
    compiled_ahead: int = 0  # networks the last run compiled ahead of their trials (search.compile_ahead)
    planned_ahead: int = 0  # of the networks it set out to compile ahead

    @property
    def metric(self) -> str:
        return self.cfg.search.metric

    @property
    def n_vars(self) -> int:
        return int(self.data.base.pipeline.n_features)

    def _n_counted(self, states=COUNTED, before: int | None = None) -> int:
        trials = self.study.get_trials(deepcopy=False, states=states)
        return sum(1 for t in trials if not TrialRecord.from_trial(t).surplus and (before is None or t.number < before))

    def n_counted(self) -> int:
        """Finished or pruned trials of the study (the ones ``n_trials`` counts)."""
        return self._n_counted()

    def config_of(self, trial: optuna.trial.FrozenTrial) -> TrialConfig:
        """A trial's configuration, drawn again from its parameters."""
        return self.config_from(trial.params, trial.number)

    def config_from(self, params: dict[str, Any], number: int = 0) -> TrialConfig:
        """The configuration these parameters draw (ValueError where one the configuration needs is missing)."""
        # a trial of a study begun before batch_norm was searched had BatchNorm, and one before the trees'
        # max_features and max_bins were searched used every gene and 255 bins: drawn again with the offered
        # number of bins nearest 255, a matter of speed (an unused entry is ignored)
        bins = min(self.cfg.search.spaces.trees_max_bins, key=lambda b: abs(b - 255))
        old = {"batch_norm": True, "trees_max_features": 1.0, "trees_max_bins": bins}
        fixed = optuna.trial.FixedTrial({**old, **params}, number=number)
        # FixedTrial offers Trial's suggest_* API without subclassing optuna.Trial
        return suggest(fixed, self.cfg, self.modes, self.n_vars, self.data.task)  # type: ignore[arg-type]

    def objective(self, trial: optuna.Trial) -> float:
        n_target = self.n_trials
        if n_target is not None:
            taken = self._n_counted((*COUNTED, TrialState.RUNNING), before=trial.number)
            if taken >= n_target:
                TrialRecord(surplus=True).write(trial)
                self.study.stop()
                raise _Surplus(f"the study already has its {n_target} trials")
        try:
            tc = suggest(trial, self.cfg, self.modes, self.n_vars, self.data.task)
        except Exception as e:  # e.g. a space Optuna refuses: recorded, so the search can say why it stopped
            TrialRecord(failure=f"{type(e).__name__}: {e}"[:500]).write(trial)
            raise
        TrialRecord(architecture=tc.arch, worker=worker_name()).write(trial)
        start = time.perf_counter()
        mode = MODES.get(tc.mode)
        reports = mode.prune if mode is not None else True
        # The portfolio's networks report their epochs (later trials are judged against them) but run to
        # their end: on qPCR, Hyperband stopped the one trained as scikit-learn's MLP early in a one-cycle
        # schedule in one fold, where in the next it was the second-best trial (docs/benchmarks.md).
        prunable = reports and not TrialRecord.from_trial(trial).portfolio

        def report(epoch: int, metrics: dict) -> None:
            if epoch == 0:  # compiling and the first epoch: what starting another trial costs before it can stop
                self.budget.first_epoch_took(time.perf_counter() - start)
            stop = False
            if reports:
                trial.report(float(metrics[self.metric]), epoch)
                stop = trial.should_prune() and prunable  # asked either way: the pruner records the trial's rungs
            over = self.budget.trials_over() and self._has_complete()
            if over:  # the time budget also stops the running trial, at an epoch boundary
                TrialRecord(stopped_by_timeout=True).write(trial)
            if over or stop:
                TrialRecord(epochs=epoch + 1, seconds=time.perf_counter() - start).write(trial)
                raise optuna.TrialPruned()

        own = uses_own_heartbeat(self.study)
        with Heartbeat(self.study, trial, self.cfg.search.heartbeat_interval, enabled=own):
            try:
                fitted = self.train(tc, report, f"trial {trial.number} ({tc.mode})")
                TrialRecord(architecture=fitted.arch).write(trial)
            except FloatingPointError as e:
                TrialRecord(diverged=True, failure=str(e), seconds=time.perf_counter() - start).write(trial)
                raise optuna.TrialPruned() from None
            except (optuna.TrialPruned, _Surplus):
                raise
            except Exception as e:  # noqa: BLE001 - one bad configuration must not end the search
                failure = f"{type(e).__name__}: {e}"[:500]
                TrialRecord(failure=failure, seconds=time.perf_counter() - start).write(trial)
                logg.debug(f"trial {trial.number} failed:\n{traceback.format_exc()}")
                raise
        return self._finished(trial, fitted, start)

    def _finished(self, trial: optuna.Trial, fitted: Fitted, start: float) -> float:
        """Record a trial that trained to its end (or to the time budget's); its value."""
        result = fitted.result
        mode = MODES.get(fitted.config.mode)
        if result.stopped_at_deadline and mode is not None and mode.run is not None:
            self.budget.first_epoch_took(time.perf_counter() - start)  # its own loop: all of it is what a start costs
        hist = result.history
        value = _value_at_best(result, self.metric)
        finite = np.isfinite(result.epoch_seconds)  # the cost of a run once compiled (a fold of its CV)
        TrialRecord(
            stopped_by_timeout=bool(result.stopped_at_deadline),
            val_loss=float(result.best_val_loss),
            val_accuracy=float(hist["val_accuracy"][result.best_epoch]) if "val_accuracy" in hist else None,
            best_epoch=int(result.best_epoch),
            epochs=len(hist["epoch"]),
            seconds=time.perf_counter() - start,
            rerun_seconds=float(result.epoch_seconds) * len(hist["epoch"]) if finite else None,
        ).write(trial)
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

    def run(self, n_trials: int | None, budget: Budget | None = None) -> None:
        """Run trials in this process until the study has ``n_trials`` counted trials or the budget says stop.

        ``budget`` (default: no time limit) gives the trials ``budget.timeout`` seconds from now,
        less what it keeps for cross-validation (asked again after every trial), and says whether
        a new trial may start (:meth:`Budget.trials_over`).
        """
        self.n_trials = n_trials
        self.budget = Budget(None) if budget is None else budget
        self._failed_in_row.clear()
        self.stopped_by_failures = None
        self.stopped_stagnant = None
        self.budget.start_trials()
        recover_stale_trials(self.study, self.cfg.search)
        done = self._n_counted()
        if n_trials is not None and done >= n_trials:
            logg.info(f"    study '{self.study.study_name}' already has {done} of {n_trials} trials")
            return
        total = None if n_trials is None else n_trials
        bar = logg.progress(total=total, desc=f"search '{self.study.study_name}'", leave=True)
        bar.update(done)

        def after(study: optuna.Study, frozen: optuna.trial.FrozenTrial) -> None:
            if self._count_failure(frozen):
                study.stop()
                return
            recover_stale_trials(study, self.cfg.search)
            self.budget.refresh()
            now = self._n_counted()
            bar.n = now
            best = _safe_best(study)
            if best is not None:
                bar.set_postfix({self.metric: f"{best:.4f}"}, refresh=False)
            bar.refresh()
            if n_trials is not None and self._n_counted((*COUNTED, TrialState.RUNNING)) >= n_trials:
                study.stop()
            if self.budget.trials_over(starting=True):
                study.stop()
            patience = self.cfg.search.stagnation
            if patience is not None and stagnant(
                study.get_trials(deepcopy=False), self.metric, patience, self.cfg.search.stagnation_tol
            ):
                self.stopped_stagnant = (
                    f"{patience} trials in a row did not improve the best {self.metric} by more than "
                    f"{self.cfg.search.stagnation_tol:.0%} (search.stagnation)"
                )
                study.stop()

        ahead = self._compile_ahead(n_trials)
        old = optuna.logging.get_verbosity()
        optuna.logging.set_verbosity(optuna.logging.ERROR)  # our bar says what Optuna's log would
        try:
            self.study.optimize(
                self.objective,
                n_trials=None,  # the study-wide count is enforced by `after` and `objective`
                timeout=self.budget.timeout,
                callbacks=[after],
                catch=(_Surplus, Exception),  # a failed trial is recorded (with its reason) and the search goes on
                gc_after_trial=False,
                show_progress_bar=False,
            )
        except AssertionError as e:
            cause = storage_failure(e)
            if cause is None:
                raise
            raise cause from None
        finally:
            ahead.stop()
            self.compiled_ahead, self.planned_ahead = ahead.compiled, ahead.planned
            if ahead.compiled:
                logg.debug(f"    compiled {ahead.compiled} of the portfolio's networks ahead of their trials")
            optuna.logging.set_verbosity(old)
            bar.close()

    def _compile_ahead(self, n_trials: int | None) -> _Ahead:
        """Start compiling the waiting trials' networks (the portfolio's) in a worker thread (``search.compile_ahead``).

        Each one's problem (its genes and scaling) is prepared here, as its trial would; the
        thread compiles their fits (:func:`autogenome_sc.train._loop.compile_fit`) in the order
        the trials will run, at most as many as ``n_trials`` leaves, all but the first (it starts
        at once). A fresh process on 2 cores spends 40-50% of a 60 s search compiling, 1-2 s per
        network shape; but there the thread slows the trials it runs beside (and inflates their
        measured times, from which the search reserves its cross-validation's), so ``"auto"`` turns
        it on only where the trials run on an accelerator (docs/benchmarks.md).
        """
        jobs: list[tuple[Any, TrainData, TrialConfig]] = []
        on = self.cfg.search.compile_ahead
        if on == "auto":
            on = jax.default_backend() != "cpu"
        if on:
            waiting = sorted(
                self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,)), key=lambda t: t.number
            )
            if n_trials is not None:
                waiting = waiting[: max(n_trials - self._n_counted(), 0)]
            waiting = waiting[1:]  # the first one starts now, here
            for t in waiting:
                params = t.system_attrs.get("fixed_params") or {}
                mode = MODES.get(str(params.get("mode")))
                if mode is None or mode.solved or mode.run is not None or not mode.supervised:
                    continue  # only the networks trained by train.fit compile a step of their own
                try:
                    tc = self.config_from(params, t.number)
                except Exception:  # noqa: BLE001 - a parameter left to the sampler: its shape is not known yet
                    continue
                problem = self.data.with_inputs(tc.scaling, tc.n_genes, tc.genes_by)
                jobs.append((build_network(tc.arch, problem.n_out), problem, tc))
        return _Ahead(jobs, trial_seed(self.rng))

    def _count_failure(self, frozen: optuna.trial.FrozenTrial) -> bool:
        """Note a failed trial (a finished one ends the run of failures); whether the search must stop for them."""
        record = TrialRecord.from_trial(frozen)
        if frozen.state != TrialState.FAIL or record.surplus:
            self._failed_in_row.clear()
            return False
        mode = frozen.params.get("mode", "?")
        self._failed_in_row.append(f"trial {frozen.number} ({mode}): {record.failure or 'no reason recorded'}")
        if len(self._failed_in_row) < MAX_FAILED_IN_ROW:
            return False
        self.stopped_by_failures = (
            f"{len(self._failed_in_row)} trials in a row failed, the first with {self._failed_in_row[0]}"
        )
        return True

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
            why = TrialRecord.from_trial(t).failure
            if why:
                return f"trial {t.number} ({t.params.get('mode', '?')}): {why}"
        return None

    def fitted_of(self, trial: optuna.trial.FrozenTrial) -> Fitted:
        """The trial's trained configuration: from memory, or retrained from its parameters."""
        if trial.number in self.results:
            return self.results[trial.number]
        logg.info(f"    retraining trial {trial.number} (run by another worker) from its parameters")
        tc = self.config_of(trial)
        found = TrialRecord.from_trial(trial).architecture
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
        report: Report | None,
        desc: str,
        data: TrainData | None = None,
        seed_offset: int = 0,
        own_deadline: float | None | Literal["trial"] = "trial",
        **fit_kw: Any,
    ) -> Fitted:
        """Train one configuration on ``data`` (default: the search's problem) with its scaling and genes.

        ``seed_offset`` > 0 draws another initialisation (the folds of a cross-validation);
        ``own_deadline``: when a mode with its own loop (trees, ENAS) must stop, ``"trial"`` the
        trials' share of the budget (:meth:`Budget.own_loop_deadline`, where ``report`` is given);
        ``fit_kw`` go to :func:`autogenome_sc.train.fit`.
        """
        base = self.data if data is None else data
        mode = MODES.get(tc.mode)  # None: an architecture found by ENAS ("rrfcn"), trained as any network
        supervised = mode is None or mode.supervised
        problem = base.with_inputs(tc.scaling, tc.n_genes, tc.genes_by) if supervised else base
        key = trial_seed(self.rng)
        if seed_offset:
            key = jax.random.fold_in(key, seed_offset)
        if mode is not None and mode.run is not None:  # a mode with its own loop: a trial's gets a deadline
            cfg = self.cfg.model_copy(update={"loss": tc.loss})
            deadline = own_deadline
            if deadline == "trial":
                deadline = self.budget.own_loop_deadline() if report is not None else None
            arch, result = mode.run(problem, tc.arch, tc.trainer, cfg, key, report, deadline=deadline)
        else:
            arch = tc.arch
            net = build_network(arch, problem.n_out)
            result = fit(net, problem, tc.trainer, tc.loss, key, callback=report, desc=desc, **fit_kw)
        fitted = Fitted(tc, arch, result, problem, seed_offset=seed_offset)
        if supervised and len(problem.idx["val"]):
            fitted.val_out = outputs_of(fitted, problem.idx["val"])
        return fitted


class _Ahead:
    """A worker thread compiling ``jobs`` (network, problem, configuration) in order; :meth:`stop` ends it."""

    def __init__(self, jobs: list[tuple[Any, TrainData, TrialConfig]], key: jax.Array) -> None:
        self._stop = threading.Event()
        self.planned = len(jobs)
        self.compiled = 0
        self._thread = None
        if jobs:
            self._thread = threading.Thread(target=self._run, args=(jobs, key), name="ag-compile-ahead", daemon=True)
            self._thread.start()

    def _run(self, jobs: list[tuple[Any, TrainData, TrialConfig]], key: jax.Array) -> None:
        try:  # the trials come first: this thread gets the cores they leave idle (Linux: a nice value per thread)
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        except (AttributeError, OSError):  # pragma: no cover - elsewhere it competes as an equal
            pass
        for net, problem, tc in jobs:
            if self._stop.is_set():
                return
            try:
                self.compiled += bool(compile_fit(net, problem, tc.trainer, tc.loss, key))
            except Exception:  # noqa: BLE001 - compiling ahead only saves time: the trial compiles what it needs
                logg.debug(f"compiling a {tc.mode} ahead failed:\n{traceback.format_exc()}")

    def stop(self) -> None:
        """Start no further compilation; wait for the one running (a second or two)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def storage_failure(e: BaseException) -> OSError | None:
    """The write error (a full disk) behind Optuna's "Should not reach" when a trial's result could not be stored."""
    cause = e.__context__
    return cause if isinstance(e, AssertionError) and isinstance(cause, OSError) else None


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
