"""A search's time budget: one object that every part of a search asks about time.

``ag.tl.search(timeout=...)`` bounds the trials and the cross-validated selection; the final
model's fit comes after it. Within that budget:

- the **trials** stop early enough to leave the time the cross-validation of the current best
  configurations should take (:meth:`Budget.keep_for_cv`, at most ``search.cv_share`` of the
  timeout); a new trial starts only if its first epoch (mostly compiling, the median of those
  seen) fits before that point (:meth:`Budget.trials_over`);
- a trial of a mode with its own loop (ENAS) gets ``search.enas_share`` of the time left
  (:meth:`Budget.own_loop_deadline`);
- the **selection** starts no configuration's cross-validation that would not finish in time
  (:meth:`Budget.cv_fits`), and one that started may finish up to :data:`GRACE` of the timeout
  late (:meth:`Budget.cv_overrun`).

The trials' deadline counts from when they start (:meth:`Budget.start_trials`); the
selection's from when the search started (the budget's creation), so preparing the data
counts toward it. Without a timeout nothing is ever over. ``clock`` is a
``time.perf_counter``-like function (tests give a fake one).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from ..config._schema import SearchConfig

#: Share of a search's timeout a configuration whose cross-validation started in time may take to
#: finish it: without it, a configuration whose folds take about as long as the time left runs out of
#: time just before its last fold ends, and nothing is cross-validated (docs/benchmarks.md).
GRACE = 0.05


@dataclass
class Budget:
    """The deadline of a search, what is kept for cross-validation, and what a trial may start or use.

    Parameters
    ----------
    timeout
        Seconds for the trials and the selection; ``None``: no limit.
    cv_share
        At most this share of ``timeout`` is kept for cross-validation (``search.cv_share``).
    enas_share
        A trial of a mode with its own loop gets this share of the time left (``search.enas_share``).
    grace
        Share of ``timeout`` a started cross-validation may overrun the deadline by (:data:`GRACE`).
    clock
        Seconds, monotonic (``time.perf_counter``).
    start
        When the search started, on ``clock``; default: now.
    """

    timeout: float | None
    cv_share: float = 0.4
    enas_share: float = 0.5
    grace: float = GRACE
    clock: Callable[[], float] = field(default=lambda: time.perf_counter())  # looked up at each call
    start: float | None = None
    trials_end: float | None = None  # set by start_trials
    reserved: float = 0.0  # seconds kept free before trials_end (for cross-validation)
    _cv_need: Callable[[], float] | None = None
    _first_epochs: list[float] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.start is None:
            self.start = self.clock()

    @classmethod
    def of(
        cls,
        timeout: float | None,
        search_cfg: SearchConfig,
        *,
        start: float | None = None,
        clock: Callable[[], float] | None = None,
    ) -> Budget:
        """The budget of a search with ``timeout`` under the config's ``search`` section, started at ``start`` (now)."""
        if clock is None:
            return cls(timeout, search_cfg.cv_share, search_cfg.enas_share, GRACE, start=start)
        return cls(timeout, search_cfg.cv_share, search_cfg.enas_share, GRACE, clock, start)

    @property
    def timed(self) -> bool:
        """Whether there is a timeout at all."""
        return self.timeout is not None

    # ------------------------------------------------------------------ trials
    def keep_for_cv(self, need: Callable[[], float]) -> None:
        """Keep time for cross-validation: ``need()`` is what it should take, unpadded (asked after every trial)."""
        self._cv_need = need

    def cv_seconds(self, need: float) -> float:
        """Seconds to keep for a cross-validation estimated at ``need``.

        A quarter more and a few seconds for evaluation and compilation, at most ``cv_share`` of the timeout.
        """
        assert self.timeout is not None  # only a timed search keeps time
        return min(1.25 * need + 3.0, self.cv_share * self.timeout)

    def refresh(self) -> None:
        """Estimate again what cross-validation will need (after every trial: the best ones change)."""
        if self._cv_need is not None and self.timed:
            self.reserved = self.cv_seconds(self._cv_need())

    def start_trials(self) -> None:
        """Trials start now: their deadline is ``timeout`` from here."""
        self.refresh()
        self.trials_end = None if self.timeout is None else self.clock() + self.timeout

    def first_epoch_took(self, seconds: float) -> None:
        """A trial reached its first epoch (or, with its own loop, its end) ``seconds`` after it started."""
        self._first_epochs.append(seconds)

    def trials_over(self, starting: bool = False) -> bool:
        """Whether trials should stop: the deadline passed, less the time kept for cross-validation.

        ``starting``: whether a new trial may start, which also needs the time a trial takes
        to reach its first epoch (mostly compiling), the median of those seen so far.
        """
        if self.trials_end is None:
            return False
        margin = float(np.median(self._first_epochs)) if starting and self._first_epochs else 0.0
        return self.clock() + self.reserved + margin > self.trials_end

    def own_loop_deadline(self) -> float | None:
        """When a trial of a mode with its own loop (ENAS) must be done: ``enas_share`` of the time left."""
        if self.trials_end is None:
            return None
        now = self.clock()
        return now + self.enas_share * max(self.trials_end - self.reserved - now, 0.0)

    # ------------------------------------------------------------------ selection
    @property
    def deadline(self) -> float | None:
        """When the search (trials and selection) should be done: ``timeout`` after its start."""
        if self.timeout is None:
            return None
        assert self.start is not None  # set in __post_init__
        return self.start + self.timeout

    def left(self) -> float:
        """Seconds left before :attr:`deadline` (never negative; infinite without a timeout)."""
        deadline = self.deadline
        return np.inf if deadline is None else max(deadline - self.clock(), 0.0)

    def cv_fits(self, guess: float) -> bool:
        """Whether a cross-validation estimated at ``guess`` seconds may start: 80% of it fits before the deadline."""
        deadline = self.deadline
        return deadline is None or not self.clock() + 0.8 * guess > deadline

    def cv_deadline(self) -> float | None:
        """When a cross-validation fit of a mode with its own loop (the trees) must stop: the deadline and its grace.

        Not the trials' :meth:`own_loop_deadline`, which has passed when the selection starts: the
        trees of a fold would stop after their first stages and be scored on them.
        """
        deadline = self.deadline
        if deadline is None:
            return None
        assert self.timeout is not None  # a deadline means a timeout
        return deadline + self.grace * self.timeout

    def cv_overrun(self) -> bool:
        """Whether a running cross-validation must stop: past the deadline by more than the grace."""
        end = self.cv_deadline()
        return end is not None and self.clock() > end
