"""Scoring held-out predictions and choosing among them: the best configuration, or a greedy ensemble.

Every held-out loss, accuracy and macro-F1 of the selection is computed here, by
:func:`scores` (the loss of network outputs by :func:`outputs_loss`, of averaged
probabilities by :func:`probs_loss`), with, after a cross-validation, their means and standard
errors over the folds. A classifier's held-out outputs are first divided by a temperature of
its own, fitted on them (:meth:`Scored.score_on`): families output on different scales (a
linear model's margins are not logits, an overfit network's logits are too sharp), and an
average of untempered probabilities follows whichever member is the most sure, right or wrong.
:func:`choose` takes the best single configuration by ``search.select_by`` and an ensemble
built by greedy forward selection with replacement on the held-out loss of the tempered
probabilities (Caruana et al. 2004), kept only where the same rule prefers it; the rule
``"within_noise"`` then prefers, among configurations the held-out cells cannot tell from the
best, the ensemble or the simplest (:func:`_within_noise`). After a cross-validation,
:func:`stacked` fits a meta-learner on the two best configurations' log-probabilities and scores it
by a cross-validation nested in the same folds; ``select`` keeps it where ``search.stack_margin`` says.
Boosted trees join stacks (as centred logits, :func:`stack_block`) but never greedy ensembles.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

import numpy as np
from scipy.special import log_softmax, softmax

from ..train import fit_temperature

if TYPE_CHECKING:
    from .._names import Chosen, SelectBy
    from ._driver import Fitted

#: Modes whose models are never a greedy ensemble's members: boosted trees, whose SHAP values are exact for their
#: logits only (explain/_trees.py), and the SHAP values of an average of probabilities are the average of the
#: members' SHAP values of their probabilities. They do join stacks, where the meta-learner reads their logits
#: (:data:`LOGIT_FED`), a linear function of them that Tree SHAP explains exactly.
ALONE = ("trees",)
#: Modes a stack's meta-learner reads as tempered logits centred per cell, not as log-probabilities (nn.Ensemble's
#: ``logit_groups``).
LOGIT_FED = ("trees",)
N_GREEDY = 25  # greedy ensemble steps (members may repeat: the counts are the weights)
#: "Clearly more accurate": the paired per-cell accuracy difference exceeds this many standard errors.
CLEARLY = 2.0
#: ``"within_noise"``: a configuration is within noise of the best unless the best is ahead by more than this many
#: paired standard errors (accuracy: per cell; macro-F1: per fold).
NOISE = 1.0
#: The modes ``"within_noise"`` prefers among configurations it cannot tell apart: a linear model over a network.
LINEAR_MODES = ("linear", "logistic", "svm")
#: The scores over the folds of a cross-validation (means, and their standard errors) in the selection's table.
FOLD_COLUMNS = ("fold_accuracy", "fold_accuracy_se", "fold_macro_f1", "fold_macro_f1_se")


@dataclass(frozen=True)
class Scores:
    """What the choice compares of a configuration (or ensemble) on held-out cells.

    ``pred``, ``accuracy`` and ``macro_f1`` are for classification only (``None``, NaN otherwise);
    ``fold_accuracy`` and ``fold_macro_f1`` (one per fold) only after a cross-validation.
    """

    loss: float
    pred: np.ndarray | None = None
    accuracy: float = np.nan
    macro_f1: float = np.nan
    fold_accuracy: np.ndarray | None = None
    fold_macro_f1: np.ndarray | None = None

    @property
    def score(self) -> float:
        """The mean of accuracy and macro-F1 (rounded, so that equal predictions tie exactly)."""
        return round(0.5 * (self.accuracy + self.macro_f1), 9)

    def over_folds(self) -> dict[str, float]:
        """Accuracy and macro-F1: their means over the folds and the standard errors of those (NaN without folds)."""
        out = {}
        for name, v in (("accuracy", self.fold_accuracy), ("macro_f1", self.fold_macro_f1)):
            out[f"fold_{name}"], out[f"fold_{name}_se"] = mean_se(v)
        return out


def mean_se(v: np.ndarray | None) -> tuple[float, float]:
    """The mean of ``v`` and its standard error (NaN where ``v`` is missing; the error needs two values)."""
    if v is None or len(v) == 0:
        return np.nan, np.nan
    v = np.asarray(v, np.float64)
    se = float(v.std(ddof=1)) / np.sqrt(len(v)) if len(v) > 1 else np.nan
    return float(v.mean()), se


def outputs_loss(out: np.ndarray, y: np.ndarray, task: str) -> float:
    """The held-out loss of network outputs: log-loss of logits (classification), else mean squared error."""
    if task == "classification":
        return float(-log_softmax(np.asarray(out, np.float64), axis=1)[np.arange(len(y)), y].mean())
    return float(np.mean((out[:, 0] - y) ** 2))


def probs_loss(p: np.ndarray, y: np.ndarray) -> float:
    """The log-loss of class probabilities (an ensemble's weighted average of its members')."""
    return float(-np.log(np.clip(p[np.arange(len(y)), y], 1e-12, None)).mean())


def scores(
    out: np.ndarray, y: np.ndarray, task: str, n_out: int, loss: float | None = None, folds: np.ndarray | None = None
) -> Scores:
    """Loss, accuracy and macro-F1 of outputs ``out`` (logits or probabilities) of cells labelled ``y``.

    ``loss``: already known (probabilities have theirs from :func:`probs_loss`); default
    :func:`outputs_loss`. ``folds``: the cross-validation fold of each cell, for the scores of
    each fold (a fold's macro-F1 over the classes it holds).
    """
    from sklearn.metrics import f1_score

    loss = outputs_loss(out, y, task) if loss is None else loss
    if task != "classification":
        return Scores(float(loss))
    pred = np.asarray(out).argmax(axis=1)
    f1 = float(f1_score(y, pred, labels=np.arange(n_out), average="macro", zero_division=0))
    fold_acc = fold_f1 = None
    if folds is not None:
        masks = [folds == f for f in np.unique(folds)]
        fold_acc = np.asarray([(pred[m] == y[m]).mean() for m in masks], np.float64)
        fold_f1 = np.asarray(
            [f1_score(y[m], pred[m], labels=np.unique(y[m]), average="macro", zero_division=0) for m in masks],
            np.float64,
        )
    return Scores(float(loss), pred, float((pred == y).mean()), f1, fold_acc, fold_f1)


@dataclass
class Scored:
    """A configuration with its held-out outputs: out-of-fold (cross-validation) or on the validation split."""

    trial: int
    mode: str
    fits: list[Fitted]  # one per fold, or the trial's own model
    held_out: np.ndarray  # outputs of the selection rows (logits, or standardised values)
    epochs: list[int]
    seconds: float
    folds: np.ndarray | None = None  # the fold of each selection row (None: the validation split)
    scores: Scores | None = None  # set by score_on, on the tempered outputs
    temperature: float = 1.0  # set by score_on: what the held-out logits are divided by (classification)

    def score_on(self, y: np.ndarray, task: str, n_out: int, *, temper: bool = True) -> None:
        """Fit the temperature (classification, unless ``temper`` is false) and score the held-out outputs against ``y``.

        The temperature minimises the held-out log-loss of ``softmax(held_out / T)``: it leaves
        the predictions, accuracy and macro-F1 as they are, and puts every configuration's
        loss and probabilities on the same footing.
        """
        self.temperature = fit_temperature(self.held_out, y) if task == "classification" and temper else 1.0
        self.scores = scores(self.tempered, y, task, n_out, folds=self.folds)

    @property
    def tempered(self) -> np.ndarray:
        """The held-out outputs divided by the temperature (float64)."""
        return np.asarray(self.held_out, np.float64) / self.temperature

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
    scored: list[Scored], y: np.ndarray, task: str, max_members: int, by: SelectBy, *, z: float = NOISE
) -> tuple[np.ndarray, Chosen, np.ndarray]:
    """(weights, "single" | "ensemble", held-out outputs of the choice) for configurations scored by :meth:`Scored.score_on`.

    The best single configuration by ``by`` (see :func:`_better`); then the greedy ensemble of
    the tempered probabilities, built on the loss, kept only where the same rule prefers it to
    that configuration. ``"within_noise"`` (see :func:`_within_noise`, ``z`` its standard
    errors) may choose another. The outputs of a single choice are its own, untempered (the
    final model is calibrated afterwards); an ensemble's are its log-probabilities.
    """
    n = len(scored)
    rule = by if task == "classification" else "loss"
    held = [cast(Scores, s.scores) for s in scored]  # every one scored
    best = best_single(held, y, rule)
    ens = greedy_ensemble(scored, y, task, max_members) if max_members >= 2 and n >= 2 else None
    if rule == "within_noise":
        return _within_noise(scored, best, ens, y, z)
    if ens is None or not _better(ens[1], held[best], y, rule):
        return np.eye(n)[best], "single", scored[best].held_out
    return ens[0], "ensemble", ens[2]


def greedy_ensemble(
    scored: list[Scored], y: np.ndarray, task: str, max_members: int
) -> tuple[np.ndarray, Scores, np.ndarray] | None:
    """The greedy ensemble of ``scored`` (weights, its held-out scores and outputs); ``None`` where it keeps one member.

    Classifiers are averaged as probabilities of their tempered outputs (their outputs: the
    log of the average), other tasks as outputs. Modes in :data:`ALONE` are not members.
    """
    joins = [i for i, s in enumerate(scored) if s.mode not in ALONE]
    if len(joins) < 2:
        return None
    found = _greedy([scored[i] for i in joins], y, task, max_members)
    if found is None:
        return None
    w = np.zeros(len(scored))
    w[joins] = found[0]
    return w, found[1], found[2]


def _greedy(
    scored: list[Scored], y: np.ndarray, task: str, max_members: int
) -> tuple[np.ndarray, Scores, np.ndarray] | None:
    if task == "classification":
        preds = [softmax(s.tempered, axis=1) for s in scored]

        def loss(p):
            return probs_loss(p, y)
    else:
        preds = [np.asarray(s.held_out, np.float64) for s in scored]

        def loss(p):
            return outputs_loss(p, y, task)

    w = greedy_weights(preds, loss, max_members)
    if (w > 0).sum() < 2:
        return None
    mix = sum(wi * p for wi, p in zip(w, preds, strict=True))
    mixed = scores(mix, y, task, scored[0].held_out.shape[1], loss=loss(mix), folds=scored[0].folds)
    combo = np.log(np.clip(mix, 1e-12, None)).astype(np.float32) if task == "classification" else mix
    return w, mixed, combo


def within_noise(a: Scores, best: Scores, y: np.ndarray, z: float = NOISE) -> bool:
    """Whether the held-out cells cannot tell ``a`` from ``best``: ``best`` is not ahead by more than ``z`` standard errors.

    Accuracy: the paired per-cell difference (:func:`clearly_more_accurate`); macro-F1, which
    is not a sum over cells: the paired per-fold difference, after a cross-validation.
    """
    assert a.pred is not None and best.pred is not None  # classification
    if clearly_more_accurate(best.pred, a.pred, y, z):
        return False
    if best.fold_macro_f1 is None or a.fold_macro_f1 is None:
        return True
    d = best.fold_macro_f1 - a.fold_macro_f1
    gain, se = mean_se(d)
    return not (gain > 0 and gain > z * np.nan_to_num(se))


def _within_noise(
    scored: list[Scored], best: int, ens: tuple[np.ndarray, Scores, np.ndarray] | None, y: np.ndarray, z: float
) -> tuple[np.ndarray, Chosen, np.ndarray]:
    """``"within_noise"``: the ensemble when at least as good as the best (``best``), else the simplest within noise of it.

    Among the configurations within noise of the best (:func:`within_noise`), a linear one
    (:data:`LINEAR_MODES`) before a network, then the higher score and the lower loss: where the
    held-out cells cannot tell models apart, the simpler one is the safer bet on new cells.
    """
    held = [cast(Scores, s.scores) for s in scored]
    if ens is not None and ens[1].score >= held[best].score:
        return ens[0], "ensemble", ens[2]
    near = [i for i in range(len(scored)) if i == best or within_noise(held[i], held[best], y, z)]
    pick = min(near, key=lambda i: (scored[i].mode not in LINEAR_MODES, -held[i].score, held[i].loss))
    return np.eye(len(scored))[pick], "single", scored[pick].held_out


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

    ``"loss"``: a lower log-loss. ``"accuracy_f1"`` (and ``"within_noise"``, which starts from
    its choice): a higher mean of accuracy and macro-F1, ties broken by the loss.
    ``"loss_or_accuracy"``: a lower loss, unless one of the two is clearly more accurate
    (:func:`clearly_more_accurate`) with a macro-F1 no lower, which then wins: log-loss is the steadier judge on a few hundred cells, but it can prefer a
    better-calibrated model to a more accurate one, and calibration is fitted afterwards.
    """
    lower = a.loss < b.loss - 1e-6
    if rule == "loss":
        return lower
    if rule in ("accuracy_f1", "within_noise"):
        return a.score > b.score or (a.score == b.score and lower)
    assert a.pred is not None and b.pred is not None  # classification: the rule is "loss" otherwise
    if clearly_more_accurate(a.pred, b.pred, y) and a.macro_f1 >= b.macro_f1 - 1e-9:
        return True
    if clearly_more_accurate(b.pred, a.pred, y) and b.macro_f1 >= a.macro_f1 - 1e-9:
        return False
    return lower


def best_single(held: list[Scores], y: np.ndarray, rule: str) -> int:
    """The index of the configuration ``rule`` prefers."""
    by_loss = min(range(len(held)), key=lambda i: held[i].loss)
    if rule == "loss":
        return by_loss
    if rule in ("accuracy_f1", "within_noise"):
        return max(range(len(held)), key=lambda i: (held[i].score, -held[i].loss))
    # the loss's choice, unless others beat it clearly: then the most accurate of those
    rivals = [i for i in range(len(held)) if i != by_loss and _better(held[i], held[by_loss], y, rule)]
    if not rivals:
        return by_loss
    return max(rivals, key=lambda i: (held[i].accuracy, held[i].macro_f1, -held[i].loss))


#: Members of a stack: the best configurations by the score.
STACK_MEMBERS = 2


@dataclass
class Stack:
    """A meta-learner over configurations' log-probabilities: ``logits = concat_g log p_g @ coef + intercept``."""

    members: list[int]  # indices of the stacked configurations, in the order of coef's blocks
    coef: np.ndarray  # (len(members) * n_out, n_out)
    intercept: np.ndarray  # (n_out,)
    scores: Scores  # of its nested out-of-fold outputs
    held_out: np.ndarray  # its nested out-of-fold logits


def stack_block(tempered: np.ndarray, mode: str) -> np.ndarray:
    """One configuration's block of what the meta-learner reads, from its tempered outputs ``(models, cells, classes)``.

    The log of its models' mean class probabilities, or, for :data:`LOGIT_FED` modes, the mean of
    its models' logits centred per cell (as nn.Ensemble computes them). A 2-D array is one model's.
    """
    z = np.asarray(tempered, np.float64)
    z = z[None] if z.ndim == 2 else z
    if mode in LOGIT_FED:
        return (z - z.mean(axis=2, keepdims=True)).mean(axis=0)
    return np.log(softmax(z, axis=2).mean(axis=0) + 1e-12)


def stack_features(blocks: list[np.ndarray]) -> np.ndarray:
    """What the meta-learner reads: each configuration's :func:`stack_block`, side by side."""
    return np.concatenate(blocks, axis=1)


def _meta(x: np.ndarray, y: np.ndarray, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """A multinomial logistic regression (scikit-learn's, C=1) of ``y`` on ``x``: ``(coef, intercept)`` over every class.

    A class absent from ``y`` gets no weight and an intercept far below the others, never a prediction.
    """
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    present = np.unique(y)
    coef, intercept = np.zeros((x.shape[1], n_out)), np.full(n_out, -30.0)
    if len(present) == 1:
        intercept[present[0]] = 0.0
        return coef, intercept
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        m = LogisticRegression(C=1.0, max_iter=2000).fit(x, y)
    if len(present) == 2:  # scikit-learn's one column: the second class's logit against the first's 0
        coef[:, present[1]], intercept[present[0]], intercept[present[1]] = m.coef_[0], 0.0, m.intercept_[0]
    else:
        coef[:, present], intercept[present] = m.coef_.T, m.intercept_
    return coef, intercept


def stacked(scored: list[Scored], y: np.ndarray, n_out: int, n_members: int = STACK_MEMBERS) -> Stack | None:
    """A stack of the best configurations, scored by a cross-validation of its meta-learner nested in the same folds.

    Classification after a cross-validation only. The members are the ``n_members`` best
    configurations by the mean of accuracy and macro-F1 (ties by the loss); the meta-learner
    (:func:`_meta`) reads their :func:`stack_block` (tempered log-probabilities, or the trees'
    centred tempered logits). Its out-of-fold outputs
    come from meta-learners each fitted on the other folds' rows, so its score is comparable to
    the configurations' own; ``None`` where fewer than two can be stacked.
    """
    folds = scored[0].folds if scored else None
    joins = [i for i, s in enumerate(scored) if s.scores is not None]
    if folds is None or len(joins) < 2 or n_members < 2:
        return None
    held = [cast(Scores, scored[i].scores) for i in joins]
    order = sorted(range(len(joins)), key=lambda j: (-held[j].score, held[j].loss))
    members = [joins[j] for j in order[:n_members]]
    x = stack_features([stack_block(scored[i].tempered, scored[i].mode) for i in members])
    out = np.zeros((len(y), n_out))
    for f in np.unique(folds):
        fit, rows = folds != f, folds == f
        coef, intercept = _meta(x[fit], y[fit], n_out)
        out[rows] = x[rows] @ coef + intercept
    coef, intercept = _meta(x, y, n_out)
    return Stack(members, coef, intercept, scores(out, y, "classification", n_out, folds=folds), out.astype(np.float32))
