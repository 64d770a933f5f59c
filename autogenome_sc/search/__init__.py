"""Architecture and hyperparameter search (``ENAS`` for RRFCN here)."""

from ._enas import EnasResult, EnasSearch, enas_uns, run_enas

__all__ = ["EnasResult", "EnasSearch", "enas_uns", "run_enas"]
