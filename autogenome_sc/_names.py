"""One source of names: models, search modes, likelihoods, input kinds, tasks.

Config (pydantic ``Literal`` fields), the search, the network registry and model files all
take their names from here, so a name is spelled once. Search modes are open:
:func:`autogenome_sc.search.register_mode` adds one, and the config then accepts it.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

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
SupervisedMode = Literal["linear", "logistic", "svm", "trees", "mlp", "resnet", "densenet", "enas"]
BuiltinMode = Literal[SupervisedMode, "resvae"]
#: How a search chose its final model: on out-of-fold predictions (cross-validation) or on the validation split.
SelectionMethod = Literal["cv", "validation"]
#: What a search chose: one configuration, or a weighted ensemble of several.
Chosen = Literal["single", "ensemble", "stack"]
#: The final model after cross-validation (``search.final``): the fold models averaged, or a refit.
FinalFit = Literal["bag", "refit"]
#: The final model a search wrote: a ``FinalFit``, or (chosen on the validation split) a trial's own model.
FinalModel = Literal[FinalFit, "trial"]
#: A search's budget, model families and ensemble depth by one word (``ag.tl.search(preset=...)``).
Preset = Literal["fast", "default", "best"]
#: How the final model is chosen among re-scored configurations (``search.select_by``).
SelectBy = Literal["accuracy_f1", "loss_or_accuracy", "loss", "within_noise"]

TASKS: tuple[str, ...] = get_args(Task)
ACTIVATIONS: tuple[str, ...] = get_args(Activation)
NETWORKS: tuple[str, ...] = get_args(Network)
VAE_MODELS: tuple[str, ...] = get_args(VaeModel)
LIKELIHOODS: tuple[str, ...] = get_args(Likelihood)
INPUT_KINDS: tuple[str, ...] = get_args(InputKind)
SUPERVISED_MODES: tuple[str, ...] = get_args(SupervisedMode)
BUILTIN_MODES: tuple[str, ...] = get_args(BuiltinMode)

#: The one registry of search modes: name -> ``autogenome_sc.search.Mode``. ``register_mode`` fills it and
#: ``autogenome_sc.search.MODES`` is this very dict; it lives here because the config (a lower layer than
#: ``search``) checks ``search.modes`` against it. Typed ``Any`` here: this layer cannot name ``Mode``.
MODES: dict[str, Any] = {}


def mode_names() -> tuple[str, ...]:
    """The search modes registered now: the built-in ones, then those added by ``register_mode``."""
    return tuple(m for m in BUILTIN_MODES if m in MODES) + tuple(sorted(set(MODES) - set(BUILTIN_MODES)))
