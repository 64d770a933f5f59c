"""Checks of the arguments users pass to the public functions: one sentence naming the argument.

Run before anything is prepared or written, so a bad argument fails at once and leaves
nothing behind (no study journal, no model folder).
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from pathlib import PurePath
from typing import Any

from anndata import AnnData


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


def check_key_added(key: Any, name: str = "key_added") -> str:
    """A prefix of the keys results are written under: a non-empty string that h5ad and zarr can store as a name.

    A ``/`` would be read back as a group inside the file (the h5ad written could not be read),
    so it is refused with the control characters.
    """
    if not isinstance(key, str):
        raise TypeError(f"{name} must be a string, not {type(key).__name__} {key!r}.")
    if not key.strip() or "/" in key or any(ord(c) < 32 for c in key):
        raise ValueError(f"{name} must be a non-empty name without '/' or control characters, got {key!r}.")
    return key


def check_flag(value: Any, name: str) -> bool:
    """``value`` if it is ``True`` or ``False``; otherwise a one-sentence ``TypeError`` naming ``name``."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, not {type(value).__name__} {value!r}.")
    return value


def writable(adata: Any, copy: bool, name: str = "adata") -> AnnData:
    """The AnnData results are written into: ``adata`` itself, or its copy for ``copy=True``.

    Checked before any work, so nothing is trained for an object that cannot take the results.
    A view of a backed (on-disk) AnnData cannot be written into (anndata would have to copy the
    file): its rows are loaded for ``copy=True`` and it is refused otherwise; a whole backed
    AnnData is written into as it is, and refused for ``copy=True`` (anndata copies one only into
    another file).
    """
    if not isinstance(adata, AnnData):
        raise TypeError(f"Expected an AnnData object as {name}, got {type(adata).__name__}.")
    check_flag(copy, "copy")
    if not adata.isbacked:
        return adata.copy() if copy else adata
    if adata.is_view and copy:
        return adata.to_memory()
    if adata.is_view:
        raise ValueError(
            f"{name} is a view of an AnnData backed by '{adata.filename}', which results cannot be written into; "
            f"load its rows first (`{name} = {name}.to_memory()`) or pass copy=True."
        )
    if copy:
        raise ValueError(
            f"{name} is backed by '{adata.filename}' and copy=True would load all of it; pass copy=False (results "
            f"go into {name}.obs, .obsm and .uns in memory) or load it first with `{name}.to_memory()`."
        )
    return adata
