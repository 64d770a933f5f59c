"""The final model of a search: the chosen configurations' fold models averaged, refitted, or a trial's own.

After cross-validation the final model is either the k fold models of each chosen
configuration at the epoch cross-validation chose, averaged (``search.final = "bag"``), or
each chosen configuration trained once more on train + validation for that many epochs
(``"refit"``; always for the solved families, ``logistic`` and ``svm``, which have no epochs to
choose); chosen on the validation split, it is the chosen trials' own models. Several
models make one ensemble network (:func:`ensemble_of`) that saves and loads as one model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import jax
import numpy as np

from .. import _logging as logg
from .._names import FinalFit
from ..data import TrainData
from ..nn import build_network
from ..train import FitResult
from ._choose import Scored
from ._driver import Fitted, Searcher
from ._select import Selection
from ._spaces import is_solved


def final_model(selection: Selection, searcher: Searcher, *, final: FinalFit) -> tuple[dict, FitResult, TrainData]:
    """The architecture, weights and data pipeline of the chosen model.

    A single model trained on the search's own problem (validation route, or a refit of one
    configuration) is returned plainly; everything else is an ensemble whose members each
    read the shared input through their own scaling and genes, and, where several
    configurations were chosen, divide their outputs by their configuration's temperature
    (the one the choice weighed them with).
    """
    members: list[tuple[Fitted, float]] = []
    temperatures: list[float] = []
    groups: list[int] = []  # a stack's: the configuration (its block of the meta-learner) of each member
    chosen_t = selection.temperatures or [1.0] * len(selection.scored)
    stack = selection.stack
    order = range(len(selection.scored)) if stack is None else stack.members
    for i in order:
        s, w, t = selection.scored[i], selection.weights[i], chosen_t[i]
        if w <= 0:
            continue
        if selection.method != "cv":
            added = [(f, float(w)) for f in s.fits]
        elif final == "refit" or is_solved(s.mode):
            # a solved family has no epochs to choose and solves in seconds: its final model is the one
            # solved on every labelled training cell, as its peers fit it (HSMM's fold 5: the bag of five
            # fold SVMs, each on four fifths of the cells, 0.907 on the test fold; one SVM on all, 0.963)
            added = [(_refit(searcher, s), float(w))]
        else:
            added = [(f, float(w) / len(s.fits)) for f in _bag(searcher, s)]
        groups += [len(set(groups))] * len(added)
        members += added
        temperatures += [float(t)] * len(added)
    if stack is not None:
        meta = {"groups": groups, "coef": stack.coef, "intercept": stack.intercept}
        return ensemble_of(members, searcher.data, temperatures=temperatures, stack=meta)
    if len(members) == 1:
        f = members[0][0]
        return f.arch, f.result, f.data
    return ensemble_of(members, searcher.data, temperatures=temperatures)


def _refit(searcher: Searcher, s: Scored) -> Fitted:
    """Train configuration ``s`` on train + validation for the epochs its cross-validation chose."""
    epochs = int(s.epochs[0]) + 1
    tc = s.fits[0].config
    merged = searcher.data.merged()
    if "max_iter" in tc.arch:  # boosted trees: their stages are their epochs (train/_trees.py)
        tc = replace(tc, arch={**tc.arch, "max_iter": epochs})
    what = "" if is_solved(s.mode) and "max_iter" not in tc.arch else f" for {epochs} epochs"
    logg.info(f"    refitting trial {s.trial} ({s.mode}) on train + validation{what}")
    return searcher.train(tc, None, f"refit trial {s.trial}", data=merged, stop_after=epochs)


def _bag(searcher: Searcher, s: Scored) -> list[Fitted]:
    """The fold models of ``s`` at the epoch its cross-validation chose.

    The folds are trained again for that many epochs, with the same keys, data and schedule,
    so each is the model whose held-out outputs chose it.
    """
    epochs = int(s.epochs[0]) + 1
    logg.info(f"    the {len(s.fits)} fold models of trial {s.trial} ({s.mode}) at epoch {epochs}")
    out = []
    for i, fit in enumerate(s.fits):
        if len(fit.result.history["epoch"]) == epochs:
            out.append(fit)  # it already stopped there
            continue
        fold = fit.data.base
        out.append(
            searcher.train(
                fit.config, None, f"trial {s.trial} fold model {i + 1}", data=fold, seed_offset=fit.seed_offset,
                stop_after=epochs, keep_last=True,
            )
        )  # fmt: skip
    return out


def input_spec(data: TrainData) -> tuple[dict, dict]:
    """A member's ``"input"`` architecture entry and its constants, from the pipeline it was trained on."""
    pipe = data.pipeline
    n = pipe.n_features
    scaler = pipe.scaler
    shift = np.zeros(n, np.float32) if scaler is None or scaler.kind == "none" else scaler.shift
    scale = np.ones(n, np.float32) if scaler is None or scaler.kind == "none" else scaler.scale
    consts = {"shift": np.asarray(shift, np.float32), "scale": np.asarray(scale, np.float32)}
    spec: dict[str, Any] = {
        "n_genes": None,
        "clip": None if scaler is None or scaler.clip is None else list(scaler.clip),
    }
    if pipe.alignment is not None and not pipe.alignment.identity:
        consts["genes"] = np.asarray(pipe.alignment.query_pos, np.int32)
        spec["n_genes"] = int(n)
    return spec, consts


