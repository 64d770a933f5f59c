"""Checks of a model directory before anything is built from it: ``model.json`` against a schema and the weights.

A model file may come from anywhere. Before a file is read whole its size is bounded
(``model.json`` by :data:`MAX_JSON_BYTES`, ``weights.msgpack`` by what the architecture in
``model.json`` implies); the JSON's nesting is bounded by :data:`MAX_DEPTH`. Every field that
changes a prediction, a confidence or a rejection is checked by type and range (the
architecture against the schema of its network, the calibration temperature, the
preprocessing, the training input, the prediction settings of the config), and every number
in the architecture must fit the weights saved with it (no layer wider than the largest
weight array, no network deeper than the number of arrays). The weights must be finite, the
novelty statistics well formed, and a checksum over the weights and ``model.json`` must match
the one stored at saving. The checksum catches an edited or swapped file; it is not a
signature (whoever writes a file can write its checksum too), so load models only from
sources you trust as much as code.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, get_args

import numpy as np

from .._names import ACTIVATIONS, INPUT_KINDS, LIKELIHOODS, TASKS, Preprocess, Scaling
from ..train._confidence import KNN_DIMS as _KNN_DIMS
from ..train._confidence import KNN_POINTS as _KNN_POINTS
from ._errors import DamagedModel
from ._schema import check_schema, expected_numbers

__all__ = ["DamagedModel", "check_meta", "check_schema", "checksum", "expected_numbers"]

#: model.json larger than this is refused before it is read: far above any model's (a few tens of bytes a gene).
MAX_JSON_BYTES = 16 * 2**20
#: Deepest nesting of objects and lists in model.json (an ensemble's member input bounds need 6).
MAX_DEPTH = 32
#: Format 2's checksum: the weights and these fields. Format 3's covers all of model.json but the checksum itself.
CHECKED_FIELDS = ("architecture", "task", "classes", "var_names", "preprocessing", "target_mean", "target_std")
#: Format 2: prediction-deciding fields that only some models have (the labels of coarser levels).
OPTIONAL_CHECKED_FIELDS = ("hierarchy",)
#: Fields that appeared after format 1: a model claiming format 1 (no checksum) while holding one was edited.
_SINCE_FORMAT_2 = ("matrix", "hierarchy")
#: String values an architecture may hold, by key.
_STRINGS = {"activation": ACTIVATIONS, "likelihood": LIKELIHOODS, "average": ("probs", "mean", "stack")}
_PREPROCESS: tuple[str, ...] = get_args(Preprocess)  # what the config asked for
_TRANSFORMS = tuple(p for p in _PREPROCESS if p != "auto")  # what was applied
_SCALINGS = (*get_args(Scaling), "none")


def checksum(meta: dict[str, Any], weights: bytes) -> str:
    """``sha256:<hex>`` of the weights file and of ``model.json``, as the model's format version defines it.

    Format 3 and later: every field of ``model.json`` except ``checksum``. Format 2: the
    prediction-deciding fields :data:`CHECKED_FIELDS` (and ``hierarchy`` where present).
    """
    h = hashlib.sha256(weights)
    if meta.get("format_version") == 2:
        fields = {k: meta.get(k) for k in CHECKED_FIELDS}
        for k in OPTIONAL_CHECKED_FIELDS:  # only where present: a model without them keeps the checksum it had
            if meta.get(k) is not None:
                fields[k] = meta[k]
    else:
        fields = {k: v for k, v in meta.items() if k != "checksum"}
    h.update(json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str).encode())
    return "sha256:" + h.hexdigest()


def too_deep(obj: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether objects and lists nest deeper than ``limit`` in ``obj`` (walked without recursion)."""
    stack = [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth > limit:
                return True
            children = value.values() if isinstance(value, dict) else value
            stack.extend((v, depth + 1) for v in children)
    return False


def check_format(meta: Any, path: Path, current: int, marker: str) -> int:
    """The format version of a parsed ``model.json``: known, not newer than ``current``, checksummed since 2."""
    if not isinstance(meta, dict) or meta.get("format") != marker:
        raise DamagedModel(f"'{path}' holds a model.json of another format (expected '{marker}').")
    version = meta.get("format_version", 1)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise DamagedModel(f"'{path}': model.json's 'format_version' must be a whole number (1 or more).")
    if version > current:
        raise DamagedModel(f"'{path}' was saved by a newer autogenome_sc (format {version}); upgrade to read it.")
    if version >= 2 and "checksum" not in meta:
        raise DamagedModel(
            f"'{path}' has no checksum in its model.json although format {version} always writes one; the file "
            "was edited. Use the files as they were saved, or train again."
        )
    if version == 1:
        later = [k for k in _SINCE_FORMAT_2 if k in meta] + (
            ["preprocessing.batch_key"]
            if isinstance(meta.get("preprocessing"), dict) and "batch_key" in meta["preprocessing"]
            else []
        )
        if later:
            raise DamagedModel(
                f"'{path}' claims format 1 (saved without a checksum) but holds '{later[0]}', which format 1 never "
                "wrote; the file was edited."
            )
    return version


def check_meta(meta: dict[str, Any], path: Path, models: tuple[str, ...] | None = None) -> None:
    """Every field of ``model.json`` that changes a prediction, a confidence or a rejection, by type and range.

    One sentence each, naming the file and the field. ``models``: the network names an
    architecture may use (default: those of the schema).
    """
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
    _check_preprocessing(meta["preprocessing"], path)
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
    if not _finite_number(meta.get("target_mean", 0.0)):
        raise DamagedModel(f"'{path}': model.json's 'target_mean' must be a finite number.")
    if not _positive(meta.get("target_std", 1.0)):
        raise DamagedModel(f"'{path}': model.json's 'target_std' must be a positive finite number.")
    _check_calibration(meta.get("calibration", {}), path)
    _check_predict_config(meta.get("config", {}), path)
    check_schema(meta["architecture"], meta["task"], path, models)
    arch = meta["architecture"]
    if arch.get("average") == "stack" and (not isinstance(classes, list) or len(arch["intercept"]) != len(classes)):
        raise DamagedModel(f"'{path}': model.json's stacked ensemble must have one intercept per class.")


def _check_preprocessing(pre: Any, path: Path) -> None:
    """What a query's matrix gets before the network: detected input, transform, scaling and its bounds."""
    if not isinstance(pre, dict) or pre.get("input") not in INPUT_KINDS:
        raise DamagedModel(
            f"'{path}': model.json's 'preprocessing' must be an object whose 'input' is one of {', '.join(INPUT_KINDS)}."
        )
    for key, allowed in (("applied", _TRANSFORMS), ("config", _PREPROCESS), ("scaling", _SCALINGS)):
        if key in pre and pre[key] not in allowed:
            raise DamagedModel(
                f"'{path}': model.json's 'preprocessing.{key}' is {pre[key]!r}; expected one of {', '.join(allowed)}."
            )
    clip = pre.get("clip")
    if clip is not None and not (isinstance(clip, list) and len(clip) == 2 and all(map(_finite_number, clip))):
        raise DamagedModel(f"'{path}': model.json's 'preprocessing.clip' must be two finite numbers, low and high.")
    if clip is not None and clip[0] > clip[1]:
        raise DamagedModel(f"'{path}': model.json's 'preprocessing.clip' has its low bound above its high bound.")
    batch_key = pre.get("batch_key")
    if batch_key is not None and (not isinstance(batch_key, str) or not batch_key):
        raise DamagedModel(f"'{path}': model.json's 'preprocessing.batch_key' must be a column name (a string).")


def _check_calibration(calibration: Any, path: Path) -> None:
    """The temperature that divides the logits: positive and finite (the rest of ``calibration`` only describes)."""
    if not isinstance(calibration, dict):
        raise DamagedModel(f"'{path}': model.json's 'calibration' must be an object.")
    if "temperature" in calibration and not _positive(calibration["temperature"]):
        raise DamagedModel(
            f"'{path}': model.json's 'calibration.temperature' is {calibration['temperature']!r}; it must be a "
            "positive finite number (it divides every logit)."
        )


def _check_predict_config(config: Any, path: Path) -> None:
    """The config's settings that prediction reads: the gene overlap it requires, its chunk size, the scaling switch."""
    if not isinstance(config, dict) or not isinstance(config.get("data", {}), dict):
        raise DamagedModel(f"'{path}': model.json's 'config' must be an object whose 'data' is an object.")
    data = config.get("data", {})
    checks: dict[str, tuple[Callable[[Any], bool], str]] = {
        "min_gene_overlap": (lambda v: _finite_number(v) and 0 <= v <= 1, "a number from 0 to 1"),
        "chunk_mb": (_positive, "a positive finite number"),
        "scale": (lambda v: isinstance(v, bool), "true or false"),
    }
    for key, (ok, what) in checks.items():
        if key in data and not ok(data[key]):
            raise DamagedModel(f"'{path}': model.json's 'config.data.{key}' is {data[key]!r}; it must be {what}.")


def weights_bound(meta: dict[str, Any]) -> float:
    """The most bytes ``weights.msgpack`` can take for the checked ``meta``: its architecture's numbers, with slack.

    Every number at 8 bytes and 2 more for the encoding, plus 2 MB: twice what a float32 model
    takes, so a file beyond it holds something else than this architecture's weights.
    """
    n_genes = len(meta["var_names"])
    classes = meta.get("classes") or []
    n_out = {"classification": len(classes), "regression": 1}.get(meta["task"], n_genes)
    numbers, emb = expected_numbers(meta["architecture"], n_genes, n_out)
    numbers += 2 * n_genes  # the per-gene scaling
    if meta["task"] == "classification":  # the novelty statistics: the input space or the centroids, the references
        levels = len((meta.get("hierarchy") or {}).get("levels") or [None])  # a reference per level of a hierarchy
        space = n_genes * (_KNN_DIMS + 1) + _KNN_POINTS * (_KNN_DIMS + 1) + (_KNN_DIMS + 2) * len(classes)
        numbers += max(space, len(classes) * (emb + 2) + emb) + levels * (_MAX_REFERENCE + 16)
    return 10 * numbers + 2 * 2**20


def check_weights(
    state: Any, n_genes: int, path: Path, n_classes: int | None = None, level_classes: dict[str, int] | None = None
) -> list[np.ndarray]:
    """The weight arrays of ``state``: present, numeric, finite; the scaling sized to the genes; the novelty statistics.

    An ensemble member's gene selection must point at genes the model reads. ``level_classes``:
    the classes of each coarser level of the model's label hierarchy, whose novelty statistics
    (``novelty_levels``) may be there for those levels only.
    """
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
        _check_numeric(a, path)
    for genes in _member_genes(state["variables"]):
        if genes.size and (not np.issubdtype(genes.dtype, np.integer) or genes.min() < 0 or genes.max() >= n_genes):
            raise DamagedModel(
                f"'{path}': an ensemble member's gene selection in weights.msgpack points outside the model's "
                f"{n_genes} genes; the file is damaged."
            )
    for trees in _tree_arrays(state["variables"]):
        _check_trees(trees, n_genes, path)
    if state.get("novelty"):
        _check_novelty(state["novelty"], path, n_classes, n_genes)
    levels = state.get("novelty_levels")
    if levels:
        allowed = level_classes or {}
        if not isinstance(levels, dict) or not set(levels) <= set(allowed):
            raise DamagedModel(
                f"'{path}': weights.msgpack holds novelty statistics for levels the model's hierarchy does not have "
                f"({', '.join(map(str, levels)) if isinstance(levels, dict) else type(levels).__name__}); "
                "the file is damaged."
            )
        for level, stats in levels.items():
            _check_novelty(stats, path, allowed[level], n_genes, level=True)
    return arrays


def _check_numeric(a: np.ndarray, path: Path) -> None:
    if not np.issubdtype(a.dtype, np.number) and a.dtype != np.bool_:
        raise DamagedModel(f"'{path}': weights.msgpack holds a non-numeric array ({a.dtype}).")
    if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
        raise DamagedModel(
            f"'{path}' holds non-finite weights (NaN or infinite values); the model would predict nonsense."
        )


def _member_genes(variables: dict) -> Iterator[np.ndarray]:
    """The gene selections of an ensemble's members (``inputs/input_<i>/genes``)."""
    inputs = variables.get("inputs")
    if isinstance(inputs, dict):
        for spec in inputs.values():
            if isinstance(spec, dict) and "genes" in spec:
                yield np.asarray(spec["genes"])


def _tree_arrays(tree: Any) -> Iterator[dict]:
    """Every boosted-trees parameter set (``nn.Trees``: ``feature``, ``left``, ``right``, ...) in ``tree``."""
    if isinstance(tree, dict):
        if {"feature", "threshold", "left", "right", "value"} <= set(tree):
            yield tree
        else:
            for v in tree.values():
                yield from _tree_arrays(v)


def _check_trees(trees: dict, n_genes: int, path: Path) -> None:
    """Split genes among the model's genes, children within their tree: else a forged tree reads other cells' genes."""
    feature, left, right = (np.asarray(trees[k]) for k in ("feature", "left", "right"))
    n_nodes = feature.shape[-1] if feature.ndim else 0
    for a, top in ((feature, n_genes), (left, n_nodes), (right, n_nodes)):
        if a.shape != feature.shape or not (np.all(a >= 0) and np.all(a < top) and np.all(a == np.round(a))):
            raise DamagedModel(
                f"'{path}': a tree in weights.msgpack splits on a gene or points at a node that does not exist; "
                "the file is damaged."
            )


#: The novelty statistics behind ``ag_uncertainty`` (``train/_confidence.py``): name -> (dimensions, positive).
#: Models saved before the input-space distance hold class centroids of the embedding (:data:`_NOVELTY_EMBEDDING`).
_SCORE = {
    "dist_loc": (0, False),
    "dist_scale": (0, True),
    "conf_loc": (0, False),
    "conf_scale": (0, True),
    "reference": (1, False),
    "tail": (0, True),
}
#: a coarser level of a hierarchy: the score's part (the finest level's input space)
_NOVELTY_LEVEL = {**_SCORE, "conf_weight": (0, False), "lr_loc": (0, False), "lr_scale": (0, True)}
_NOVELTY = {
    **_NOVELTY_LEVEL,
    "genes": (1, False),
    "projection": (2, False),
    "offset": (1, False),
    "points": (2, False),
    "point_class": (1, False),
    "k": (0, True),
    "lr_classes": (1, False),
    "lr_coef": (2, False),
    "lr_intercept": (1, False),
}
_NOVELTY_EMBEDDING = {**_SCORE, "centroids": (2, False), "inv_var": (1, True), "present": (1, False)}
#: ``query_aware``: the kept held-out cells' scores (and, at the finest level, their coordinates)
_QUERY = {"query_weight": (0, True), "held_out_raw": (1, False)}
_NOVELTY_LEVEL_QUERY = {**_NOVELTY_LEVEL, **_QUERY}
_NOVELTY_QUERY = {**_NOVELTY, **_QUERY, "held_out_points": (2, False)}
#: the Mahalanobis distance beside the neighbour distance: two of each standardising constant, their weights,
#: and (at the finest level) the whitening and the whitened class means
_TWO_DISTANCES = {"dist_loc": (1, False), "dist_scale": (1, True), "dist_weights": (1, False)}
_MAHALANOBIS = {**_TWO_DISTANCES, "maha_whiten": (2, False), "maha_means": (2, False)}
_NOVELTY_LEVEL_KINDS = [_NOVELTY_LEVEL, _NOVELTY_LEVEL_QUERY] + [
    {**k, **_TWO_DISTANCES} for k in (_NOVELTY_LEVEL, _NOVELTY_LEVEL_QUERY)
]
_NOVELTY_INPUT_KINDS = [_NOVELTY, _NOVELTY_QUERY] + [{**k, **_MAHALANOBIS} for k in (_NOVELTY, _NOVELTY_QUERY)]
_MAX_REFERENCE = 1000  # quantiles of the validation scores a model keeps (train/_confidence.py)


def _check_novelty(novelty: Any, path: Path, n_classes: int | None, n_genes: int, *, level: bool = False) -> None:
    """Well-formed novelty statistics: else every uncertainty is wrong.

    The input space (or, in older models, centroids per class and positive variances), positive
    scales and a sorted reference; ``level``: a coarser level's, which holds the score's part only.
    """
    bad = f"'{path}': the novelty statistics in weights.msgpack are damaged"
    kinds = _NOVELTY_LEVEL_KINDS if level else [*_NOVELTY_INPUT_KINDS, _NOVELTY_EMBEDDING]
    if not isinstance(novelty, dict) or not any(set(novelty) == set(k) for k in kinds):
        raise DamagedModel(f"{bad} (expected {' or '.join(', '.join(k) for k in kinds)}).")
    spec = next(k for k in kinds if set(novelty) == set(k))
    arrays = {k: np.asarray(v) for k, v in novelty.items()}
    for name, (ndim, positive) in spec.items():
        a = arrays[name]
        _check_numeric(a, path)
        if a.ndim != ndim or (positive and not (a > 0).all()):
            raise DamagedModel(f"{bad} ('{name}' must be {'positive, ' if positive else ''}{ndim}-dimensional).")
    if "dist_weights" in spec and any(arrays[k].shape != (2,) for k in _TWO_DISTANCES):
        raise DamagedModel(f"{bad} (two distances: a location, a scale and a weight for each).")
    reference = arrays["reference"]
    if not 0 < reference.size <= _MAX_REFERENCE or (np.diff(reference) < 0).any():
        raise DamagedModel(f"{bad} (a sorted reference of 1 to 1000 scores).")
    if "held_out_raw" in arrays and not 0 < arrays["held_out_raw"].size <= _MAX_REFERENCE:
        raise DamagedModel(f"{bad} (1 to 1000 held-out cells' scores).")
    if any(spec is k for k in _NOVELTY_INPUT_KINDS):
        proj, points, cls, genes = arrays["projection"], arrays["points"], arrays["point_class"], arrays["genes"]
        d = proj.shape[1]
        if (
            not np.issubdtype(genes.dtype, np.integer)
            or not 0 < genes.size <= n_genes
            or genes.min() < 0
            or genes.max() >= n_genes
            or proj.shape[0] != genes.size
            or not 0 < d <= _KNN_DIMS
            or arrays["offset"].shape != (d,)
        ):
            raise DamagedModel(f"{bad} (a projection of the model's {n_genes} genes onto at most {_KNN_DIMS} axes).")
        if points.shape[1:] != (d,) or not 0 < len(points) <= _KNN_POINTS or cls.shape != (len(points),):
            raise DamagedModel(f"{bad} (1 to {_KNN_POINTS} reference cells, each with its class).")
        if "held_out_points" in spec and arrays["held_out_points"].shape != (arrays["held_out_raw"].size, d):
            raise DamagedModel(f"{bad} (a held-out cell's coordinates for each held-out score).")
        if n_classes is not None and (
            not np.issubdtype(cls.dtype, np.integer) or (cls < 0).any() or (cls >= n_classes).any()
        ):
            raise DamagedModel(f"{bad} (a reference cell's class is not one of the model's {n_classes}).")
        if not np.issubdtype(arrays["k"].dtype, np.integer):
            raise DamagedModel(f"{bad} ('k' must be a whole number).")
        lr_classes, coef = arrays["lr_classes"], arrays["lr_coef"]
        if (
            not np.issubdtype(lr_classes.dtype, np.integer)
            or lr_classes.size == 0
            or (lr_classes < 0).any()
            or (n_classes is not None and (lr_classes >= n_classes).any())
            or coef.shape != (d, lr_classes.size)
            or arrays["lr_intercept"].shape != (lr_classes.size,)
        ):
            raise DamagedModel(f"{bad} (the reference-space classifier: a weight per component and class).")
        if "maha_means" in spec and (
            arrays["maha_whiten"].shape != (d, d) or arrays["maha_means"].shape != (lr_classes.size, d)
        ):
            raise DamagedModel(f"{bad} (the Mahalanobis distance: a whitening of the components, a mean per class).")
    elif spec is _NOVELTY_EMBEDDING:
        centroids = arrays["centroids"]
        d = centroids.shape[1]
        if n_classes is not None and (centroids.shape[0] != n_classes or arrays["present"].shape != (n_classes,)):
            raise DamagedModel(f"{bad} (centroids and 'present' must have one row per class, {n_classes}).")
        if arrays["inv_var"].shape != (d,):
            raise DamagedModel(f"{bad} (one variance per embedding dimension).")


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


def _is_matrix(m: Any) -> bool:
    """The input a model was trained on: ``{"layer": name or None, "use_raw": bool}``, not both; maybe ``gene_symbols``."""
    if not isinstance(m, dict) or not {"layer", "use_raw"} <= set(m) <= {"layer", "use_raw", "gene_symbols"}:
        return False
    symbols = m.get("gene_symbols", "var")  # a non-empty column name when present
    if not isinstance(m["use_raw"], bool) or not (isinstance(symbols, str) and symbols):
        return False
    layer = m["layer"]
    return (layer is None or (isinstance(layer, str) and bool(layer))) and not (layer is not None and m["use_raw"])


def _finite_number(v: Any) -> bool:
    return not isinstance(v, bool) and isinstance(v, int | float) and math.isfinite(v)


def _positive(v: Any) -> bool:
    return _finite_number(v) and v > 0


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
