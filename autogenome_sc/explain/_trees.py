"""SHAP values of a boosted-trees model (``nn.Trees``) by ``shap.TreeExplainer``: exact, not sampled.

Expected gradients cannot explain trees (their gradient is zero almost everywhere). Tree SHAP
with interventional perturbation against background cells gives the exact SHAP values of the
logits: per cell, they sum to its logits minus the mean logits over the background. The trees
are handed to shap in its documented dictionary form, read from the model's arrays.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def is_trees(arch: dict[str, Any]) -> bool:
    """Whether the architecture is a boosted-trees model (``{"model": "trees", ...}``)."""
    return arch.get("model") == "trees"


def tree_shap(params: dict[str, Any], x: np.ndarray, background: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(phi, base)``: SHAP values ``(cells, genes, outputs)`` of the logits and their mean over ``background``.

    ``params``: the ``"params"`` collection of :class:`~autogenome_sc.nn.Trees`.
    """
    import shap

    p = {k: np.asarray(v) for k, v in params.items()}
    n_out = p["base"].shape[0]
    trees = [_tree(p, t, n_out) for t in range(p["feature"].shape[0])]
    model = {
        "trees": trees,
        "base_offset": p["base"].astype(np.float64),
        "tree_output": "raw_value",
        "input_dtype": np.float64,
        "internal_dtype": np.float64,
    }
    bg = np.asarray(background, np.float64)
    explainer = shap.TreeExplainer(model, data=bg, model_output="raw", feature_perturbation="interventional")
    phi = np.asarray(explainer.shap_values(np.asarray(x, np.float64), check_additivity=False), np.float64)
    if phi.ndim == 2:  # one output
        phi = phi[:, :, None]
    base = np.asarray(explainer.expected_value, np.float64).reshape(n_out)
    return phi.astype(np.float32), base


def _tree(p: dict[str, np.ndarray], t: int, n_out: int) -> dict[str, np.ndarray]:
    """Tree ``t`` in shap's dictionary form: leaves have children -1, values one column per output."""
    own = np.arange(p["feature"].shape[1])
    left, right = p["left"][t].astype(np.int64), p["right"][t].astype(np.int64)
    leaf = (left == own) & (right == own)
    values = np.zeros((len(own), n_out))
    values[:, int(p["tree_class"][t])] = np.where(leaf, p["value"][t], 0.0)
    return {
        "children_left": np.where(leaf, -1, left).astype(np.int32),
        "children_right": np.where(leaf, -1, right).astype(np.int32),
        "children_default": np.where(leaf, -1, left).astype(np.int32),
        "features": np.where(leaf, -2, p["feature"][t]).astype(np.int32),
        "thresholds": p["threshold"][t].astype(np.float64),
        "values": values,
        "node_sample_weight": np.ones(len(own)),
    }
