"""Expected gradients (the estimator of shap's ``GradientExplainer``) as one jitted JAX kernel.

For an explained row ``x``, a background set ``{x'}`` and a model ``f`` with ``C`` outputs,
expected gradients estimates

    phi_{g,c}(x) = E_{x' ~ background, t ~ U(0, 1)} [ d f_c(t x + (1 - t) x') / d z_g * (x_g - x'_g) ]

by Monte Carlo over ``n_samples`` draws of ``(x', t)``. Summed over genes, ``phi`` tends to
``f_c(x) - mean f_c(x')`` (completeness), and for a linear ``f`` it equals the exact SHAP
values ``w_g (x_g - mean x'_g)``.

What differs from shap: the whole (cells x samples x classes) computation is one compiled
function. The draws of a chunk of cells are generated inside it, the model is evaluated
once at all ``chunk x n_samples`` interpolation points, and one reverse pass per output
(``jax.jacrev``, i.e. ``vmap`` over output cotangents) gives every class's gradient from
the same draws. Chunks have a fixed shape (the last is padded), so a call compiles once.

Sampling
--------
``"iid"`` is shap's scheme: each draw picks a background row with replacement and
``t ~ U(0, 1)`` independently. ``"stratified"`` (the default) uses stratified ``t``
(``t_i = (i + u_i) / n``, one draw per stratum) and background rows without replacement
(a random permutation; when ``n_samples > n_background`` whole permutations are
concatenated, so every background row is used equally often). Both are unbiased; the
stratified scheme has lower variance, so fewer samples reach the same error. Draws depend
only on ``rng`` and the cell's position, not on ``chunk_size``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np

from .._precision import at_full_precision

if TYPE_CHECKING:
    from flax import linen as nn

SAMPLINGS = ("stratified", "iid")


@dataclass(frozen=True)
class NetworkOutput:
    """The explained function of a Flax network from ``autogenome_sc.nn``, in eval mode.

    ``output="probability"`` explains the softmax class probabilities (what shap's
    GradientExplainer explains when given a classifier that ends in a softmax, the usual
    choice), divided by the model's calibration ``temperature`` so that they are the
    probabilities written to ``ag_confidence``; ``"logit"`` explains the raw outputs.
    ``scale``/``shift`` map a regression network's standardised output back to the target's units.
    """

    net: nn.Module
    output: str = "probability"
    scale: float = 1.0
    shift: float = 0.0
    temperature: float = 1.0

    def __call__(self, variables, x):
        out, _ = self.net.apply(variables, x, train=False)
        if self.output == "probability":
            return jax.nn.softmax(out / self.temperature, axis=-1)
        return out * self.scale + self.shift


def _cell_draws(key, n_samples: int, n_background: int, sampling: str):
    """Background row indices and interpolation points ``t`` of one cell."""
    kt, kb = jax.random.split(key)
    if sampling == "iid":
        t = jax.random.uniform(kt, (n_samples,))
        idx = jax.random.randint(kb, (n_samples,), 0, n_background)
        return idx, t
    u = jax.random.uniform(kt, (n_samples,))
    t = (jnp.arange(n_samples) + u) / n_samples
    reps = -(-n_samples // n_background)
    perms = jnp.argsort(jax.random.uniform(kb, (reps, n_background)), axis=-1)  # random permutations
    return perms.reshape(-1)[:n_samples].astype(jnp.int32), t


@partial(jax.jit, static_argnames=("n_samples", "n_background", "sampling"))
def _draws(key, cells, *, n_samples: int, n_background: int, sampling: str):
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(cells)
    return jax.vmap(lambda k: _cell_draws(k, n_samples, n_background, sampling))(keys)


@partial(jax.jit, static_argnames=("f",))
def _phi(f, variables, x, background, idx, t):
    """phi[b, g, c] for a chunk: x [B, G], idx/t [B, S] -> [B, G, C]."""
    ref = background[idx]  # [B, S, G]
    delta = x[:, None, :] - ref
    tt = t[..., None]
    z = tt * x[:, None, :] + (1 - tt) * ref  # shap's formula (same rounding)
    b, s, g = z.shape

    def summed(zf):  # rows are independent in eval mode: d sum_rows f / d z = per-row gradients
        return f(variables, zf).sum(axis=0)

    jac = jax.jacrev(summed)(z.reshape(b * s, g))  # [C, B*S, G]: one reverse pass per output
    jac = jac.reshape(-1, b, s, g)
    return jnp.einsum("cbsg,bsg->bgc", jac, delta) / s


@partial(jax.jit, static_argnames=("f",))
def _forward(f, variables, x):
    return f(variables, x)


@at_full_precision
def model_output(f: Callable, variables: Any, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """``f(variables, x)`` in fixed-shape batches, on the host."""
    x = np.asarray(x, np.float32)
    bs = int(min(batch_size, len(x)))
    outs = []
    for s in range(0, len(x), bs):
        blk = x[s : s + bs]
        n = len(blk)
        if n < bs:
            blk = np.concatenate([blk, np.zeros((bs - n, x.shape[1]), np.float32)])
        outs.append(np.asarray(_forward(f, variables, jnp.asarray(blk)))[:n])
    return np.concatenate(outs)


def auto_chunk_size(n_samples: int, n_genes: int, n_outputs: int, budget_mb: float = 64.0) -> int:
    """Cells per chunk so that the Jacobians of a chunk take about ``budget_mb``."""
    per_cell = 4.0 * n_samples * n_genes * (n_outputs + 3)
    return int(max(1, min(1024, budget_mb * 2**20 // per_cell)))


@at_full_precision
def expected_gradients(
    f: Callable,
    variables: Any,
    x: np.ndarray,
    background: np.ndarray | jax.Array,
    *,
    n_samples: int = 200,
    sampling: str = "stratified",
    draws: tuple[np.ndarray, np.ndarray] | None = None,
    chunk_size: int | None = None,
    rng: int | jax.Array = 0,
) -> np.ndarray:
    """SHAP values by expected gradients for every row of ``x`` and every output of ``f``.

    Parameters
    ----------
    f
        A hashable pure function ``f(variables, x[n, genes]) -> outputs[n, C]`` whose rows
        do not interact (e.g. :class:`NetworkOutput`; a network in eval mode).
    variables
        The pytree passed to ``f`` (network weights).
    x
        Explained rows, ``(cells, genes)``, in the model's input space.
    background
        Background rows, ``(n_background, genes)``.
    n_samples
        Monte-Carlo draws per cell (shared by all outputs).
    sampling
        ``"stratified"`` (stratified ``t``, background without replacement) or ``"iid"``
        (shap's draws); see the module docstring.
    draws
        Explicit ``(background_index[cells, n_samples], t[cells, n_samples])``; overrides
        ``sampling``, ``n_samples`` and ``rng`` (used to compare with other implementations).
    chunk_size
        Cells per compiled call; by default chosen so a chunk's Jacobians take ~64 MB.
    rng
        Seed (or a ``jax.random`` key) of the draws.

    Returns
    -------
    SHAP values, ``(cells, genes, C)`` float32.
    """
    x = np.asarray(x, np.float32)
    background = jnp.asarray(np.asarray(background, np.float32))
    if x.ndim != 2 or background.ndim != 2 or x.shape[1] != background.shape[1]:
        raise ValueError(
            f"x {x.shape} and background {tuple(background.shape)} must be 2-D with the same number of genes."
        )
    if sampling not in SAMPLINGS:
        raise ValueError(f"Unknown sampling '{sampling}'; choose one of {', '.join(SAMPLINGS)}.")
    n_cells, n_genes = x.shape
    n_bg = background.shape[0]
    n_samples = _n_samples(draws, n_samples, n_cells, n_bg)
    n_out = int(jax.eval_shape(f, variables, jax.ShapeDtypeStruct((1, n_genes), jnp.float32)).shape[-1])
    if chunk_size is None:
        chunk_size = auto_chunk_size(n_samples, n_genes, n_out)
    chunk_size = int(max(1, min(chunk_size, n_cells)))
    key = rng if isinstance(rng, jax.Array) else jax.random.key(int(rng))

    out = np.empty((n_cells, n_genes, n_out), np.float32)
    for s in range(0, n_cells, chunk_size):
        n = min(chunk_size, n_cells - s)
        if draws is None:
            cells = jnp.arange(s, s + chunk_size, dtype=jnp.uint32)
            idx, t = _draws(key, cells, n_samples=n_samples, n_background=n_bg, sampling=sampling)
        else:
            idx = _padded(np.asarray(draws[0][s : s + n], np.int32), chunk_size)
            t = _padded(np.asarray(draws[1][s : s + n], np.float32), chunk_size)
        xb = _padded(x[s : s + n], chunk_size)
        phi = _phi(f, variables, jnp.asarray(xb), background, jnp.asarray(idx), jnp.asarray(t))
        out[s : s + n] = np.asarray(phi)[:n]
    return out


def _n_samples(draws: tuple[np.ndarray, np.ndarray] | None, n_samples: int, n_cells: int, n_bg: int) -> int:
    """Draws per cell: ``n_samples``, or the width of explicit ``draws``, checked against the cells and background."""
    if draws is None:
        if int(n_samples) < 1:
            raise ValueError(f"n_samples must be at least 1, got {n_samples}.")
        return int(n_samples)
    idx_all, t_all = (np.asarray(d) for d in draws)
    if idx_all.shape != t_all.shape or idx_all.shape[0] != n_cells or idx_all.ndim != 2:
        raise ValueError(f"draws must be two arrays of shape (cells={n_cells}, n_samples).")
    if idx_all.min() < 0 or idx_all.max() >= n_bg:
        raise ValueError(f"draws index the background out of range (it has {n_bg} rows).")
    return int(idx_all.shape[1])


def _padded(rows: np.ndarray, n: int) -> np.ndarray:
    """``rows`` followed by zero rows up to ``n`` rows (every chunk has one shape, so a call compiles once)."""
    if len(rows) == n:
        return rows
    return np.concatenate([rows, np.zeros((n - len(rows), *rows.shape[1:]), rows.dtype)])
