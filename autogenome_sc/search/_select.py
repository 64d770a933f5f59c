"""Choosing the final model: held-out re-scoring of the best configurations, ensembles, the final fit.

A validation split of 70 cells cannot tell good configurations apart, so on small data
(classification, at most ``search.cv_max_cells`` cells in train + validation) the most
promising configurations of the study (the ``search.cv_configs`` best non-linear ones by the
validation metric, plus the best linear ones: see :func:`candidates`) are re-scored by stratified k-fold cross-validation on
train + validation. Each fold model trains as long as its trial did and predicts its held-out
fold after every epoch; one number of epochs, the best by pooled out-of-fold loss, is chosen
for all folds (no fold stops early on its own held-out cells), so every cell of train +
validation gets one out-of-fold prediction per configuration.

The winner is chosen on those out-of-fold predictions among the best single configuration
and an ensemble of the top configurations, built by greedy forward selection with
replacement (Caruana et al. 2004) on the out-of-fold log-loss and kept only when it beats
the best single configuration. "Best" is, by default (``search.select_by="accuracy_f1"``),
the higher mean of out-of-fold accuracy and macro-F1, ties broken by log-loss: the final
model's confidences are calibrated afterwards, so a configuration is not chosen for being
better calibrated (by log-loss alone, a network won over a logistic regression that was 3
points more accurate on binary mutation-like data, in every fold). On the benchmark
suite it beat ``"loss_or_accuracy"`` (log-loss unless the other is clearly more accurate)
on macro-F1 on every data set but qPCR (FPKM proxy 0.820 against 0.635), and the former
log-loss rule on FPKM, mutations and both PBMC sets, not on the synthetic counts, the
microarray proxy and qPCR (docs/benchmarks.md).

The final model is then either the k fold models of each chosen configuration at that
epoch, averaged (``search.final = "bag"``), or each chosen configuration trained once more
on train + validation for that many epochs (``"refit"``).

On larger data, or for regression, the same greedy choice is made on the validation split
with the models the trials trained.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import jax
import numpy as np
import pandas as pd
from scipy.special import log_softmax, softmax

from .. import _logging as logg
from ..data import TrainData
from ..nn import build_network
from ..train import FitResult
from ._driver import Fitted, Searcher

if TYPE_CHECKING:
    from ..config._schema import SearchConfig

N_GREEDY = 25  # greedy ensemble steps (members may repeat: the counts are the weights)
#: Share of a search's timeout a configuration whose cross-validation started in time may take to finish it.
#: Without it, the first configuration re-scored on a 271-cell x 47,000-gene FPKM set (its five folds took
#: 21.6 s) ran out of time 0.1 s before its last fold ended, and nothing was cross-validated (docs/benchmarks.md).
GRACE = 0.05


class _OutOfTime(Exception):
    """The search's deadline passed during a cross-validation fit."""


@dataclass
class Scored:
    """A configuration with its held-out outputs: out-of-fold (cross-validation) or on the validation split."""

    trial: int
    mode: str
    fits: list[Fitted]  # one per fold, or the trial's own model
    held_out: np.ndarray  # outputs of the selection rows (logits, or standardised values)
    epochs: list[int]
    seconds: float
    loss: float = np.nan
    accuracy: float = np.nan
    macro_f1: float = np.nan


@dataclass
class Selection:
    """What the final model is made of, and how it was chosen."""

    method: str  # "cv" or "validation"
    rows: np.ndarray  # the cells whose held-out outputs chose it
    y: np.ndarray
    task: str
    scored: list[Scored]
    weights: np.ndarray  # one per scored configuration, summing to 1
    chosen: str  # "single" or "ensemble"
    k: int = 0
    seconds: float = 0.0
    held_out: np.ndarray | None = None  # outputs of the chosen combination on `rows`
    notes: list[str] = field(default_factory=list)

    def table(self) -> pd.DataFrame:
        """One row per scored configuration: held-out loss, accuracy, macro-F1 and ensemble weight."""
        return pd.DataFrame(
            {
                "trial": np.asarray([s.trial for s in self.scored], np.int64),
                "mode": [s.mode for s in self.scored],
                "loss": np.asarray([s.loss for s in self.scored], np.float64),
                "accuracy": np.asarray([s.accuracy for s in self.scored], np.float64),
                "macro_f1": np.asarray([s.macro_f1 for s in self.scored], np.float64),
                "weight": np.asarray(self.weights, np.float64),
                "epochs": np.asarray([float(s.epochs[0]) + 1 for s in self.scored], np.float64),
                "seconds": np.asarray([s.seconds for s in self.scored], np.float64),
            }
        )


