"""What a search hands back (:class:`SearchOutcome`) and the records it writes: leaderboard, best, selection.

The records are the search's part of ``adata.uns[key]`` (field names and dtypes are a stored
contract: ``docs/searching.md`` describes them); ``ag.tl.search`` writes them with everything
``ag.tl.train`` writes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pandas as pd

from .._names import FinalFit, FinalModel
from ._choose import FOLD_COLUMNS
from ._spaces import is_solved

if TYPE_CHECKING:
    import optuna

    from ..config._schema import Config
    from ..data import TrainData
    from ..train import FitResult
    from ._driver import Searcher
    from ._select import Selection


@dataclass
class SearchOutcome:
    """A finished search: its final model, ready to be evaluated on the test split and written to AnnData."""

    searcher: Searcher
    data: TrainData  # the problem the final model reads (the search's own, or train + validation's)
    kind: str  # the input kind detected
    arch: dict
    result: FitResult
    cfg: Config  # as the study ran it (the Res-VAE's likelihood and latent size resolved)
    uns: dict[str, Any]  # "leaderboard", "best" and (supervised) "selection", for adata.uns[key]
    summary: str  # one line for the log: how many trials, what was chosen, how long it took
    selection: Selection | None = None  # how the final model was chosen (supervised)
    notes: list[str] = field(default_factory=list)  # configurations left out of the selection, and why
    prepared: Any = None  # what run_search's ``prepared`` returned (ag.tl.search: the label hierarchy)

    @property
    def held_out(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(rows, outputs): out-of-fold outputs that calibrate a final model trained on train + validation."""
        sel = self.selection
        if sel is None or sel.method != "cv":
            return None
        assert sel.held_out is not None  # select() records the outputs of its choice
        return sel.rows, sel.held_out


def best_record(
    trial: optuna.trial.FrozenTrial, metric: str, searcher: Searcher, storage_name: str, arch: dict,
    members: list[int], board: pd.DataFrame,
) -> dict:  # fmt: skip
    """``uns[key]["best"]``: the winning trial (an ensemble's heaviest member), its architecture and study."""
    return {
        "trial": trial.number,
        "mode": trial.params["mode"],
        "value": float(cast(float, trial.value)),  # the best trial is COMPLETE: it has a value
        "metric": metric,
        "params": dict(trial.params),
        "architecture": arch,
        "ensemble": np.asarray(members, dtype=np.int64),
        "study_name": searcher.study.study_name,
        "storage": storage_name,
        "n_trials": int(((board["state"] == "complete") | (board["state"] == "pruned")).sum()),
    }


def with_selection(board: pd.DataFrame, sel: Selection) -> pd.DataFrame:
    """The leaderboard with each re-scored trial's held-out scores, temperature and ensemble weight.

    After a cross-validation also the means over its folds of accuracy and macro-F1 and their
    standard errors (``cv_fold_accuracy``, ``cv_fold_accuracy_se``, ...): what tells whether
    two configurations differ by more than the folds do.
    """
    if board.empty:
        return board
    table = sel.table().set_index("trial")
    prefix = "cv_" if sel.method == "cv" else "heldout_"
    cols = ["loss", "accuracy", "macro_f1", *(FOLD_COLUMNS if sel.method == "cv" else ()), "temperature", "weight"]
    board = board.copy()
    for col in cols:
        board[prefix + col] = board["trial"].map(table[col]).astype(np.float64)
    return board


def selection_record(sel: Selection, final: FinalFit, search_seconds: float, final_seconds: float) -> dict:
    """``uns[key]["selection"]``: how the final model was chosen and built, and how long each part took."""
    built = _built(sel, final)
    return {
        "method": sel.method,
        "n_folds": int(sel.k),
        "chosen": sel.chosen,
        "final": built,
        "n_cells": int(len(sel.rows)),
        "table": sel.table(),
        "search_seconds": float(search_seconds),
        "selection_seconds": float(sel.seconds),
        "final_seconds": float(final_seconds),
        "notes": np.asarray(sel.notes, dtype=str) if sel.notes else np.zeros(0, dtype=str),
    }


def _built(sel: Selection, final: FinalFit) -> FinalModel:
    """How the final model was built: ``final``, but ``"refit"`` where every chosen one is solved, ``"trial"`` without cv."""
    built: FinalModel = final if sel.method == "cv" else "trial"
    if built == "bag" and all(is_solved(s.mode) for s, w in zip(sel.scored, sel.weights, strict=True) if w > 0):
        built = "refit"  # the solved families are always refitted (search/_final.py)
    return built


def chose_line(sel: Selection, final: FinalFit, n_trials: int, search_seconds: float, final_seconds: float) -> str:
    """The log's account of a supervised search: trials, how the winner was chosen, what it is, how long."""
    how = "cross-validation" if sel.method == "cv" else "the validation split"
    lead = sel.lead
    form = {"ensemble": f"an ensemble of trials {sel.members}", "stack": f"a stack of trials {sel.members}"}.get(
        sel.chosen, f"trial {lead.trial} ({lead.mode})"
    )
    if sel.method == "cv":
        form += " (" + ("its fold models averaged" if _built(sel, final) == "bag" else "refitted") + ")"
    return f"{n_trials} trials and {how} in {search_seconds:.0f}s chose {form}; final model {final_seconds:.0f}s"
