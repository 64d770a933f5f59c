"""``ag.tl.train``: one supervised model with fixed hyperparameters."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jax
import numpy as np
from anndata import AnnData

from .. import _logging as logg
from .. import config as _config
from .._checks import check_key_added, check_rng, writable
from .._docs import BATCH_KEY, GENES, INPUT_SPLIT_KEY, doc_params
from ..data import TrainData, prepare
from ..data._hierarchy import Hierarchy, label_levels, read_hierarchy
from ..nn import MODELS, VAE_MODELS, build_network
from ..search._enas import enas_uns, run_enas
from ..train import FitResult, fit
from ._finish import finish
from ._results import log_finished
from ._vae import train_vae

if TYPE_CHECKING:
    from ..config._schema import Config


@doc_params(input_split_key=INPUT_SPLIT_KEY, batch_key=BATCH_KEY, genes=GENES)
def train(
    adata: AnnData,
    label_key: str | Sequence[str] | None,
    *,
    model: str = "resnet",
    layer: str | None = None,
    use_raw: bool = False,
    split_key: str | None = None,
    batch_key: str | None = None,
    gene_symbols: str | None = None,
    genes: Sequence[str] | AnnData | None = None,
    key_added: str = "ag",
    config: dict[str, Any] | str | Path | None = None,
    rng: int = 0,
    copy: bool = False,
) -> AnnData | None:
    """Train one network on labelled cells, evaluate it on a held-out test split and save it.

    The cells are split 8:1:1 (stratified) into train, validation and test; genes are
    scaled to 0-1 on the training split; the network is trained with a one-cycle schedule
    and early stopping on the validation loss (the best epoch's weights are kept); the test
    split is used once, for the reported metrics.

    Parameters
    ----------
    adata
        Annotated data matrix (cells x genes), dense or sparse.
    label_key
        Column of ``adata.obs`` to learn: categorical, string or integer for classification,
        float for regression. A list of columns from coarse to fine (``["lineage",
        "cell_type"]``) is a label hierarchy: the network learns the finest level, each coarser
        level's label is the parent of the fine one with the summed probability of its group,
        and ``ag.tl.predict(reject=)`` falls back to the deepest confident level.
    model
        ``"mlp"``, ``"resnet"`` (RFCN-ResNet) or ``"densenet"`` (RFCN-DenseNet), whose
        architecture comes from the config's ``models`` section; ``"enas"``: an RRFCN
        architecture searched by ENAS (``models.enas``) and retrained from scratch; or
        ``"resvae"``/``"vae"`` (with ``label_key=None``): an unsupervised VAE, see
        :func:`autogenome_sc.tl.train_vae`, which documents what it writes.
    {input_split_key}
    {batch_key}
    {genes}
    config
        Expert-mode configuration: a dict (partial is fine) or a path to a JSON file;
        see :func:`autogenome_sc.config.default`.
    rng
        Seed of everything random (split, initialisation, shuffling, dropout).
    copy
        Return a copy instead of writing to ``adata``.

    Returns
    -------
    ``None``, or a copy of ``adata`` when ``copy=True``, with

    ``.obs["ag_prediction"]``
        Predicted class (categorical) or value.
    ``.obs["ag_confidence"]``
        Largest class probability (classification), calibrated by a temperature fitted on
        the validation split.
    ``.obs["ag_uncertainty"]``
        Novelty score in [0, 1) (classification; see ``ag.tl.predict``).
    ``.obs["ag_split"]``
        ``"train"``, ``"val"`` or ``"test"``.
    ``.obs["ag_prediction_<level>"]``, ``.obs["ag_confidence_<level>"]``
        With a label hierarchy: each level's label and its confidence.
    ``.obsm["ag_probabilities"]``
        Calibrated class probabilities, cells x classes (classification); with a label
        hierarchy also ``.obsm["ag_probabilities_<level>"]`` per coarser level.
    ``.obsm["X_ag"]``
        The penultimate-layer embedding.
    ``.uns["ag"]``
        ``params``, ``config`` (JSON), ``metrics`` (test split: accuracy, macro-F1, balanced
        accuracy, confusion matrix; for classification also ``temperature`` and the expected
        calibration error before/after on validation, ``ece_before``/``ece_after``, and on
        test, ``ece_test_before``/``ece_test_after``; with a label hierarchy, ``levels``: the
        accuracy, macro-F1 and balanced accuracy of each coarser level, and ``params`` holds the
        ``label_levels``), ``classes``, ``history``,
        ``preprocessing`` (with the ``matrix`` read and ``genes``: what named them),
        ``model_path``, ``model_id`` (the saved model's checksum) and, for
        classification, ``reliability``
        (per-bin counts for ``ag.pl.reliability``) and ``probabilities`` (the class names of each
        ``.obsm`` table of probabilities, by its key); with ``genes=``, ``panel`` (``n_asked``,
        ``n_kept``, ``n_unversioned``, ``n_reference``);
        with ``model="enas"`` also ``best["architecture"]`` (``nodes``, ``widths``, ``edges``)
        and ``enas`` (search ``history`` and the scored ``candidates``).
    """
    label_key, levels = label_levels(label_key)
    if model in VAE_MODELS:  # unsupervised: train_vae trains, writes and documents it
        _check_unsupervised(model, label_key, batch_key, gene_symbols, genes)
        return train_vae(
            adata, model=model, layer=layer, use_raw=use_raw, split_key=split_key, key_added=key_added,
            config=config, rng=rng, copy=copy,
        )  # fmt: skip
    rng, key_added = check_rng(rng), check_key_added(key_added)
    cfg = _config.validate(config)
    label_key = _checked_label_key(model, label_key)
    adata = writable(adata, copy)
    start = logg.info(f"training {model} on adata.obs['{label_key}']")
    data, kind = prepare(
        adata, label_key, layer=layer, use_raw=use_raw, split_key=split_key, data_cfg=cfg.data, loss=cfg.loss.name,
        rng=np.random.default_rng(rng), batch_key=batch_key, gene_symbols=gene_symbols, genes=genes,
    )  # fmt: skip
    _log_input(data, kind)
    hierarchy = hierarchy_of(adata, levels, data)
    arch, result, extra = _fit(model, data, cfg, jax.random.key(rng))
    fitted = finish(
        adata, data, kind, arch, result, cfg,
        label_key=label_key, key_added=key_added, rng=rng, extra_uns=extra, hierarchy=hierarchy,
    )  # fmt: skip
    log_finished(start, fitted)
    return adata if copy else None


def _check_unsupervised(model: str, label_key: str | None, batch_key: str | None, gene_symbols, genes) -> None:
    """An unsupervised VAE takes no labels, no batch key and no gene choice (yet)."""
    for name, value in (("batch_key", batch_key), ("gene_symbols", gene_symbols), ("genes", genes)):
        if value is not None:
            raise ValueError(f"{name} is for supervised models; model='{model}' does not take one yet.")
    if label_key is not None:
        raise ValueError(f"model='{model}' is unsupervised; pass label_key=None (use eval_key to score labels).")


def _checked_label_key(model: str, label_key: str | None) -> str:
    """The label column, with a known network (or ``"enas"``) to learn it."""
    if label_key is None:
        raise ValueError("ag.tl.train needs a label_key; for unlabelled data pass model='resvae' (or 'vae').")
    choices = sorted((set(MODELS) - {"rrfcn"}) | {"enas"} | set(VAE_MODELS))  # rrfcn is what "enas" finds
    if model not in choices:
        raise ValueError(f"Unknown model '{model}'; choose one of {', '.join(choices)}.")
    return label_key


def _fit(model: str, data: TrainData, cfg: Config, key: jax.Array) -> tuple[dict, FitResult, dict | None]:
    """``(architecture, fit, extra uns)``: the configured network trained, or ENAS's architecture found and retrained."""
    if model == "enas":
        found = run_enas(data, cfg, key)
        assert found.fit is not None  # run_enas retrains the winner by default
        return found.network, found.fit, enas_uns(found)
    arch = {"model": model, **getattr(cfg.models, model).model_dump(mode="json")}
    net = build_network(arch, data.n_out)
    return arch, fit(net, data, cfg.trainer, cfg.loss, key, desc=f"training {model}"), None


def hierarchy_of(adata: AnnData, levels: list[str], data: TrainData) -> Hierarchy | None:
    """The label hierarchy of ``levels`` (coarse to fine) on the prepared problem, checked to nest; ``None`` for one level."""
    if len(levels) < 2:
        return None
    if data.task != "classification":
        raise ValueError("A list of label_key levels is for classification; regression takes one column.")
    assert data.classes is not None  # classification
    return read_hierarchy(adata, levels, data.classes, data.y)


def _log_input(data: TrainData, kind: str) -> None:
    pipe = data.pipeline
    what = {"none": "used as is", "log1p": "log1p applied", "normalize_log1p": "normalised to 1e4 per cell, log1p"}
    batches = "" if pipe.batches is None else f", each of {len(pipe.batches.names)} batches standardised on itself"
    logg.info(
        f"    adata.{pipe.source.where} looks like {kind} values: {what[pipe.preprocess]}{batches}, "
        "then per-gene scaling fitted on the training split"
    )
    panel = pipe.source.panel
    if panel is not None:
        unversioned = (
            f" ({panel['n_unversioned']} without their Ensembl version suffix)" if panel["n_unversioned"] else ""
        )
        logg.info(
            f"    genes: {panel['n_kept']} of the {panel['n_asked']} in genes= found by adata.{pipe.source.matched_by}"
            f"{unversioned}; the model reads these {panel['n_kept']} of the {panel['n_reference']} genes"
        )
