"""One source of names: models, search modes, likelihoods, input kinds, tasks.

Config (pydantic ``Literal`` fields), the search, the network registry and model files all
take their names from here, so a name is spelled once. Search modes are open:
:func:`autogenome_sc.search.register_mode` adds one, and the config then accepts it.
"""

from __future__ import annotations

from typing import Literal, get_args

#: What a model learns: labels (classification), a number (regression), or no target (embedding).
Task = Literal["classification", "regression", "embedding"]
#: The supervised fully-connected networks one can train by name (``rrfcn`` is what ENAS finds).
Network = Literal["linear", "mlp", "resnet", "densenet"]
#: The unsupervised networks.
VaeModel = Literal["resvae", "vae"]
#: What the Res-VAE's decoder models: 0-1 scaled values (mse, gaussian, bernoulli) or raw counts (nb).
Likelihood = Literal["mse", "gaussian", "bernoulli", "nb"]
#: Input kinds that detection tells apart (``ag.pp.detect_input``).
InputKind = Literal["counts", "normalized", "log", "scaled", "binary"]
Activation = Literal["relu", "gelu", "silu", "elu", "tanh"]
Scaling = Literal["minmax", "zscore"]
GenesBy = Literal["variance", "f_test"]
#: Class weights of the cross entropy: none, or inversely proportional to class sizes.
ClassWeight = Literal["none", "balanced"]
Preprocess = Literal["auto", "none", "log1p", "normalize_log1p"]
#: The search modes that ship with the package: those that learn labels, then the Res-VAE.
SupervisedMode = Literal["linear", "mlp", "resnet", "densenet", "enas"]
BuiltinMode = Literal[SupervisedMode, "resvae"]

TASKS: tuple[str, ...] = get_args(Task)
ACTIVATIONS: tuple[str, ...] = get_args(Activation)
NETWORKS: tuple[str, ...] = get_args(Network)
VAE_MODELS: tuple[str, ...] = get_args(VaeModel)
LIKELIHOODS: tuple[str, ...] = get_args(Likelihood)
INPUT_KINDS: tuple[str, ...] = get_args(InputKind)
SUPERVISED_MODES: tuple[str, ...] = get_args(SupervisedMode)
BUILTIN_MODES: tuple[str, ...] = get_args(BuiltinMode)

_modes: dict[str, bool] = {}  # every registered search mode -> whether it learns labels


def add_mode(name: str, supervised: bool) -> None:
    """Record a search mode's name (called by ``register_mode``)."""
    _modes[name] = supervised


def mode_names() -> tuple[str, ...]:
    """The search modes registered now: the built-in ones, then those added by ``register_mode``."""
    return tuple(m for m in BUILTIN_MODES if m in _modes) + tuple(sorted(set(_modes) - set(BUILTIN_MODES)))
