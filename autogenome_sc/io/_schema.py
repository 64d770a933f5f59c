"""The schema of a saved architecture, and how many numbers its weights hold.

An architecture in ``model.json`` is ``{"model": name, <the network's hyperparameters>}``:
the keys each network takes (those of its Flax module in ``nn/``; ``tests/test_untrusted_models.py``
keeps the two in step), with their types and ranges. A key the network does not take, a
width of 0 or 16.5, a dropout of 1 or an edge to a later node is refused here, before any
network is built. :func:`expected_numbers` counts the numbers the weights of an architecture
hold, so that a weights file far larger than its architecture is refused before it is read.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .._names import ACTIVATIONS, LIKELIHOODS, VAE_MODELS
from ._errors import DamagedModel

#: ``None`` when a value is fine, else what it must be.
Check = Callable[[Any], str | None]


def _is_whole(v: Any, lo: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= lo


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _whole(lo: int) -> Check:
    return lambda v: None if _is_whole(v, lo) else f"must be a whole number of at least {lo}"


def _wholes(lo: int) -> Check:
    def check(v: Any) -> str | None:
        ok = isinstance(v, list) and v and all(_is_whole(w, lo) for w in v)
        return None if ok else f"must be a non-empty list of whole numbers of at least {lo}"

    return check


def _number(lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False) -> Check:
    def check(v: Any) -> str | None:
        ok = _is_number(v) and (lo < v if lo_open else lo <= v) and (v < hi if hi_open else v <= hi)
        return None if ok else f"must be a number in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"

    return check


def _name(names: tuple[str, ...]) -> Check:
    return lambda v: None if v in names else f"must be one of {', '.join(names)}"


def _flag(v: Any) -> str | None:
    return None if isinstance(v, bool) else "must be true or false"


def _optional(check: Check) -> Check:
    return lambda v: None if v is None else check(v)


def _bounds(v: Any) -> str | None:
    ok = isinstance(v, list) and len(v) == 2 and all(_is_number(b) for b in v) and v[0] <= v[1]
    return None if ok else "must be two finite numbers, low and high"


def _edges(v: Any) -> str | None:
    ok = isinstance(v, list) and all(isinstance(e, list) and len(e) == 2 and all(_is_whole(n, 0) for n in e) for e in v)
    return None if ok else "must be a list of [source, target] node numbers"


_UNIT: dict[str, Check] = {
    "input_keep": _number(0, 1, lo_open=True),
    "dropout": _number(0, 1, hi_open=True),
    "activation": _name(ACTIVATIONS),
    "batch_norm": _flag,
}
#: The keys of each supervised network's architecture (its Flax module's fields in ``nn/``).
NETWORKS: dict[str, dict[str, Check]] = {
    "linear": _UNIT,
    "mlp": {**_UNIT, "widths": _wholes(1)},
    "resnet": {**_UNIT, "width": _whole(1), "n_blocks": _whole(0)},
    "densenet": {
        **_UNIT,
        "block_structure": _wholes(1),
        "growth_rate": _whole(1),
        "compression": _number(0, 1, lo_open=True),
    },
    "rrfcn": {**_UNIT, "widths": _wholes(1), "edges": _edges},
    "trees": {"n_trees": _whole(1), "n_nodes": _whole(1), "depth": _whole(1)},
}
#: The sizes a network takes where its architecture leaves them out (the defaults of its Flax module).
SIZE_DEFAULTS: dict[str, dict[str, Any]] = {
    "mlp": {"widths": [256, 256]},
    "resnet": {"width": 256, "n_blocks": 3},
    "densenet": {"block_structure": [2, 3, 4], "growth_rate": 64, "compression": 0.5},
    "rrfcn": {"widths": [2048, 256, 256, 256, 256, 256], "edges": []},
    "trees": {"n_trees": 1, "n_nodes": 1, "depth": 1},
}
#: The keys of a (Res-)VAE's architecture; all but ``kl_warmup`` (training only) are needed to build it.
VAE: dict[str, Check] = {
    "n_layers": _whole(1),
    "first_width": _whole(1),
    "decay": _number(0, 1, lo_open=True),
    "latent": _whole(1),
    "input_keep": _number(0, 1, lo_open=True),
    "likelihood": _name(LIKELIHOODS),
    "activation": _name(ACTIVATIONS),
    "kl_warmup": _whole(0),
}
VAE_OPTIONAL = ("kl_warmup",)
#: An ensemble member's own input transform: a gene selection (its size) and the clip bounds of its scaling.
MEMBER_INPUT: dict[str, Check] = {"n_genes": _optional(_whole(1)), "clip": _optional(_bounds)}


def check_schema(arch: dict[str, Any], task: str, path: Path, models: tuple[str, ...] | None = None) -> None:
    """Refuse, in one sentence naming the file and the key, an architecture its network cannot take.

    ``models``: the network names an architecture may use; a name known there but not to this
    schema (a network added without one) gets only the weights-bound checks of ``_validate``.
    """
    kind = arch.get("model")
    if (task == "embedding") != (kind in VAE_MODELS):
        what = "a (Res-)VAE" if task == "embedding" else "a supervised network"
        raise DamagedModel(f"'{path}': a model for {task} needs {what}, not architecture.model {kind!r} in model.json.")
    _check(arch, "architecture", path, models)


def _check(arch: Any, where: str, path: Path, models: tuple[str, ...] | None, member: bool = False) -> None:
    if not isinstance(arch, dict) or not isinstance(arch.get("model"), str):
        raise DamagedModel(f"'{path}': {where} in model.json must be an object with a 'model' name.")
    kind = arch["model"]
    if models is not None and kind not in (*models, "ensemble"):
        raise DamagedModel(f"'{path}': unknown model {kind!r} at {where}.model in model.json.")
    if kind == "ensemble":
        _check_ensemble(arch, where, path, models)
        return
    if kind in NETWORKS:
        keys = {**NETWORKS[kind], "input": _member_input} if member else NETWORKS[kind]
    elif kind in VAE_MODELS and not member:
        keys = VAE
        missing = [k for k in VAE if k not in arch and k not in VAE_OPTIONAL]
        if missing:
            raise DamagedModel(f"'{path}': {where} in model.json has no '{missing[0]}'; a {kind} needs it.")
    elif kind in VAE_MODELS:
        raise DamagedModel(f"'{path}': {where} in model.json is a {kind}, which cannot be an ensemble member.")
    elif models is not None:
        return  # a network this schema does not know: bounded by its weights only
    else:
        raise DamagedModel(f"'{path}': unknown model {kind!r} at {where}.model in model.json.")
    for key, value in arch.items():
        if key == "model":
            continue
        if key not in keys:
            raise DamagedModel(f"'{path}': {where}.{key} in model.json is not a setting of a {kind} network.")
        problem = keys[key](value)
        if problem:
            raise DamagedModel(f"'{path}': {where}.{key} = {_short(value)} in model.json {problem}.")
    if kind == "rrfcn":
        _check_wiring(arch, where, path)


def _check_ensemble(arch: dict[str, Any], where: str, path: Path, models: tuple[str, ...] | None) -> None:
    """An ensemble: its members, one weight (not negative, not all 0) and one temperature (positive) per member."""
    members = arch.get("members")
    if not isinstance(members, list) or not members:
        raise DamagedModel(f"'{path}': {where} in model.json is an ensemble without a list of members.")
    stack = arch.get("average") == "stack"
    for key in arch:
        if key not in ("model", "members", "average", "weights", "temperatures", *STACK_KEYS[: 3 * stack]):
            raise DamagedModel(f"'{path}': {where}.{key} in model.json is not a setting of an ensemble.")
    if arch.get("average", "probs") not in ("probs", "mean", "stack"):
        raise DamagedModel(f"'{path}': {where}.average in model.json must be 'probs', 'mean' or 'stack'.")
    if stack:
        _check_stack(arch, len(members), where, path)
    for key in ("weights", "temperatures"):  # a list of one would broadcast over every member unnoticed
        values = arch.get(key)
        if values is not None and (not isinstance(values, list) or len(values) != len(members)):
            raise DamagedModel(f"'{path}': {where}.{key} in model.json must hold one number per member.")
    weights = arch.get("weights")
    if weights is not None and not (all(_is_number(w) and w >= 0 for w in weights) and sum(weights) > 0):
        raise DamagedModel(f"'{path}': {where}.weights in model.json must be numbers of at least 0, not all 0.")
    temperatures = arch.get("temperatures")
    if temperatures is not None and not all(_is_number(t) and t > 0 for t in temperatures):
        raise DamagedModel(f"'{path}': {where}.temperatures in model.json must be positive finite numbers.")
    for i, m in enumerate(members):
        _check(m, f"{where}.members[{i}]", path, models, member=True)


#: What a stacked ensemble holds besides an ensemble's settings (nn.Ensemble, ``average="stack"``).
STACK_KEYS = ("groups", "coef", "intercept")
#: The most classes a stack's meta-learner may claim (its coefficients are groups x classes^2 numbers in model.json).
MAX_STACK_CLASSES = 1000


def _check_stack(arch: dict[str, Any], n_members: int, where: str, path: Path) -> None:
    """A stack: a group (0, 1, ..., each used) per member, and a meta-learner of finite numbers that fits them."""
    groups, coef, intercept = (arch.get(k) for k in STACK_KEYS)
    if not (isinstance(groups, list) and len(groups) == n_members and all(_is_whole(g, 0) for g in groups)):
        raise DamagedModel(f"'{path}': {where}.groups in model.json must hold one whole number per member.")
    n_groups = max(groups) + 1
    if sorted(set(groups)) != list(range(n_groups)):
        raise DamagedModel(f"'{path}': {where}.groups in model.json must be 0, 1, ... with every group used.")
    if not (
        isinstance(intercept, list) and 2 <= len(intercept) <= MAX_STACK_CLASSES and all(map(_is_number, intercept))
    ):
        raise DamagedModel(f"'{path}': {where}.intercept in model.json must hold one finite number per class.")
    n = len(intercept)
    if not (
        isinstance(coef, list)
        and len(coef) == n_groups * n
        and all(isinstance(r, list) and len(r) == n and all(map(_is_number, r)) for r in coef)
    ):
        raise DamagedModel(
            f"'{path}': {where}.coef in model.json must hold {n_groups} x {n} rows of {n} finite numbers (groups x "
            "classes rows, one number per class)."
        )


def _member_input(v: Any) -> str | None:
    if not isinstance(v, dict) or not set(v) <= set(MEMBER_INPUT):
        return "must be an object with 'n_genes' and 'clip'"
    for key, check in MEMBER_INPUT.items():
        problem = check(v.get(key))
        if problem:
            return f"has '{key}' that {problem}"
    return None


def _check_wiring(arch: dict[str, Any], where: str, path: Path) -> None:
    """An RRFCN's edges join earlier nodes to later ones, and every node after the first has an input."""
    n = len(arch.get("widths", SIZE_DEFAULTS["rrfcn"]["widths"]))
    edges = arch.get("edges", [])
    if any(not s < t < n for s, t in edges) or {t for _, t in edges} != set(range(1, n)):
        raise DamagedModel(
            f"'{path}': {where}.edges in model.json must join each of its {n} nodes but the first to earlier ones."
        )


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# ---------------------------------------------------------------------------- sizes
#: Beyond this many layers an architecture is not counted (its weights bound nothing; ``_validate`` bounds it).
_MAX_COUNTED = 100_000


