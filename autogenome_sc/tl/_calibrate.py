"""Post-training calibration, called by ``finish`` for every classifier (train and search)."""

from __future__ import annotations

import numpy as np

from .. import _logging as logg
from ..data import TrainData
from ..io import Model
from ..train import fit_novelty, fit_temperature, reliability_bins, softmax_t
from ..train._confidence import N_BINS, ece_from_bins


def calibrate(model: Model, data: TrainData, out: np.ndarray, emb: np.ndarray) -> tuple[dict, dict]:
    """Fit the temperature (validation split) and the novelty statistics (training split) into ``model``.

    Sets ``model.calibration`` and ``model.novelty_``; returns ``(metrics, uns)``: the
    scalar metrics for ``uns["ag"]["metrics"]`` and the compact per-bin counts that
    ``ag.pl.reliability`` draws (validation and test, before and after).
    """
    tr, val, test = data.idx["train"], data.idx["val"], data.idx["test"]
    if len(val) == 0 or len(tr) == 0:
        logg.info("    no validation cells: the model is not calibrated (temperature 1)")
        return {}, {}
    y = np.asarray(data.y, np.int64)
    temperature = fit_temperature(out[val], y[val])
    held_out = np.concatenate([val, test])  # only these are scored: no copies of every cell's probabilities
    p_before, p_after = np.zeros_like(out), np.zeros_like(out)
    p_before[held_out], p_after[held_out] = softmax_t(out[held_out], 1.0), softmax_t(out[held_out], temperature)
    reliability, ece = {}, {}
    for name, idx in (("val", val), ("test", test)):
        before, after = reliability_bins(p_before[idx], y[idx]), reliability_bins(p_after[idx], y[idx])
        reliability[name] = {"before": before, "after": after}
        ece[name] = (ece_from_bins(before), ece_from_bins(after))
    metrics = {
        "temperature": temperature,
        "ece_before": ece["val"][0],
        "ece_after": ece["val"][1],
        "ece_test_before": ece["test"][0],
        "ece_test_after": ece["test"][1],
    }
    model.calibration = {**metrics, "n_bins": N_BINS, "n_val": len(val)}
    model.novelty_ = fit_novelty(emb, y[tr], len(data.classes), emb[val], p_after[val].max(axis=1), train_rows=tr)
    logg.info(
        f"    calibrated: temperature {temperature:.3f}, validation ECE {ece['val'][0]:.3f} -> {ece['val'][1]:.3f}"
    )
    return metrics, {"reliability": {"n_bins": N_BINS, **reliability}}
