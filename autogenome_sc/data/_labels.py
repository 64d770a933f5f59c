"""Targets from ``.obs``: label encoding, task detection, the stratified split."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from anndata import AnnData
from pandas.api.types import is_bool_dtype, is_float_dtype, is_integer_dtype, is_numeric_dtype

SPLITS = ("train", "val", "test")


@dataclass
class Targets:
    """Encoded targets of every cell."""

    y: np.ndarray  # int32 class codes or float32 values
    task: str  # "classification" or "regression"
    classes: list[str] | None


def obs_column(adata: AnnData, key: str, what: str, fill: str) -> pd.Series:
    """``adata.obs[key]``; a missing column or a cell without a value is refused in one sentence.

    ``what`` names the argument (``"label_key"``), ``fill`` says what to do about empty cells.
    """
    if key not in adata.obs.columns:
        cols = ", ".join(map(repr, adata.obs.columns[:20])) or "none"
        raise KeyError(f"{what} '{key}' is not a column of adata.obs (columns: {cols}).")
    col = adata.obs[key]
    if col.isna().any():
        raise ValueError(f"{int(col.isna().sum())} cells have no value in adata.obs['{key}']; {fill}.")
    return col


def encode_targets(adata: AnnData, label_key: str, loss: str = "auto") -> Targets:
    """Read ``adata.obs[label_key]`` and encode it for ``loss`` (auto, cross_entropy, mse, auc)."""
    col = obs_column(
        adata, label_key, "label_key", "subset to labelled cells first (e.g. `adata[adata.obs[key].notna()]`)"
    )
    regression = loss == "mse" or (loss == "auto" and is_float_dtype(col.dtype))
    if regression:
        if not is_numeric_dtype(col.dtype) or is_bool_dtype(col.dtype):
            raise ValueError(f"Regression needs a numeric target, but adata.obs['{label_key}'] has dtype {col.dtype}.")
        y = _finite_target(col, label_key)
        if np.ptp(y) == 0:
            raise ValueError(f"adata.obs['{label_key}'] is constant; there is nothing to learn.")
        return Targets(y=y, task="regression", classes=None)
    if is_float_dtype(col.dtype):
        _finite_target(col, label_key, limit=np.inf)  # classes: any finite value names one
    _distinct_as_text(col, label_key)
    if isinstance(col.dtype, pd.CategoricalDtype):
        cat = col.cat.remove_unused_categories()
    elif is_integer_dtype(col.dtype) or is_bool_dtype(col.dtype) or is_float_dtype(col.dtype):
        cat = pd.Categorical(col.astype(str)) if not is_float_dtype(col.dtype) else pd.Categorical(col)
        cat = pd.Series(cat, index=col.index)
    else:
        cat = pd.Series(pd.Categorical(col.astype(str)), index=col.index)
    classes = [str(c) for c in cat.cat.categories]
    if len(classes) < 2:
        raise ValueError(
            f"adata.obs['{label_key}'] has a single class ({classes[0]!r}); classification needs at least two."
        )
    if loss == "auc" and len(classes) != 2:
        raise ValueError(f"The AUC loss is for binary labels, but adata.obs['{label_key}'] has {len(classes)} classes.")
    return Targets(y=cat.cat.codes.to_numpy().astype(np.int32), task="classification", classes=classes)


#: Largest magnitude of a numeric target: beyond it float32 sums of squares (losses, metrics) overflow.
MAX_TARGET = 1e15


def _finite_target(col: pd.Series, label_key: str, limit: float = MAX_TARGET) -> np.ndarray:
    """The numeric labels as float32, refused in one sentence when one is infinite or beyond ``limit``."""
    values = col.to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values) | (np.abs(values) > limit)
    if bad.any():
        what = "infinite" if np.isinf(limit) else f"infinite or beyond +-{limit:g}"
        raise ValueError(
            f"adata.obs['{label_key}'] has {int(bad.sum())} values that are {what} (e.g. {float(values[bad][0])!r}); "
            "rescale (or log) the target, or make it categorical."
        )
    return values.astype(np.float32)


def _distinct_as_text(col: pd.Series, label_key: str) -> None:
    """Refuse labels that differ as values but not as text (``1`` and ``"1"``): classes are named by their text."""
    values = col.cat.categories if isinstance(col.dtype, pd.CategoricalDtype) else pd.unique(col.to_numpy())
    seen: dict[str, object] = {}
    for v in values:
        text = str(v)
        if text in seen:
            raise ValueError(
                f"adata.obs['{label_key}'] holds labels {seen[text]!r} and {v!r}, which are the same as text; "
                f"make the column one type first, e.g. `adata.obs['{label_key}'] = adata.obs['{label_key}'].astype(str)`."
            )
        seen[text] = v


def stratified_split(targets: Targets, fractions: tuple[float, float, float], rng: np.random.Generator) -> np.ndarray:
    """Assign each cell to ``"train"``, ``"val"`` or ``"test"``, stratified by class.

    Every class gets at least one validation and one test cell; a class with fewer than
    three cells cannot be split and is named in the error.
    """
    n = len(targets.y)
    out = np.empty(n, dtype=object)
    _, f_val, f_test = fractions
    if targets.task == "classification":
        classes = targets.classes
        assert classes is not None  # classification targets always have their classes
        groups = [np.flatnonzero(targets.y == k) for k in range(len(classes))]
        for k, members in enumerate(groups):
            if len(members) < 3:
                raise ValueError(
                    f"Class {classes[k]!r} has {len(members)} cell(s); each class needs at least 3 "
                    "for a train/validation/test split. Remove or merge it first."
                )
    else:
        groups = [np.arange(n)]
    for members in groups:
        perm = rng.permutation(members)
        m = len(perm)
        n_test = max(1, int(round(f_test * m)))
        n_val = max(1, int(round(f_val * m)))
        out[perm[:n_test]] = "test"
        out[perm[n_test : n_test + n_val]] = "val"
        out[perm[n_test + n_val :]] = "train"
    return out.astype(str)


def read_split(adata: AnnData, split_key: str, targets: Targets) -> np.ndarray:
    """Use a user-given split from ``adata.obs[split_key]`` (values train/val/test)."""
    if split_key not in adata.obs.columns:
        raise KeyError(f"split_key '{split_key}' is not a column of adata.obs.")
    split = adata.obs[split_key].astype(str).to_numpy()
    bad = sorted(set(split) - set(SPLITS))
    if bad:
        raise ValueError(f"adata.obs['{split_key}'] must hold only 'train', 'val' and 'test', found {bad[:5]}.")
    for s in ("train", "val"):
        if not (split == s).any():
            raise ValueError(f"adata.obs['{split_key}'] has no '{s}' cells.")
    if targets.task == "classification":
        classes = targets.classes
        assert classes is not None  # classification targets always have their classes
        present = np.unique(targets.y[split == "train"])
        missing = [classes[k] for k in range(len(classes)) if k not in present]
        if missing:
            raise ValueError(f"Classes {missing} have no cell in the training split of adata.obs['{split_key}'].")
    return split
