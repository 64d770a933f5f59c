"""``train_vae``: one Res-VAE (or plain VAE) on unlabelled cells; latent means and reconstructions in AnnData.

For a search: :func:`~autogenome_sc.train.prepare_vae` once,
:func:`~autogenome_sc.train.fit_vae_config` per trial, then :func:`finish_vae` for the winner.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import jax
import numpy as np
from anndata import AnnData

from .. import _logging as logg
from .. import config as _config
from .._checks import check_rng
from .._keys import Keys
from ..data import TrainData
from ..model import Model
from ..train import FitResult, check_vae_model, evaluate_elbo, fit_vae_config, make_terms, prepare_vae
from ._results import default_model_path, log_finished, preprocessing_record, record_run

if TYPE_CHECKING:
    from ..config._schema import Config


def train_vae(
    adata: AnnData,
    *,
    model: str = "resvae",
    layer: str | None = None,
    use_raw: bool = False,
    likelihood: str | None = None,
    reconstruct: bool = False,
    eval_key: str | None = None,
    split_key: str | None = None,
    key_added: str = "ag",
    config: dict[str, Any] | str | Path | None = None,
    rng: int = 0,
    copy: bool = False,
) -> AnnData | None:
    """Train a Res-VAE (or a plain VAE) on unlabelled cells; write latent means and, if asked, reconstructions.

    The cells are split at random 8:1:1 into train, validation and test; the network is
    trained on the ELBO (reconstruction + KL, the KL weight warmed up over
    ``models.<model>.kl_warmup`` epochs) with a one-cycle schedule, keeping the epoch with
    the best validation ELBO. Labels are never read for training: ``eval_key`` only scores
    the latent space afterwards.

    Parameters
    ----------
    adata
        Annotated data matrix (cells x genes), dense or sparse.
    model
        ``"resvae"`` (skip connections by concatenation, paper Fig. 4a) or ``"vae"`` (none);
        the architecture comes from the config's ``models.resvae`` / ``models.vae``.
    layer
        Use ``adata.layers[layer]`` (e.g. ``"counts"``) instead of ``adata.X``.
    use_raw
        Use ``adata.raw.X``.
    likelihood
        ``"mse"`` or ``"bernoulli"`` on 0-1 scaled log-expression (the paper's), ``"nb"``
        (negative binomial) on raw counts, ``"auto"`` (``"nb"`` for raw counts, else ``"mse"``),
        or ``None`` for the config's choice.
    reconstruct
        Also write the reconstruction of every cell (computed in chunks; dense, cells x genes).
    eval_key
        Column of ``adata.obs`` with known groups to score the latent space against.
    split_key
        Column of ``adata.obs`` holding ``"train"``/``"val"``/``"test"`` to use instead of a new split.
    key_added
        Prefix of every key written (see Returns).
    config
        Expert-mode configuration (dict or JSON path); see :func:`autogenome_sc.config.default`.
    rng
        Seed of everything random (split, initialisation, shuffling, dropout, sampled codes).
    copy
        Return a copy instead of writing to ``adata``.

    Returns
    -------
    ``None``, or a copy of ``adata`` when ``copy=True``, with

    ``.obsm["X_ag"]``
        Posterior mean of the latent code of every cell.
    ``.layers["ag_reconstruction"]``
        Only with ``reconstruct=True``: expected counts (``"nb"``) or the preprocessed
        values (scaling undone) decoded from the posterior mean.
    ``.obs["ag_split"]``
        ``"train"``, ``"val"`` or ``"test"``.
    ``.uns["ag"]``
        ``params``, ``config`` (JSON), ``task`` (``"embedding"``), ``metrics`` (``val_elbo``,
        ``test_elbo``, ``best_epoch`` and, with ``eval_key``, ``davies_bouldin``,
        ``silhouette``, ``leiden_ari``, ``leiden_nmi``, ``n_leiden``), ``history``,
        ``preprocessing``, ``model_path``, ``model_id`` (the saved model's checksum).
    """
    rng = check_rng(rng)
    cfg = _config.validate(config)
    check_vae_model(model)
    if eval_key is not None and eval_key not in adata.obs.columns:
        raise KeyError(f"eval_key '{eval_key}' is not a column of adata.obs.")
    if reconstruct and use_raw and adata.raw is not None and not adata.raw.var_names.equals(adata.var_names):
        raise ValueError(
            "reconstruct=True with use_raw=True needs adata.raw to hold the same genes as adata; "
            "reconstruct from a layer instead."
        )
    adata = adata.copy() if copy else adata
    start = logg.info(f"training {model} (unsupervised)")
    data, kind, arch = prepare_vae(
        adata, model=model, layer=layer, use_raw=use_raw, likelihood=likelihood, split_key=split_key, cfg=cfg, rng=rng
    )
    result = fit_vae_config(data, arch, cfg, rng=rng)
    fitted = finish_vae(
        adata, data, kind, arch, result, cfg, key_added=key_added, rng=rng, reconstruct=reconstruct, eval_key=eval_key
    )
    log_finished(start, fitted, f"validation ELBO {fitted.metrics_['val_elbo']:.2f} per cell")
    return adata if copy else None


def latent_metrics(latent: np.ndarray, labels, *, rng: int = 0) -> dict[str, float]:
    """Davies-Bouldin and silhouette of known groups, and ARI/NMI of Leiden clusters, on a latent space.

    Leiden (igraph flavour, resolution 1) runs on scanpy's 15-nearest-neighbour graph of the
    latent space with Gaussian-kernel connectivities. Cells without a label are left out.
    """
    import pandas as pd
    import scanpy as sc
    from sklearn.metrics import (
        adjusted_rand_score,
        davies_bouldin_score,
        normalized_mutual_info_score,
        silhouette_score,
    )

    labels = pd.Series(labels)
    known = labels.notna().to_numpy()  # unlabelled cells are embedded but not scored
    latent, labels = latent[known], labels[known].astype(str).to_numpy()
    if len(np.unique(labels)) < 2:
        raise ValueError("The eval_key column has a single group; scores need at least two.")
    tmp = AnnData(np.zeros((latent.shape[0], 1), np.float32))
    tmp.obsm["X_lat"] = latent
    # a Gaussian-kernel kNN graph: no numba compilation (the UMAP kernel costs seconds on first use)
    sc.pp.neighbors(tmp, use_rep="X_lat", method="gauss", random_state=rng)
    sc.tl.leiden(tmp, flavor="igraph", n_iterations=2, directed=False, random_state=rng)
    clusters = tmp.obs["leiden"].to_numpy()
    return {
        "davies_bouldin": float(davies_bouldin_score(latent, labels)),
        "silhouette": float(silhouette_score(latent, labels)),
        "leiden_ari": float(adjusted_rand_score(labels, clusters)),
        "leiden_nmi": float(normalized_mutual_info_score(labels, clusters)),
        "n_leiden": int(len(np.unique(clusters))),
    }


def finish_vae(
    adata: AnnData,
    data: TrainData,
    kind: str,
    arch: dict,
    result: FitResult,
    cfg: Config,
    *,
    key_added: str = "ag",
    rng: int = 0,
    reconstruct: bool = False,
    eval_key: str | None = None,
    extra_uns: dict | None = None,
) -> Model:
    """Score the fitted VAE on the test split once, save it, write latent (and reconstruction) to ``adata``."""
    cfg = _config.validate(cfg)
    pipe = data.pipeline
    # an NB model reads raw counts: a query must get no preprocessing either
    applied = preprocessing_record(kind, pipe, cfg)
    assert pipe.scaler is not None  # prepare_vae always sets one (the identity for the NB likelihood)
    if arch["likelihood"] == "nb":
        applied["config"] = "none"
    model = Model(
        architecture=arch,
        task="embedding",
        classes_=None,
        var_names_=pipe.var_names,
        preprocessing_=applied,
        variables=result.variables,
        scaler_min_=pipe.scaler.min_,
        scaler_scale_=pipe.scaler.scale_,
        config=cfg.model_dump(mode="json"),
    )
    key = jax.random.fold_in(jax.random.key(rng), 1)
    test = evaluate_elbo(make_terms(model.net), model.variables, pipe, data.idx["test"], key)
    metrics: dict[str, Any] = {
        "val_elbo": -result.best_val_loss,
        "test_elbo": test["elbo"],
        "test_recon": test["recon"],
        "test_kl": test["kl"],
        "best_epoch": result.best_epoch,
    }
    every = np.arange(adata.n_obs)
    latent = model.embed_rows(pipe, every)
    if eval_key is not None:
        metrics.update(latent_metrics(latent, adata.obs[eval_key].to_numpy(), rng=rng))
    model.metrics_ = metrics
    model.save(default_model_path(cfg.save.path, key_added, None), overwrite=cfg.save.overwrite)

    keys = Keys(key_added)
    adata.obsm[keys.obsm] = latent.astype(np.float32)
    added = [f"'{keys.obsm}' (adata.obsm)"]
    if reconstruct:
        adata.layers[keys.reconstruction] = model.reconstruct_rows(pipe, every)
        added.append(f"'{keys.reconstruction}' (adata.layers)")
    params = {
        "model": arch["model"],
        "matrix": pipe.source.where,
        "eval_key": eval_key,
        "reconstruct": reconstruct,
        "rng": rng,
        "n_devices": result.n_devices,
        **{f"arch_{k}": v for k, v in arch.items()},
    }
    record_run(adata, data, model, result, cfg, keys=keys, params=params, added=added, extra_uns=extra_uns)
    return model
