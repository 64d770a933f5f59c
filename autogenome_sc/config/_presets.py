"""Presets of ``ag.tl.search``: a budget, the model families and the ensemble depth, by one word.

A preset fills in only what the user left unset: an argument of ``ag.tl.search``
(``modes``, ``n_trials``, ``timeout``) or a field of the expert config that was given always
wins over it. Its budget (``search.timeout``) applies only where neither ``n_trials`` nor
``timeout`` was given anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

from ._schema import Config


@dataclass(frozen=True)
class PresetSpec:
    """What a preset sets: fields of the expert config by section, and the model families it searches.

    ``modes`` narrows the modes searched by default (those that cannot learn the problem are
    still left out silently); ``None``: the default modes.
    """

    config: dict[str, dict[str, Any]] = field(default_factory=dict)
    modes: tuple[str, ...] | None = None


#: What each preset sets. ``"default"`` sets nothing: the search as it is without a preset (60 s; the
#: Res-VAE's 30 trials or 240 s). ``"fast"``: the solved linear families, the linear mode and the MLP for 30 s, two
#: configurations cross-validated, ensembles of two at most (on pbmc68k_reduced and HSMM the first
#: model within 0.01 of the best came after 2-7 s: docs/benchmarks.md). ``"best"``: 15 minutes, five
#: configurations cross-validated, ensembles of up to five.
PRESETS: dict[str, PresetSpec] = {
    "fast": PresetSpec(
        {"search": {"timeout": 30.0, "ensemble": 2, "cv_configs": 2}}, modes=("linear", "logistic", "svm", "mlp")
    ),
    "default": PresetSpec(),
    "best": PresetSpec({"search": {"timeout": 900.0, "ensemble": 5, "cv_configs": 5}}),
}

#: Fields of the ``search`` section that make up a budget: a preset's timeout is left out if any is given.
BUDGET = ("n_trials", "timeout")


def with_preset(cfg: Config, preset: str | None, *, budget_given: bool = False) -> Config:
    """``cfg`` with ``preset``'s settings where ``cfg`` left them unset.

    Parameters
    ----------
    cfg
        A validated configuration; the fields it was given explicitly (pydantic's
        ``model_fields_set``, section by section) are kept.
    preset
        ``"fast"``, ``"default"``, ``"best"`` or ``None`` (nothing changes).
    budget_given
        Whether the caller gave ``n_trials`` or ``timeout`` as arguments: then the preset's
        ``search.timeout`` is left out too.

    Raises
    ------
    ValueError
        An unknown preset.
    """
    if preset is None:
        return cfg
    spec = check_preset(preset)
    given = cast(dict[str, Any], cfg.model_dump(mode="json", exclude_unset=True))
    budget_given = budget_given or any(k in given.get("search", {}) for k in BUDGET)
    merged = cfg.model_dump(mode="json")
    changed = False
    for section, values in spec.config.items():
        for key, value in values.items():
            if key in given.get(section, {}) or (section == "search" and key in BUDGET and budget_given):
                continue
            merged[section][key] = value
            changed = True
    return Config.model_validate(merged) if changed else cfg


def check_preset(preset: object) -> PresetSpec:
    """What ``preset`` sets; a clear error for anything but a preset's name."""
    if not isinstance(preset, str) or preset not in PRESETS:
        raise ValueError(f"preset must be one of {', '.join(map(repr, PRESETS))}, not {preset!r}.")
    return PRESETS[preset]


def preset_modes(preset: str | None) -> tuple[str, ...] | None:
    """The model families ``preset`` narrows the default modes to (``None``: no narrowing)."""
    return None if preset is None else check_preset(preset).modes


__all__ = ["PRESETS", "PresetSpec", "check_preset", "preset_modes", "with_preset"]
