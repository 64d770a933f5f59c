"""optax optimizers with Smith's one-cycle policy: rate up then down, momentum the reverse.

The hyperparameters (peak rate, momentum, weight decay, clipping norm, schedule length)
are arrays in the optimizer state, never constants of the compiled code: every trial of
a search that shares an architecture and a batch shape reuses one compiled training step,
whatever rates it draws (and so does every fold of a cross-validation).
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp
import numpy as np
import optax

if TYPE_CHECKING:
    from ..config._schema import TrainerConfig

DIV_FACTOR = 25.0  # the rate starts at peak / 25
FINAL_DIV_FACTOR = 1e4  # and ends at start / 1e4


def one_cycle_values(step, total, peak, pct_start, momentum):
    """Rate and momentum at ``step`` of a one-cycle schedule (cosine up, cosine down), traceable."""
    step = jnp.asarray(step, jnp.float32)
    total = jnp.maximum(jnp.asarray(total, jnp.float32), 2.0)
    start = peak / DIV_FACTOR
    final = start / FINAL_DIV_FACTOR
    up = jnp.maximum(jnp.floor(pct_start * total), 1.0)
    frac_up = jnp.clip(step / up, 0.0, 1.0)
    frac_down = jnp.clip((step - up) / jnp.maximum(total - up, 1.0), 0.0, 1.0)
    rising = peak + (start - peak) * 0.5 * (1.0 + jnp.cos(jnp.pi * frac_up))
    falling = final + (peak - final) * 0.5 * (1.0 + jnp.cos(jnp.pi * frac_down))
    lr = jnp.where(step < up, rising, falling)
    mom_lo = jnp.maximum(momentum - 0.1, 0.5)
    frac = jnp.clip((lr - start) / jnp.maximum(peak - start, 1e-30), 0.0, 1.0)
    return lr, momentum - (momentum - mom_lo) * frac


def one_cycle(cfg: TrainerConfig, total_steps: int) -> tuple[optax.Schedule, optax.Schedule]:
    """Learning-rate and momentum schedules (callables of the step) of one cycle over ``total_steps``."""

    def lr(step):
        return one_cycle_values(step, total_steps, cfg.learning_rate, cfg.pct_start, cfg.momentum)[0]

    def momentum(step):
        return one_cycle_values(step, total_steps, cfg.learning_rate, cfg.pct_start, cfg.momentum)[1]

    return lr, momentum


def _decay_mask(params):
    return jax.tree.map(lambda p: p.ndim > 1, params)  # kernels only, not biases or BatchNorm


@lru_cache(maxsize=4)
def _transform(optimizer: str) -> optax.GradientTransformation:
    """The optimizer with every hyperparameter injected (set per step by :func:`with_schedule`)."""
    clip = optax.inject_hyperparams(optax.clip_by_global_norm)(max_norm=1.0)
    if optimizer == "adamw":
        opt = optax.inject_hyperparams(optax.adamw)(learning_rate=0.0, b1=0.9, weight_decay=0.0, mask=_decay_mask)
        return optax.chain(clip, opt)
    decay = optax.inject_hyperparams(optax.add_decayed_weights)(weight_decay=0.0, mask=_decay_mask)
    opt = optax.inject_hyperparams(optax.sgd)(learning_rate=0.0, momentum=0.9, nesterov=True)
    return optax.chain(clip, decay, opt)


def hyperparameters(cfg: TrainerConfig, total_steps: int) -> dict:
    """The trainer section's numbers as float32 arrays (the traced arguments of a compiled step)."""
    values = {
        "peak": cfg.learning_rate,
        "total": float(max(total_steps, 2)),
        "pct_start": cfg.pct_start,
        "momentum": cfg.momentum,
        "weight_decay": cfg.weight_decay,
        "grad_clip": cfg.grad_clip,
        "l2": getattr(cfg, "l2", 0.0),
    }
    return {k: jnp.asarray(v, jnp.float32) for k, v in values.items()}


class Optimizer:
    """One-cycle AdamW (beta1 = momentum) or SGD with Nesterov momentum, with gradient clipping.

    ``init(params, hp)`` and ``update(grads, state, params, hp)``: ``hp`` from
    :func:`hyperparameters`; the step count lives in the state.
    """

    def __init__(self, optimizer: str):
        self.kind = optimizer
        self.tx = _transform(optimizer)

    def init(self, params, hp: dict):
        # zeros of the state's shapes, made by NumPy: optax's own init runs one small compiled
        # op per parameter shape (about a second for a DenseNet, more than its training here)
        shapes = jax.eval_shape(self.tx.init, params)
        zeros = jax.tree.map(lambda s: jnp.asarray(np.zeros(s.shape, s.dtype)), shapes)
        # the injected hyperparameters (Adam's b2 and eps, ...) do not depend on the parameters
        dummy = self.tx.init({"w": jnp.zeros((1,), jnp.float32)})
        state = tuple(
            z._replace(hyperparams=d.hyperparams) if hasattr(z, "hyperparams") else z
            for z, d in zip(zeros, dummy, strict=True)
        )
        return self._set(state, hp, jnp.zeros((), jnp.int32))

    def _set(self, state, hp: dict, step):
        lr, mom = one_cycle_values(step, hp["total"], hp["peak"], hp["pct_start"], hp["momentum"])
        clip, *rest = state
        clip = clip._replace(hyperparams={**clip.hyperparams, "max_norm": hp["grad_clip"]})
        if self.kind == "adamw":
            (opt,) = rest
            hps = {**opt.hyperparams, "learning_rate": lr, "b1": mom, "weight_decay": hp["weight_decay"]}
            return (clip, opt._replace(hyperparams=hps))
        decay, opt = rest
        decay = decay._replace(hyperparams={**decay.hyperparams, "weight_decay": hp["weight_decay"]})
        opt = opt._replace(hyperparams={**opt.hyperparams, "learning_rate": lr, "momentum": mom})
        return (clip, decay, opt)

    def update(self, grads, state, params, hp: dict):
        step = state[-1].count  # the steps taken so far: the rate of this step
        updates, new_state = self.tx.update(grads, self._set(state, hp, step), params)
        return updates, new_state


def make_optimizer(cfg: TrainerConfig, total_steps: int) -> optax.GradientTransformation:
    """An optax transformation of the one-cycle optimizer with ``cfg``'s values built in.

    For code that wants a plain ``optax.GradientTransformation`` (the ENAS loop); the
    supervised trainer uses :class:`Optimizer`, whose values are traced.
    """
    opt = Optimizer(cfg.optimizer)
    hp = hyperparameters(cfg, total_steps)

    def init(params):
        return opt.init(params, hp)

    def update(grads, state, params=None):
        return opt.update(grads, state, params, hp)

    return optax.GradientTransformation(init, update)
