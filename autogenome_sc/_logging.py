"""scanpy-style timed log messages."""

from __future__ import annotations

import time as _time
from typing import TYPE_CHECKING

from ._settings import logger

if TYPE_CHECKING:
    from types import FrameType


def info(msg: str, *, time: float | None = None, deep: str | None = None) -> float:
    """Log ``msg`` at info level; with ``time``, append the elapsed time; return now."""
    now = _time.perf_counter()
    if time is not None:
        msg = f"{msg} ({now - time:.1f}s)"
    if deep is not None:
        msg = f"{msg}\n    {deep}"
    logger.info(msg)
    return now


def debug(msg: str) -> None:
    """Log ``msg`` at debug level."""
    logger.debug(msg)


def progress(iterable=None, *, total=None, desc=None, leave=False):
    """A tqdm progress bar that respects ``ag.settings``; a plain iterator when hidden."""
    from tqdm.auto import tqdm

    from ._settings import show_progress

    return tqdm(iterable, total=total, desc=desc, leave=leave, disable=not show_progress())


__all__ = ["info", "debug", "progress"]


def warn(msg: str, category: type[Warning] = UserWarning) -> None:
    """Warn, attributing the warning to the first caller outside this package (the user's line)."""
    import sys
    import warnings
    from pathlib import Path

    package = str(Path(__file__).parent)
    frame: FrameType | None
    level, frame = 2, sys._getframe(1)  # stacklevel 1 would be this function
    while frame is not None and frame.f_code.co_filename.startswith(package):
        frame, level = frame.f_back, level + 1
    warnings.warn(msg, category, stacklevel=level)
