"""Unlabelled training problems (VAE): a random split, and the raw-count route for the NB likelihood."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

import numpy as np
from anndata import AnnData

from ._labels import Targets, read_split
from ._matrix import MatrixSource, check_finite_and_detect, get_source, zero_fraction
from ._pipeline import Pipeline, TrainData
from ._scale import Scaler

if TYPE_CHECKING:
    from ..config._schema import DataConfig


def random_split(n: int, fractions: tuple[float, float, float], rng: np.random.Generator) -> np.ndarray:
    """Assign ``n`` cells at random to ``"train"``, ``"val"`` and ``"test"`` (at least one each)."""
    if n < 3:
        raise ValueError(f"A train/validation/test split needs at least 3 cells, got {n}.")
    _, f_val, f_test = fractions
    n_test = max(1, int(round(f_test * n)))
    n_val = max(1, int(round(f_val * n)))
    out = np.full(n, "train", dtype=object)
    perm = rng.permutation(n)
    out[perm[:n_test]] = "test"
    out[perm[n_test : n_test + n_val]] = "val"
    return out.astype(str)


def check_counts(source: MatrixSource, chunk_mb: float) -> None:
    """Refuse negative or non-integer values (the negative-binomial likelihood needs raw counts)."""
    for _, _, b in source.data_blocks(chunk_mb):
        if b.size and b.min() < 0:
            raise ValueError(
                f"The negative-binomial likelihood needs raw counts, but adata.{source.where} has negative values; "
                "pass the counts with `layer=` or use likelihood='mse'."
            )
        if b.size and not np.all(np.abs(b - np.round(b)) < 1e-6):
            raise ValueError(
                f"The negative-binomial likelihood needs raw counts, but adata.{source.where} has non-integer values; "
                "pass the counts with `layer=` or use likelihood='mse'."
            )


def prepare_unsupervised(
    adata: AnnData,
    *,
    layer: str | None,
    use_raw: bool,
    split_key: str | None,
    data_cfg: DataConfig,
    likelihood: str,
    rng: np.random.Generator,
) -> tuple[TrainData, str, str]:
    """Build an unlabelled training problem; return it with the detected input kind and the likelihood.

    ``likelihood="auto"`` becomes ``"nb"`` for raw counts, ``"gaussian"`` for dense values
    (fewer than half of the first rows' entries zero: microarrays, qPCR) and ``"mse"`` for
    sparse ones (log-normalised single-cell data). For ``"nb"`` the rows reach the network
    as raw counts (no preprocessing, no scaling); for the others they are preprocessed and
    0-1 scaled as for supervised training.
    """
    from . import resolve_preprocessing

    source = get_source(adata, layer=layer, use_raw=use_raw)
    kind = check_finite_and_detect(source, data_cfg.chunk_mb)
    if likelihood == "auto":  # counts: NB; dense measurements (microarray, qPCR): Gaussian; sparse values: MSE
        if kind == "counts":
            likelihood = "nb"
        else:
            likelihood = "gaussian" if zero_fraction(source, data_cfg.chunk_mb) < 0.5 else "mse"
    if likelihood == "nb":
        check_counts(source, data_cfg.chunk_mb)
        how = "none"
    else:
        how = resolve_preprocessing(kind, data_cfg.preprocess)
        if kind == "counts" and (how == "none" or not data_cfg.scale):
            raise ValueError(
                f"adata.{source.where} holds raw counts, which the '{likelihood}' likelihood cannot model "
                "without log-normalisation and 0-1 scaling; use likelihood='nb', or data.preprocess='auto' "
                "with data.scale=True."
            )
        if not data_cfg.scale:
            raise ValueError(f"The '{likelihood}' likelihood needs 0-1 scaled input; set data.scale=True.")
    dummy = np.zeros(source.n_obs, dtype=np.int32)
    if split_key is not None:
        split = read_split(adata, split_key, Targets(dummy, "embedding", None))
        if not (split == "test").any():
            raise ValueError(f"adata.obs['{split_key}'] has no 'test' cells.")
    else:
        split = random_split(source.n_obs, cast("tuple[float, float, float]", tuple(data_cfg.split)), rng)
    pipe = Pipeline(source=source, preprocess=how)
    data = TrainData(
        pipe,
        dummy,
        split,
        "embedding",
        None,
        chunk_mb=data_cfg.chunk_mb,
        shuffle=data_cfg.shuffle,
        prefetch=data_cfg.prefetch,
        device_prepare=data_cfg.device_prepare,
    )
    if likelihood != "nb":
        pipe.fit_scaler(data.idx["train"], data_cfg.chunk_mb)
    else:
        pipe.scaler = Scaler.identity(source.n_vars)
    return data, kind, likelihood