def use_cv(data: TrainData, search_cfg: SearchConfig) -> int:
    """The number of folds cross-validation will use on ``data`` (0: choose on the validation split)."""
    if data.task != "classification" or search_cfg.cv_folds < 2:
        return 0
    pool = np.concatenate([data.idx["train"], data.idx["val"]])
    if len(pool) > search_cfg.cv_max_cells:
        return 0
    smallest = int(np.bincount(data.y[pool], minlength=data.n_out).min())
    k = min(search_cfg.cv_folds, smallest)
    return k if k >= 2 else 0


def candidates(searcher: Searcher, n: int, more: int = 0) -> list:
    """The best linear trials (two floors), the ``n`` best other trials (distinct settings), then ``more`` next best.

    The linear mode is represented by its best trial on all genes and its best on a gene
    selection: they are the floors no search may fall below, and they cost seconds. The
    validation split that ranks trials holds a dozen cells on small data: on a microarray
    proxy it ranked the linear model on 500 F-test genes (test accuracy 1.0 in the other
    folds) below the one on all genes, which was then the only linear model re-scored and
    chosen (0.84). The ``n`` other slots go to the best trials of the other modes; linear
    trials fill only the slots those leave empty. Once linear trials were no longer pruned,
    variants of the logistic regression (another learning rate or penalty) filled the top
    three on qPCR and pushed every network out of the cross-validation, where the MLP was
    the best model (docs/benchmarks.md).
    """
    top = [t for t in searcher.top_trials() if _trainable(t)]
    distinct, seen = [], set()
    for t in top:
        key = json.dumps(t.params, sort_keys=True, default=str)
        if key not in seen:
            seen.add(key)
            distinct.append(t)
    floors = []
    for selected in (False, True):
        best = next(
            (t for t in distinct if t.params.get("mode") == "linear" and bool(t.params.get("n_genes")) == selected),
            None,
        )
        if best is not None:
            floors.append(best)
    others = [t for t in distinct if t.params.get("mode") != "linear"]
    spare = [t for t in distinct if t.params.get("mode") == "linear" and t not in floors]
    chosen = others[:n] + spare[: max(n - len(others), 0)]
    chosen = sorted(chosen + floors, key=distinct.index)  # in the order the validation split ranks them
    rest = [t for t in others[n:] + spare if t not in chosen]  # other modes first
    return chosen + rest[:more]


def cv_seconds(searcher: Searcher, k: int, share: float, timeout: float) -> float:
    """Seconds the cross-validation of the current candidates should take (at most ``share * timeout``).

    From each candidate's epochs and seconds per epoch once compiled, scaled to the larger
    training folds, with a quarter more and a few seconds for evaluation and compilation.
    """
    data = searcher.data
    pool = len(data.idx["train"]) + len(data.idx["val"])
    ratio = pool * (k - 1) / k / max(len(data.idx["train"]), 1)
    need = 0.0
    for t in candidates(searcher, searcher.cfg.search.cv_configs):
        once = float(t.user_attrs.get("rerun_seconds") or t.user_attrs.get("seconds") or 0.0)
        need += k * once * ratio
    return min(1.25 * need + 3.0, share * timeout)


def _trainable(trial) -> bool:
    """ENAS trials are re-scored through the architecture they found."""
    if trial.params.get("mode") != "enas":
        return True
    found = trial.user_attrs.get("architecture") or {}
    return found.get("model") == "rrfcn"


def _config(searcher: Searcher, trial):
    tc = searcher.config_of(trial)
    if tc.mode == "enas":
        tc = dataclasses.replace(tc, mode="rrfcn", arch=trial.user_attrs["architecture"])
    return tc


def select(searcher: Searcher, *, deadline: float | None, seed: int, grace: float = 0.0) -> Selection:
    """Score the best configurations on held-out predictions and choose single or ensemble.

    No configuration starts its cross-validation after ``deadline``; one that started may
    finish up to ``grace`` seconds after it (:data:`GRACE` of the timeout, in a search).
    """
    cfg = searcher.cfg.search
    data = searcher.data
    k = use_cv(data, cfg)
    start = time.perf_counter()
    notes: list[str] = []
    if k:  # the linear floor first (it is cheap), the best cv_configs next; more while the budget lasts
        wanted = candidates(searcher, cfg.cv_configs, 0 if deadline is None else cfg.cv_configs)
        wanted.sort(key=lambda t: t.params.get("mode") != "linear")  # stable: the rest keep their ranks
        scored, rows = _cross_validate(searcher, wanted, k, seed, deadline, notes, grace)
        method = "cv"
        if not scored:
            notes.append("no configuration finished its cross-validation in time: chosen on the validation split")
    if not k or not scored:
        method, k = "validation", 0
        rows = data.idx["val"]
        scored = _on_validation(searcher, max(cfg.ensemble, 1))
    y = data.y[rows]
    for s in scored:
        _score(s, y, data.task, data.n_out)
    weights, chosen, combo = _choose(scored, y, data.task, cfg.ensemble, cfg.select_by)
    return Selection(method, rows, y, data.task, scored, weights, chosen, k, time.perf_counter() - start, combo, notes)


