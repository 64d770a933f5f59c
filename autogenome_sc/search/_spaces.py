"""Search spaces: a registry of modes, each turning an Optuna trial into an architecture.

A mode is registered once with :func:`register_mode`; ``ag.tl.search`` only looks modes up
here, so a new mode (ENAS, the Res-VAE) plugs in without touching the study driver.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import optuna


@dataclass(frozen=True)
class Mode:
    """A searchable family of networks.

    Attributes
    ----------
    name
        The mode's name in ``modes`` and in the config.
    supervised
        Whether the mode learns labels (``label_key`` given) or not.
    suggest
        ``suggest(trial, spaces, models_cfg) -> architecture dict`` (``{"model": ..., ...}``).
    run
        ``run(data, arch, trainer, cfg, key, report) -> (architecture, FitResult)`` for modes
        that do not train ``build_network(arch)`` with ``train.fit`` (ENAS, the Res-VAE);
        ``None`` for the plain networks.
    """

    name: str
    supervised: bool
    suggest: Callable[[optuna.Trial, object, object], dict] | None
    run: Callable | None = None


MODES: dict[str, Mode] = {}


def register_mode(mode: Mode) -> Mode:
    """Make ``mode`` available to ``ag.tl.search``."""
    MODES[mode.name] = mode
    return mode


def _common(trial: optuna.Trial, spaces, base) -> dict:
    return {
        "input_keep": trial.suggest_categorical("input_keep", spaces.input_keep),
        "dropout": trial.suggest_categorical("dropout", spaces.dropout),
        "activation": base.activation,
    }


def _mlp(trial, spaces, models):
    n = trial.suggest_categorical("mlp_layers", spaces.mlp_layers)
    width = trial.suggest_categorical("mlp_width", spaces.mlp_widths)
    return {"model": "mlp", "widths": [int(width)] * int(n), **_common(trial, spaces, models.mlp)}


def _resnet(trial, spaces, models):
    return {
        "model": "resnet",
        "width": int(trial.suggest_categorical("resnet_width", spaces.resnet_widths)),
        "n_blocks": int(trial.suggest_categorical("resnet_blocks", spaces.resnet_blocks)),
        **_common(trial, spaces, models.resnet),
    }


def block_name(blocks: list[int]) -> str:
    """A DenseNet block structure as a categorical choice: ``[2, 3, 4] -> "2-3-4"``."""
    return "-".join(str(int(b)) for b in blocks)


def _densenet(trial, spaces, models):
    blocks = trial.suggest_categorical("densenet_blocks", [block_name(b) for b in spaces.densenet_blocks])
    return {
        "model": "densenet",
        "block_structure": [int(b) for b in blocks.split("-")],
        "growth_rate": int(trial.suggest_categorical("densenet_growth_rate", spaces.densenet_growth_rates)),
        "compression": models.densenet.compression,
        **_common(trial, spaces, models.densenet),
    }


register_mode(Mode("mlp", True, _mlp))
register_mode(Mode("resnet", True, _resnet))
register_mode(Mode("densenet", True, _densenet))


def suggest_trainer(trial: optuna.Trial, spaces, trainer):
    """The trainer section with the general hyperparameters drawn for this trial."""
    lr = trial.suggest_float("learning_rate", *spaces.learning_rate, log=True)
    wd = trial.suggest_float("weight_decay", *spaces.weight_decay, log=True)
    return trainer.model_copy(
        update={
            "learning_rate": lr,
            "weight_decay": wd,
            "batch_size": int(trial.suggest_categorical("batch_size", spaces.batch_size)),
            "momentum": float(trial.suggest_categorical("momentum", spaces.momentum)),
        }
    )


def suggest(trial: optuna.Trial, cfg, modes: list[str]) -> tuple[str, dict, object]:
    """Draw a mode, its architecture and the trainer hyperparameters for ``trial``."""
    mode = trial.suggest_categorical("mode", list(modes))
    arch = MODES[mode].suggest(trial, cfg.search.spaces, cfg.models)
    return mode, arch, suggest_trainer(trial, cfg.search.spaces, cfg.trainer)


def check_modes(modes, supervised: bool) -> list[str]:
    """Validate ``modes`` against the registry and the task; one sentence on error."""
    if isinstance(modes, str):
        modes = [modes]
    modes = list(dict.fromkeys(modes))
    if not modes:
        raise ValueError("modes is empty; choose at least one of " + ", ".join(sorted(MODES)) + ".")
    known = {"mlp", "resnet", "densenet", "enas", "resvae"}
    for m in modes:
        if m not in known:
            raise ValueError(f"Unknown search mode '{m}'; choose from {', '.join(sorted(known))}.")
        if m not in MODES:
            raise ValueError(f"Search mode '{m}' is not available in this version of autogenome_sc.")
        if MODES[m].supervised != supervised:
            what = "needs a label_key" if MODES[m].supervised else "is unsupervised (pass label_key=None)"
            raise ValueError(f"Search mode '{m}' {what}.")
    return modes
