"""The VAE trainer: its compiled chunk step (the ELBO with a KL warm-up) and its validation ELBO.

Its epochs are the shared :func:`~autogenome_sc.train._epochs.run_epochs`, with early
stopping on the validation ELBO, as for :func:`autogenome_sc.train.fit`: the compiled
``train_chunk`` runs ``lax.scan`` (:func:`~autogenome_sc.train._loop.masked_scan`) over K
minibatches already on the device, every chunk has one shape, so a fit compiles
``train_chunk`` and the validation step once each (``FitResult.n_traces``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from functools import lru_cache, partial
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, cast

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ..data import Pipeline, TrainData
from ..nn import ResVAE
from ._epochs import EarlyStopping, FitResult, run_epochs, variables_of
from ._loop import _TRACES, eval_batch, masked_scan, watch_traces  # one trace counter, one scanned loop
from ._optim import make_optimizer
from ._parallel import batch_mesh, replicate, shard

if TYPE_CHECKING:
    from ..config._schema import TrainerConfig


@lru_cache(maxsize=32)
def make_terms(net) -> Callable:
    """A jitted ``(variables, x, n_valid, key) -> (sum of reconstruction NLL, sum of KL)`` over valid rows.

    Cached by network (Flax modules compare by their attributes), so every fit, evaluation
    and saved model of one architecture shares the compiled function.
    """

    def terms(variables, x, n_valid, key):
        recon, kl = net.apply(variables, x, train=False, rngs={"noise": key}, method="terms")
        ok = jnp.arange(x.shape[0]) < n_valid
        return jnp.where(ok, recon, 0.0).sum(), jnp.where(ok, kl, 0.0).sum()

    return jax.jit(_TRACES.counted(terms, ("terms", net)))


def evaluate_elbo(
    terms: Callable[[Mapping[str, Any], jax.Array, int, jax.Array], tuple[jax.Array, jax.Array]],
    variables: Mapping[str, Any],
    pipeline: Pipeline,
    idx: np.ndarray,
    key: jax.Array,
    batch_size: int = 512,
) -> dict:
    """Mean per-cell ELBO (KL weight 1), reconstruction NLL and KL of rows ``idx``.

    One sampled code per cell from ``key``, so the same key gives the same value.
    """
    bs = eval_batch(len(idx), batch_size)
    rec = kl = 0.0
    for i, (x, n) in enumerate(pipeline.eval_batches(idx, bs)):
        r, k = terms(variables, jnp.asarray(x), n, jax.random.fold_in(key, i))
        rec += float(r)
        kl += float(k)
    n = max(len(idx), 1)
    return {"elbo": -(rec + kl) / n, "recon": rec / n, "kl": kl / n}


@lru_cache(maxsize=16)
def _train_chunk_fn(net, trainer_json: str, total_steps: int, warm_steps: float, use_warmup: bool):
    """The compiled chunk step and its optimizer, cached by everything that defines them."""
    trainer = cast("TrainerConfig", SimpleNamespace(**json.loads(trainer_json)))  # its fields, from the cache key
    tx = make_optimizer(trainer, total_steps)

    def train_chunk(state, xs, valid, key):
        def step(carry, inp, k):
            params, bstats, opt_state, t = carry
            (x,) = inp
            k_d, k_n = jax.random.split(k)
            beta = jnp.minimum(1.0, t / warm_steps) if use_warmup else 1.0

            def objective(p):
                (recon, kl), upd = net.apply(
                    {"params": p, "batch_stats": bstats},
                    x,
                    train=True,
                    rngs={"dropout": k_d, "noise": k_n},
                    mutable=["batch_stats"],
                    method="terms",
                )
                return (recon + beta * kl).mean(), ((recon + kl).mean(), upd["batch_stats"])

            (_, (neg_elbo, new_bstats)), grads = jax.value_and_grad(objective, has_aux=True)(params)
            updates, new_opt = tx.update(grads, opt_state, params)
            return (optax.apply_updates(params, updates), new_bstats, new_opt, t + 1), neg_elbo

        return masked_scan(step, state, (xs,), valid, jax.random.split(key, xs.shape[0]))

    return jax.jit(_TRACES.counted(train_chunk, ("train_chunk", net))), tx


def fit_vae(
    net: ResVAE,
    data: TrainData,
    trainer: TrainerConfig,
    key: jax.Array,
    *,
    kl_warmup: int = 10,
    callback: Callable[[int, dict], None] | None = None,
    desc: str = "training VAE",
) -> FitResult:
    """Train a (Res-)VAE on ``data`` with early stopping on the validation ELBO.

    Parameters
    ----------
    net
        A :class:`autogenome_sc.nn.ResVAE`.
    data
        An unlabelled problem from :func:`autogenome_sc.data.prepare_unsupervised`.
    trainer
        The ``trainer`` section of the config (optimizer, rate, batch size, epochs, patience).
    key
        PRNG key for initialisation, shuffling, dropout and the sampled codes.
    kl_warmup
        Epochs over which the KL weight rises linearly from 0 to 1. Early stopping counts
        only after the warm-up; the validation ELBO always uses weight 1.
    callback
        Called after each epoch with ``(epoch, metrics)``; may raise to stop (pruning).

    Returns
    -------
    The :class:`~autogenome_sc.train.FitResult` of the epoch with the best validation ELBO;
    ``best_val_loss`` is the negative validation ELBO per cell.
    """
    mesh, batch = batch_mesh(trainer.data_parallel, data.batch_size_for(trainer.batch_size))
    steps_per_epoch, _ = data.steps_per_chunk(batch)
    total_steps = trainer.max_epochs * steps_per_epoch
    warm_steps = float(max(kl_warmup * steps_per_epoch, 1))
    trainer_json = json.dumps(trainer.model_dump(mode="json"), sort_keys=True)
    train_chunk, tx = _train_chunk_fn(net, trainer_json, total_steps, warm_steps, kl_warmup > 0)
    n_traces = watch_traces(net, "train_chunk", "terms")

    k_init, k_noise, k_shuffle, k_drop, k_val = jax.random.split(key, 5)
    x0 = jnp.zeros((batch, data.pipeline.n_features), jnp.float32)
    variables = jax.jit(partial(net.init, train=False))({"params": k_init, "noise": k_noise}, x0)
    params, batch_stats = variables["params"], variables.get("batch_stats", {})
    state = replicate((params, batch_stats, tx.init(params), jnp.zeros((), jnp.int32)), mesh)
    terms = make_terms(net)
    np_rng = np.random.default_rng(int(jax.random.randint(k_shuffle, (), 0, 2**31 - 1)))

    def step(carry, xs, ys, valid):
        state, k = carry
        k, sub = jax.random.split(k)
        state, loss = train_chunk(state, shard(xs, mesh, 1), shard(valid, mesh, None), sub)
        return (state, k), loss

    def evaluate(carry):
        ev = evaluate_elbo(terms, variables_of(carry), data.pipeline, data.idx["val"], k_val)
        return carry, {"val_loss": -ev["elbo"], "val_recon": ev["recon"], "val_kl": ev["kl"]}

    stopper = EarlyStopping(trainer.patience, start=kl_warmup)  # patience counts after the warm-up
    run = run_epochs(
        step,
        (state, k_drop),
        partial(data.train_chunks, batch, np_rng),
        evaluate,
        stopper,
        n_epochs=trainer.max_epochs,
        desc=desc,
        callback=callback,
        postfix=lambda m: {"train": f"{m['train_loss']:.1f}", "val": f"{m['val_loss']:.1f}"},
    )
    n_devices = 1 if mesh is None else mesh.size
    return stopper.result(run.history, "validation ELBO", n_traces=n_traces(), n_devices=n_devices)


@lru_cache(maxsize=32)
def make_embed(net) -> Callable:
    """A jitted ``(variables, x) -> posterior mean`` (cached by network)."""
    return jax.jit(partial(net.apply, method="embed"))


@lru_cache(maxsize=32)
def make_reconstruct(net) -> Callable:
    """A jitted ``(variables, x) -> reconstruction`` from the posterior mean (cached by network)."""
    return jax.jit(lambda variables, x: net.apply(variables, x, train=False)[0])


def embed_arrays(
    embed: Callable[[Mapping[str, Any], jax.Array], jax.Array],
    variables: Mapping[str, Any],
    pipeline: Pipeline,
    idx: np.ndarray,
    batch_size: int = 1024,
) -> np.ndarray:
    """Posterior means of rows ``idx`` in fixed-shape batches (one compilation)."""
    out = [np.asarray(embed(variables, jnp.asarray(x))[:n]) for x, n in pipeline.eval_batches(idx, batch_size)]
    return np.concatenate(out)