def _on_validation(searcher: Searcher, n: int) -> list[Scored]:
    out = []
    for t in searcher.top_trials(n):
        fitted = searcher.fitted_of(t)
        if fitted.val_out is None:
            continue
        epochs = [int(fitted.result.best_epoch)]
        out.append(Scored(t.number, t.params.get("mode", ""), [fitted], fitted.val_out, epochs, 0.0))
    return out


def _cross_validate(searcher: Searcher, trials, k: int, seed: int, deadline, notes: list[str], grace: float = 0.0):
    data = searcher.data
    folds = data.cv_folds(k, seed)
    rows = np.sort(np.concatenate([data.idx["train"], data.idx["val"]]))
    pos = np.full(len(data.y), -1, np.int64)
    pos[rows] = np.arange(len(rows))

    def stop_at_deadline(epoch: int, metrics: dict) -> None:
        if deadline is not None and time.perf_counter() > deadline + grace:
            raise _OutOfTime

    scored: list[Scored] = []
    bar = logg.progress(total=len(trials) * k, desc=f"cross-validating {len(trials)} configurations ({k} folds)")
    for t in trials:
        tc = _config(searcher, t)
        once = float(t.user_attrs.get("rerun_seconds") or t.user_attrs.get("seconds") or 0.0)
        guess = k * once * (len(rows) * (k - 1) / k / max(len(data.idx["train"]), 1))
        if deadline is not None and time.perf_counter() + 0.8 * guess > deadline:
            left = max(deadline - time.perf_counter(), 0.0)
            notes.append(
                f"trial {t.number} not cross-validated: its {k} folds would take about {guess:.0f}s, {left:.0f}s were left"
            )
            bar.update(k)
            continue
        started = time.perf_counter()
        n_epochs = int(t.user_attrs.get("epochs") or tc.trainer.max_epochs)
        curves = np.zeros((n_epochs, len(rows), data.n_out), np.float32)  # held-out outputs after each epoch
        fits = []
        try:
            for f, fold in enumerate(folds):
                fitted = searcher.train(
                    tc, stop_at_deadline, f"cv trial {t.number} fold {f + 1}/{k}", data=fold, seed_offset=f + 1,
                    stop_after=n_epochs, keep_last=True,
                )  # fmt: skip
                # fit(keep_last=True) on a fold with held-out rows records every epoch's outputs
                outs = cast(np.ndarray, fitted.result.val_outputs)
                at = pos[fold.idx["val"]]
                curves[: len(outs), at] = outs
                curves[len(outs) :, at] = outs[-1]
                fits.append(fitted)
                bar.update(1)
        except _OutOfTime:
            notes.append(f"trial {t.number}: the time budget ran out during its cross-validation")
            bar.update(k - len(fits))
            break
        except FloatingPointError as e:
            notes.append(f"trial {t.number} left out: {e}")
            bar.update(k - len(fits))
            continue
        # the number of epochs: the one with the best pooled held-out loss (no fold stops early on its own fold)
        best = int(np.argmin([_pooled_loss(c, data.y[rows], data.task) for c in curves]))
        seconds = time.perf_counter() - started
        scored.append(Scored(t.number, t.params.get("mode", ""), fits, curves[best], [best], seconds))
    bar.close()
    return scored, rows


def _pooled_loss(out: np.ndarray, y: np.ndarray, task: str) -> float:
    if task == "classification":
        return float(-log_softmax(np.asarray(out, np.float64), axis=1)[np.arange(len(y)), y].mean())
    return float(np.mean((out[:, 0] - y) ** 2))


def _probs(out: np.ndarray) -> np.ndarray:
    return softmax(np.asarray(out, np.float64), axis=1)


def _log_loss(p: np.ndarray, y: np.ndarray) -> float:
    return float(-np.log(np.clip(p[np.arange(len(y)), y], 1e-12, None)).mean())


