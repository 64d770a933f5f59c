"""The training loop: a whole chunk of minibatches per compiled call, early stopping.

Each call of the compiled ``train_chunk`` runs ``lax.scan`` over K minibatches already on
the device, so Python dispatch costs once per chunk rather than once per step. All chunks
share one shape (padding steps are masked), so a fit compiles ``train_chunk`` and
``apply`` once each; :attr:`FitResult.n_traces` records it and the tests check it. The
compiled functions are cached by network and the hyperparameters are traced arguments, so
a later fit of the same architecture and batch shape (another trial, another fold)
compiles nothing.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache, partial, wraps
from typing import TYPE_CHECKING, Any, cast

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from .. import _logging as logg
from .._precision import to_bf16, training_precision
from ..data import Pipeline, TrainData
from ..nn._fc import _Net, canonical
from ._losses import LOSSES, balanced_weights, host_loss, weighted_cross_entropy
from ._optim import Optimizer, hyperparameters
from ._parallel import batch_mesh, replicate, shard

if TYPE_CHECKING:
    from ..config._schema import LossConfig, TrainerConfig


@dataclass
class FitResult:
    """What :func:`fit` returns."""

    variables: dict  # {"params": ..., "batch_stats": ...} of the best epoch
    history: dict[str, np.ndarray]
    best_epoch: int
    best_val_loss: float
    n_traces: dict[str, int] = field(default_factory=dict)
    target_mean: float = 0.0
    target_std: float = 1.0
    n_devices: int = 1  # devices each minibatch was split across
    epoch_seconds: float = float("nan")  # median wall time of an epoch after the first (training + validation)
    val_outputs: np.ndarray | None = None  # (epochs, validation cells, outputs), with ``fit(keep_last=True)``
    stopped_at_deadline: bool = False  # ``fit(deadline=...)`` ended training before its own stopping rule did


class EarlyStopping:
    """Keep the weights of the epoch with the lowest validation loss; stop after ``patience`` worse epochs.

    Epochs before ``start`` (e.g. a KL warm-up) never count toward the patience, and once
    ``start`` is reached only epochs from then on can be kept (a model still warming up
    is not the one to keep, however good its loss looks).
    """

    def __init__(self, patience: int, start: int = 0):
        self.patience, self.start = patience, start
        self.loss, self.epoch, self.variables, self.wait = np.inf, -1, None, 0
        self.failure: str | None = None

    def update(self, epoch: int, val_loss: float, train_loss: float, variables) -> bool:
        """Record one epoch; return whether training should stop."""
        if epoch == self.start > 0:
            self.loss = np.inf  # the warm-up's best is only a fallback now
        if not np.isfinite(train_loss):
            self.failure = f"the training loss became {train_loss} at epoch {epoch + 1}"
            return True
        if val_loss < self.loss - 1e-7:
            self.loss, self.epoch, self.variables, self.wait = val_loss, epoch, jax.device_get(variables), 0
        elif not np.isfinite(val_loss) and self.failure is None:
            self.failure = f"the validation loss became {val_loss} at epoch {epoch + 1}"
        elif epoch >= self.start:
            self.wait += 1
        return self.wait >= self.patience

    def result(self, hist: dict, what: str, **extra) -> FitResult:
        """The :class:`FitResult` of the kept epoch; a sentence if no epoch had a finite loss."""
        if self.variables is None:
            why = self.failure or f"no epoch had a finite {what}"
            raise FloatingPointError(f"Training diverged: {why}; lower the learning rate.")
        return FitResult(
            variables=self.variables,
            history={k: np.asarray(v) for k, v in hist.items()},
            best_epoch=self.epoch,
            best_val_loss=float(self.loss),
            **extra,
        )


@lru_cache(maxsize=32)
def make_apply(net) -> Callable:
    """A jitted inference function ``(variables, x) -> (output, embedding)``, cached by network."""
    return jax.jit(_traced(partial(net.apply, train=False), "apply", net))


def eval_batch(n: int, cap: int = 1024) -> int:
    """A batch for evaluating ``n`` rows: the power of two at or above ``n`` (at least 8, at most ``cap``).

    Few distinct shapes, so the folds of a cross-validation, whose held-out folds differ in
    size by a few cells, share one compiled evaluation.
    """
    return int(min(cap, max(8, 1 << max(int(n) - 1, 0).bit_length())))


def predict_arrays(
    apply: Callable[[Mapping[str, Any], jax.Array], tuple[jax.Array, jax.Array]],
    variables: Mapping[str, Any],
    pipeline: Pipeline,
    idx: np.ndarray,
    batch_size: int = 1024,
) -> tuple[np.ndarray, np.ndarray]:
    """Outputs and embeddings of rows ``idx``, in fixed-shape batches (one compilation)."""
    outs = embs = None
    start = 0
    for x, n in pipeline.eval_batches(idx, batch_size):
        out, emb = apply(variables, jnp.asarray(x))
        if outs is None:  # filled in place: no list of blocks plus a concatenated copy
            outs = np.empty((len(idx), *out.shape[1:]), np.float32)
            embs = np.empty((len(idx), *emb.shape[1:]), np.float32)
        assert outs is not None and embs is not None  # allocated at the first batch
        outs[start : start + n] = out[:n]
        embs[start : start + n] = emb[:n]
        start += n
    return cast(np.ndarray, outs), cast(np.ndarray, embs)  # None only for an empty idx, which no caller passes


#: Chunks a fit dispatches to the device before it waits for the oldest one to finish.
IN_FLIGHT = 2

#: Traces of the cached compiled functions, by (name, net): a fit reports how many it caused.
_TRACES: Counter = Counter()


def _traced(fn, name: str, net):
    def wrapped(*args):
        _TRACES[(name, net)] += 1  # runs only while tracing
        return fn(*args)

    return wrapped


def masked_scan(step: Callable, state: Any, inputs: tuple, valid: jax.Array, keys: jax.Array) -> tuple[Any, jax.Array]:
    """The scanned chunk every trainer shares: ``step(carry, inputs_k, key_k) -> (new carry, loss)`` over K minibatches.

    The one compiled loop of the classifier, the Res-VAE and ENAS's shared weights: only
    ``step`` (the objective and its update) differs. A step whose ``valid`` is False (the
    padding of a chunk) leaves the carry unchanged and adds no loss; returns the final carry
    and the mean loss of the valid steps.
    """

    def body(carry, inp):
        ok, k, *xs = inp
        new, loss = step(carry, tuple(xs), k)
        carry = jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, carry)
        return carry, jnp.where(ok, loss, 0.0)

    state, losses = jax.lax.scan(body, state, (valid, keys, *inputs))
    return state, losses.sum() / jnp.maximum(valid.sum(), 1)


def _kernels_sq(params) -> jax.Array:
    """Sum of squared kernel entries (what the L2 penalty weighs; biases and BatchNorm are exempt)."""
    leaves = [p for p in jax.tree.leaves(params) if p.ndim > 1]
    return sum((jnp.sum(p * p) for p in leaves), jnp.zeros((), jnp.float32))


@lru_cache(maxsize=32)
def _train_chunk_fn(
    net, loss_name: str, optimizer: str, traced_rates: bool, gather: bool = False, bf16: bool = False
) -> Callable:
    """The compiled chunk step of ``net``, cached: its hyperparameters are traced arguments.

    ``train_chunk(state, xs, ys, valid, key, hp, smoothing)``, ``state = (params, batch_stats,
    opt_state)``; every fit of this network with these batch shapes reuses the compilation.
    With ``traced_rates`` the dropout rates come from ``hp`` too (``net`` is canonical, see
    :func:`autogenome_sc.nn.canonical`). With ``gather`` the chunk is ``(X, idx)``: the whole
    (small) matrix on the device and the rows of each minibatch, gathered there. With
    ``bf16`` the network computes in bfloat16 from bfloat16 copies of the parameters and
    inputs; gradients, parameters, batch statistics and the loss stay float32.
    """
    loss_fn = LOSSES[loss_name]
    opt = Optimizer(optimizer)

    def train_chunk(state, xs, ys, valid, key, hp, smoothing):
        kw = {"rates": (hp["input_keep"], hp["dropout"])} if traced_rates else {}
        if gather:
            matrix, xs = xs

        def step(carry, inp, k):
            params, bstats, opt_state = carry
            x, yb = inp
            if gather:
                x = jnp.take(matrix, x, axis=0)

            def objective(p):
                (out, _), upd = net.apply(
                    {"params": to_bf16(p) if bf16 else p, "batch_stats": bstats},
                    x.astype(jnp.bfloat16) if bf16 else x,
                    train=True,
                    rngs={"dropout": k},
                    mutable=["batch_stats"],
                    **kw,
                )
                if bf16:
                    out = out.astype(jnp.float32)
                    upd = {"batch_stats": jax.tree.map(lambda a: a.astype(jnp.float32), upd["batch_stats"])}
                if "class_weight" in hp:  # a static choice: the structure of hp, not its values
                    loss = weighted_cross_entropy(out, yb, smoothing, hp["class_weight"])
                else:
                    loss = loss_fn(out, yb, smoothing)
                return loss + 0.5 * hp["l2"] * _kernels_sq(p), (loss, upd["batch_stats"])

            (_, (loss, new_bstats)), grads = jax.value_and_grad(objective, has_aux=True)(params)
            updates, new_opt = opt.update(grads, opt_state, params, hp)
            return (optax.apply_updates(params, updates), new_bstats, new_opt), loss

        return masked_scan(step, state, (xs, ys), valid, jax.random.split(key, xs.shape[0]))

    return jax.jit(_traced(train_chunk, "train_chunk", net))


def _under_precision(fn: Callable) -> Callable:
    """Run ``fn(net, data, trainer, ...)`` under ``trainer.precision`` (see :mod:`autogenome_sc._precision`)."""

    @wraps(fn)
    def wrapped(net: Any, data: Any, trainer: Any, *args: Any, **kw: Any) -> Any:
        with training_precision(trainer.precision):
            return fn(net, data, trainer, *args, **kw)

    return wrapped


@_under_precision
def fit(
    net: nn.Module,
    data: TrainData,
    trainer: TrainerConfig,
    loss_cfg: LossConfig,
    key: jax.Array,
    *,
    callback: Callable[[int, dict], None] | None = None,
    desc: str = "training",
    stop_after: int | None = None,
    keep_last: bool = False,
    deadline: float | None = None,
) -> FitResult:
    """Train ``net`` on ``data`` with early stopping on the validation loss.

    Parameters
    ----------
    net
        A Flax module returning ``(output, embedding)``.
    data
        The prepared problem (see :func:`autogenome_sc.data.prepare`). Without validation
        cells it trains for ``trainer.max_epochs`` and keeps the last epoch.
    trainer, loss_cfg
        The ``trainer`` and ``loss`` sections of the config.
    key
        PRNG key for initialisation, shuffling and dropout.
    callback
        Called after each epoch with ``(epoch, metrics)``; may raise to stop (pruning).
    stop_after
        Stop after this many epochs (the schedule still spans ``trainer.max_epochs``, as in
        the runs that chose the number).
    keep_last
        No early stopping: keep the last epoch, and record the validation outputs of every
        epoch in :attr:`FitResult.val_outputs` (cross-validation chooses the epoch from them).
    deadline
        A ``time.perf_counter()`` time: no epoch starts after it (the best epoch so far is
        kept, and :attr:`FitResult.stopped_at_deadline` says so).
    """
    loss_name = _loss_name(loss_cfg.name, data.task)
    smoothing = loss_cfg.label_smoothing if loss_name == "cross_entropy" else 0.0
    mesh, batch = batch_mesh(trainer.data_parallel, data.batch_size_for(trainer.batch_size))
    min_steps = getattr(trainer, "min_steps_per_epoch", 1)
    steps_per_epoch, _ = data.steps_per_chunk(batch, min_steps)
    hp = hyperparameters(trainer, trainer.max_epochs * steps_per_epoch)
    traced_rates = isinstance(net, _Net)
    if traced_rates:  # compile the canonical network, pass the real dropout rates
        hp["input_keep"] = jnp.asarray(net.input_keep, jnp.float32)
        hp["dropout"] = jnp.asarray(net.dropout, jnp.float32)
        net = canonical(net)
    if loss_cfg.class_weight == "balanced" and loss_name != "cross_entropy":
        raise ValueError(
            f"loss.class_weight 'balanced' weighs the cross entropy of class labels; the '{loss_name}' loss "
            "has no classes to weigh. Set loss.class_weight to 'none'."
        )
    if loss_name == "cross_entropy" and loss_cfg.class_weight == "balanced":
        hp["class_weight"] = jnp.asarray(balanced_weights(data.y[data.idx["train"]], data.n_out))
    opt = Optimizer(trainer.optimizer)
    on_device = data.pipeline.cache is not None  # a small problem: its matrix goes to the device once
    bf16 = trainer.precision == "bf16"
    train_chunk = _train_chunk_fn(net, loss_name, trainer.optimizer, traced_rates, on_device, bf16)
    apply = make_apply(net)
    before = {name: _TRACES[(name, net)] for name in ("train_chunk", "apply")}

    y = data.y
    t_mean, t_std = 0.0, 1.0
    if data.task == "regression":  # standardise the target on the training split
        t_mean = float(y[data.idx["train"]].mean())
        t_std = float(y[data.idx["train"]].std()) or 1.0
        y = ((y - t_mean) / t_std).astype(np.float32)
        data = dataclasses.replace(data, y=y)

    k_init, k_shuffle, k_drop = jax.random.split(key, 3)
    variables = _init(net, k_init, batch, data.pipeline.n_features)
    params, batch_stats = variables["params"], variables.get("batch_stats", {})
    state = replicate((params, batch_stats, opt.init(params, hp)), mesh)
    hp, smooth = replicate(hp, mesh), replicate(jnp.asarray(smoothing, jnp.float32), mesh)

    seed = int(jax.random.randint(k_shuffle, (), 0, 2**31 - 1))
    np_rng = np.random.default_rng(seed)
    val_idx = data.idx["val"]
    validate = len(val_idx) > 0
    y_val = y[val_idx]
    hist: dict[str, list] = {"epoch": [], "train_loss": [], "val_loss": [], "train_seconds": []}
    if data.task == "classification":
        hist["val_accuracy"] = []
    stopper = EarlyStopping(trainer.patience)
    bar = logg.progress(range(trainer.max_epochs), desc=desc)
    matrix = replicate(jnp.asarray(data.pipeline.cache), mesh) if on_device else None
    chunks = data.train_index_chunks if on_device else data.train_chunks
    walls: list[float] = []
    outputs: list[np.ndarray] = []
    early = validate and not keep_last  # else the last epoch is kept
    late = False  # stopped by the deadline
    for epoch in bar:
        started = time.perf_counter()
        losses: list[jax.Array] = []  # read once at the end of the epoch: the host keeps dispatching ahead
        counts: list[int] = []
        for xs, ys, valid in chunks(batch, np_rng, min_steps):
            k_drop, sub = jax.random.split(k_drop)
            inputs = (matrix, shard(xs, mesh, 1)) if on_device else shard(xs, mesh, 1)
            state, loss = train_chunk(state, inputs, shard(ys, mesh, 1), shard(valid, mesh, None), sub, hp, smooth)
            losses.append(loss)
            counts.append(int(valid.sum()))
            if len(losses) > IN_FLIGHT:  # a bounded queue of dispatched chunks (each holds its inputs on the device)
                losses[-IN_FLIGHT - 1].block_until_ready()
        total = sum(float(v) * c for v, c in zip(jax.device_get(losses), counts, strict=True))
        n = sum(counts)
        hist["train_seconds"].append(time.perf_counter() - started)  # device_get above waited for the device
        cur = {"params": state[0], "batch_stats": state[1]}
        metrics = {"train_loss": total / max(n, 1)}
        if validate:
            out, _ = predict_arrays(apply, cur, data.pipeline, val_idx, batch_size=eval_batch(len(val_idx)))
            metrics["val_loss"] = host_loss(loss_name, out, y_val)
            if data.task == "classification":
                metrics["val_accuracy"] = float((out.argmax(1) == y_val).mean())
            if keep_last:
                outputs.append(out)
        else:  # a refit on every labelled cell: no early stopping, the last epoch is kept
            metrics["val_loss"] = float("nan")
            if data.task == "classification":
                metrics["val_accuracy"] = float("nan")
        hist["epoch"].append(epoch)
        for name, v in metrics.items():
            hist[name].append(v)
        if early:
            stop = stopper.update(epoch, metrics["val_loss"], metrics["train_loss"], cur)
        elif not np.isfinite(metrics["train_loss"]):
            stopper.failure = f"the training loss became {metrics['train_loss']} at epoch {epoch + 1}"
            stop = True
        else:
            stopper.epoch, stop = epoch, False
        bar.set_postfix({k_: f"{v:.3f}" for k_, v in metrics.items()}, refresh=False)
        walls.append(time.perf_counter() - started)
        if callback is not None:
            callback(epoch, metrics)
        if stop or (stop_after is not None and epoch + 1 >= stop_after):
            break
        if deadline is not None and time.perf_counter() > deadline:
            late = True
            break
    bar.close()
    if not early and stopper.failure is None:  # the last epoch: fetched once, not copied every epoch
        stopper.variables, stopper.loss = jax.device_get(cur), float(metrics["val_loss"])
    result = stopper.result(
        hist,
        "validation loss",
        n_traces={name: _TRACES[(name, net)] - c for name, c in before.items()},
        target_mean=t_mean,
        target_std=t_std,
        n_devices=1 if mesh is None else mesh.size,
    )
    if not validate:
        result.best_val_loss = float("nan")
    if keep_last and outputs:
        result.val_outputs = np.stack(outputs)
    result.stopped_at_deadline = late
    if len(walls) > 1:
        result.epoch_seconds = float(np.median(walls[1:]))
    return result


def _init(net, key: jax.Array, batch: int, n_features: int) -> dict:
    """Initial variables: Flax's initialisers, drawn with NumPy for the FC networks.

    Compiling ``net.init`` costs about 0.2 s per dense layer on a CPU (the random-number
    kernels), more than a small problem takes to train: the FC networks' variables are
    drawn here instead, from the same distributions (LeCun-normal kernels truncated at 2
    standard deviations, zero biases, unit BatchNorm scales and variances), seeded by ``key``.
    """
    if not isinstance(net, _Net):
        return _init_fn(net)(key, jnp.zeros((batch, n_features), jnp.float32))
    shapes = jax.eval_shape(partial(net.init, train=False), key, jax.ShapeDtypeStruct((batch, n_features), jnp.float32))
    gen = np.random.default_rng(np.asarray(jax.random.key_data(key)).ravel().tolist())

    def leaf(path, spec):
        name = getattr(path[-1], "key", str(path[-1]))
        shape = spec.shape
        if name == "kernel":
            std = np.sqrt(1.0 / max(int(np.prod(shape[:-1])), 1)) / 0.87962566103423978  # lecun_normal
            z = gen.standard_normal(shape)
            bad = np.abs(z) > 2.0
            while bad.any():  # truncated at 2 standard deviations, as jax.nn.initializers.truncated_normal
                z[bad] = gen.standard_normal(int(bad.sum()))
                bad = np.abs(z) > 2.0
            return jnp.asarray((z * std).astype(np.float32))
        if name in ("scale", "var"):
            return jnp.ones(shape, spec.dtype)
        if name in ("bias", "mean"):
            return jnp.zeros(shape, spec.dtype)
        raise KeyError(f"no NumPy initialiser for variable '{name}'")  # pragma: no cover - a new layer type

    try:
        return jax.tree_util.tree_map_with_path(leaf, shapes)
    except KeyError:  # pragma: no cover
        return _init_fn(net)(key, jnp.zeros((batch, n_features), jnp.float32))


@lru_cache(maxsize=32)
def _init_fn(net) -> Callable:
    return jax.jit(partial(net.init, train=False))


def _loss_name(name: str, task: str) -> str:
    if name == "auto":
        return "mse" if task == "regression" else "cross_entropy"
    return name
