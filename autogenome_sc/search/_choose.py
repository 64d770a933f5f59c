"""Scoring held-out predictions and choosing among them: the best configuration, or a greedy ensemble.

Every held-out loss, accuracy and macro-F1 of the selection is computed here, by
:func:`scores` (the loss of network outputs by :func:`outputs_loss`, of averaged
probabilities by :func:`probs_loss`). :func:`choose` takes the best single configuration by
``search.select_by`` and an ensemble built by greedy forward selection with replacement on
the held-out loss (Caruana et al. 2004), kept only where the same rule prefers it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import numpy as np
from scipy.special import log_softmax, softmax

if TYPE_CHECKING:
    from .._names import Chosen, SelectBy
    from ._driver import Fitted

N_GREEDY = 25  # greedy ensemble steps (members may repeat: the counts are the weights)
#: "Clearly more accurate": the paired per-cell accuracy difference exceeds this many standard errors.
CLEARLY = 2.0


@dataclass(frozen=True)
class Scores:
    """What the choice compares of a configuration (or ensemble) on held-out cells.

    ``pred``, ``accuracy`` and ``macro_f1`` are for classification only (``None``, NaN otherwise).
    """

    loss: float
    pred: np.ndarray | None = None
    accuracy: float = np.nan
    macro_f1: float = np.nan

    @property
    def score(self) -> float:
        """The mean of accuracy and macro-F1 (rounded, so that equal predictions tie exactly)."""
        return round(0.5 * (self.accuracy + self.macro_f1), 9)


def outputs_loss(out: np.ndarray, y: np.ndarray, task: str) -> float:
    """The held-out loss of network outputs: log-loss of logits (classification), else mean squared error."""
    if task == "classification":
        return float(-log_softmax(np.asarray(out, np.float64), axis=1)[np.arange(len(y)), y].mean())
    return float(np.mean((out[:, 0] - y) ** 2))


def probs_loss(p: np.ndarray, y: np.ndarray) -> float:
    """The log-loss of class probabilities (an ensemble's weighted average of its members')."""
    return float(-np.log(np.clip(p[np.arange(len(y)), y], 1e-12, None)).mean())


def scores(out: np.ndarray, y: np.ndarray, task: str, n_out: int, loss: float | None = None) -> Scores:
    """Loss, accuracy and macro-F1 of outputs ``out`` (logits or probabilities) of cells labelled ``y``.

    ``loss``: already known (probabilities have theirs from :func:`probs_loss`); default
    :func:`outputs_loss`.
    """
    from sklearn.metrics import f1_score

    loss = outputs_loss(out, y, task) if loss is None else loss
    if task != "classification":
        return Scores(float(loss))
    pred = np.asarray(out).argmax(axis=1)
    f1 = float(f1_score(y, pred, labels=np.arange(n_out), average="macro", zero_division=0))
    return Scores(float(loss), pred, float((pred == y).mean()), f1)


@dataclass
class Scored:
    """A configuration with its held-out outputs: out-of-fold (cross-validation) or on the validation split."""

    trial: int
    mode: str
    fits: list[Fitted]  # one per fold, or the trial's own model
    held_out: np.ndarray  # outputs of the selection rows (logits, or standardised values)
    epochs: list[int]
    seconds: float
    scores: Scores | None = None  # set by score_on

    def score_on(self, y: np.ndarray, task: str, n_out: int) -> None:
        """Score the held-out outputs against the selection rows' labels ``y``."""
        self.scores = scores(self.held_out, y, task, n_out)

    @property
    def loss(self) -> float:
        return np.nan if self.scores is None else self.scores.loss

    @property
    def accuracy(self) -> float:
        return np.nan if self.scores is None else self.scores.accuracy

    @property
    def macro_f1(self) -> float:
        return np.nan if self.scores is None else self.scores.macro_f1


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


def choose(
    scored: list[Scored], y: np.ndarray, task: str, max_members: int, by: SelectBy
) -> tuple[np.ndarray, Chosen, np.ndarray]:
    """(weights, "single" | "ensemble", held-out outputs of the choice) for configurations scored by :meth:`Scored.score_on`.

    The best single configuration by ``by`` (see :func:`_better`); then the greedy ensemble,
    built on the loss, kept only where the same rule prefers it to that configuration.
    """
    n = len(scored)
    if task == "classification":
        preds = [softmax(np.asarray(s.held_out, np.float64), axis=1) for s in scored]

        def loss(p):
            return probs_loss(p, y)
    else:
        preds = [np.asarray(s.held_out, np.float64) for s in scored]

        def loss(p):
            return outputs_loss(p, y, task)

    rule = by if task == "classification" else "loss"
    n_out = scored[0].held_out.shape[1]
    held = [cast(Scores, s.scores) for s in scored]  # every one scored
    best = _best_single(held, y, rule)
    single = np.eye(n)[best]
    if max_members < 2 or n < 2:
        return single, "single", scored[best].held_out
    w = greedy_weights(preds, loss, max_members)
    mix = sum(wi * p for wi, p in zip(w, preds, strict=True))
    mixed = scores(mix, y, task, n_out, loss=loss(mix))
    if (w > 0).sum() < 2 or not _better(mixed, held[best], y, rule):
        return single, "single", scored[best].held_out
    combo = np.log(np.clip(mix, 1e-12, None)).astype(np.float32) if task == "classification" else mix
    return w, "ensemble", combo


def clearly_more_accurate(a: np.ndarray, b: np.ndarray, y: np.ndarray, z: float = CLEARLY) -> bool:
    """Whether predictions ``a`` are right on more cells than ``b`` by more than ``z`` paired standard errors."""
    d = (a == y).astype(np.float64) - (b == y).astype(np.float64)
    gain = float(d.mean())
    if gain <= 0:
        return False
    se = float(d.std(ddof=1)) / np.sqrt(len(d)) if len(d) > 1 else 0.0
    return gain > z * se


def _better(a: Scores, b: Scores, y: np.ndarray, rule: str) -> bool:
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
    assert a.pred is not None and b.pred is not None  # classification: the rule is "loss" otherwise
    if clearly_more_accurate(a.pred, b.pred, y) and a.macro_f1 >= b.macro_f1 - 1e-9:
        return True
    if clearly_more_accurate(b.pred, a.pred, y) and b.macro_f1 >= a.macro_f1 - 1e-9:
        return False
    return lower


def _best_single(held: list[Scores], y: np.ndarray, rule: str) -> int:
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
