"""Package-wide settings: verbosity, progress bars, where models are saved."""

from __future__ import annotations

import logging
from pathlib import Path

_LEVELS = {0: logging.ERROR, 1: logging.WARNING, 2: logging.INFO, 3: logging.DEBUG}

logger = logging.getLogger("autogenome_sc")


class _Settings:
    """Settings of :mod:`autogenome_sc`, reached as ``ag.settings``.

    Attributes
    ----------
    verbosity
        0: errors only, 1: warnings and progress bars, 2: also what was computed and
        written where (default), 3: debug.
    model_dir
        Folder under which trained models are saved when the config names no path
        (default ``"ag_models"`` under the current directory).
    progress_bar
        Show progress bars (when ``verbosity >= 1``).
    device
        The JAX device the computations run on, e.g. ``"cpu:0"`` (read only).
    """

    def __init__(self) -> None:
        self._verbosity = 2
        self.model_dir: Path = Path("ag_models")
        self.progress_bar: bool = True
        self._handler: logging.Handler | None = None

    @property
    def verbosity(self) -> int:
        """Verbosity level, 0 to 3."""
        return self._verbosity

    @verbosity.setter
    def verbosity(self, value: int) -> None:
        if value not in _LEVELS:
            raise ValueError(f"verbosity must be one of 0, 1, 2, 3, not {value!r}.")
        self._verbosity = int(value)
        _configure_logger()

    @property
    def device(self) -> str:
        """The JAX device the computations run on, e.g. ``"cpu:0"`` or ``"cuda:0"``."""
        import jax

        d = jax.devices()[0]
        return f"{d.platform}:{d.id}"

    def __repr__(self) -> str:
        return f"ag.settings(verbosity={self.verbosity}, model_dir={str(self.model_dir)!r}, progress_bar={self.progress_bar})"


settings = _Settings()


def _configure_logger() -> None:
    logger.setLevel(_LEVELS[settings.verbosity])
    if settings._handler is None:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.propagate = False
        settings._handler = handler


_configure_logger()


def show_progress() -> bool:
    """Whether long work should draw a progress bar."""
    return settings.progress_bar and settings.verbosity >= 1
