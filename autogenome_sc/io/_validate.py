"""Checks of a model directory before anything is built from it: ``model.json`` against the weights.

A model file may come from anywhere. Nothing in ``model.json`` is trusted to size a network:
every number in the architecture must fit the weights that were saved with it (no layer can
be wider than the largest weight array, no network deeper than the number of arrays), the
weights must be finite, and a checksum over the weights and the fields that decide
predictions (architecture, task, classes, genes, preprocessing) must match the one stored at
saving. The checksum catches an edited or swapped file; it is not a signature (whoever
writes a file can write its checksum too), so load models only from sources you trust as
much as code.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .._names import ACTIVATIONS, LIKELIHOODS, TASKS

#: The fields of model.json that decide predictions: all covered by the checksum. Not covered: what describes
#: the training (config, metrics, versions) and ``matrix``, which matrix of the training data was read (a query's
#: matrix is the caller's choice), so adding it kept every model's checksum.
CHECKED_FIELDS = ("architecture", "task", "classes", "var_names", "preprocessing", "target_mean", "target_std")
#: Prediction-deciding fields that only some models have (the labels of coarser levels).
OPTIONAL_CHECKED_FIELDS = ("hierarchy",)
#: String values an architecture may hold, by key.
_STRINGS = {"activation": ACTIVATIONS, "likelihood": LIKELIHOODS, "average": ("probs", "mean")}


class DamagedModel(ValueError):
    """A model directory whose files are inconsistent, incomplete or changed after saving."""


def checksum(meta: dict[str, Any], weights: bytes) -> str:
    """``sha256:<hex>`` of the weights file and the prediction-deciding fields of ``model.json``."""
    h = hashlib.sha256(weights)
    fields = {k: meta.get(k) for k in CHECKED_FIELDS}
    for k in OPTIONAL_CHECKED_FIELDS:  # only where present: a model without them keeps the checksum it had
        if meta.get(k) is not None:
            fields[k] = meta[k]
    h.update(json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str).encode())
    return "sha256:" + h.hexdigest()


def check_meta(meta: dict[str, Any], path: Path) -> None:
    """The fields of ``model.json`` every model has, with their types; one sentence each."""
    for key in ("architecture", "task", "var_names", "preprocessing"):
        if key not in meta:
            raise DamagedModel(f"'{path}' has no '{key}' in its model.json; the file is damaged or not a model's.")
    if not isinstance(meta["architecture"], dict) or not isinstance(meta["architecture"].get("model"), str):
        raise DamagedModel(f"'{path}': model.json's 'architecture' must be an object with a 'model' name.")
    if meta["task"] not in TASKS:
        raise DamagedModel(f"'{path}': model.json's 'task' is {meta['task']!r}; expected one of {', '.join(TASKS)}.")
    names = meta["var_names"]
    if not isinstance(names, list) or not names or not all(isinstance(g, str) for g in names):
        raise DamagedModel(f"'{path}': model.json's 'var_names' must be a non-empty list of gene names.")
    if len(set(names)) != len(names):
        raise DamagedModel(f"'{path}': model.json's 'var_names' repeats gene names.")
    if not isinstance(meta["preprocessing"], dict) or not isinstance(meta["preprocessing"].get("input"), str):
        raise DamagedModel(f"'{path}': model.json's 'preprocessing' must be an object with the detected 'input'.")
    batch_key = meta["preprocessing"].get("batch_key")
    if batch_key is not None and (not isinstance(batch_key, str) or not batch_key):
        raise DamagedModel(f"'{path}': model.json's 'preprocessing.batch_key' must be a column name (a string).")
    classes = meta.get("classes")
    if meta["task"] == "classification":
        if not isinstance(classes, list) or len(classes) < 2 or not all(isinstance(c, str) for c in classes):
            raise DamagedModel(f"'{path}': a classification model needs 'classes', a list of at least two names.")
        if len(set(classes)) != len(classes):
            raise DamagedModel(f"'{path}': model.json's 'classes' repeats a class name.")
    hierarchy = meta.get("hierarchy")
    if hierarchy is not None:
        _check_hierarchy(hierarchy, classes, path)
    matrix = meta.get("matrix")
    if matrix is not None and not _is_matrix(matrix):
        raise DamagedModel(
            f"'{path}': model.json's 'matrix' must hold 'layer' (a layer name or null) and 'use_raw' (true or false), "
            "not both a layer and use_raw."
        )
    for key in ("target_mean", "target_std"):
        value = meta.get(key, 0.0)
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise DamagedModel(f"'{path}': model.json's '{key}' must be a finite number.")


def check_weights(state: Any, n_genes: int, path: Path) -> list[np.ndarray]:
    """The weight arrays of ``state``: present, numeric, finite; the scaling sized to the genes."""
    if not isinstance(state, dict) or not isinstance(state.get("variables"), dict) or "scaler" not in state:
        raise DamagedModel(f"'{path}': weights.msgpack holds no network variables; the file is damaged.")
    scaler = state["scaler"]
    if not isinstance(scaler, dict) or set(scaler) != {"min", "scale"}:
        raise DamagedModel(f"'{path}': weights.msgpack holds no per-gene scaling; the file is damaged.")
    for name in ("min", "scale"):
        if np.shape(scaler[name]) != (n_genes,):
            raise DamagedModel(
                f"'{path}': the per-gene scaling has {np.size(scaler[name])} values for {n_genes} genes in "
                "model.json; the two files do not belong together."
            )
    arrays = list(_leaves(state["variables"]))
    if not arrays:
        raise DamagedModel(f"'{path}': weights.msgpack holds no weights.")
    for a in [*arrays, np.asarray(scaler["min"]), np.asarray(scaler["scale"])]:
        if not np.issubdtype(a.dtype, np.number):
            raise DamagedModel(f"'{path}': weights.msgpack holds a non-numeric array ({a.dtype}).")
        if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
            raise DamagedModel(
                f"'{path}' holds non-finite weights (NaN or infinite values); the model would predict nonsense."
            )
    return arrays


def check_architecture(arch: dict[str, Any], arrays: list[np.ndarray], path: Path, models: tuple[str, ...]) -> None:
    """Every number of the architecture within what the weights can hold, every name known.

    Bounds from the weights alone: a width (or any size) is at most the largest dimension of
    any weight array, a count of layers or blocks at most the number of arrays. So a forged
    ``width: 70000`` or ``n_blocks: 20000`` is refused before a network is built.
    """
    largest = max(max(a.shape, default=1) for a in arrays)
    bound = max(largest, len(arrays))

    def visit(value: Any, where: str) -> None:
        if isinstance(value, dict):
            if value.get("model") == "ensemble":
                _check_ensemble(value, where, path)
            for k, v in value.items():
                if k == "model":
                    if v not in (*models, "ensemble"):
                        raise DamagedModel(f"'{path}': unknown model {v!r} at {where}.model in model.json.")
                elif k in _STRINGS:
                    if v not in _STRINGS[k]:
                        raise DamagedModel(f"'{path}': unknown {k} {v!r} at {where}.{k} in model.json.")
                elif k == "clip":  # the bounds of the scaled input: any two finite numbers
                    if v is not None and (
                        not isinstance(v, list) or len(v) != 2 or not all(_finite_number(b) for b in v)
                    ):
                        raise DamagedModel(f"'{path}': {where}.clip in model.json must be two finite numbers.")
                else:
                    visit(v, f"{where}.{k}")
        elif isinstance(value, list):
            for i, v in enumerate(value):
                visit(v, f"{where}[{i}]")
        elif isinstance(value, bool):
            return
        elif isinstance(value, int):
            if not 0 <= value <= bound:
                raise DamagedModel(
                    f"'{path}': {where} = {value} in model.json does not fit the saved weights (at most {bound}); "
                    "the file was changed or does not belong to these weights."
                )
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise DamagedModel(f"'{path}': {where} = {value} in model.json is not a finite number.")
        elif value is not None:
            raise DamagedModel(f"'{path}': {where} = {value!r} in model.json must be a number.")

    visit(arch, "architecture")


def _check_ensemble(arch: dict[str, Any], where: str, path: Path) -> None:
    """An ensemble's per-member lists: one weight and one temperature (a positive number) per member, if given.

    A list of one would broadcast over every member and go unnoticed: its length is checked.
    """
    members = arch.get("members")
    if not isinstance(members, list) or not members:
        raise DamagedModel(f"'{path}': {where} in model.json is an ensemble without a list of members.")
    for key in ("weights", "temperatures"):
        values = arch.get(key)
        if values is None:
            continue
        if not isinstance(values, list) or len(values) != len(members):
            raise DamagedModel(f"'{path}': {where}.{key} in model.json must hold one number per member.")
    temperatures = arch.get("temperatures")
    if temperatures is not None and not all(_finite_number(t) and t > 0 for t in temperatures):
        raise DamagedModel(f"'{path}': {where}.temperatures in model.json must be positive finite numbers.")


def _is_matrix(m: Any) -> bool:
    """The input a model was trained on: ``{"layer": name or None, "use_raw": bool}``, not both."""
    if not isinstance(m, dict) or set(m) != {"layer", "use_raw"} or not isinstance(m["use_raw"], bool):
        return False
    layer = m["layer"]
    return (layer is None or (isinstance(layer, str) and bool(layer))) and not (layer is not None and m["use_raw"])


def _finite_number(v: Any) -> bool:
    return not isinstance(v, bool) and isinstance(v, int | float) and math.isfinite(v)


def _leaves(tree: Any) -> Iterator[np.ndarray]:
    if isinstance(tree, dict):
        for v in tree.values():
            yield from _leaves(v)
    elif isinstance(tree, list | tuple):
        for v in tree:
            yield from _leaves(v)
    else:
        yield np.asarray(tree)


def _check_hierarchy(h: Any, classes: Any, path: Path) -> None:
    """A label hierarchy: levels coarse to fine, the finest being the classes, a parent name per class at each level."""
    bad = DamagedModel(
        f"'{path}': model.json's 'hierarchy' must hold 'levels' (column names, coarse to fine) and 'parents' "
        "(for every level, one name per class, the finest level being the classes)."
    )
    if not isinstance(h, dict) or not isinstance(h.get("levels"), list) or not isinstance(h.get("parents"), dict):
        raise bad
    levels, parents = h["levels"], h["parents"]
    if len(levels) < 2 or not all(isinstance(v, str) for v in levels) or set(parents) != set(levels):
        raise bad
    if not isinstance(classes, list) or parents[levels[-1]] != classes:
        raise bad
    for v in parents.values():
        if not isinstance(v, list) or len(v) != len(classes) or not all(isinstance(c, str) for c in v):
            raise bad
