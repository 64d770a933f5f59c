"""Package-wide settings: verbosity, progress bars, where models are saved, JAX's compilation cache."""

from __future__ import annotations

import logging
import os
import stat
import warnings
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
    compile_cache
        The folder of JAX's persistent compilation cache, or ``None`` (off). By default a folder
        of the user's own, ``$XDG_CACHE_HOME/autogenome_sc/jax`` (``~/.cache/autogenome_sc/jax``):
        a network compiled once is read back in every later process instead of compiled again.
        Set it before the first computation of a process; ``AG_COMPILE_CACHE`` in the
        environment moves it at import (a folder) or turns it off (``off``), and a cache folder the caller gave JAX
        (``JAX_COMPILATION_CACHE_DIR``) is left as it is. The folder holds code JAX runs:
        never point it at a shared or world-writable folder (such a folder is refused).
    """

    def __init__(self) -> None:
        self._verbosity = 2
        self.model_dir: Path = Path("ag_models")
        self.progress_bar: bool = True
        self._handler: logging.Handler | None = None
        self._compile_cache: Path | None = None

    @property
    def compile_cache(self) -> Path | None:
        """The folder of JAX's persistent compilation cache (``None``: off)."""
        return self._compile_cache

    @compile_cache.setter
    def compile_cache(self, value: str | os.PathLike | None) -> None:
        import jax

        if value is None:
            jax.config.update("jax_enable_compilation_cache", False)
            self._compile_cache = None
            return
        folder = _private_folder(Path(value).expanduser())
        jax.config.update("jax_enable_compilation_cache", True)
        jax.config.update("jax_compilation_cache_dir", str(folder))
        # the default (1 s) would skip most of a search's compilations, which take 0.2-6 s
        jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_SECONDS)
        self._compile_cache = folder

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
        return (
            f"ag.settings(verbosity={self.verbosity}, model_dir={str(self.model_dir)!r}, "
            f"progress_bar={self.progress_bar}, compile_cache={None if self.compile_cache is None else str(self.compile_cache)!r})"
        )


#: Compilations faster than this are not written to the cache (reading them back would gain nothing).
MIN_COMPILE_SECONDS = 0.1


def default_compile_cache() -> Path:
    """``$XDG_CACHE_HOME/autogenome_sc/jax``, else ``~/.cache/autogenome_sc/jax``."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "autogenome_sc" / "jax"


def _private_folder(folder: Path) -> Path:
    """``folder``, created for this user only (0700) if missing; refused if others may write into it.

    JAX runs what it reads from its compilation cache: a folder another user can write to would
    let them run code as this one.
    """
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = folder.stat()
    if not folder.is_dir():
        raise ValueError(f"compile_cache '{folder}' is not a folder.")
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH) or (hasattr(os, "getuid") and info.st_uid != os.getuid()):
        raise ValueError(
            f"compile_cache '{folder}' is writable by other users or owned by another: JAX runs the code "
            "it reads from there. Choose a folder of your own (or None to turn the cache off)."
        )
    return folder.resolve()


def _default_cache_on() -> None:
    """Turn the compilation cache on in the default folder, unless told otherwise (see ``compile_cache``)."""
    asked = os.environ.get("AG_COMPILE_CACHE", "")
    if asked.lower() in ("0", "off", "false", "no"):
        return
    import jax

    if os.environ.get("JAX_COMPILATION_CACHE_DIR") or getattr(
        jax.config, "jax_compilation_cache_dir", None
    ):  # the caller's own
        return
    try:
        settings.compile_cache = asked or default_compile_cache()
    except (OSError, ValueError) as e:  # a read-only home, a folder of another user's: compile as before
        warnings.warn(f"JAX's compilation cache stays off: {e}", UserWarning, stacklevel=2)


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
_default_cache_on()


def show_progress() -> bool:
    """Whether long work should draw a progress bar."""
    return settings.progress_bar and settings.verbosity >= 1
