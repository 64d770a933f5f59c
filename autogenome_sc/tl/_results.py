"""Writing a model's outputs into AnnData, h5ad-safe."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from anndata import AnnData

from .. import _logging as logg
from .._keys import UNASSIGNED, Keys
from .._settings import settings
from ..data._hierarchy import Hierarchy, level_outputs
from ..model import Model

if TYPE_CHECKING:
    from ..config._schema import Config
    from ..data import Pipeline, TrainData
    from ..train import FitResult


def write_predictions(
    adata: AnnData,
    model: Model,
    out: np.ndarray,
    emb: np.ndarray,
    keys: Keys,
    *,
    reject: float | None = None,
    reject_uncertainty: float | None = None,
    evidence: tuple[np.ndarray, ...] | None = None,
) -> list[str]:
    """Write prediction, confidence, uncertainty and embedding; return what was added, for the log.

    With ``reject``, cells whose confidence is below ``reject`` or whose uncertainty is
    above ``reject_uncertainty`` (unless ``None``) get the label ``"Unassigned"``. ``evidence``:
    the cells' input-space evidence (``model.input_evidence``), which the uncertainty needs.
    """
    pred, p = model.postprocess(out)
    if p is None:
        adata.obs[keys.prediction] = pred.astype(np.float32)
        added = [f"'{keys.prediction}' (adata.obs)"]
    else:
        conf = p.max(axis=1)
        unc = model.uncertainty_of(emb, p, evidence)
        assert model.classes_ is not None  # probabilities come from classification models only
        categories = list(model.classes_)
        novel = np.zeros(len(pred), bool) if reject_uncertainty is None else unc > reject_uncertainty
        labels = pd.Categorical.from_codes(pred, categories=categories)
        added = []
        if model.hierarchy is not None:
            novel_at, uncertain = _novel_at_levels(adata, model, emb, p, evidence, keys, novel, reject_uncertainty)
            labels, added = _write_levels(adata, model.hierarchy, p, pred, keys, reject, novel_at)
            added += uncertain
        elif reject is not None:
            rejected = (conf < reject) | novel
            labels = pd.Categorical.from_codes(np.where(rejected, len(categories), pred), [*categories, UNASSIGNED])
        adata.obs[keys.prediction] = labels
        adata.obs[keys.confidence] = conf.astype(np.float32)
        adata.obs[keys.uncertainty] = unc.astype(np.float32)
        added.insert(0, f"'{keys.prediction}', '{keys.confidence}', '{keys.uncertainty}' (adata.obs)")
        added.append(_write_probabilities(adata, model, p, keys))
    adata.obsm[keys.obsm] = emb.astype(np.float32)
    added.append(f"'{keys.obsm}' (adata.obsm)")
    return added


def _write_probabilities(adata: AnnData, model: Model, p: np.ndarray, keys: Keys) -> str:
    """``.obsm[keys.probabilities]`` (and one per coarser level of a hierarchy); what was added, for the log."""
    written = []
    for obsm_key, (_, probs) in probability_tables(model, p, keys).items():
        adata.obsm[obsm_key] = probs.astype(np.float32)
        written.append(f"'{obsm_key}'")
    return ", ".join(written) + " (adata.obsm)"


def probability_tables(model: Model, p: np.ndarray, keys: Keys) -> dict[str, tuple[list[str], np.ndarray]]:
    """``{obsm key: (class names, cells x classes)}``: the fine classes, then each coarser level's summed probabilities."""
    assert model.classes_ is not None  # probabilities come from classification models only
    tables = {keys.probabilities: (list(model.classes_), p)}
    hierarchy = model.hierarchy
    if hierarchy is not None:
        for level in hierarchy.levels[:-1]:
            classes, M = hierarchy.membership(level)
            tables[keys.level_probabilities(level)] = (list(classes), p @ M)
    return tables


def probability_classes(model: Model, keys: Keys) -> dict[str, np.ndarray]:
    """What ``uns[key]["probabilities"]`` holds: the class names of every column of each ``.obsm`` table written."""
    if model.task != "classification":
        return {}
    assert model.classes_ is not None
    dummy = np.zeros((1, len(model.classes_)), np.float32)
    return {k: np.asarray(names, dtype=str) for k, (names, _) in probability_tables(model, dummy, keys).items()}


def _novel_at_levels(
    adata: AnnData,
    model: Model,
    emb: np.ndarray,
    p: np.ndarray,
    evidence: tuple[np.ndarray, ...] | None,
    keys: Keys,
    novel: np.ndarray,
    reject_uncertainty: float | None,
) -> tuple[dict[str, np.ndarray], list[str]]:
    """Which cells are unlike the reference at each level of the model's hierarchy, and the columns written.

    The finest level's is ``novel`` (``ag_uncertainty``). A coarser level with its own novelty
    statistics (models trained since they were added) scores with its own confidence, and its
    uncertainty is written as ``<key>_uncertainty_<level>``: a cell of an unseen fine type
    inside a known coarse type can keep the coarse label. A cell is novel at a level only where
    it is novel at every finer one too (coarser levels only relax), so the levels kept stay
    nested. A model without them applies ``novel`` at every level, as before.
    """
    hierarchy = model.hierarchy
    assert hierarchy is not None  # called for hierarchies only
    out = dict.fromkeys(hierarchy.levels, novel)
    written = []
    finer = novel
    for level in reversed(hierarchy.levels[:-1]):  # fine to coarse
        u = model.level_uncertainty(level, emb, p, evidence)
        if u is None:
            continue
        adata.obs[keys.level_uncertainty(level)] = u.astype(np.float32)
        written.append(f"'{keys.level_uncertainty(level)}' (adata.obs)")
        own = np.zeros(len(u), bool) if reject_uncertainty is None else u > reject_uncertainty
        out[level] = finer = own & finer
    return out, written


