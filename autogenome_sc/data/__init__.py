"""AnnData -> arrays: matrix choice, input detection, labels, split, scaling, gene alignment."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

import numpy as np
from anndata import AnnData

from ._align import GeneAlignment, align_genes, match_genes, strip_version
from ._batches import BatchStandardizer, read_batches, warn_single_class_batches
from ._labels import SPLITS, Targets, encode_targets, read_split, stratified_split
from ._matrix import (
    PREPROCESSING,
    MatrixSource,
    apply_preprocessing,
    check_finite_and_detect,
    get_source,
    matrix_name,
    rows_per_chunk,
)
from ._pipeline import Pipeline, TrainData
from ._prefetch import prefetch
from ._scale import CLIP, SCALINGS, GeneStats, MinMaxScaler, Scaler
from ._unsupervised import check_counts, prepare_unsupervised, random_split

if TYPE_CHECKING:
    from ..config._schema import DataConfig

__all__ = [
    "BatchStandardizer",
    "CLIP",
    "PREPROCESSING",
    "SCALINGS",
    "SPLITS",
    "GeneAlignment",
    "GeneStats",
    "MatrixSource",
    "MinMaxScaler",
    "Pipeline",
    "Targets",
    "Scaler",
    "TrainData",
    "align_genes",
    "apply_preprocessing",
    "check_counts",
    "check_finite_and_detect",
    "encode_targets",
    "get_source",
    "match_genes",
    "matrix_name",
    "prepare",
    "prefetch",
    "prepare_unsupervised",
    "random_split",
    "read_batches",
    "read_split",
    "resolve_preprocessing",
    "rows_per_chunk",
    "stratified_split",
    "strip_version",
    "warn_single_class_batches",
]


def resolve_preprocessing(kind: str, requested: str) -> str:
    """The transform to apply: the config's choice, or the detected kind's under 'auto'."""
    return PREPROCESSING[kind] if requested == "auto" else requested


def prepare(
    adata: AnnData,
    label_key: str,
    *,
    layer: str | None,
    use_raw: bool,
    split_key: str | None,
    data_cfg: DataConfig,
    loss: str,
    rng: np.random.Generator,
    batch_key: str | None = None,
    gene_symbols: str | None = None,
    genes: Any = None,
) -> tuple[TrainData, str]:
    """Build the training problem; return it with the detected input kind.

    With ``batch_key``, every batch is standardised on its training cells (see
    :class:`BatchStandardizer`); ``gene_symbols`` and ``genes`` name and choose the genes (see
    :func:`get_source`).
    """
    source = get_source(adata, layer=layer, use_raw=use_raw, gene_symbols=gene_symbols, genes=genes)
    targets = encode_targets(adata, label_key, loss)
    batches = read_batches(adata, batch_key) if batch_key is not None else None
    kind = check_finite_and_detect(source, data_cfg.chunk_mb)
    how = resolve_preprocessing(kind, data_cfg.preprocess)
    split = (
        read_split(adata, split_key, targets)
        if split_key is not None
        else stratified_split(targets, cast("tuple[float, float, float]", tuple(data_cfg.split)), rng)
    )
    pipe = Pipeline(source=source, preprocess=how)
    if batches is not None:
        assert batch_key is not None  # batches are read only with a batch_key
        codes, names = batches
        train = np.flatnonzero(split == "train")
        pipe.batches = BatchStandardizer.fit(
            batch_key, names, codes, lambda idx: apply_preprocessing(source.rows(idx), how), train,
            source.n_vars, rows_per_chunk(source.n_vars, data_cfg.chunk_mb),
        )  # fmt: skip
        if targets.task == "classification":
            warn_single_class_batches(codes, names, targets.y, train, batch_key)
    data = TrainData(
        pipe,
        targets.y,
        split,
        targets.task,
        targets.classes,
        chunk_mb=data_cfg.chunk_mb,
        shuffle=data_cfg.shuffle,
        prefetch=data_cfg.prefetch,
        device_prepare=data_cfg.device_prepare,
    )
    scaling = data_cfg.scaling if data_cfg.scale else "none"
    return data.with_inputs(scaling, data_cfg.n_genes, data_cfg.genes_by), kind
