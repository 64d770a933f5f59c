"""optax optimizers with Smith's one-cycle policy: rate up then down, momentum the reverse."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def one_cycle(cfg, total_steps: int):
    """Learning-rate and momentum schedules of one cycle over ``total_steps``."""
    lr = optax.cosine_onecycle_schedule(
        transition_steps=max(total_steps, 2),
        peak_value=cfg.learning_rate,
        pct_start=cfg.pct_start,
        div_factor=25.0,
        final_div_factor=1e4,
    )
    start_lr = cfg.learning_rate / 25.0
    mom_hi = cfg.momentum
    mom_lo = max(cfg.momentum - 0.1, 0.5)

    def momentum(step):
        frac = jnp.clip((lr(step) - start_lr) / (cfg.learning_rate - start_lr), 0.0, 1.0)
        return mom_hi - (mom_hi - mom_lo) * frac

    return lr, momentum


def _decay_mask(params):
    return jax.tree.map(lambda p: p.ndim > 1, params)  # kernels only, not biases or BatchNorm


def make_optimizer(cfg, total_steps: int) -> optax.GradientTransformation:
    """AdamW (beta1 = momentum) or SGD with Nesterov momentum, both one-cycle, with clipping."""
    lr, mom = one_cycle(cfg, total_steps)
    if cfg.optimizer == "adamw":
        opt = optax.inject_hyperparams(optax.adamw)(
            learning_rate=lr, b1=mom, weight_decay=cfg.weight_decay, mask=_decay_mask
        )
        return optax.chain(optax.clip_by_global_norm(cfg.grad_clip), opt)
    opt = optax.inject_hyperparams(optax.sgd)(learning_rate=lr, momentum=mom, nesterov=True)
    return optax.chain(
        optax.clip_by_global_norm(cfg.grad_clip), optax.add_decayed_weights(cfg.weight_decay, _decay_mask), opt
    )
