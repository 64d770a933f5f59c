"""Continuing a study: this search's space checked against the one its earlier trials were drawn from.

Optuna refuses to draw a categorical parameter (the mode, a width, a batch size) from other
choices than the study's earlier trials had, and a search that asked it to would fail every
trial at once, forever. :func:`check_same_space` asks before any trial runs: it draws each
mode's parameters on a :class:`_Recorder` (a trial that only notes what was asked) and
compares them with the distributions the study's trials recorded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
    check_distribution_compatibility,
)

from ._spaces import suggest

if TYPE_CHECKING:
    from ..config._schema import Config


class _Recorder:
    """A trial that answers each ``suggest_*`` with its first (or last) choice and notes the distribution asked."""

    def __init__(self, mode: str, last: bool) -> None:
        self.mode, self.last = mode, last
        self.asked: dict[str, BaseDistribution] = {}

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        self.asked.setdefault(name, CategoricalDistribution(list(choices)))
        if name == "mode":
            return self.mode
        return choices[-1] if self.last else choices[0]

    def suggest_float(self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False):
        self.asked.setdefault(name, FloatDistribution(low, high, step=step, log=log))
        return high if self.last else low

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int:
        self.asked.setdefault(name, IntDistribution(low, high, step=step, log=log))
        return high if self.last else low


def space_of(cfg: Config, modes: list[str], n_vars: int | None, task: str) -> dict[str, BaseDistribution]:
    """The distributions a search of ``modes`` draws its parameters from (each mode, first and last choices)."""
    asked: dict[str, BaseDistribution] = {}
    for mode in modes:
        for last in (False, True):
            rec = _Recorder(mode, last)
            try:
                suggest(rec, cfg, modes, n_vars, task)  # type: ignore[arg-type]  # the suggest_* API only
            except Exception:  # noqa: BLE001 - a registered mode asking more of its trial: not checked here
                pass
            for name, dist in rec.asked.items():
                asked.setdefault(name, dist)
    return asked


def check_same_space(study: optuna.Study, space: dict[str, BaseDistribution]) -> None:
    """Refuse, in one sentence, to continue ``study`` with a parameter drawn from other choices than before."""
    seen: set[str] = set()
    for trial in study.get_trials(deepcopy=False):
        for name, before in trial.distributions.items():
            if name in seen or name not in space:
                continue
            seen.add(name)  # Optuna compares with the first earlier trial that drew the parameter
            try:
                check_distribution_compatibility(before, space[name])
            except ValueError:
                raise ValueError(
                    f"Study '{study.study_name}' drew '{name}' from {_choices(before)}, this search from "
                    f"{_choices(space[name])}; continue it with the same modes and search.spaces, or give another "
                    "study_name."
                ) from None


def _choices(dist: BaseDistribution) -> str:
    if isinstance(dist, CategoricalDistribution):
        return repr(list(dist.choices))
    return f"a {type(dist).__name__}"
