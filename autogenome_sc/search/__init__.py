"""Architecture and hyperparameter search (``ENAS`` for RRFCN here)."""

from ._enas import EnasResult, EnasSearch, run_enas

__all__ = ["EnasResult", "EnasSearch", "run_enas"]
