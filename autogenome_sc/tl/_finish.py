"""One ``finish`` for every task: build the ``Model``, score it once on the test split, save it, write AnnData.

What differs between tasks is a named step each: how the test split is scored
(:func:`_score_supervised` with calibration, :func:`_score_embedding` with the ELBO and
latent metrics) and what is written besides ``uns`` (:func:`write_predictions`, or the
latent and reconstruction); :func:`record_run` writes what every task shares.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import jax
import numpy as np
from anndata import AnnData

from .. import _logging as logg
from .._keys import Keys
from .._precision import at_full_precision
from ..data import Scaler, TrainData
from ..data._hierarchy import Hierarchy
from ..model import Model
from ..train import FitResult, evaluate_elbo, make_terms, predict_arrays
from ._calibrate import calibrate
from ._predict import REJECT_UNCERTAINTY
from ._results import default_model_path, preprocessing_record, probability_classes, record_run, write_predictions

if TYPE_CHECKING:
    from ..config._schema import Config


@at_full_precision  # what a user reads is exact, whatever the training's precision
def finish(
    adata: AnnData,
    data: TrainData,
    kind: str,
    arch: dict,
    result: FitResult,
    cfg: Config,
    *,
    label_key: str | None = None,
    key_added: str = "ag",
    rng: int = 0,
    extra_uns: dict | None = None,
    held_out: tuple[np.ndarray, np.ndarray] | None = None,
    reconstruct: bool = False,
    eval_key: str | None = None,
    hierarchy: Hierarchy | None = None,
) -> Model:
    """Evaluate the fitted network on the test split once, save it, write results to ``adata``.

    ``held_out = (rows, outputs)``: out-of-fold outputs that calibrate a model trained on
    train + validation (see :func:`autogenome_sc.tl._calibrate.calibrate`). ``reconstruct``
    and ``eval_key`` are for embeddings: write the reconstruction, score the latent space
    against a column of ``adata.obs``. ``hierarchy``: the coarser levels of a classification's
    labels, written and scored per level.
    """
    model = _model(data, kind, arch, result, cfg)
    if hierarchy is not None:
        model.hierarchy_ = hierarchy.to_dict()
    keys = Keys(key_added)
    if data.task == "embedding":
        latent = _score_embedding(model, data, result, adata, rng, eval_key)
        params: dict[str, Any] = {
            "model": arch["model"], "matrix": data.pipeline.source.where, "eval_key": eval_key,
            "reconstruct": reconstruct,
        }  # fmt: skip
    else:
        out, emb, evidence, calib_uns = _score_supervised(model, data, result, adata.n_obs, held_out)
        params = {"label_key": label_key}  # the finest level with a hierarchy, whose levels follow
        if hierarchy is not None:
            params["label_levels"] = hierarchy.levels
        extra_uns = {**calib_uns, **(extra_uns or {})}
        if data.task == "classification":
            extra_uns["probabilities"] = probability_classes(model, keys)
    _save(model, cfg, key_added, label_key)
    if data.task == "embedding":
        added = _write_embedding(adata, model, data, latent, keys, reconstruct)
    else:
        added = write_predictions(adata, model, out, emb, keys, evidence=evidence)
    params.update({"rng": rng, "n_devices": result.n_devices, **{f"arch_{k}": v for k, v in arch.items()}})
    record_run(adata, data, model, result, cfg, keys=keys, params=params, added=added, extra_uns=extra_uns)
    return model


def _save(model: Model, cfg: Config, key_added: str, label_key: str | None, attempts: int = 5) -> None:
    """Save to ``save.path``, or to a fresh folder under ``ag.settings.model_dir``.

    A fresh folder another process created meanwhile (two runs started in the same second)
    is not the user's choice: the next free name is taken instead.
    """
    for i in range(attempts):
        path = default_model_path(cfg.save.path, key_added, label_key)
        try:
            model.save(path, overwrite=cfg.save.overwrite)
            return
        except FileExistsError:
            if cfg.save.path is not None or i == attempts - 1:
                raise


def _model(data: TrainData, kind: str, arch: dict, result: FitResult, cfg: Config) -> Model:
    """The unsaved ``Model`` of a fitted network, with the preprocessing a query must get."""
    pipe = data.pipeline
    scaler = pipe.scaler if pipe.scaler is not None else Scaler.identity(pipe.n_features)
    applied = preprocessing_record(kind, pipe, cfg)
    if arch.get("likelihood") == "nb":  # an NB model reads raw counts: a query must get no preprocessing either
        applied["config"] = "none"
    return Model(
        architecture=arch,
        task=data.task,
        classes_=data.classes,
        var_names_=pipe.var_names,
        preprocessing_=applied,
        variables=result.variables,
        scaler_min_=scaler.min_,
        scaler_scale_=scaler.scale_,
        target_mean_=result.target_mean,
        target_std_=result.target_std,
        config=cfg.model_dump(mode="json"),
        layer=pipe.source.layer,
        use_raw=pipe.source.use_raw,
        gene_symbols=pipe.source.gene_symbols,
    )


def _score_supervised(
    model: Model, data: TrainData, result: FitResult, n_obs: int, held_out: tuple[np.ndarray, np.ndarray] | None
) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, ...] | None, dict[str, Any]]:
    """Outputs, embeddings and input-space evidence of every cell; test metrics (and calibration) into ``model``."""
    pipe = data.pipeline
    out, emb = predict_arrays(model.apply_fn, model.variables, pipe, np.arange(n_obs), min(1024, n_obs))
    calib_metrics: dict[str, Any] = {}
    calib_uns: dict[str, Any] = {}
    evidence = None
    if data.task == "classification":
        calib_metrics, calib_uns = calibrate(model, data, out, emb, held_out)
        evidence = model.input_evidence(pipe, n_obs)
    pred, p = model.postprocess(out)
    test = data.idx["test"]
    if p is not None and model.novelty_ and len(test):
        calib_metrics["auto_rejected_test"] = _auto_rejected(model, emb, p, evidence, test)
    metrics = model.task_type.metrics(data.y[test], pred[test], len(data.classes or ()))
    hierarchy = model.hierarchy
    if hierarchy is not None:  # each coarser level scored like the finest: its labels are the parents of the fine ones
        metrics["levels"] = {}
        for level in hierarchy.levels[:-1]:
            classes, M = hierarchy.membership(level)
            parent = M.argmax(axis=1)
            scored = model.task_type.metrics(parent[data.y[test]], parent[pred[test]], len(classes))
            metrics["levels"][level] = {k: scored[k] for k in ("accuracy", "macro_f1", "balanced_accuracy")}
    metrics["best_epoch"] = result.best_epoch
    metrics["best_val_loss"] = result.best_val_loss
    metrics.update(calib_metrics)
    model.metrics_ = metrics
    return out, emb, evidence, calib_uns


def _auto_rejected(
    model: Model, emb: np.ndarray, p: np.ndarray, evidence: tuple[np.ndarray, ...] | None, test: np.ndarray
) -> float:
    """The share of held-out test cells ``predict(reject="auto")`` would leave ``"Unassigned"``; logged.

    With ``ag.tl.train`` the uncertainty is ranked among the validation cells, so this
    estimates the false-rejection rate on cells like the reference (about 5% by design); after a
    search's cross-validation the test cells are that reference themselves.
    """
    part = None if evidence is None else (evidence[0][test], evidence[1][test])
    u = model.uncertainty_of(emb[test], p[test], part)
    share = float(np.mean(u > REJECT_UNCERTAINTY))
    logg.info(f"    reject='auto' would leave {share:.1%} of the {len(test)} held-out test cells Unassigned")
    return share


def _score_embedding(
    model: Model, data: TrainData, result: FitResult, adata: AnnData, rng: int, eval_key: str | None
) -> np.ndarray:
    """The latent means of every cell; the test ELBO (and latent metrics with ``eval_key``) into ``model``."""
    pipe = data.pipeline
    key = jax.random.fold_in(jax.random.key(rng), 1)
    test = evaluate_elbo(make_terms(model.net), model.variables, pipe, data.idx["test"], key)
    metrics: dict[str, Any] = {
        "val_elbo": -result.best_val_loss,
        "test_elbo": test["elbo"],
        "test_recon": test["recon"],
        "test_kl": test["kl"],
        "best_epoch": result.best_epoch,
    }
    latent = model.embed_rows(pipe, np.arange(adata.n_obs))
    if eval_key is not None:
        metrics.update(latent_metrics(latent, adata.obs[eval_key].to_numpy(), rng=rng))
    model.metrics_ = metrics
    return latent


def _write_embedding(
    adata: AnnData, model: Model, data: TrainData, latent: np.ndarray, keys: Keys, reconstruct: bool
) -> list[str]:
    adata.obsm[keys.obsm] = latent.astype(np.float32)
    added = [f"'{keys.obsm}' (adata.obsm)"]
    if reconstruct:
        adata.layers[keys.reconstruction] = model.reconstruct_rows(data.pipeline, np.arange(adata.n_obs))
        added.append(f"'{keys.reconstruction}' (adata.layers)")
    return added


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
        **scib_scores(latent, labels),
    }


def scib_scores(latent: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """scib-metrics' label-conservation scores, as published benchmark tables report them.

    ``scib_silhouette_label`` (silhouette of the labels rescaled to [0, 1]),
    ``scib_nmi_kmeans`` and ``scib_ari_kmeans`` (k-means with one cluster per label). They
    need the optional extra ``autogenome_sc[scib]``; without it they are left out and the log
    says so.
    """
    import pandas as pd

    try:
        import scib_metrics
    except ImportError:
        logg.info("    scib-metrics scores left out: install them with `pip install 'autogenome_sc[scib]'`")
        return {}
    x = np.asarray(latent, np.float32)
    codes = pd.Categorical(labels).codes.astype(np.int32)
    km = scib_metrics.nmi_ari_cluster_labels_kmeans(x, codes)
    return {
        "scib_silhouette_label": float(scib_metrics.silhouette_label(x, codes)),
        "scib_nmi_kmeans": float(km["nmi"]),
        "scib_ari_kmeans": float(km["ari"]),
    }
