"""What the study keeps of a trial beyond Optuna's own fields (:class:`TrialRecord`), and the leaderboard.

Optuna stores a trial's parameters, state, value and reported epochs; autogenome_sc adds its
validation scores, epochs, seconds, architecture, worker and why it failed or stopped, as the
trial's user attributes. :class:`TrialRecord` is the one place those attribute keys are
written (:meth:`TrialRecord.write`) and read (:meth:`TrialRecord.from_trial`). The keys are
part of the journal format: studies written before must still load and resume, so a key is
never renamed.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import optuna
import pandas as pd
from optuna.trial import TrialState

#: Marks the portfolio's trials (known-good settings run first): the pruner never stops them, nor their retries.
PORTFOLIO_ATTR = "ag_portfolio"
#: Marks a trial started after the study already had its ``n_trials``: counted nowhere, shown nowhere.
SURPLUS_ATTR = "ag_surplus"


@dataclass(frozen=True)
class TrialRecord:
    """One trial's own results, as stored in its user attributes; a field left at its default is not stored.

    The field order is the order in which a trial writes them.
    """

    architecture: dict | None = None  # the architecture drawn, then the one trained (ENAS: the one it found)
    worker: str | None = None  # host:pid of the process that ran it
    diverged: bool = False  # its training loss became non-finite (the trial is pruned)
    failure: str | None = None  # why it failed (or diverged), one line
    stopped_by_timeout: bool = False  # the time budget stopped it at an epoch boundary
    val_loss: float | None = None  # at its best epoch
    val_accuracy: float | None = None  # at its best epoch (classification)
    best_epoch: int | None = None
    epochs: int | None = None  # epochs trained (until pruned, stopped or done)
    seconds: float | None = None  # wall time of the trial, compiling included
    rerun_seconds: float | None = None  # what training it again costs once compiled (a fold of its cross-validation)
    portfolio: bool = False
    surplus: bool = False

    #: Stored keys that differ from the field names.
    KEYS: ClassVar[dict[str, str]] = {"portfolio": PORTFOLIO_ATTR, "surplus": SURPLUS_ATTR}

    def to_attrs(self) -> dict[str, Any]:
        """The user attributes of this record: the fields set (not ``None``, not ``False``), by stored key."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is not None and value is not False:
                out[self.KEYS.get(f.name, f.name)] = value
        return out

    def write(self, trial: optuna.Trial) -> None:
        """Store the fields set in this record on a running ``trial`` (other stored fields are kept)."""
        for key, value in self.to_attrs().items():
            trial.set_user_attr(key, value)

    @classmethod
    def from_trial(cls, trial: Any) -> TrialRecord:
        """The record stored on ``trial`` (any object with ``user_attrs``: a frozen or running Optuna trial)."""
        attrs = trial.user_attrs
        values = {f.name: attrs.get(cls.KEYS.get(f.name, f.name)) for f in dataclasses.fields(cls)}
        for flag in ("diverged", "stopped_by_timeout", "portfolio", "surplus"):
            values[flag] = bool(values[flag])
        return cls(**values)

    @property
    def rerun_cost(self) -> float:
        """Seconds one more run of this trial should take once compiled (its own time if not measured)."""
        return float(self.rerun_seconds or self.seconds or 0.0)


def leaderboard(study: optuna.Study) -> pd.DataFrame:
    """One row per trial (surplus ones left out): mode, state, metrics, seconds, hyperparameters.

    h5ad-safe: numeric columns are float (NaN where a parameter does not apply to the mode),
    text columns are strings (empty where it does not apply).
    """
    rows = []
    for t in study.get_trials(deepcopy=False):
        rec = TrialRecord.from_trial(t)
        if rec.surplus:
            continue
        seconds = rec.seconds
        if seconds is None and t.datetime_start is not None and t.datetime_complete is not None:
            seconds = (t.datetime_complete - t.datetime_start).total_seconds()
        row = {
            "trial": t.number,
            "mode": t.params.get("mode", ""),
            "state": t.state.name.lower(),
            "value": t.value if t.state == TrialState.COMPLETE else _last(t),
            "val_loss": rec.val_loss,
            "val_accuracy": rec.val_accuracy,
            "best_epoch": rec.best_epoch,
            "epochs": rec.epochs if rec.epochs is not None else (len(t.intermediate_values) or None),
            "seconds": seconds,
            "stopped_by_timeout": rec.stopped_by_timeout,
            "retry_of": t.system_attrs.get("failed_trial"),
            "worker": rec.worker,
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
