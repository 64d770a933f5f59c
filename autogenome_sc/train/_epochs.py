"""The epoch loop every trainer shares, with its stopping rule and its timing.

The classifier (:func:`~autogenome_sc.train.fit`), the Res-VAE
(:func:`~autogenome_sc.train.fit_vae`) and ENAS's shared weights all train through
:func:`run_epochs`. It dispatches a trainer's compiled chunk step over each epoch's chunks, a
bounded number of chunks in flight, and reads their losses once at the end of the epoch
(the host keeps preparing and dispatching while the device works). It then calls the
trainer's evaluation, records the epoch, asks the stopping rule (:class:`EarlyStopping`),
updates the progress bar, calls the per-epoch callback (which may raise to stop: pruning),
and ends at ``stop_after`` or a deadline. Only the step, the evaluation and the metrics
differ between trainers; they pass those in.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jax
import numpy as np

from .. import _logging as logg

#: Chunks dispatched to the device before the host waits for the oldest one to finish.
IN_FLIGHT = 2

#: A trainer's compiled chunk step: ``(carry, xs, ys, valid) -> (carry, mean loss of the valid steps)``.
Step = Callable[[Any, Any, Any, np.ndarray], tuple[Any, jax.Array]]
#: A trainer's evaluation after an epoch: ``carry -> (carry, metrics)`` (ENAS's controller steps change the carry).
Evaluate = Callable[[Any], tuple[Any, dict[str, float]]]


@dataclass
class FitResult:
    """What :func:`~autogenome_sc.train.fit` and :func:`~autogenome_sc.train.fit_vae` return."""

    variables: dict  # {"params": ..., "batch_stats": ...} of the best epoch
    history: dict[str, np.ndarray]
    best_epoch: int
    best_val_loss: float
    n_traces: dict[str, int] = field(default_factory=dict)
    target_mean: float = 0.0
    target_std: float = 1.0
    n_devices: int = 1  # devices each minibatch was split across
    epoch_seconds: float = float("nan")  # median wall time of an epoch after the first (training + validation)
    val_outputs: np.ndarray | None = None  # (epochs, validation cells, outputs), with ``fit(keep_last=True)``
    stopped_at_deadline: bool = False  # ``fit(deadline=...)`` ended training before its own stopping rule did


class EarlyStopping:
    """Keep the weights of the epoch with the lowest validation loss; stop after ``patience`` worse epochs.

    Epochs before ``start`` (e.g. a KL warm-up) never count toward the patience, and once
    ``start`` is reached only epochs from then on can be kept (a model still warming up
    is not the one to keep, however good its loss looks).

    With ``keep_last`` (a refit on every labelled cell, the folds of a cross-validation,
    ENAS's shared weights) nothing stops training early and nothing is recorded as best on
    the way: the last epoch is kept, its weights fetched from the device once, by
    :meth:`result`. In both modes a non-finite training loss stops training.
    """

    def __init__(self, patience: int = 0, start: int = 0, *, keep_last: bool = False):
        self.patience, self.start, self.keep_last = patience, start, keep_last
        self.loss, self.epoch, self.variables, self.wait = np.inf, -1, None, 0
        self.failure: str | None = None
        self._last: Mapping[str, Any] | None = None  # keep_last: the last epoch's weights, still on the device

    def update(self, epoch: int, val_loss: float, train_loss: float, variables: Mapping[str, Any]) -> bool:
        """Record one epoch; return whether training should stop."""
        if self.keep_last:
            return self._update_last(epoch, val_loss, train_loss, variables)
        if epoch == self.start > 0:
            self.loss = np.inf  # the warm-up's best is only a fallback now
        if not np.isfinite(train_loss):
            self.failure = f"the training loss became {train_loss} at epoch {epoch + 1}"
            return True
        if val_loss < self.loss - 1e-7:
            self.loss, self.epoch, self.variables, self.wait = val_loss, epoch, jax.device_get(variables), 0
        elif not np.isfinite(val_loss) and self.failure is None:
            self.failure = f"the validation loss became {val_loss} at epoch {epoch + 1}"
        elif epoch >= self.start:
            self.wait += 1
        return self.wait >= self.patience

    def _update_last(self, epoch: int, val_loss: float, train_loss: float, variables: Mapping[str, Any]) -> bool:
        if not np.isfinite(train_loss):
            self.failure = f"the training loss became {train_loss} at epoch {epoch + 1}"
            return True
        self.epoch, self.loss, self._last = epoch, float(val_loss), variables
        return False

    def result(self, hist: Mapping[str, Any], what: str, **extra: Any) -> FitResult:
        """The :class:`FitResult` of the kept epoch; a sentence if no epoch had a finite loss."""
        if self.keep_last and self.failure is None and self._last is not None:
            self.variables, self._last = jax.device_get(self._last), None
        if self.variables is None:
            why = self.failure or f"no epoch had a finite {what}"
            raise FloatingPointError(f"Training diverged: {why}; lower the learning rate.")
        return FitResult(
            variables=self.variables,
            history={k: np.asarray(v) for k, v in hist.items()},
            best_epoch=self.epoch,
            best_val_loss=float(self.loss),
            **extra,
        )


@dataclass
class EpochClock:
    """Wall times of the epochs run so far (training and evaluation), filled by :func:`run_epochs`."""

    walls: list[float] = field(default_factory=list)

    @property
    def per_epoch(self) -> float:
        """An epoch's time once compiled: the median after the first epoch (which also compiles), or the first."""
        return float(np.median(self.walls[1:])) if len(self.walls) > 1 else self.walls[0]

    @property
    def epoch_seconds(self) -> float:
        """The median wall time of the epochs after the first; NaN before there are two."""
        return float(np.median(self.walls[1:])) if len(self.walls) > 1 else float("nan")


@dataclass
class Epochs:
    """What :func:`run_epochs` returns."""

    carry: Any  # the trainer's carry after the last epoch run
    history: dict[str, list]  # "epoch" and each metric, per epoch run
    train_seconds: list[float]  # per epoch: dispatching its chunks until their losses were read
    clock: EpochClock
    stopped_at_deadline: bool = False


def run_epochs(
    step: Step,
    carry: Any,
    chunks: Callable[[], Iterable[tuple[Any, Any, np.ndarray]]],
    evaluate: Evaluate,
    stopper: EarlyStopping,
    *,
    n_epochs: int,
    desc: str,
    callback: Callable[[int, dict], None] | None = None,
    stop_after: int | None = None,
    deadline: float | None = None,
    lookahead: bool = False,
    postfix: Callable[[dict], dict] | None = None,
    clock: EpochClock | None = None,
) -> Epochs:
    """Train for up to ``n_epochs`` epochs: the chunks, the evaluation, the stopping rule, the callback.

    Parameters
    ----------
    step
        The compiled chunk step, ``(carry, xs, ys, valid) -> (carry, mean loss of the valid steps)``;
        it only dispatches (the loss is read at the end of the epoch).
    carry
        What ``step`` and ``evaluate`` thread through the epochs: ``(state, ...)`` with the
        training state ``(params, batch_stats, ...)`` first (:func:`variables_of`), then
        whatever else the trainer needs (its PRNG key, ENAS's controller).
    chunks
        One epoch's ``(xs, ys, valid)`` chunks, called once per epoch.
    evaluate
        ``carry -> (carry, metrics)`` after the epoch's training; the metrics follow
        ``train_loss`` (the mean over the epoch's minibatches) in the history and the callback.
    stopper
        The stopping rule; it is given ``val_loss`` (NaN for a trainer without one) and the
        weights of ``carry``.
    n_epochs, desc
        Epochs at most, and the progress bar's label.
    callback
        Called after each epoch with ``(epoch, metrics)``; may raise to stop (pruning).
    stop_after
        Stop after this many epochs.
    deadline
        A ``time.perf_counter()`` time: no epoch starts after it (:attr:`Epochs.stopped_at_deadline`).
    lookahead
        Judge the deadline one epoch ahead: stop when the next epoch would end after it
        (from :attr:`EpochClock.per_epoch`, once two epochs are timed), never after the last epoch.
    postfix
        The progress bar's fields from the metrics (default: every metric to 3 decimals).
    clock
        Where the epochs' wall times go (given, so a callback can read them).
    """
    clock = EpochClock() if clock is None else clock
    history: dict[str, list] = {"epoch": []}
    train_seconds: list[float] = []
    late = False
    bar = logg.progress(range(n_epochs), desc=desc)
    for epoch in bar:
        started = time.perf_counter()
        carry, train_loss = _train_epoch(step, carry, chunks())
        train_seconds.append(time.perf_counter() - started)  # reading the losses waited for the device
        carry, evaluated = evaluate(carry)
        metrics = {"train_loss": train_loss, **evaluated}
        history["epoch"].append(epoch)
        for name, v in metrics.items():
            history.setdefault(name, []).append(v)
        stop = stopper.update(epoch, metrics.get("val_loss", float("nan")), train_loss, variables_of(carry))
        shown = postfix(metrics) if postfix is not None else {k: f"{v:.3f}" for k, v in metrics.items()}
        bar.set_postfix(shown, refresh=False)
        clock.walls.append(time.perf_counter() - started)
        if callback is not None:
            callback(epoch, metrics)
        if stop or (stop_after is not None and epoch + 1 >= stop_after):
            break
        if deadline is not None and _late(deadline, clock, lookahead, last=epoch + 1 >= n_epochs):
            late = True
            break
    bar.close()
    return Epochs(carry, history, train_seconds, clock, late)


def variables_of(carry: Any) -> dict[str, Any]:
    """The weights in a trainer's carry ``((params, batch_stats, ...), ...)``."""
    state = carry[0]
    return {"params": state[0], "batch_stats": state[1]}


def _train_epoch(step: Step, carry: Any, chunks: Iterable[tuple[Any, Any, np.ndarray]]) -> tuple[Any, float]:
    """Dispatch ``step`` over an epoch's chunks; the mean loss of its minibatches, read once at the end."""
    losses: list[jax.Array] = []  # read once at the end of the epoch: the host keeps dispatching ahead
    counts: list[int] = []
    for xs, ys, valid in chunks:
        carry, loss = step(carry, xs, ys, valid)
        losses.append(loss)
        counts.append(int(valid.sum()))
        if len(losses) > IN_FLIGHT:  # a bounded queue of dispatched chunks (each holds its inputs on the device)
            losses[-IN_FLIGHT - 1].block_until_ready()
    total = sum(float(v) * c for v, c in zip(jax.device_get(losses), counts, strict=True))
    return carry, total / max(sum(counts), 1)


def _late(deadline: float, clock: EpochClock, lookahead: bool, last: bool) -> bool:
    """Whether the deadline ends training after this epoch."""
    now = time.perf_counter()
    if not lookahead:
        return now > deadline
    # two epochs at least (the first also compiles, the second measures), unless time is already up
    return not last and (now > deadline or (len(clock.walls) > 1 and now + clock.per_epoch > deadline))
