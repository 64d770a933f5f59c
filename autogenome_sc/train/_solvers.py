"""Linear models solved to convergence: multinomial logistic regression and a one-vs-rest linear SVM.

Both are scikit-learn's objectives, minimised full-batch on the whole training matrix by
L-BFGS (:func:`~autogenome_sc.train._lbfgs.minimize`) inside one compiled ``lax.while_loop``
that stops when the largest entry of the gradient falls below a tolerance or at an iteration cap:

``"logistic"``
    ``LogisticRegression(C)``: ``0.5 ||W||^2 + C * sum_i s_i * CE(x_i W + b, y_i)``, the
    intercept not penalised. With two classes scikit-learn fits one weight vector for the
    logit difference; the two columns here then carry half of it each, with twice the penalty.
``"svm"``
    ``LinearSVC(C)``: one-vs-rest, per class ``0.5 (||w_k||^2 + b_k^2) + C * sum_i s_i *
    max(0, 1 - t_ik (x_i w_k + b_k))^2`` with ``t_ik = +1`` for class ``k``, else ``-1``. The
    intercept is penalised like a weight, as liblinear does with its constant feature
    (``intercept_scaling=1``). With two classes both columns solve the same problem (mirrored).

``s_i`` are row weights: zero for the rows that are not trained on, which lets every fit on
a matrix of one shape (a search's trials on the same genes, cross-validation folds, an SVM's
inner folds) share one compiled solver, whatever its rows; class weights multiply them. The
family, the penalty ``C``, the tolerance and the iteration cap are traced arguments: one
compilation per matrix shape and number of classes serves both families and any grid of ``C``.
The solver minimises the objective divided by ``C * sum_i s_i`` (the mean loss plus the penalty
over ``C * sum_i s_i``, as scikit-learn's ``lbfgs`` does), so its gradient tolerance means the
same at any size and penalty.

Matmuls run at full float32 precision (``Precision.HIGHEST``): on GPUs XLA's default is TF32,
whose 10-bit mantissa would move the optimum. Measured against scikit-learn in
docs/benchmarks.md ("Linear families solved in JAX").
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .._traces import Traces
from ..data import TrainData
from ..data._pipeline import CACHE_MB
from ._confidence import fit_temperature
from ._epochs import FitResult
from ._lbfgs import minimize
from ._losses import balanced_weights, host_loss

#: The linear families solved here.
SOLVED = ("logistic", "svm")
#: Stop when the largest entry of the scaled objective's gradient is at most this. scikit-learn's ``lbfgs``
#: stops at 1e-4 on the same scale, short of the optimum; 1e-6 is within float32's reach (docs/benchmarks.md).
TOL = 1e-6
#: At most this many L-BFGS steps (weak penalties on separable data converge slowly).
MAX_ITER = 3000
#: Matrices with at least this many times as many genes as rows are solved in the span of their rows.
WIDE = 4

_TRACES = Traces()
_HIGHEST = jax.lax.Precision.HIGHEST


@dataclass
class Solution:
    """A solved linear model: ``logits = x @ kernel + bias``."""

    kernel: np.ndarray  # (genes, classes)
    bias: np.ndarray  # (classes,)
    objective: float  # scikit-learn's objective (unscaled) at the solution
    n_iter: int
    grad_max: float  # the largest entry of the scaled objective's gradient at the solution
    seconds: float  # the solve, without compiling


def watch_traces() -> Callable[[], dict[str, int]]:
    """Start counting the solver's compilations: the function returned gives ``{"solve": n}`` since this call."""
    return _TRACES.watch(["solve"])


def _objective(w: jax.Array, x, y1h, s, inv_c, svm):
    """The objective over ``C * sum(s)`` of the flat parameters ``w`` (the kernel's entries, then the bias)."""
    k = y1h.shape[1]
    kernel, bias = w[:-k].reshape(-1, k), w[-k:]
    logits = jnp.dot(x, kernel, precision=_HIGHEST) + bias
    # both families' terms are cheap next to the matmul: computing both keeps one compiled program for them
    cross_entropy = _cross_entropy(logits, y1h)
    hinge = jnp.maximum(0.0, 1.0 - (2.0 * y1h - 1.0) * logits)
    per_row = jnp.where(svm, jnp.sum(hinge * hinge, axis=1), cross_entropy)
    kernel_sq = jnp.sum(kernel * kernel)
    # logistic, two classes: one vector for their difference; svm: liblinear's intercept is a penalised weight
    penalty = jnp.where(svm, kernel_sq + jnp.sum(bias * bias), kernel_sq * (2.0 if k == 2 else 1.0))
    return (jnp.dot(s, per_row, precision=_HIGHEST) + 0.5 * inv_c * penalty) / jnp.sum(s)


