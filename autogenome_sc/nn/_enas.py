"""RRFCN by ENAS: the weight-sharing supernet, the standalone RRFCN and the LSTM controller.

An architecture of ``N`` nodes is a pair of integer arrays: ``width_idx[N]`` (index into the
width options, per node; node 0 always has ``first_width``) and ``skip[N, N]`` (lower
triangular; ``skip[i, j] = 1`` feeds node ``j``'s output into node ``i``; only ``j < i - 1``
is read, node ``i - 1`` always feeds node ``i``). Inputs of a node are concatenated, as the
paper modified ENAS. :class:`SuperNet` takes these arrays as *traced* inputs: every output is
padded to the largest width and multiplied by its width mask, every skip input by its bit, so
one compilation serves every child. :class:`RRFCN` is one child built on its own, with exactly
the chosen widths and edges, for retraining from scratch and saving.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from ._fc import FCUnit, _Net

DEFAULT_WIDTHS = (16, 32, 64, 128, 256, 512, 1024, 2048)


class SuperNet(nn.Module):
    """All RRFCN children of ``n_nodes`` FC units in one network with shared weights.

    ``__call__(x, width_idx, skip, train, deterministic=None)`` returns ``(output, embedding)``.
    ``train`` selects BatchNorm batch statistics; ``deterministic`` (default ``not train``)
    turns dropout off, so ``train=True, deterministic=True`` evaluates a child with batch
    statistics and no dropout (the running statistics are shared by all children and fit none).
    """

    n_out: int
    n_nodes: int = 6
    first_width: int = 2048
    widths: Sequence[int] = DEFAULT_WIDTHS
    input_keep: float = 1.0
    activation: str = "relu"
    dropout: float = 0.0

    @nn.compact
    def __call__(self, x, width_idx, skip, train: bool = False, deterministic: bool | None = None):
        det = (not train) if deterministic is None else deterministic
        if self.input_keep < 1.0:
            x = nn.Dropout(1.0 - self.input_keep, deterministic=det)(x)
        big = max(max(self.widths), self.first_width)
        ar = jnp.arange(big)
        options = jnp.asarray(self.widths)

        def drop(h):
            return nn.Dropout(self.dropout, deterministic=det)(h) if self.dropout > 0 else h

        h0 = FCUnit(self.first_width, self.activation)(x, train)
        outs = [drop(jnp.pad(h0, ((0, 0), (0, big - self.first_width))))]
        for i in range(1, self.n_nodes):
            parts = [outs[i - 1]] + [outs[j] * skip[i, j].astype(x.dtype) for j in range(i - 1)]
            h = FCUnit(big, self.activation)(jnp.concatenate(parts, axis=-1), train)
            mask = (ar < options[width_idx[i]]).astype(x.dtype)
            outs.append(drop(h * mask))
        emb = outs[-1]
        return nn.Dense(self.n_out, name="head")(emb), emb


class RRFCN(_Net):
    """A randomly-wired residual FC network: one architecture found by ENAS, standalone.

    ``widths[i]`` is node ``i``'s width; ``edges`` lists ``(source, target)`` pairs, chain
    edges ``(i - 1, i)`` included; each node takes the concatenation of its sources' outputs
    (node 0 reads the input) and the head reads the last node.
    """

    widths: Sequence[int] = (2048, 256, 256, 256, 256, 256)
    edges: Sequence[Sequence[int]] = ()

    def backbone(self, x: jax.Array, train: bool, rate: float | jax.Array | None = None) -> jax.Array:
        n = len(self.widths)
        sources = {i: sorted({int(s) for s, t in self.edges if int(t) == i}) for i in range(1, n)}
        for i, src in sources.items():
            if not src or any(s >= i or s < 0 for s in src):
                raise ValueError(f"RRFCN node {i} needs at least one input from an earlier node; got {src}.")
        outs = [self.unit(int(self.widths[0]))(x, train, rate)]
        for i in range(1, n):
            inp = jnp.concatenate([outs[s] for s in sources[i]], axis=-1)
            outs.append(self.unit(int(self.widths[i]))(inp, train, rate))
        return outs[-1]


class Controller(nn.Module):
    """LSTM policy over RRFCN architectures (ENAS macro search, adapted to FC units).

    Node by node the LSTM emits a width (softmax over the options; node 0's width is fixed)
    and, for each earlier node ``j < i - 1``, a skip bit with probability
    ``sigmoid(v^T tanh(W1 h_j + W2 h_i))`` (attention over earlier hidden states). Called
    with a key it samples; called with ``width_idx, skip`` it scores them (teacher forcing).
    Returns ``(width_idx[N], skip[N, N], log_prob, entropy)``.
    """

    n_nodes: int = 6
    n_widths: int = len(DEFAULT_WIDTHS)
    hidden: int = 32

    @nn.compact
    def __call__(self, key, width_idx=None, skip=None):
        forced = width_idx is not None
        n, hid = self.n_nodes, self.hidden
        cell = nn.OptimizedLSTMCell(hid, name="lstm")
        embed = nn.Embed(self.n_widths, hid, name="width_embed")
        start = self.param("start", nn.initializers.normal(0.1), (hid,))
        width_head = nn.Dense(self.n_widths, name="width_head")
        w1 = nn.Dense(hid, use_bias=False, name="w1")
        w2 = nn.Dense(hid, use_bias=False, name="w2")
        v = nn.Dense(1, use_bias=False, name="v")

        carry = cell.initialize_carry(jax.random.key(0), (hid,))
        carry, h = cell(carry, start)
        hs = [h]
        keys = jax.random.split(key, 2 * n)
        widths = [jnp.zeros((), jnp.int32)]
        skip_rows = [jnp.zeros((n,), jnp.int32)]
        logp = jnp.zeros(())
        ent = jnp.zeros(())
        for i in range(1, n):
            carry, h = cell(carry, embed(widths[-1]) if i > 1 else start)
            logits = width_head(h)
            lsm = jax.nn.log_softmax(logits)
            w = width_idx[i] if forced else jax.random.categorical(keys[2 * i], logits)
            w = w.astype(jnp.int32)
            logp += lsm[w]
            ent -= jnp.sum(jnp.exp(lsm) * lsm)
            row = jnp.zeros((n,), jnp.int32)
            if i >= 2:
                prev = jnp.stack(hs[: i - 1])  # nodes j < i - 1
                z = v(jnp.tanh(w1(prev) + w2(h)))[:, 0]
                if forced:
                    bits = skip[i, : i - 1].astype(jnp.int32)
                else:
                    bits = jax.random.bernoulli(keys[2 * i + 1], jax.nn.sigmoid(z)).astype(jnp.int32)
                lp1, lp0 = jax.nn.log_sigmoid(z), jax.nn.log_sigmoid(-z)
                logp += jnp.sum(jnp.where(bits == 1, lp1, lp0))
                ent -= jnp.sum(jnp.exp(lp1) * lp1 + jnp.exp(lp0) * lp0)
                row = row.at[: i - 1].set(bits)
            widths.append(w)
            skip_rows.append(row)
            hs.append(h)
        return jnp.stack(widths), jnp.stack(skip_rows), logp, ent


def sample_uniform(key, n_nodes: int, n_widths: int):
    """One architecture drawn uniformly: widths uniform, each allowed skip bit with p = 0.5."""
    kw, ks = jax.random.split(key)
    w = jax.random.randint(kw, (n_nodes,), 0, n_widths).at[0].set(0)
    allowed = jnp.tril(jnp.ones((n_nodes, n_nodes), bool), k=-2)
    s = (jax.random.bernoulli(ks, 0.5, (n_nodes, n_nodes)) & allowed).astype(jnp.int32)
    return w.astype(jnp.int32), s


def to_architecture(width_idx, skip, widths: Sequence[int], first_width: int) -> dict:
    """Integer arrays -> ``{"widths": [...], "edges": [[source, target], ...]}`` (chain edges included)."""
    import numpy as np

    width_idx, skip = np.asarray(width_idx), np.asarray(skip)
    n = len(width_idx)
    ws = [int(first_width)] + [int(widths[int(width_idx[i])]) for i in range(1, n)]
    edges = []
    for i in range(1, n):
        edges += [[j, i] for j in range(i - 1) if skip[i, j]]
        edges.append([i - 1, i])
    return {"widths": ws, "edges": sorted(edges, key=lambda e: (e[1], e[0]))}


__all__ = ["DEFAULT_WIDTHS", "RRFCN", "Controller", "SuperNet", "sample_uniform", "to_architecture"]
