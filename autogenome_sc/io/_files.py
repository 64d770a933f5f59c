"""The model directory format: writing it, and reading it back with every check an untrusted file needs.

Layout of a model directory::

    model.json        format marker, architecture, task, classes, var_names, preprocessing,
                      training config, test metrics and the package versions
    weights.msgpack   network variables, the per-gene scaling statistics and, for
                      classification, the novelty statistics behind ``ag_uncertainty``
                      (flax.serialization; no pickle)

``model.json`` also holds ``calibration`` (temperature and calibration errors); models
saved without it load with temperature 1 and ``ag_uncertainty = 1 - confidence``. It holds
``matrix`` (``{"layer": name or null, "use_raw": bool}``, the matrix the model was trained
on); models saved without it load with the input unknown (``Model.input_recorded``). Since
format 2 it holds a ``checksum`` of the weights and of the fields that decide predictions,
which is also the model's id (``Model.id_``, stored in ``uns[key]["model_id"]``); reading
checks it and checks ``model.json`` against the weights before building anything (see
``io/_validate.py``). What the files mean is :class:`autogenome_sc.model.Model`'s business.
"""

from __future__ import annotations

import json
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

from .._logging import warn
from ._atomic import check_replaceable, check_target, write_folder
from ._validate import DamagedModel, check_architecture, check_meta, check_weights, checksum

FORMAT = "autogenome_sc.model"
FORMAT_VERSION = 2  # 2: checksum
_MODEL_FILES = {"model.json", "weights.msgpack"}


def write_model_files(path: str | Path, meta: dict[str, Any], state: dict[str, Any], *, overwrite: bool) -> str:
    """Write ``meta`` (with the format marker, versions and checksum added) and ``state`` as a model directory.

    Returns the checksum (the model's id). The folder appears complete or not at all (written
    beside it, then renamed into place; see ``io/_atomic.py``): never through a symbolic link,
    never over a folder holding other files, over an existing model only with ``overwrite``,
    and of two saves racing to one new path exactly one succeeds.
    """
    from flax import serialization

    path = check_target(path)
    check_replaceable(path, _MODEL_FILES, overwrite)  # before the work of serialising
    weights = serialization.msgpack_serialize(_to_numpy(state))
    meta = _jsonable({"format": FORMAT, "format_version": FORMAT_VERSION, "versions": _versions(), **meta})
    meta["checksum"] = checksum(meta, weights)
    text = json.dumps(meta, indent=1).encode()
    write_folder(path, {"weights.msgpack": weights, "model.json": text}, overwrite=overwrite)
    return str(meta["checksum"])


def read_model_files(path: str | Path, models: tuple[str, ...]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(model.json, weights state)`` of a model directory, checked before anything is built from them.

    Required fields and their types, every size in the architecture within what the weights
    hold, known names (``models``: the network names that may appear), finite weights and
    the checksum written at saving.
    """
    from flax import serialization

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Model directory '{path}' does not exist.")
    if not path.is_dir():
        raise NotADirectoryError(f"'{path}' is a file; an autogenome_sc model is a directory.")
    meta_file, weights_file = path / "model.json", path / "weights.msgpack"
    if not meta_file.is_file():
        raise FileNotFoundError(f"'{path}' is not an autogenome_sc model directory: model.json is missing.")
    try:
        meta = json.loads(meta_file.read_text())
    except json.JSONDecodeError:
        raise ValueError(f"'{meta_file}' is not valid JSON; the model directory is damaged.") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"'{path}' holds a model.json of another format (expected '{FORMAT}').")
    if meta.get("format_version", 0) > FORMAT_VERSION:
        raise ValueError(
            f"'{path}' was saved by a newer autogenome_sc (format {meta['format_version']}); upgrade to read it."
        )
    if not weights_file.is_file():
        raise FileNotFoundError(f"'{path}' is incomplete: weights.msgpack is missing.")
    check_meta(meta, path)
    weights = weights_file.read_bytes()
    try:
        state = serialization.msgpack_restore(weights)
    except Exception:  # noqa: BLE001 - any decoding failure means a damaged file
        raise ValueError(f"'{weights_file}' could not be read; the model directory is damaged.") from None
    arrays = check_weights(state, len(meta["var_names"]), path)
    check_architecture(meta["architecture"], arrays, path, models)
    stored = meta.get("checksum")
    if stored is None:
        warn(
            f"'{path}' was saved without a checksum (format {meta.get('format_version', 0)}); its files cannot be checked."
        )
    elif stored != checksum(meta, weights):
        raise DamagedModel(
            f"'{path}' was changed after it was saved: its checksum does not match model.json and weights.msgpack. "
            "Use the files as they were saved, or train again."
        )
    return meta, state


def _to_numpy(tree):
    import jax

    return jax.tree.map(np.asarray, jax.device_get(tree))


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _versions() -> dict[str, str]:
    out = {}
    for pkg in ("autogenome_sc", "jax", "flax", "optax", "anndata", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "unknown"
    return out
