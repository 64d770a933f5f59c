"""Checks of the arguments users pass to the public functions: one sentence naming the argument.

Run before anything is prepared or written, so a bad argument fails at once and leaves
nothing behind (no study journal, no model folder).
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from pathlib import PurePath
from typing import Any


def check_rng(rng: Any, name: str = "rng") -> int:
    """A seed: an integer in [0, 2**63)."""
    if isinstance(rng, bool) or not isinstance(rng, Integral):
        raise TypeError(f"{name} must be an integer seed, not {type(rng).__name__} {rng!r}.")
    if not 0 <= int(rng) < 2**63:
        raise ValueError(f"{name} must be an integer in [0, 2**63), got {int(rng)}.")
    return int(rng)


def check_timeout(timeout: Any, name: str = "timeout") -> float | None:
    """``None`` or a positive, finite number of seconds."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, Real):
        raise TypeError(f"{name} must be a number of seconds, not {type(timeout).__name__} {timeout!r}.")
    if not (math.isfinite(float(timeout)) and float(timeout) > 0):
        raise ValueError(f"{name} must be a positive, finite number of seconds, got {timeout!r}.")
    return float(timeout)


def check_count(n: Any, name: str) -> int | None:
    """``None`` or a positive integer."""
    if n is None:
        return None
    if isinstance(n, bool) or not isinstance(n, Integral):
        raise TypeError(f"{name} must be a positive integer, not {type(n).__name__} {n!r}.")
    if int(n) < 1:
        raise ValueError(f"{name} must be a positive integer, got {int(n)}.")
    return int(n)


def check_file_name(value: Any, name: str) -> str | None:
    """``None`` or a plain file name: no folder part, so nothing is written outside its folder."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, not {type(value).__name__}.")
    if (
        not value
        or value in (".", "..")
        or "\x00" in value
        or "/" in value
        or "\\" in value
        or PurePath(value).name != value
    ):
        raise ValueError(
            f"{name} must be a plain file name (letters, digits, '-', '_', '.'; no folder), got {value!r}."
        )
    return value
