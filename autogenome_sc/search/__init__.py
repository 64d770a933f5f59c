"""Architecture and hyperparameter search: spaces, the Optuna study, crash recovery, the winner, ENAS."""

from . import _modes  # noqa: F401  (registers the 'enas' and 'resvae' modes)
from ._driver import DEFAULT_N_TRIALS, DEFAULT_TIMEOUT, Searcher, leaderboard
from ._enas import EnasResult, EnasSearch, enas_uns, run_enas
from ._run import open_study, resolve_budget, resolve_modes
from ._spaces import MODES, Mode, check_modes, register_mode, suggest
from ._study import is_stale, journal_path, make_storage, recover_stale_trials

__all__ = [
    "DEFAULT_N_TRIALS",
    "DEFAULT_TIMEOUT",
    "MODES",
    "EnasResult",
    "EnasSearch",
    "Mode",
    "Searcher",
    "check_modes",
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
    "suggest",
]
