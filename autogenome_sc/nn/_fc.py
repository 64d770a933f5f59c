"""The paper's networks of fully-connected (FC) units, as Flax modules.

An FC unit is Dense -> BatchNorm -> activation (paper Fig. 2a); every network starts with
input dropout (the paper's "drop-out ratio of the first layer", given as a keep ratio) and
ends with a linear head. ``__call__`` returns ``(output, embedding)``, the embedding being
the penultimate representation written to ``.obsm["X_ag"]``.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

ACTIVATIONS = {"relu": nn.relu, "gelu": nn.gelu, "silu": nn.silu, "elu": nn.elu, "tanh": jnp.tanh}


class FCUnit(nn.Module):
    """Dense -> BatchNorm -> activation (-> dropout)."""

    features: int
    activation: str = "relu"
    dropout: float = 0.0

    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.Dense(self.features)(x)
        x = nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)
        x = ACTIVATIONS[self.activation](x)
        if self.dropout > 0:
            x = nn.Dropout(self.dropout, deterministic=not train)(x)
        return x


class _Net(nn.Module):
    """Input dropout -> backbone -> linear head."""

    n_out: int
    input_keep: float = 1.0
    activation: str = "relu"
    dropout: float = 0.0

    def backbone(self, x, train: bool):  # pragma: no cover - overridden
        raise NotImplementedError

    @nn.compact
    def __call__(self, x, train: bool = False):
        if self.input_keep < 1.0:
            x = nn.Dropout(1.0 - self.input_keep, deterministic=not train)(x)
        h = self.backbone(x, train)
        return nn.Dense(self.n_out, name="head")(h), h

    def unit(self, features: int):
        return FCUnit(features, self.activation, self.dropout)


class MLP(_Net):
    """Multilayer perceptron: a stack of FC units."""

    widths: Sequence[int] = (256, 256)

    def backbone(self, x, train):
        for w in self.widths:
            x = self.unit(w)(x, train)
        return x


class RFCNResNet(_Net):
    """RFCN-ResNet: an FC unit to ``width``, then ``n_blocks`` units that each add their input."""

    width: int = 256
    n_blocks: int = 3

    def backbone(self, x, train):
        x = self.unit(self.width)(x, train)
        for _ in range(self.n_blocks):
            x = x + self.unit(self.width)(x, train)
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

    def backbone(self, x, train):
        x = self.unit(2 * self.growth_rate)(x, train)
        for b, n_units in enumerate(self.block_structure):
            feats = [x]
            for _ in range(n_units):
                feats.append(self.unit(self.growth_rate)(jnp.concatenate(feats, axis=-1), train))
            x = jnp.concatenate(feats, axis=-1)
            if b < len(self.block_structure) - 1:
                x = self.unit(max(1, int(x.shape[-1] * self.compression)))(x, train)
        return x


MODELS = {"mlp": MLP, "resnet": RFCNResNet, "densenet": RFCNDenseNet}


def build_network(arch: dict, n_out: int) -> nn.Module:
    """Build a network from an architecture dict ``{"model": ..., <its hyperparameters>}``."""
    arch = dict(arch)
    if arch.get("model") == "ensemble":
        return _build(arch, n_out)
    name = arch.pop("model")
    if name not in MODELS:
        raise ValueError(f"Unknown model '{name}'; choose one of {sorted(MODELS)}.")
    for k in ("widths", "block_structure"):
        if k in arch:
            arch[k] = tuple(arch[k])
    if "edges" in arch:  # RRFCN (nn/_enas.py, registered in MODELS by nn/__init__.py)
        arch["edges"] = tuple(tuple(int(v) for v in e) for e in arch["edges"])
    return MODELS[name](n_out=n_out, **arch)


class Ensemble(nn.Module):
    """Averages member networks: class probabilities (returned as log-probabilities) or regression outputs.

    The embedding is the concatenation of the members' embeddings. Built from
    ``{"model": "ensemble", "average": "probs" | "mean", "members": [arch, ...]}``.
    """

    members: Sequence[nn.Module]
    average: str = "probs"

    def __call__(self, x, train: bool = False):
        outs, embs = zip(*(m(x, train) for m in self.members), strict=True)
        out = jnp.stack(outs)
        if self.average == "probs":
            out = jnp.log(jnp.mean(nn.softmax(out, axis=-1), axis=0) + 1e-12)
        else:
            out = jnp.mean(out, axis=0)
        return out, jnp.concatenate(embs, axis=-1)


def _build(arch: dict, n_out: int) -> nn.Module:
    if arch.get("model") == "ensemble":
        members = tuple(_build(m, n_out) for m in arch["members"])
        return Ensemble(members=members, average=arch.get("average", "probs"))
    return build_network(arch, n_out)
