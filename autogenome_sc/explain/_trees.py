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


def stacked_trees_shap(arch: dict[str, Any], variables: dict[str, Any], x: np.ndarray, background: np.ndarray):
    """Tree SHAP of the boosted trees' share of a stacked ensemble's logits ``(cells, input genes, classes)``, or None.

    A stack (``nn.Ensemble``, ``"average": "stack"``) reads a trees group as its members' weighted
    mean of tempered logits, centred per cell, times the group's block of ``coef``: a linear map of
    each member's logits, so the members' exact Tree SHAP values (of the logits, computed on what
    each member reads: its genes, scaled and clipped by its input transform, one-to-one with the
    input genes) go through the same map. Expected gradients give the trees nothing (their gradient
    is zero almost everywhere), so these values added to theirs sum, per cell, to the stack's
    logits minus their mean over ``background``. ``None`` where the model is not a stack with trees.
    """
    from ..nn import member_input
    from ..nn._fc import InputTransform, stack_logit_groups

    if arch.get("model") != "ensemble" or arch.get("average") != "stack":
        return None
    logit_groups = stack_logit_groups(arch)
    if logit_groups is None:
        return None
    groups = np.asarray(arch["groups"], np.int64)
    weights = np.asarray(arch.get("weights") or [1.0] * len(groups), np.float64)
    temperatures = np.asarray(arch.get("temperatures") or [1.0] * len(groups), np.float64)
    coef = np.asarray(arch["coef"], np.float64)
    n_out = coef.shape[1]
    phi = np.zeros((x.shape[0], x.shape[1], n_out))
    for g in logit_groups:
        block = coef[g * n_out : (g + 1) * n_out]
        mine = np.flatnonzero(groups == g)
        for i in mine:
            spec = arch["members"][i].get("input")
            xi, bi = x, background
            if spec is not None:
                consts = {"inputs": variables["inputs"][f"input_{i}"]}
                transform = InputTransform(*(member_input(spec) or ()))
                xi, bi = (np.asarray(transform.apply(consts, v)) for v in (x, background))
            phi_i, _ = tree_shap(variables["params"][f"members_{i}"], xi, bi)
            share = weights[i] / weights[mine].sum() / temperatures[i]
            phi_i = share * (phi_i - phi_i.mean(axis=2, keepdims=True)) @ block
            if spec is None or spec.get("n_genes") is None:
                phi += phi_i
            else:
                phi[:, np.asarray(consts["inputs"]["genes"], np.int64)] += phi_i  # a member's genes are distinct
    return phi.astype(np.float32)
