"""The training loop: a whole chunk of minibatches per compiled call, early stopping.

Each call of the compiled ``train_chunk`` runs ``lax.scan`` over K minibatches already on
the device, so Python dispatch costs once per chunk rather than once per step. All chunks
share one shape (padding steps are masked), so a fit compiles ``train_chunk`` and
``apply`` once each; :attr:`FitResult.n_traces` records it and the tests check it.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax

from .. import _logging as logg
from ..data import TrainData
from ._losses import LOSSES, host_loss
from ._optim import make_optimizer
from ._parallel import batch_mesh, replicate, shard


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


class EarlyStopping:
    """Keep the weights of the epoch with the lowest validation loss; stop after ``patience`` worse epochs.

    Epochs before ``start`` (e.g. a KL warm-up) never count toward the patience.
    """

    def __init__(self, patience: int, start: int = 0):
        self.patience, self.start = patience, start
        self.loss, self.epoch, self.variables, self.wait = np.inf, -1, None, 0

    def update(self, epoch: int, val_loss: float, train_loss: float, variables) -> bool:
        """Record one epoch; return whether training should stop."""
        if val_loss < self.loss - 1e-7:
            self.loss, self.epoch, self.variables, self.wait = val_loss, epoch, jax.device_get(variables), 0
        elif epoch >= self.start:
            self.wait += 1
        return self.wait >= self.patience or not np.isfinite(train_loss)

    def result(self, hist: dict, what: str, **extra) -> FitResult:
        """The :class:`FitResult` of the kept epoch; a sentence if no epoch had a finite loss."""
        if self.variables is None:
            raise FloatingPointError(f"Training diverged (non-finite {what}); lower the learning rate.")
        return FitResult(
            variables=self.variables,
            history={k: np.asarray(v) for k, v in hist.items()},
            best_epoch=self.epoch,
            best_val_loss=float(self.loss),
            **extra,
        )


def make_apply(net) -> Callable:
    """A jitted inference function ``(variables, x) -> (output, embedding)``."""
    return jax.jit(partial(net.apply, train=False))


def predict_arrays(apply, variables, pipeline, idx: np.ndarray, batch_size: int = 1024):
    """Outputs and embeddings of rows ``idx``, in fixed-shape batches (one compilation)."""
    outs = embs = None
    start = 0
    for x, n in pipeline.eval_batches(idx, batch_size):
        out, emb = apply(variables, jnp.asarray(x))
        if outs is None:  # filled in place: no list of blocks plus a concatenated copy
            outs = np.empty((len(idx), *out.shape[1:]), np.float32)
            embs = np.empty((len(idx), *emb.shape[1:]), np.float32)
        outs[start : start + n] = out[:n]
        embs[start : start + n] = emb[:n]
        start += n
    return outs, embs


def _counted(fn, counter: dict, name: str):
    def wrapped(*args):
        counter[name] = counter.get(name, 0) + 1  # runs only while tracing
        return fn(*args)

    return wrapped


def fit(
    net,
    data: TrainData,
    trainer,
    loss_cfg,
    key: jax.Array,
    *,
    callback: Callable[[int, dict], None] | None = None,
    desc: str = "training",
) -> FitResult:
    """Train ``net`` on ``data`` with early stopping on the validation loss.

    Parameters
    ----------
    net
        A Flax module returning ``(output, embedding)``.
    data
        The prepared problem (see :func:`autogenome_sc.data.prepare`).
    trainer, loss_cfg
        The ``trainer`` and ``loss`` sections of the config.
    key
        PRNG key for initialisation, shuffling and dropout.
    callback
        Called after each epoch with ``(epoch, metrics)``; may raise to stop (pruning).
    """
    loss_name = _loss_name(loss_cfg.name, data.task)
    loss_fn = LOSSES[loss_name]
    smoothing = loss_cfg.label_smoothing if loss_name == "cross_entropy" else 0.0
    mesh, batch = batch_mesh(trainer.data_parallel, data.batch_size_for(trainer.batch_size))
    steps_per_epoch, k = data.steps_per_chunk(batch)
    tx = make_optimizer(trainer, trainer.max_epochs * steps_per_epoch)

    y = data.y
    t_mean, t_std = 0.0, 1.0
    if data.task == "regression":  # standardise the target on the training split
        t_mean = float(y[data.idx["train"]].mean())
        t_std = float(y[data.idx["train"]].std()) or 1.0
        y = ((y - t_mean) / t_std).astype(np.float32)
        data = dataclasses.replace(data, y=y)

    k_init, k_shuffle, k_drop = jax.random.split(key, 3)
    variables = net.init(k_init, jnp.zeros((batch, data.pipeline.n_features), jnp.float32), train=False)
    params, batch_stats = variables["params"], variables.get("batch_stats", {})
    state = replicate((params, batch_stats, tx.init(params)), mesh)
    counts: dict[str, int] = {}

    def train_chunk(state, xs, ys, valid, key):
        def step(carry, inp):
            params, bstats, opt_state = carry
            x, yb, ok, k = inp

            def objective(p):
                (out, _), upd = net.apply(
                    {"params": p, "batch_stats": bstats}, x, train=True, rngs={"dropout": k}, mutable=["batch_stats"]
                )
                return loss_fn(out, yb, smoothing), upd["batch_stats"]

            (loss, new_bstats), grads = jax.value_and_grad(objective, has_aux=True)(params)
            updates, new_opt = tx.update(grads, opt_state, params)
            new = (optax.apply_updates(params, updates), new_bstats, new_opt)
            carry = jax.tree.map(lambda a, b: jnp.where(ok, a, b), new, carry)
            return carry, jnp.where(ok, loss, 0.0)

        state, losses = jax.lax.scan(step, state, (xs, ys, valid, jax.random.split(key, xs.shape[0])))
        return state, losses.sum() / jnp.maximum(valid.sum(), 1)

    train_chunk = jax.jit(_counted(train_chunk, counts, "train_chunk"))
    apply = jax.jit(_counted(partial(net.apply, train=False), counts, "apply"))

    seed = int(jax.random.randint(k_shuffle, (), 0, 2**31 - 1))
    np_rng = np.random.default_rng(seed)
    val_idx = data.idx["val"]
    y_val = y[val_idx]
    hist: dict[str, list] = {"epoch": [], "train_loss": [], "val_loss": [], "train_seconds": []}
    if data.task == "classification":
        hist["val_accuracy"] = []
    stopper = EarlyStopping(trainer.patience)
    bar = logg.progress(range(trainer.max_epochs), desc=desc)
    for epoch in bar:
        total, n, started = 0.0, 0, time.perf_counter()
        for xs, ys, valid in data.train_chunks(batch, np_rng):
            k_drop, sub = jax.random.split(k_drop)
            state, loss = train_chunk(state, shard(xs, mesh, 1), shard(ys, mesh, 1), shard(valid, mesh, None), sub)
            total += float(loss) * int(valid.sum())
            n += int(valid.sum())
        hist["train_seconds"].append(time.perf_counter() - started)  # the loss above waited for the device
        cur = {"params": state[0], "batch_stats": state[1]}
        out, _ = predict_arrays(apply, cur, data.pipeline, val_idx, batch_size=min(1024, max(len(val_idx), 1)))
        val_loss = host_loss(loss_name, out, y_val)
        metrics = {"train_loss": total / max(n, 1), "val_loss": val_loss}
        if data.task == "classification":
            metrics["val_accuracy"] = float((out.argmax(1) == y_val).mean())
        hist["epoch"].append(epoch)
        for name, v in metrics.items():
            hist[name].append(v)
        stop = stopper.update(epoch, val_loss, metrics["train_loss"], cur)
        bar.set_postfix({k_: f"{v:.3f}" for k_, v in metrics.items()}, refresh=False)
        if callback is not None:
            callback(epoch, metrics)
        if stop:
            break
    bar.close()
    return stopper.result(
        hist,
        "validation loss",
        n_traces=dict(counts),
        target_mean=t_mean,
        target_std=t_std,
        n_devices=1 if mesh is None else mesh.size,
    )


def _loss_name(name: str, task: str) -> str:
    if name == "auto":
        return "mse" if task == "regression" else "cross_entropy"
    return name
