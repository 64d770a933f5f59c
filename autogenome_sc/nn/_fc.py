"""The paper's networks of fully-connected (FC) units, as Flax modules.

An FC unit is Dense -> BatchNorm -> activation (paper Fig. 2a; ``batch_norm=False`` leaves
the BatchNorm out, as a plain multilayer perceptron has it); every network starts with
input dropout (the paper's "drop-out ratio of the first layer", given as a keep ratio) and
ends with a linear head. ``__call__`` returns ``(output, embedding)``, the embedding being
the penultimate representation written to ``.obsm["X_ag"]``.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

ACTIVATIONS = {"relu": nn.relu, "gelu": nn.gelu, "silu": nn.silu, "elu": nn.elu, "tanh": jnp.tanh}


def dropout(module: nn.Module, x, rate, train: bool):
    """Inverted dropout with a ``rate`` that may be traced (a search's trials then share one compilation)."""
    if not train:
        return x
    keep = 1.0 - rate
    mask = jax.random.bernoulli(module.make_rng("dropout"), keep, x.shape)
    return jnp.where(mask, x / keep, jnp.zeros_like(x))


class FCUnit(nn.Module):
    """Dense -> BatchNorm -> activation (-> dropout); without ``batch_norm``, Dense -> activation."""

    features: int
    activation: str = "relu"
    dropout: float = 0.0
    batch_norm: bool = True

    @nn.compact
    def __call__(self, x, train: bool, rate=None):
        x = nn.Dense(self.features)(x)
        if self.batch_norm:
            x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
        x = ACTIVATIONS[self.activation](x)
        if self.dropout > 0:
            x = dropout(self, x, self.dropout if rate is None else rate, train)
        return x


class _Net(nn.Module):
    """Input dropout -> backbone -> linear head.

    ``rates = (input_keep, dropout)`` given at call time (possibly traced) replace the
    attributes' values; the attributes still decide whether a dropout layer exists.
    """

    n_out: int
    input_keep: float = 1.0
    activation: str = "relu"
    dropout: float = 0.0
    batch_norm: bool = True

    def backbone(  # pragma: no cover - overridden
        self, x: jax.Array, train: bool, rate: float | jax.Array | None = None
    ) -> jax.Array:
        raise NotImplementedError

    @nn.compact
    def __call__(self, x, train: bool = False, rates=None):
        keep, rate = (self.input_keep, self.dropout) if rates is None else rates
        if self.input_keep < 1.0:
            x = dropout(self, x, 1.0 - keep, train)
        h = self.backbone(x, train, rate)
        return nn.Dense(self.n_out, name="head")(h), h

    def unit(self, features: int):
        return FCUnit(features, self.activation, self.dropout, self.batch_norm)


def canonical(net: nn.Module) -> nn.Module:
    """``net`` with its dropout rates set to fixed stand-ins (same layers, same variables).

    The trainer compiles the canonical network and passes the real rates at call time, so
    networks that differ only in their rates share one compiled step.
    """
    if not isinstance(net, _Net):
        return net
    return net.clone(input_keep=0.5 if net.input_keep < 1.0 else 1.0, dropout=0.5 if net.dropout > 0 else 0.0)


class Linear(_Net):
    """Multinomial logistic regression: input dropout, then one dense layer (no hidden unit).

    The floor of every search; its embedding is its output (the class logits), so ``X_ag``
    stays small however many genes it reads.
    """

    @nn.compact
    def __call__(self, x, train: bool = False, rates=None):
        keep = self.input_keep if rates is None else rates[0]
        if self.input_keep < 1.0:
            x = dropout(self, x, 1.0 - keep, train)
        out = nn.Dense(self.n_out, name="head")(x)
        return out, out


class MLP(_Net):
    """Multilayer perceptron: a stack of FC units."""

    widths: Sequence[int] = (256, 256)

    def backbone(self, x: jax.Array, train: bool, rate: float | jax.Array | None = None) -> jax.Array:
        for w in self.widths:
            x = self.unit(w)(x, train, rate)
        return x


class RFCNResNet(_Net):
    """RFCN-ResNet: an FC unit to ``width``, then ``n_blocks`` units that each add their input."""

    width: int = 256
    n_blocks: int = 3

    def backbone(self, x: jax.Array, train: bool, rate: float | jax.Array | None = None) -> jax.Array:
        x = self.unit(self.width)(x, train, rate)
        for _ in range(self.n_blocks):
            x = x + self.unit(self.width)(x, train, rate)
        return x


class RFCNDenseNet(_Net):
    """RFCN-DenseNet: dense blocks whose units take the concatenation of all earlier outputs.

    An FC unit of width ``2 * growth_rate`` starts; each block of ``block_structure[i]``
    units (each of width ``growth_rate``) is followed, except the last, by a transition FC
    unit that shrinks the concatenated features by ``compression``.
    """

    block_structure: Sequence[int] = (2, 3, 4)
    growth_rate: int = 64
    compression: float = 0.5

    def backbone(self, x: jax.Array, train: bool, rate: float | jax.Array | None = None) -> jax.Array:
        x = self.unit(2 * self.growth_rate)(x, train, rate)
        for b, n_units in enumerate(self.block_structure):
            feats = [x]
            for _ in range(n_units):
                feats.append(self.unit(self.growth_rate)(jnp.concatenate(feats, axis=-1), train, rate))
            x = jnp.concatenate(feats, axis=-1)
            if b < len(self.block_structure) - 1:
                x = self.unit(max(1, int(x.shape[-1] * self.compression)))(x, train, rate)
        return x


MODELS = {"linear": Linear, "mlp": MLP, "resnet": RFCNResNet, "densenet": RFCNDenseNet}


def build_network(arch: dict, n_out: int) -> nn.Module:
    """Build a network from an architecture dict ``{"model": ..., <its hyperparameters>}``."""
    arch = dict(arch)
    if arch.get("model") == "ensemble":
        return _build(arch, n_out)
    name = arch.pop("model")
    arch.pop("input", None)  # an ensemble member's input transform (see Ensemble)
    if name not in MODELS:
        raise ValueError(f"Unknown model '{name}'; choose one of {sorted(MODELS)}.")
    for k in ("widths", "block_structure"):
        if k in arch:
            arch[k] = tuple(arch[k])
    if "edges" in arch:  # RRFCN (nn/_enas.py, registered in MODELS by nn/__init__.py)
        arch["edges"] = tuple(tuple(int(v) for v in e) for e in arch["edges"])
    return MODELS[name](n_out=n_out, **arch)


class InputTransform(nn.Module):
    """Per-gene scaling, and optionally a selection of genes, inside the network.

    ``x -> clip((x[:, genes] - shift) * scale, lo, hi)``, with ``genes``, ``shift`` and
    ``scale`` constants of the ``"inputs"`` variable collection (never trained). An ensemble
    gives each member its own, so members fitted on other folds, scalings or gene subsets
    read one shared input.
    """

    n_genes: int | None = None  # None: every input gene, in order
    lo: float = -float("inf")
    hi: float = float("inf")

    @nn.compact
    def __call__(self, x):
        n = x.shape[-1] if self.n_genes is None else self.n_genes
        if self.n_genes is not None:
            genes = self.variable("inputs", "genes", lambda: jnp.arange(n, dtype=jnp.int32)).value
            x = jnp.take(x, genes, axis=-1)
        shift = self.variable("inputs", "shift", lambda: jnp.zeros(n, jnp.float32)).value
        scale = self.variable("inputs", "scale", lambda: jnp.ones(n, jnp.float32)).value
        x = jnp.clip((x - shift) * scale, self.lo, self.hi)
        return jnp.nan_to_num(x, nan=0.0)


class Ensemble(nn.Module):
    """Weighted average of member networks: class probabilities (returned as log-probabilities) or outputs.

    The embedding is the concatenation of the members' embeddings. Built from
    ``{"model": "ensemble", "average": "probs" | "mean", "weights": [...], "members": [arch, ...]}``
    and optionally ``"temperatures": [...]`` (``"probs"`` only: each member's outputs are divided
    by its own before the softmax, so members whose logits live on other scales are averaged as
    calibrated probabilities); a member architecture with an ``"input"`` entry
    (``{"n_genes": int | None, "clip": [lo, hi] | None}``) reads the shared input through its own
    :class:`InputTransform`.

    ``"average": "stack"`` (a stacked choice of the search, classification) also needs
    ``"groups"`` (per member, its configuration: 0, 1, ...), ``"coef"`` (groups x classes rows of
    classes numbers) and ``"intercept"`` (one per class): each group's members are averaged as
    probabilities by their weights, and the output is the meta-learner's logits,
    ``concat_g log p_g @ coef + intercept``. A group of boosted trees (``logit_groups``, set by
    :func:`build_network` for groups whose members are ``"trees"``) gives the meta-learner its
    members' weighted mean of tempered logits, centred per cell, instead of ``log p_g``: linear in
    the trees' logits, so Tree SHAP explains its share of the stack exactly (``tl/_explain.py``).
    """

    members: Sequence[nn.Module]
    average: str = "probs"
    weights: Sequence[float] | None = None
    inputs: Sequence[tuple | None] | None = None  # per member: (n_genes, lo, hi) or None
    temperatures: Sequence[float] | None = None  # per member (None: all 1)
    groups: Sequence[int] | None = None  # "stack": each member's configuration
    coef: Sequence[Sequence[float]] | None = None  # "stack": (groups * classes, classes)
    intercept: Sequence[float] | None = None  # "stack": (classes,)
    logit_groups: Sequence[int] | None = None  # "stack": the groups read as centred logits (boosted trees)

    @nn.compact
    def __call__(self, x, train: bool = False):
        outs, embs = [], []
        for i, m in enumerate(self.members):
            spec = self.inputs[i] if self.inputs is not None else None
            xi = x if spec is None else InputTransform(*spec, name=f"input_{i}")(x)
            o, e = m(xi, train)
            outs.append(o)
            embs.append(e)
        n = len(self.members)
        w = jnp.asarray(self.weights if self.weights is not None else [1.0] * n, jnp.float32)
        w = (w / w.sum())[:, None, None]
        out = jnp.stack(outs)
        if self.average == "stack":
            if self.temperatures is not None:
                out = out / jnp.asarray(self.temperatures, out.dtype)[:, None, None]
            probs = nn.softmax(out, axis=-1)
            centred = out - out.mean(axis=-1, keepdims=True)
            groups, by_logit = list(self.groups or []), set(self.logit_groups or ())
            logs = []
            for g in range(max(groups) + 1):
                idx = [i for i in range(n) if groups[i] == g]
                wg = jnp.asarray([(self.weights or [1.0] * n)[i] for i in idx], jnp.float32)
                wg = (wg / wg.sum())[:, None, None]
                if g in by_logit:
                    logs.append(jnp.sum(wg * centred[jnp.asarray(idx)], axis=0))
                else:
                    logs.append(jnp.log(jnp.sum(wg * probs[jnp.asarray(idx)], axis=0) + 1e-12))
            coef = jnp.asarray(self.coef, jnp.float32)
            # full float32 on every device (a GPU's default TF32 would move the logits its explanations sum to)
            feats = jnp.concatenate(logs, axis=-1)
            out = jnp.matmul(feats, coef, precision=jax.lax.Precision.HIGHEST) + jnp.asarray(
                self.intercept, jnp.float32
            )
        elif self.average == "probs":
            if self.temperatures is not None:
                out = out / jnp.asarray(self.temperatures, out.dtype)[:, None, None]
            out = jnp.log(jnp.sum(w * nn.softmax(out, axis=-1), axis=0) + 1e-12)
        else:
            out = jnp.sum(w * out, axis=0)
        return out, jnp.concatenate(embs, axis=-1)


def _check_stack(arch: dict, n_members: int, n_out: int) -> None:
    """A stack's groups, coefficients and intercept fit its members and classes (ValueError, one sentence, if not)."""
    groups, coef, intercept = arch.get("groups"), arch.get("coef"), arch.get("intercept")
    if not isinstance(groups, list | tuple) or len(groups) != n_members:
        raise ValueError(f"A stacked ensemble needs one group per member ({n_members}).")
    n_groups = max(groups) + 1 if groups else 0
    if sorted(set(groups)) != list(range(n_groups)):
        raise ValueError("A stacked ensemble's groups must be 0, 1, ... with every group holding a member.")
    if not isinstance(intercept, list | tuple) or len(intercept) != n_out:
        raise ValueError(f"A stacked ensemble needs one intercept per class ({n_out}).")
    if not isinstance(coef, list | tuple) or len(coef) != n_groups * n_out or any(len(r) != n_out for r in coef):
        raise ValueError(f"A stacked ensemble needs {n_groups * n_out} rows of {n_out} coefficients.")


def stack_logit_groups(arch: dict) -> tuple[int, ...] | None:
    """The groups of a stacked ensemble whose members are boosted trees (read as centred logits); ``None`` if none.

    A group is one configuration, so its members are all trees or none (ValueError otherwise).
    """
    groups = [int(g) for g in arch["groups"]]
    trees = [m.get("model") == "trees" for m in arch["members"]]
    found = []
    for g in sorted(set(groups)):
        kinds = {t for t, gi in zip(trees, groups, strict=True) if gi == g}
        if len(kinds) > 1:
            raise ValueError(f"Group {g} of a stacked ensemble mixes boosted trees with other models.")
        if kinds == {True}:
            found.append(g)
    return tuple(found) or None


def member_input(spec: dict | None) -> tuple | None:
    """An architecture's ``"input"`` entry as :class:`InputTransform` arguments."""
    if spec is None:
        return None
    lo, hi = spec.get("clip") or (-float("inf"), float("inf"))
    n = spec.get("n_genes")
    return (None if n is None else int(n), float(lo), float(hi))


def _build(arch: dict, n_out: int) -> nn.Module:
    if arch.get("model") == "ensemble":
        members = [dict(m) for m in arch["members"]]
        inputs = tuple(member_input(m.pop("input", None)) for m in members)
        weights, temperatures = arch.get("weights"), arch.get("temperatures")
        stack = arch.get("average") == "stack"
        logit_groups = None
        if stack:
            _check_stack(arch, len(members), n_out)
            logit_groups = stack_logit_groups(arch)
        return Ensemble(
            members=tuple(_build(m, n_out) for m in members),
            average=arch.get("average", "probs"),
            weights=None if weights is None else tuple(float(w) for w in weights),
            inputs=inputs if any(v is not None for v in inputs) else None,
            temperatures=None if temperatures is None else tuple(float(t) for t in temperatures),
            groups=tuple(int(g) for g in arch["groups"]) if stack else None,
            coef=tuple(tuple(float(c) for c in row) for row in arch["coef"]) if stack else None,
            intercept=tuple(float(b) for b in arch["intercept"]) if stack else None,
            logit_groups=logit_groups,
        )
    return build_network(arch, n_out)
