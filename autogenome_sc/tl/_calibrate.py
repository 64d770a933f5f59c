"""Post-training calibration, called by ``finish`` for every classifier (train and search)."""

from __future__ import annotations

import numpy as np

from .. import _logging as logg
from ..data import TrainData
from ..model import Model
from ..train import fit_temperature, reliability_bins, softmax_t
from ..train._confidence import (
    N_BINS,
    ece_from_bins,
    fit_input_novelty,
    fit_input_space,
    input_evidence,
    kept_held_out,
    project,
)


def calibrate(
    model: Model,
    data: TrainData,
    out: np.ndarray,
    emb: np.ndarray,
    held_out: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[dict, dict]:
    """Fit the temperature (held-out cells) and the novelty statistics (training cells) into ``model``.

    By default the held-out cells are the validation split, the training cells the training
    split. A model trained on train + validation after a cross-validation passes
    ``held_out = (rows, outputs)``: its out-of-fold outputs of those rows choose the
    temperature, its training cells are train + validation, and the novelty score's
    reference is the test split, which no model of the search has seen.

    Sets ``model.calibration``, ``model.novelty_`` (the novelty statistics behind
    ``ag_uncertainty``: the input space of the training cells, standardised on the held-out
    reference cells; ``train/_confidence.py``) and, with a label hierarchy,
    ``model.novelty_levels_`` (:func:`_level_novelty`); returns ``(metrics, uns)``: the
    scalar metrics for ``uns["ag"]["metrics"]`` and the compact per-bin counts that
    ``ag.pl.reliability`` draws (validation and test, before and after).
    """
    tr, val, test = data.idx["train"], data.idx["val"], data.idx["test"]
    y = np.asarray(data.y, np.int64)
    if held_out is not None:
        rows, cal_out = held_out
        tr, ref = np.sort(np.concatenate([tr, val])), test
    else:
        rows, cal_out, ref = val, out[val], val
    if len(rows) == 0 or len(tr) == 0 or len(ref) == 0:
        logg.info("    no held-out cells: the model is not calibrated (temperature 1)")
        return {}, {}
    temperature = fit_temperature(cal_out, y[rows])
    reliability, ece = {}, {}
    for name, logits, idx in (("val", cal_out, rows), ("test", out[test], test)):
        before = reliability_bins(softmax_t(logits, 1.0), y[idx])
        after = reliability_bins(softmax_t(logits, temperature), y[idx])
        reliability[name] = {"before": before, "after": after}
        ece[name] = (ece_from_bins(before), ece_from_bins(after))
    metrics = {
        "temperature": temperature,
        "ece_before": ece["val"][0],
        "ece_after": ece["val"][1],
        "ece_test_before": ece["test"][0],
        "ece_test_after": ece["test"][1],
    }
    model.calibration = {**metrics, "n_bins": N_BINS, "n_val": len(rows)}
    p_ref = softmax_t(out[ref], temperature)
    block = data.pipeline.block  # the model's own input, as the network reads it
    space = fit_input_space(block, tr, y[tr])
    dist_ref, lr_ref, *_ = input_evidence(block, ref, space)
    kept = kept_held_out(len(ref))  # kept (with their scores) for query_aware to read a query with
    held = None if kept is None else project(block, ref[kept], space)
    model.novelty_ = fit_input_novelty(space, dist_ref, p_ref.max(axis=1), lr_ref.max(axis=1), held)
    model.novelty_levels_ = _level_novelty(model, dist_ref, p_ref, lr_ref, space["lr_classes"])
    logg.info(
        f"    calibrated: temperature {temperature:.3f}, validation ECE {ece['val'][0]:.3f} -> {ece['val'][1]:.3f}"
    )
    return metrics, {"reliability": {"n_bins": N_BINS, **reliability}}


def _level_novelty(
    model: Model,
    dist_ref: np.ndarray,
    p_ref: np.ndarray,
    lr_ref: np.ndarray,
    lr_classes: np.ndarray,
) -> dict[str, dict[str, np.ndarray]]:
    """The novelty statistics of each coarser level of the model's label hierarchy (none without one).

    The same score as the finest level's, with that level's confidences (the summed
    probabilities of its classes, the model's and the reference-space classifier's, whose
    classes are ``lr_classes``), standardised and ranked on the same held-out cells; the
    input-space distance (and the density ratio, read with the same held-out cells) is the finest level's. A cell of a fine type the reference lacks,
    inside a coarse type it has, is unsure between fine types but sure of the coarse one:
    where that tips its score, rejection keeps its coarse label.
    """
    hierarchy = model.hierarchy
    if hierarchy is None:
        return {}
    out = {}
    for level in hierarchy.levels[:-1]:
        _, M = hierarchy.membership(level)
        out[level] = fit_input_novelty(
            {}, dist_ref, (p_ref @ M).max(axis=1), (lr_ref @ M[lr_classes]).max(axis=1), held_out_points=True
        )
    return out