def expected_numbers(arch: dict[str, Any], n_in: int, n_out: int) -> tuple[float, float]:
    """``(numbers its weights hold, width of its embedding)`` of a checked architecture; ``inf`` if too large to count."""
    kind = arch["model"]
    if kind == "ensemble":
        total, emb = 0.0, 0.0
        for m in arch["members"]:
            n = (m.get("input") or {}).get("n_genes") or n_in
            numbers, width = expected_numbers(m, n, n_out)
            total, emb = total + numbers + 3 * n, emb + width  # a member's genes, shift and scale
        return total, emb
    if kind in VAE_MODELS:
        return _vae_numbers(arch, n_in), float(arch["latent"])
    bn = 4 if arch.get("batch_norm", True) else 0  # BatchNorm: scale, bias, mean, variance

    def unit(i: float, o: float) -> float:
        return i * o + o + bn * o

    sizes = {**SIZE_DEFAULTS.get(kind, {}), **arch}
    if kind == "linear":
        return float(n_in * n_out + n_out), float(n_out)
    if kind == "trees":  # five arrays of n_trees x n_nodes, each tree's class, the base scores
        t = sizes["n_trees"]
        return float(5 * t * sizes["n_nodes"] + t + n_out), float(n_out)
    if kind in ("mlp", "rrfcn"):
        widths = sizes["widths"]
        if len(widths) > _MAX_COUNTED:
            return math.inf, math.inf
        if kind == "mlp":
            ins = [n_in, *widths[:-1]]
        else:
            ins = [n_in] + [sum(widths[s] for s, t in sizes["edges"] if t == i) for i in range(1, len(widths))]
        total = sum(unit(i, o) for i, o in zip(ins, widths, strict=True))
        return total + unit(widths[-1], n_out) - bn * n_out, float(widths[-1])
    if kind == "resnet":
        w = sizes["width"]
        return unit(n_in, w) + sizes["n_blocks"] * unit(w, w) + w * n_out + n_out, float(w)
    if kind == "densenet":
        g, blocks = sizes["growth_rate"], sizes["block_structure"]
        if len(blocks) > _MAX_COUNTED:
            return math.inf, math.inf
        x, total = 2 * g, unit(n_in, 2 * g)
        for b, k in enumerate(blocks):
            # unit j of the block reads x + j * g features: summed over j < k in closed form
            total += g * (k * x + g * k * (k - 1) / 2) + k * (1 + bn) * g
            x += k * g
            if b < len(blocks) - 1:
                o = max(1, int(x * sizes["compression"]))
                total, x = total + unit(x, o), o
        return total + x * n_out + n_out, float(x)
    return math.inf, math.inf  # a network without a schema: no bound


