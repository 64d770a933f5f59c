"""Architecture and hyperparameter search: spaces, the Optuna study, crash recovery, the winner, ENAS."""

from . import _modes  # noqa: F401  (registers the 'enas' and 'resvae' modes)
from ._budget import Budget
from ._driver import DEFAULT_N_TRIALS, DEFAULT_TIMEOUT, DEFAULT_VAE_TIMEOUT, Searcher
from ._enas import EnasResult, EnasSearch, enas_uns, run_enas
from ._outcome import SearchOutcome
from ._record import TrialRecord, leaderboard
from ._run import open_study, resolve_budget, resolve_modes
from ._search import run_search
from ._spaces import MODES, Mode, check_modes, register_mode, suggest
from ._study import check_storage, is_stale, journal_path, make_storage, recover_stale_trials

__all__ = [
    "DEFAULT_N_TRIALS",
    "DEFAULT_TIMEOUT",
    "DEFAULT_VAE_TIMEOUT",
    "MODES",
    "Budget",
    "EnasResult",
    "EnasSearch",
    "Mode",
    "SearchOutcome",
    "Searcher",
    "TrialRecord",
    "check_modes",
    "check_storage",
    "enas_uns",
    "is_stale",
    "journal_path",
    "leaderboard",
    "make_storage",
    "open_study",
    "recover_stale_trials",
    "register_mode",
    "resolve_budget",
    "resolve_modes",
    "run_enas",
    "run_search",
    "suggest",
]