def _write_levels(
    adata: AnnData,
    hierarchy: Hierarchy,
    p: np.ndarray,
    pred: np.ndarray,
    keys: Keys,
    reject: float | None,
    novel_at: dict[str, np.ndarray],
) -> tuple[pd.Categorical, list[str]]:
    """Each level's label and confidence; the main label, which with ``reject`` is the deepest confident level's.

    A level's label is the parent of the fine label; with ``reject`` it is ``"Unassigned"``
    where its confidence is below ``reject`` or the cell is unlike the reference at that level
    (``novel_at``). The deepest level whose label is kept gives the main label.
    """
    levels = level_outputs(hierarchy, p, pred)
    main = np.full(len(pred), UNASSIGNED, dtype=object)
    written = []
    for level in reversed(hierarchy.levels):  # fine to coarse
        classes, code, conf = levels[level]
        keep = np.ones(len(pred), bool) if reject is None else (conf >= reject) & ~novel_at[level]
        names = np.asarray(classes, dtype=object)[code]
        cats = classes if reject is None else [*classes, UNASSIGNED]
        adata.obs[keys.level_prediction(level)] = pd.Categorical(np.where(keep, names, UNASSIGNED), categories=cats)
        adata.obs[keys.level_confidence(level)] = conf.astype(np.float32)
        written += [keys.level_prediction(level), keys.level_confidence(level)]
        fill = keep & (main == UNASSIGNED)
        main[fill] = names[fill]
    order = list(levels[hierarchy.finest][0])  # with reject: fine classes, then coarser ones, then Unassigned
    if reject is not None:
        for level in reversed(hierarchy.levels[:-1]):
            order += [c for c in levels[level][0] if c not in order]
        order.append(UNASSIGNED)
    labels = pd.Categorical(main.astype(str), categories=order)
    return labels, [", ".join(f"'{k}'" for k in written) + " (adata.obs)"]


def h5ad_safe(obj: Any) -> Any:
    """Drop ``None`` and turn tuples and numpy scalars into what h5ad can store."""
    if isinstance(obj, dict):
        return {str(k): h5ad_safe(v) for k, v in obj.items() if v is not None}
    if isinstance(obj, tuple | list):
        arr = np.asarray(obj)
        if arr.dtype == object:
            return np.asarray([str(v) for v in obj])
        return arr
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def default_model_path(save_path: str | None, key_added: str, label_key: str | None) -> Path:
    """The save path from the config, or a fresh folder under ``ag.settings.model_dir``."""
    if save_path is not None:
        return Path(save_path)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    base = Path(settings.model_dir) / f"{key_added}_{label_key or 'unsupervised'}_{stamp}"
    path, i = base, 1
    while path.exists():
        path, i = Path(f"{base}_{i}"), i + 1
    return path


def preprocessing_record(kind: str, pipe: Pipeline, cfg: Config) -> dict[str, Any]:
    """What a model stores of its preprocessing: detected input, transform, scaling and its bounds."""
    scaler = pipe.scaler
    rec: dict[str, Any] = {"input": kind, "applied": pipe.preprocess, "config": cfg.data.preprocess}
    rec["scaling"] = "none" if scaler is None else scaler.kind
    if scaler is not None and scaler.clip is not None:
        rec["clip"] = list(scaler.clip)
    if pipe.batches is not None:  # a query's batches are standardised on themselves: the key is all it needs
        rec["batch_key"] = pipe.batches.key
    return rec


def record_run(
    adata: AnnData,
    data: TrainData,
    model: Model,
    result: FitResult,
    cfg: Config,
    *,
    keys: Keys,
    params: dict[str, Any],
    added: list[str],
    extra_uns: dict | None = None,
) -> None:
    """What every training writes besides its outputs: the split, and ``uns[key]`` (any task).

    ``uns[key]`` gets ``params``, ``config``, ``task``, ``metrics``, ``history``,
    ``preprocessing`` (with the matrix read), ``model_path``, ``model_id`` and, for
    classification, ``classes``; then ``extra_uns``. ``added`` (what the caller wrote) is
    logged with these.
    """
    adata.obs[keys.split] = data.split
    adata.obs[keys.split] = adata.obs[keys.split].astype("category")
    uns: dict[str, Any] = {
        "params": params,
        "config": json.dumps(cfg.model_dump(mode="json")),
        "task": model.task,
        "metrics": model.metrics_,
        "history": result.history,
        "preprocessing": dict(
            model.preprocessing_, matrix=data.pipeline.source.where, genes=data.pipeline.source.matched_by
        ),
        "model_path": str(model.path),
        "model_id": model.id_,
    }
    if data.classes is not None:
        uns["classes"] = np.asarray(data.classes)
    if data.pipeline.source.panel is not None:
        uns["panel"] = dict(data.pipeline.source.panel)
    uns.update(extra_uns or {})
    adata.uns[keys.uns] = h5ad_safe(uns)
    logg.info("    added " + ", ".join([*added, f"'{keys.split}' (adata.obs)", f"'{keys.uns}' (adata.uns)"]))


def log_finished(start: Any, model: Model, what: str = "") -> None:
    """The closing log line of a run: what it did, the test headline of ``model`` and where it was saved."""
    deep = f"test {model.task_type.headline(model.metrics_)}; model saved to '{model.path}'"
    logg.info("    finished", time=start, deep=f"{what}; {deep}" if what else deep)