def _cross_entropy(logits: jax.Array, y1h: jax.Array) -> jax.Array:
    """Each row's cross entropy, to float32's relative precision even where it is tiny.

    ``logsumexp(logits) - logit_y`` cancels for confidently right rows (the cross entropy of
    a row with logits near 10 and a loss near 0.003 kept 3 digits), and the line search then
    cannot tell the objective's decrease from its rounding near the optimum. With ``d = logits
    - logit_y``, the loss is ``log1p(sum over other classes of exp(d))``, or, when another
    class leads by ``m > 0``, ``m + log(exp(-m) + sum exp(d - m))``: no cancellation either way.
    """
    d = logits - jnp.sum(y1h * logits, axis=1, keepdims=True)
    lead = jnp.maximum(jnp.max(jnp.where(y1h > 0, -jnp.inf, d), axis=1), 0.0)
    others = jnp.sum(jnp.where(y1h > 0, 0.0, jnp.exp(d - lead[:, None])), axis=1)
    return jnp.where(lead > 0, lead + jnp.log(jnp.exp(-lead) + others), jnp.log1p(others))


def _solve(x, y, s, c, svm, tol, max_iter, w0):
    """L-BFGS from ``w0`` on the rows of positive weight ``s``; the solution, steps, value and gradient's largest entry."""
    y1h = jax.nn.one_hot(y, w0.shape[0] // (x.shape[1] + 1), dtype=x.dtype)

    def objective(w):
        return _objective(w, x, y1h, s, 1.0 / c, svm)

    end = minimize(objective, w0, tol, max_iter)
    return end.w, end.n_iter, end.f, jnp.max(jnp.abs(end.g))


@lru_cache(maxsize=8)
def _compiled(n: int, g: int, k: int) -> Any:
    """The solver for an ``(n, g)`` float32 matrix and ``k`` classes, compiled once (counted in ``_TRACES``)."""
    spec = jax.ShapeDtypeStruct
    f32, i32 = jnp.float32, jnp.int32
    scalars = (spec((), f32), spec((), jnp.bool_), spec((), f32), spec((), i32))
    args = (spec((n, g), f32), spec((n,), i32), spec((n,), f32), *scalars, spec(((g + 1) * k,), f32))
    with jax.default_matmul_precision("highest"):  # every dot of the loop, not only the objective's
        return jax.jit(_TRACES.counted(_solve, "solve")).lower(*args).compile()


@dataclass
class _RowSpace:
    """The span of the weighted rows of a wide matrix: its solution lies there (the penalty is on ``W``).

    With ``x_m`` those rows and ``x_m x_m^T = U diag(lam) U^T``, ``W = V Z`` for the orthonormal
    ``V = x_m^T U diag(lam)^-1/2``; the logits are ``x V Z = U diag(lam)^1/2 Z`` and ``||W|| = ||Z||``,
    so the problem in ``Z`` is the same problem, on an ``(rows, rows)`` matrix (``design``).
    """

    rows: np.ndarray  # the weighted rows' positions
    x_rows: np.ndarray  # (weighted rows, genes) float64
    to_w: np.ndarray  # (weighted rows, rows): W = x_rows^T @ to_w @ Z
    design: np.ndarray  # (rows, rows) float32: zero for unweighted rows and for unused columns

    @classmethod
    def of(cls, x: np.ndarray, s: np.ndarray) -> _RowSpace:
        rows = np.flatnonzero(s > 0)
        x_rows = np.asarray(x[rows], np.float64)
        lam, u = np.linalg.eigh(x_rows @ x_rows.T)
        keep = lam > lam.max(initial=0.0) * 1e-12  # numerically null directions carry nothing
        lam, u = lam[keep], u[:, keep]
        design = np.zeros((len(s), len(s)), np.float32)
        design[np.ix_(rows, np.arange(len(lam)))] = u * np.sqrt(lam)
        to_w = np.zeros((len(rows), len(s)))
        to_w[:, : len(lam)] = u / np.sqrt(lam)
        return cls(rows, x_rows, to_w, design)

    def lift(self, z: np.ndarray) -> np.ndarray:
        """``W`` (genes x classes) of the reduced kernel ``z`` (rows x classes)."""
        return self.x_rows.T @ (self.to_w @ np.asarray(z, np.float64))

    def project(self, kernel: np.ndarray) -> np.ndarray:
        """The reduced kernel of ``W`` (its part in the row space; a warm start)."""
        return self.to_w.T @ (self.x_rows @ np.asarray(kernel, np.float64))


def solve_linear(
    x: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    loss: str,
    C: float = 1.0,
    *,
    weights: np.ndarray | None = None,
    tol: float = TOL,
    max_iter: int = MAX_ITER,
    init: Solution | None = None,
) -> Solution:
    """Solve a logistic regression or a linear SVM on the rows of ``x`` with nonzero ``weights``.

    On wide matrices (at least :data:`WIDE` times as many genes as rows) the problem is solved
    in the span of the weighted rows, which holds its solution (:class:`_RowSpace`): the same
    objective on a square matrix, each step of L-BFGS costing rows instead of genes, and one
    compilation for every such gene count.

    Parameters
    ----------
    x
        The matrix, ``(rows, genes)``; rows with zero weight are ignored (see the module docstring).
    y
        Each row's class, ``0 .. n_classes - 1`` (any value on rows of zero weight).
    n_classes
        The number of classes (columns of the kernel).
    loss
        ``"logistic"`` (scikit-learn's ``LogisticRegression``) or ``"svm"`` (``LinearSVC``).
    C
        Inverse penalty, as scikit-learn's.
    weights
        Per-row weights (sample weights times class weights); default 1 for every row.
    tol, max_iter
        The stopping rule: the largest entry of the scaled objective's gradient, and the iteration cap.
    init
        A solution to start from (a warm start), else zeros.

    Returns
    -------
    The solution, with scikit-learn's objective value and the iterations it took.
    """
    if loss not in SOLVED:
        raise ValueError(f"Unknown linear family '{loss}'; choose one of {', '.join(SOLVED)}.")
    n, g = x.shape
    s = np.ones(n, np.float32) if weights is None else np.asarray(weights, np.float32)
    if not s.sum() > 0:
        raise ValueError("A linear model needs at least one row of positive weight.")
    t0 = time.perf_counter()
    space = _RowSpace.of(np.asarray(x), s) if g >= WIDE * n else None
    design = np.asarray(x, np.float32) if space is None else space.design
    kernel0 = np.zeros((g, n_classes)) if init is None else np.asarray(init.kernel, np.float64)
    bias0 = np.zeros(n_classes) if init is None else np.asarray(init.bias, np.float64)
    if space is not None:
        kernel0 = space.project(kernel0)
    w0 = np.concatenate([kernel0.ravel(), bias0]).astype(np.float32)
    solver = _compiled(*design.shape, int(n_classes))
    labels = np.where(s > 0, np.asarray(y), 0).astype(np.int32)
    args = (np.float32(C), np.bool_(loss == "svm"), np.float32(tol), np.int32(max_iter), w0)
    w, count, value, gmax = jax.block_until_ready(solver(jnp.asarray(design), labels, s, *args))
    w = np.asarray(w)
    kernel = w[:-n_classes].reshape(-1, n_classes)
    scale = float(C) * float(s.sum())  # back to scikit-learn's objective
    if loss == "svm" and n_classes == 2:
        scale /= 2  # scikit-learn solves one of the two mirrored problems
    return Solution(
        kernel=(kernel if space is None else space.lift(kernel)).astype(np.float32),
        bias=w[-n_classes:],
        objective=float(value) * scale,
        n_iter=int(count),
        grad_max=float(gmax),
        seconds=time.perf_counter() - t0,
    )


#: Inner folds of the training rows on which an SVM's temperature is fitted.
TEMPERATURE_FOLDS = 3
#: The inner fits' tolerance (scikit-learn's): one scalar fitted to their margins needs no more.
TEMPERATURE_TOL = 1e-4


def fit_solved(
    data: TrainData,
    loss: str,
    C: float = 1.0,
    *,
    class_weight: str = "none",
    seed: int = 0,
    tol: float = TOL,
    max_iter: int = MAX_ITER,
) -> FitResult:
    """Solve ``loss`` (``"logistic"`` or ``"svm"``) on the training split of ``data``; the weights of ``nn.Linear``.

    The whole preprocessed matrix of ``data`` (kept in memory for small problems, see
    :meth:`~autogenome_sc.data.TrainData.cache_rows`) goes to the device once; the rows outside
    the training split get weight zero, so every fit on a matrix of that shape shares one
    compiled solver. ``class_weight="balanced"`` weighs each training row by
    ``n / (n_classes * n_c)``, as scikit-learn's ``class_weight="balanced"`` (for the SVM, as its
    ``sample_weight``: liblinear's own class weights would weigh only each class's positive side).

    An SVM's margins are not logits: they are divided by one temperature, the one minimising the
    log-loss of the margins of training rows held out of :data:`TEMPERATURE_FOLDS` inner fits
    (warm-started from the solution, the same compiled solver). The training rows' own margins
    cannot fit it: on data with more genes than cells they are separated, and the log-loss falls
    without bound as the temperature goes to zero. The validation split is left to judge the
    trial, as for every mode. ``softmax(outputs)`` then is a probability the search calibrates again.

    Returns
    -------
    A one-epoch :class:`FitResult`: ``variables`` of :class:`~autogenome_sc.nn.Linear`
    (``{"params": {"head": {"kernel", "bias"}}}``), the validation loss and accuracy, the
    validation outputs (``val_outputs``, one epoch: cross-validation reads them), the solve's
    seconds without compiling (``epoch_seconds``) and its compilations (``n_traces``).
    """
    if data.task != "classification":
        raise ValueError(f"The '{loss}' mode classifies; this problem is a {data.task}.")
    x = _matrix(data)
    train = data.idx["train"]
    weights = np.zeros(len(data.y), np.float32)
    per_class = balanced_weights(data.y[train], data.n_out) if class_weight == "balanced" else None
    weights[train] = 1.0 if per_class is None else per_class[data.y[train]]
    traces = watch_traces()
    sol = solve_linear(x, data.y, data.n_out, loss, C, weights=weights, tol=tol, max_iter=max_iter)
    seconds = sol.seconds
    temperature = 1.0
    if loss == "svm":
        temperature, inner = _held_out_temperature(x, data, weights, sol, C, seed, max_iter)
        seconds += inner
    return _result(data, sol.kernel / temperature, sol.bias / temperature, sol, seconds, traces())


def _matrix(data: TrainData) -> np.ndarray:
    """Every row of ``data`` as its model reads them (preprocessed, genes chosen, scaled), from memory."""
    data.cache_rows()
    cache = data.pipeline.cache
    if cache is None:
        raise ValueError(
            "The logistic and svm modes solve on the whole matrix in memory; this problem's is larger than "
            f"{CACHE_MB} MB (or backed on disk). Use the linear mode, which reads minibatches."
        )
    return cache


def _held_out_temperature(
    x: np.ndarray, data: TrainData, weights: np.ndarray, sol: Solution, C: float, seed: int, max_iter: int
) -> tuple[float, float]:
    """The temperature fitted on margins of training rows held out of inner fits, and the inner solves' seconds."""
    train = data.idx["train"]
    y = data.y
    fold = np.empty(len(train), np.int64)
    gen = np.random.default_rng(seed)
    for c in np.unique(y[train]):  # stratified, as the search's own folds
        members = np.flatnonzero(y[train] == c)
        fold[gen.permutation(members)] = (np.arange(len(members)) + gen.integers(TEMPERATURE_FOLDS)) % TEMPERATURE_FOLDS
    margins = np.zeros((len(train), data.n_out), np.float64)
    done = np.zeros(len(train), bool)
    seconds = 0.0
    for f in range(TEMPERATURE_FOLDS):
        held = train[fold == f]
        inner = weights.copy()
        inner[held] = 0.0
        if len(held) == 0 or not inner.sum() > 0:  # a training split of a cell or two
            continue
        part = solve_linear(x, y, data.n_out, "svm", C, weights=inner, tol=TEMPERATURE_TOL, max_iter=max_iter, init=sol)
        seconds += part.seconds
        margins[fold == f] = _outputs(data, held, part.kernel, part.bias)
        done[fold == f] = True
    return (fit_temperature(margins[done], y[train][done]) if done.any() else 1.0), seconds


def _outputs(data: TrainData, rows: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """``x @ kernel + bias`` of ``rows``, on the host in float64 (a few hundred rows: no compilation needed)."""
    x = np.asarray(_matrix(data)[rows], np.float64)
    return x @ np.asarray(kernel, np.float64) + np.asarray(bias, np.float64)


def _result(
    data: TrainData, kernel: np.ndarray, bias: np.ndarray, sol: Solution, seconds: float, traces: dict[str, int]
) -> FitResult:
    """The :class:`FitResult` of a solved model: one epoch, scored on the validation split."""
    train, val = data.idx["train"], data.idx["val"]
    history: dict[str, list] = {
        "epoch": [0],
        "train_loss": [host_loss("cross_entropy", _outputs(data, train, kernel, bias), data.y[train])],
        "train_seconds": [seconds],
        "iterations": [sol.n_iter],
    }
    val_out = None
    if len(val):
        val_out = _outputs(data, val, kernel, bias).astype(np.float32)
        history["val_loss"] = [host_loss("cross_entropy", val_out, data.y[val])]
        history["val_accuracy"] = [float((val_out.argmax(1) == data.y[val]).mean())]
    else:  # a refit on every labelled cell
        history["val_loss"], history["val_accuracy"] = [float("nan")], [float("nan")]
    head = {"kernel": np.asarray(kernel, np.float32), "bias": np.asarray(bias, np.float32)}
    return FitResult(
        variables={"params": {"head": head}, "batch_stats": {}},
        history={k: np.asarray(v) for k, v in history.items()},
        best_epoch=0,
        best_val_loss=float(history["val_loss"][0]),
        n_traces=traces,
        epoch_seconds=seconds,
        val_outputs=None if val_out is None else val_out[None],
    )