def _vae_numbers(arch: dict[str, Any], n_genes: int) -> float:
    """Numbers in a (Res-)VAE's weights: encoder, latent heads, decoder, output and its noise parameters."""
    if arch["n_layers"] > _MAX_COUNTED:
        return math.inf
    widths = [max(8, int(round(arch["first_width"] * arch["decay"] ** i))) for i in range(arch["n_layers"])]
    skip, latent = arch["model"] == "resvae", arch["latent"]
    unit = 6  # Dense bias and BatchNorm's four per output, besides the kernel
    total, seen = 0.0, 0
    for i, w in enumerate(widths):  # the encoder: with skips each unit reads all earlier units' outputs
        inp = n_genes if i == 0 else (seen if skip else widths[i - 1])
        total, seen = total + inp * w + unit * w, seen + w
    top = seen if skip else widths[-1]
    total += 2 * (top * latent + latent)
    seen = latent
    for i, w in enumerate(widths[::-1]):  # the decoder reads the code and (with skips) every earlier unit
        inp = seen if skip else (latent if i == 0 else widths[::-1][i - 1])
        total, seen = total + inp * w + unit * w, seen + w
    out_in = seen - latent if skip else widths[0]
    return total + out_in * n_genes + n_genes + n_genes  # output layer; the likelihood's gene-wise parameter