def ensemble_of(
    members: list[tuple[Fitted, float]], base: TrainData, *, temperatures: Sequence[float] | None = None,
    stack: dict | None = None,
) -> tuple[dict, FitResult, TrainData]:  # fmt: skip
    """An ensemble network holding every member's weights and input transform, reading ``base``'s rows.

    ``temperatures`` (one per member, classification): what each member's logits are divided
    by before their probabilities are averaged; stored in the architecture only where one is
    not 1, so an ensemble without them is written as before. ``stack`` (classification):
    ``{"groups", "coef", "intercept"}`` of a stacked choice (``"average": "stack"``, see
    :class:`~autogenome_sc.nn.Ensemble`): the members of each group (a configuration's fold
    models, or its one refit) are averaged by their weights, and the meta-learner reads the
    groups' log-probabilities.
    """
    import jax.numpy as jnp

    base = base.base
    specs = [input_spec(f.data) for f, _ in members]
    arch: dict[str, Any] = {
        "model": "ensemble",
        "average": "probs" if base.task == "classification" else "mean",
        "weights": [w for _, w in members],
        "members": [{**f.arch, "input": spec} for (f, _), (spec, _) in zip(members, specs, strict=True)],
    }
    if stack is not None:
        if base.task != "classification":
            raise ValueError("Only classifiers are stacked.")
        arch["average"] = "stack"
        arch["groups"] = [int(g) for g in stack["groups"]]
        arch["coef"] = np.asarray(stack["coef"], np.float64).tolist()
        arch["intercept"] = np.asarray(stack["intercept"], np.float64).tolist()
    if temperatures is not None and base.task == "classification" and any(t != 1.0 for t in temperatures):
        if len(temperatures) != len(members):
            raise ValueError(f"{len(temperatures)} temperatures for {len(members)} ensemble members.")
        arch["temperatures"] = [float(t) for t in temperatures]
    net = build_network(arch, base.n_out)
    template = jax.device_get(net.init(jax.random.key(0), jnp.zeros((1, base.pipeline.n_features)), train=False))
    variables = {col: dict(v) for col, v in template.items()}
    for i, ((f, _), (_, consts)) in enumerate(zip(members, specs, strict=True)):
        for col, v in f.result.variables.items():
            if len(v):  # a linear member has no batch statistics
                variables[col][f"members_{i}"] = v
        variables["inputs"][f"input_{i}"] = consts
    got, want = jax.tree.structure(variables), jax.tree.structure(template)
    # PyTreeDef comes from jaxlib's compiled module, which ships no stub: mypy cannot resolve !=
    if got != want:  # type: ignore[operator]  # pragma: no cover - a programming error, not a user's
        raise RuntimeError(f"Ensemble variables do not match the network ({got} vs {want}).")
    lead = members[0][0].result
    result = FitResult(
        variables=jax.device_get(variables),
        history=lead.history,
        best_epoch=lead.best_epoch,
        best_val_loss=lead.best_val_loss,
        target_mean=lead.target_mean,
        target_std=lead.target_std,
        n_devices=lead.n_devices,
    )
    return arch, result, base
