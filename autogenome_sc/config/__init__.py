"""Expert mode: the JSON configuration of every module (``ag.config``)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ._schema import Config

__all__ = ["Config", "default", "load", "save", "validate"]


def default() -> dict[str, Any]:
    """Return the default configuration as a plain dict (JSON-ready).

    Returns
    -------
    The defaults of every module: ``data``, ``trainer``, ``loss``, ``models``, ``search``, ``save``.
    """
    return Config().model_dump(mode="json")


def validate(config: Mapping[str, Any] | str | Path | Config | None) -> Config:
    """Validate a configuration given as a dict, a JSON path, a :class:`Config` or ``None``.

    Parameters
    ----------
    config
        Partial configurations are completed with the defaults.

    Returns
    -------
    The validated :class:`Config`.

    Raises
    ------
    ValueError
        One sentence naming the offending field.
    """
    if config is None:
        return Config()
    if isinstance(config, Config):
        return config
    if isinstance(config, str | Path):
        return load(config)
    if not isinstance(config, Mapping):
        raise TypeError(f"config must be a dict, a path to a JSON file or None, not {type(config).__name__}.")
    try:
        return Config.model_validate(dict(config))
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "value_error":  # our own validators' sentences, without pydantic's prefix
            msg = msg.removeprefix("Value error, ")
            if not err["loc"]:  # a rule across sections (Config's own validator) names its fields itself
                raise ValueError(f"{msg}.") from None
        raise ValueError(f"Invalid config field '{field}': {msg}.") from None


def load(path: str | Path) -> Config:
    """Load and validate a JSON configuration file.

    Parameters
    ----------
    path
        Path of the JSON file.

    Returns
    -------
    The validated :class:`Config`.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"Config path '{path}' is a folder; pass the JSON file inside it.")
    if not path.is_file():
        raise FileNotFoundError(f"Config file '{path}' does not exist.")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ValueError(f"Config file '{path}' is not text (not UTF-8); a config is a JSON file.") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"Config file '{path}' is not valid JSON: {e}.") from None
    return validate(raw)


def save(config: Mapping[str, Any] | Config, path: str | Path) -> None:
    """Validate ``config`` and write it as indented JSON to ``path``.

    Parameters
    ----------
    config
        A dict (partial is fine) or a :class:`Config`.
    path
        Destination file.

    Returns
    -------
    Nothing; the file is written.
    """
    cfg = validate(config)
    Path(path).write_text(json.dumps(cfg.model_dump(mode="json"), indent=2) + "\n")