def _score(s: Scored, y: np.ndarray, task: str, n_out: int) -> None:
    from sklearn.metrics import f1_score

    if task == "classification":
        s.loss = float(-log_softmax(np.asarray(s.held_out, np.float64), axis=1)[np.arange(len(y)), y].mean())
        pred = s.held_out.argmax(axis=1)
        s.accuracy = float((pred == y).mean())
        s.macro_f1 = float(f1_score(y, pred, labels=np.arange(n_out), average="macro", zero_division=0))
    else:
        s.loss = float(np.mean((s.held_out[:, 0] - y) ** 2))


def greedy_weights(preds: list[np.ndarray], loss, max_members: int, n_iter: int = N_GREEDY) -> np.ndarray:
    """Greedy forward selection with replacement: weights (summing to 1) of the members minimising ``loss``.

    Each step adds the member whose inclusion lowers ``loss(average)`` most (at most
    ``max_members`` distinct ones); the best prefix of the ``n_iter`` steps is kept.
    """
    m = len(preds)
    counts = np.zeros(m)
    total = np.zeros_like(preds[0], dtype=np.float64)
    best_loss, best = np.inf, None
    for it in range(n_iter):
        used = counts > 0
        options = [j for j in range(m) if used[j] or used.sum() < max_members]
        losses = [loss((total + preds[j]) / (it + 1)) for j in options]
        j = options[int(np.argmin(losses))]
        counts[j] += 1
        total += preds[j]
        if min(losses) < best_loss - 1e-9:
            best_loss, best = min(losses), counts.copy()
    best = cast(np.ndarray, best)  # set by the first step whose loss is finite
    return best / best.sum()


def _choose(scored: list[Scored], y: np.ndarray, task: str, max_members: int, by: str):
    """(weights, "single" | "ensemble", held-out outputs of the choice).

    The best single configuration by ``by`` (see :func:`_better`); then the greedy ensemble,
    built on the loss, kept only where the same rule prefers it to that configuration.
    """
    n = len(scored)
    if task == "classification":
        preds = [_probs(s.held_out) for s in scored]

        def loss(p):
            return _log_loss(p, y)
    else:
        preds = [np.asarray(s.held_out, np.float64) for s in scored]

        def loss(p):
            return float(np.mean((p[:, 0] - y) ** 2))

    rule = by if task == "classification" else "loss"
    n_out = scored[0].held_out.shape[1]
    held = [_Held.of(s.held_out, s.loss, y, n_out) for s in scored]
    best = _best_single(held, y, rule)
    single = np.eye(n)[best]
    if max_members < 2 or n < 2:
        return single, "single", scored[best].held_out
    w = greedy_weights(preds, loss, max_members)
    mix = sum(wi * p for wi, p in zip(w, preds, strict=True))
    mixed = _Held.of(mix, loss(mix), y, n_out)
    if (w > 0).sum() < 2 or not _better(mixed, held[best], y, rule):
        return single, "single", scored[best].held_out
    combo = np.log(np.clip(mix, 1e-12, None)).astype(np.float32) if task == "classification" else mix
    return w, "ensemble", combo


#: "Clearly more accurate": the paired per-cell accuracy difference exceeds this many standard errors.
CLEARLY = 2.0


@dataclass
class _Held:
    """What the choice compares of a configuration (or ensemble): held-out predictions, loss, scores."""

    pred: np.ndarray
    loss: float
    accuracy: float
    macro_f1: float

    @classmethod
    def of(cls, out: np.ndarray, loss: float, y: np.ndarray, n_out: int) -> _Held:
        from sklearn.metrics import f1_score

        pred = np.asarray(out).argmax(axis=1)
        f1 = float(f1_score(y, pred, labels=np.arange(n_out), average="macro", zero_division=0))
        return cls(pred, float(loss), float((pred == y).mean()), f1)

    @property
    def score(self) -> float:
        return round(0.5 * (self.accuracy + self.macro_f1), 9)


def clearly_more_accurate(a: np.ndarray, b: np.ndarray, y: np.ndarray, z: float = CLEARLY) -> bool:
    """Whether predictions ``a`` are right on more cells than ``b`` by more than ``z`` paired standard errors."""
    d = (a == y).astype(np.float64) - (b == y).astype(np.float64)
    gain = float(d.mean())
    if gain <= 0:
        return False
    se = float(d.std(ddof=1)) / np.sqrt(len(d)) if len(d) > 1 else 0.0
    return gain > z * se


