"""The supervised trainer (:func:`fit`): a whole chunk of minibatches per compiled call.

:func:`masked_scan` is the scanned chunk every trainer shares; the epochs around it are
:func:`~autogenome_sc.train._epochs.run_epochs`, with early stopping. Each call of the
compiled ``train_chunk`` runs ``lax.scan`` over K minibatches already on the device, so
Python dispatch costs once per chunk rather than once per step. All chunks share one shape
(padding steps are masked), so a fit compiles ``train_chunk`` and ``apply`` once each;
:attr:`FitResult.n_traces` records it and the tests check it. The compiled functions are
cached by network and the hyperparameters are traced arguments, so a later fit of the same
architecture and batch shape (another trial, another fold) compiles nothing.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from functools import lru_cache, partial, wraps
from typing import TYPE_CHECKING, Any, cast

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from .._precision import to_bf16, training_precision
from .._traces import Traces
from ..data import Pipeline, TrainData
from ..nn._fc import _Net, canonical
from ._epochs import EarlyStopping, Evaluate, FitResult, Step, run_epochs, variables_of
from ._losses import LOSSES, balanced_weights, host_loss, weighted_cross_entropy
from ._optim import Optimizer, hyperparameters
from ._parallel import batch_mesh, replicate, shard
from ._tasks import task_type

if TYPE_CHECKING:
    from ..config._schema import LossConfig, TrainerConfig


#: Traces of the trainers' cached compiled functions, by (name, net): a fit reports how many it caused.
_TRACES = Traces()


def watch_traces(net: Any, *names: str) -> Callable[[], dict[str, int]]:
    """Start counting the traces of ``net``'s compiled ``names``: the function returned gives each one's, by name."""
    since = _TRACES.watch((name, net) for name in names)
    return lambda: {name: n for (name, _), n in since().items()}


@lru_cache(maxsize=32)
def make_apply(net) -> Callable:
    """A jitted inference function ``(variables, x) -> (output, embedding)``, cached by network."""
    return jax.jit(_TRACES.counted(partial(net.apply, train=False), ("apply", net)))


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
        # sliced on the host: slicing the device array compiles a slice for every distinct n
        outs[start : start + n] = np.asarray(out)[:n]
        embs[start : start + n] = np.asarray(emb)[:n]
        start += n
    return cast(np.ndarray, outs), cast(np.ndarray, embs)  # None only for an empty idx, which no caller passes


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

    return jax.jit(_TRACES.counted(train_chunk, ("train_chunk", net)))


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
    s = _setup(net, data, trainer, loss_cfg, key)
    n_traces = watch_traces(s.net, "train_chunk", "apply")
    data = s.data
    np_rng = np.random.default_rng(int(jax.random.randint(s.k_shuffle, (), 0, 2**31 - 1)))
    chunks = data.train_index_chunks if data.pipeline.cache is not None else data.train_chunks  # see _chunk_step
    outputs: list[np.ndarray] | None = [] if keep_last else None
    stopper = EarlyStopping(trainer.patience, keep_last=keep_last or len(data.idx["val"]) == 0)  # no val: a refit
    run = run_epochs(
        s.step,
        s.carry,
        partial(chunks, s.batch, np_rng, s.min_steps),
        _validation(make_apply(s.net), data, s.loss_name, outputs),
        stopper,
        n_epochs=trainer.max_epochs,
        desc=desc,
        callback=callback,
        stop_after=stop_after,
        deadline=deadline,
    )
    result = stopper.result(
        {**run.history, "train_seconds": run.train_seconds},
        "validation loss",
        n_traces=n_traces(),
        target_mean=s.target_mean,
        target_std=s.target_std,
        n_devices=1 if s.mesh is None else s.mesh.size,
        epoch_seconds=run.clock.epoch_seconds,
        stopped_at_deadline=run.stopped_at_deadline,
    )
    if outputs:
        result.val_outputs = np.stack(outputs)
    return result


@dataclasses.dataclass
class _Setup:
    """What :func:`fit` and :func:`compile_fit` set up before the first epoch."""

    loss_name: str
    mesh: Any
    batch: int
    min_steps: int
    net: nn.Module  # canonical for the FC networks
    step: Step
    compile_step: Callable[[Any, Any, Any, Any], None]
    data: TrainData  # a regression target standardised
    target_mean: float
    target_std: float
    carry: tuple[Any, jax.Array]  # (initial state, dropout key)
    k_shuffle: jax.Array


def _setup(net: nn.Module, data: TrainData, trainer: TrainerConfig, loss_cfg: LossConfig, key: jax.Array) -> _Setup:
    """Everything :func:`fit` needs before its first epoch, as :func:`compile_fit` needs it too (one place)."""
    loss_name = task_type(data.task).default_loss if loss_cfg.name == "auto" else loss_cfg.name
    mesh, batch = batch_mesh(trainer.data_parallel, data.batch_size_for(trainer.batch_size))
    min_steps = getattr(trainer, "min_steps_per_epoch", 1)
    steps_per_epoch, _ = data.steps_per_chunk(batch, min_steps)
    total = trainer.max_epochs * steps_per_epoch
    net, hp, step, compile_step = _chunk_step(net, data, trainer, loss_cfg, loss_name, mesh, total)
    data, t_mean, t_std = _standardised(data)
    k_init, k_shuffle, k_drop = jax.random.split(key, 3)
    state = _initial_state(net, k_init, batch, data.pipeline.n_features, Optimizer(trainer.optimizer), hp, mesh)
    return _Setup(
        loss_name, mesh, batch, min_steps, net, step, compile_step, data, t_mean, t_std, (state, k_drop), k_shuffle
    )


@_under_precision
def compile_fit(net: nn.Module, data: TrainData, trainer: TrainerConfig, loss_cfg: LossConfig, key: jax.Array) -> bool:
    """Compile what :func:`fit` with these arguments runs (its chunk step and its evaluation), without training.

    The search calls it in a worker thread for the portfolio's networks while earlier trials
    train, so their fits find both compiled (``FitResult.n_traces`` is then 0). Nothing is
    computed that a fit would read: the fit's numbers are the same with or without it. Only
    for problems whose rows are cached on the device (:meth:`TrainData.cache_rows`: the small
    ones, where compiling is most of a fit's time); returns whether it compiled.
    """
    if data.pipeline.cache is None:
        return False
    s = _setup(net, data, trainer, loss_cfg, key)
    xs, ys, valid = next(iter(s.data.train_index_chunks(s.batch, np.random.default_rng(0), s.min_steps)))
    s.compile_step(s.carry, xs, ys, valid)
    val = s.data.idx["val"]
    if len(val):
        x, _ = next(iter(s.data.pipeline.eval_batches(val, eval_batch(len(val)), prefetch_depth=0)))
        cast(Any, make_apply(s.net)).lower(variables_of(s.carry), jnp.asarray(x)).compile()
    return True


def _chunk_step(
    net: nn.Module,
    data: TrainData,
    trainer: TrainerConfig,
    loss_cfg: LossConfig,
    loss_name: str,
    mesh: Any,
    total_steps: int,
) -> tuple[nn.Module, dict[str, Any], Step, Callable[[Any, Any, Any, Any], None]]:
    """What :func:`fit` compiles: the network, the hyperparameters and the chunk step of the carry ``(state, key)``.

    The network is canonical for the FC networks (their dropout rates are hyperparameters);
    each chunk draws a fresh dropout key and is split across the devices of ``mesh``. A small
    problem's matrix goes to the device once, and the step gathers each minibatch's rows there.
    The last function returned compiles the step for a carry and chunk without running it.
    """
    traced_rates = isinstance(net, _Net)
    hp, net = _hyperparameters(net, data, trainer, loss_cfg, loss_name, total_steps)
    on_device = data.pipeline.cache is not None
    bf16 = trainer.precision == "bf16"
    train_chunk = _train_chunk_fn(net, loss_name, trainer.optimizer, traced_rates, on_device, bf16)
    matrix = replicate(jnp.asarray(data.pipeline.cache), mesh) if on_device else None
    smoothing = loss_cfg.label_smoothing if loss_name == "cross_entropy" else 0.0
    hp_on, smooth = replicate(hp, mesh), replicate(jnp.asarray(smoothing, jnp.float32), mesh)

    def arguments(carry, xs, ys, valid):
        state, k = carry
        k, sub = jax.random.split(k)
        inputs = (matrix, shard(xs, mesh, 1)) if on_device else shard(xs, mesh, 1)
        return k, (state, inputs, shard(ys, mesh, 1), shard(valid, mesh, None), sub, hp_on, smooth)

    def step(carry, xs, ys, valid):
        k, args = arguments(carry, xs, ys, valid)
        state, loss = train_chunk(*args)
        return (state, k), loss

    def compile_step(carry, xs, ys, valid) -> None:
        cast(Any, train_chunk).lower(*arguments(carry, xs, ys, valid)[1]).compile()  # jit's own cache keeps it

    return net, hp, step, compile_step


def _initial_state(
    net: nn.Module, key: jax.Array, batch: int, n_features: int, opt: Optimizer, hp: dict[str, Any], mesh: Any
) -> tuple[Any, Any, Any]:
    """``(params, batch_stats, optimizer state)`` to start from, on the devices of ``mesh``."""
    variables = _init(net, key, batch, n_features)
    params, batch_stats = variables["params"], variables.get("batch_stats", {})
    return replicate((params, batch_stats, opt.init(params, hp)), mesh)


def _hyperparameters(
    net: nn.Module, data: TrainData, trainer: TrainerConfig, loss_cfg: LossConfig, loss_name: str, total_steps: int
) -> tuple[dict[str, Any], nn.Module]:
    """The traced arguments of the compiled step, and the network to compile (canonical for the FC networks)."""
    if loss_cfg.class_weight == "balanced" and loss_name != "cross_entropy":
        raise ValueError(
            f"loss.class_weight 'balanced' weighs the cross entropy of class labels; the '{loss_name}' loss "
            "has no classes to weigh. Set loss.class_weight to 'none'."
        )
    hp = hyperparameters(trainer, total_steps)
    if isinstance(net, _Net):  # the dropout rates are traced too: networks differing only in them share a step
        hp["input_keep"] = jnp.asarray(net.input_keep, jnp.float32)
        hp["dropout"] = jnp.asarray(net.dropout, jnp.float32)
        net = canonical(net)
    if loss_cfg.class_weight == "balanced":
        hp["class_weight"] = jnp.asarray(balanced_weights(data.y[data.idx["train"]], data.n_out))
    return hp, net


def _standardised(data: TrainData) -> tuple[TrainData, float, float]:
    """A regression target standardised on the training split, with its mean and scale; other tasks as they are."""
    if data.task != "regression":
        return data, 0.0, 1.0
    train = data.y[data.idx["train"]]
    mean, std = float(train.mean()), float(train.std()) or 1.0
    return dataclasses.replace(data, y=((data.y - mean) / std).astype(np.float32)), mean, std


def _validation(apply: Callable, data: TrainData, loss_name: str, outputs: list[np.ndarray] | None) -> Evaluate:
    """The evaluation after each epoch: the validation loss (and accuracy) of the current weights.

    With ``outputs``, each epoch's validation outputs are appended to it. Without validation
    cells (a refit on every labelled cell) the metrics are NaN.
    """
    val_idx = data.idx["val"]
    y_val = data.y[val_idx]
    classify = data.task == "classification"

    def evaluate(carry: Any) -> tuple[Any, dict[str, float]]:
        if len(val_idx) == 0:
            return carry, {"val_loss": float("nan"), **({"val_accuracy": float("nan")} if classify else {})}
        out, _ = predict_arrays(apply, variables_of(carry), data.pipeline, val_idx, batch_size=eval_batch(len(val_idx)))
        metrics = {"val_loss": host_loss(loss_name, out, y_val)}
        if classify:
            metrics["val_accuracy"] = float((out.argmax(1) == y_val).mean())
        if outputs is not None:
            outputs.append(out)
        return carry, metrics

    return evaluate


def _init(net, key: jax.Array, batch: int, n_features: int) -> dict:
    """Initial variables: Flax's initialisers, drawn with NumPy for the FC networks.

    Compiling ``net.init`` costs time for every dense layer on a CPU (the random-number
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
