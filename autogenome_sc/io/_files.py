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
on, and ``"gene_symbols"``: the column of ``.var`` that named its genes, when one did); models saved without it load with the input unknown (``Model.input_recorded``). Since
format 2 it holds a ``checksum`` of the weights and of ``model.json``, which is also the
model's id (``Model.id_``, stored in ``uns[key]["model_id"]``): format 2's covers the fields
that decide predictions (:data:`~autogenome_sc.io._validate.CHECKED_FIELDS`), format 3's
every field but the checksum itself (so the calibration temperature and ``matrix`` too).
Reading checks it and checks ``model.json`` against its schema and the weights before
building anything (see ``io/_validate.py``). What the files mean is
:class:`autogenome_sc.model.Model`'s business.
"""

from __future__ import annotations

import json
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import numpy as np

from .._logging import warn
from ._atomic import check_replaceable, check_target, write_folder
from ._validate import (
    MAX_DEPTH,
    MAX_JSON_BYTES,
    DamagedModel,
    check_architecture,
    check_format,
    check_meta,
    check_weights,
    checksum,
    too_deep,
    weights_bound,
)

FORMAT = "autogenome_sc.model"
FORMAT_VERSION = 3  # 2: checksum of the prediction-deciding fields; 3: of all of model.json
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

    Sizes before reading (``model.json`` at most :data:`MAX_JSON_BYTES`, the weights at most
    what the architecture implies), the JSON's nesting, the format version, every field that
    decides predictions by type and range, the architecture against its network's schema
    (``models``: the network names that may appear), finite weights and well-formed novelty
    statistics, and the checksum written at saving (required since format 2).
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
    meta = _read_json(meta_file)
    check_format(meta, path, FORMAT_VERSION, FORMAT)
    if not weights_file.is_file():
        raise FileNotFoundError(f"'{path}' is incomplete: weights.msgpack is missing.")
    check_meta(meta, path, models)
    bound = weights_bound(meta)
    weights = _read_at_most(weights_file, bound)
    if weights is None:
        raise DamagedModel(
            f"'{weights_file}' is {_mb(weights_file.stat().st_size)}, more than the architecture in model.json can "
            f"hold ({_mb(bound)} at most); it was refused before being read."
        )
    try:
        state = serialization.msgpack_restore(weights)
    except Exception:  # noqa: BLE001 - any decoding failure means a damaged file
        raise ValueError(f"'{weights_file}' could not be read; the model directory is damaged.") from None
    n_classes = len(meta["classes"]) if meta["task"] == "classification" else None
    hierarchy = meta.get("hierarchy") or {}  # checked by check_meta: a parent per class at every level
    level_classes = {level: len(set(hierarchy["parents"][level])) for level in hierarchy.get("levels", [])[:-1]}
    arrays = check_weights(state, len(meta["var_names"]), path, n_classes, level_classes)
    check_architecture(meta["architecture"], arrays, path, models)
    stored = meta.get("checksum")
    if stored is None:  # format 1 only (check_format refuses a later one without it)
        warn(f"'{path}' was saved without a checksum (format 1); its files cannot be checked.")
    elif stored != checksum(meta, weights):
        raise DamagedModel(
            f"'{path}' was changed after it was saved: its checksum does not match model.json and weights.msgpack. "
            "Use the files as they were saved, or train again."
        )
    return meta, state


def _read_json(meta_file: Path) -> Any:
    """The parsed ``model.json``: at most :data:`MAX_JSON_BYTES` read, UTF-8, valid, nested at most :data:`MAX_DEPTH`."""
    raw = _read_at_most(meta_file, MAX_JSON_BYTES)
    if raw is None:
        raise DamagedModel(
            f"'{meta_file}' is {_mb(meta_file.stat().st_size)}; a model.json is at most {_mb(MAX_JSON_BYTES)}, so it "
            "was refused before being read."
        )
    try:
        meta = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise DamagedModel(f"'{meta_file}' is not text (not UTF-8); the model directory is damaged.") from None
    except json.JSONDecodeError:
        raise DamagedModel(f"'{meta_file}' is not valid JSON; the model directory is damaged.") from None
    except RecursionError:
        meta = None
    if meta is None or too_deep(meta):
        raise DamagedModel(f"'{meta_file}' nests objects or lists more than {MAX_DEPTH} deep; a model's never does.")
    return meta


def _read_at_most(file: Path, limit: float) -> bytes | None:
    """The bytes of ``file``, or ``None`` (without reading them all) when it holds more than ``limit``."""
    size = file.stat().st_size
    if size > limit:
        return None
    with open(file, "rb") as f:
        data = f.read(size + 1)  # one byte more than it had: a file that grew meanwhile is seen to
    return None if len(data) > limit else data


def _mb(n: float) -> str:
    return f"{n / 2**20:.1f} MB"


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