def _better(a: _Held, b: _Held, y: np.ndarray, rule: str) -> bool:
    """Whether the choice prefers ``a`` to ``b`` under ``search.select_by``.

    ``"loss"``: a lower log-loss. ``"accuracy_f1"``: a higher mean of accuracy and macro-F1,
    ties broken by the loss. ``"loss_or_accuracy"``: a lower loss, unless one of the two is
    clearly more accurate (:func:`clearly_more_accurate`) with a macro-F1 no lower, which
    then wins: log-loss is the steadier judge on a few hundred cells, but it can prefer a
    better-calibrated model to a more accurate one, and calibration is fitted afterwards.
    """
    lower = a.loss < b.loss - 1e-6
    if rule == "loss":
        return lower
    if rule == "accuracy_f1":
        return a.score > b.score or (a.score == b.score and lower)
    if clearly_more_accurate(a.pred, b.pred, y) and a.macro_f1 >= b.macro_f1 - 1e-9:
        return True
    if clearly_more_accurate(b.pred, a.pred, y) and b.macro_f1 >= a.macro_f1 - 1e-9:
        return False
    return lower


def _best_single(held: list[_Held], y: np.ndarray, rule: str) -> int:
    """The index of the configuration ``rule`` prefers."""
    by_loss = min(range(len(held)), key=lambda i: held[i].loss)
    if rule == "loss":
        return by_loss
    if rule == "accuracy_f1":
        return max(range(len(held)), key=lambda i: (held[i].score, -held[i].loss))
    # the loss's choice, unless others beat it clearly: then the most accurate of those
    rivals = [i for i in range(len(held)) if i != by_loss and _better(held[i], held[by_loss], y, rule)]
    if not rivals:
        return by_loss
    return max(rivals, key=lambda i: (held[i].accuracy, held[i].macro_f1, -held[i].loss))


# ------------------------------------------------------------------------------ the final model
def final_model(selection: Selection, searcher: Searcher, *, final: str) -> tuple[dict, FitResult, TrainData]:
    """The architecture, weights and data pipeline of the chosen model.

    A single model trained on the search's own problem (validation route, or a refit of one
    configuration) is returned plainly; everything else is an ensemble whose members each
    read the shared input through their own scaling and genes.
    """
    members: list[tuple[Fitted, float]] = []
    for s, w in zip(selection.scored, selection.weights, strict=True):
        if w <= 0:
            continue
        if selection.method != "cv":
            members += [(f, float(w)) for f in s.fits]
        elif final == "refit":
            members.append((_refit(searcher, s), float(w)))
        else:
            members += [(f, float(w) / len(s.fits)) for f in _bag(searcher, s)]
    if len(members) == 1:
        f = members[0][0]
        return f.arch, f.result, f.data
    return ensemble_of(members, searcher.data)


def _refit(searcher: Searcher, s: Scored) -> Fitted:
    """Train configuration ``s`` on train + validation for the epochs its cross-validation chose."""
    epochs = int(s.epochs[0]) + 1
    tc = s.fits[0].config
    merged = searcher.data.merged()
    logg.info(f"    refitting trial {s.trial} ({s.mode}) on train + validation for {epochs} epochs")
    return searcher.train(tc, None, f"refit trial {s.trial}", data=merged, stop_after=epochs)


def _bag(searcher: Searcher, s: Scored) -> list[Fitted]:
    """The fold models of ``s`` at the epoch its cross-validation chose.

    The folds are trained again for that many epochs, with the same keys, data and schedule,
    so each is the model whose held-out outputs chose it.
    """
    epochs = int(s.epochs[0]) + 1
    logg.info(f"    the {len(s.fits)} fold models of trial {s.trial} ({s.mode}) at epoch {epochs}")
    out = []
    for f, fit in enumerate(s.fits):
        if len(fit.result.history["epoch"]) == epochs:
            out.append(fit)  # it already stopped there
            continue
        fold = fit.data.base
        out.append(
            searcher.train(
                fit.config, None, f"trial {s.trial} fold {f + 1}", data=fold, seed_offset=f + 1,
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


def ensemble_of(members: list[tuple[Fitted, float]], base: TrainData) -> tuple[dict, FitResult, TrainData]:
    """An ensemble network holding every member's weights and input transform, reading ``base``'s rows."""
    import jax.numpy as jnp

    base = base.base
    specs = [input_spec(f.data) for f, _ in members]
    arch = {
        "model": "ensemble",
        "average": "probs" if base.task == "classification" else "mean",
        "weights": [w for _, w in members],
        "members": [{**f.arch, "input": spec} for (f, _), (spec, _) in zip(members, specs, strict=True)],
    }
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
