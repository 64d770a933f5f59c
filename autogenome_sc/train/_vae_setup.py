"""Preparing an unlabelled problem and training one (Res-)VAE configuration on it.

Below ``search`` and ``tl`` so both use it: ``ag.tl.train_vae`` trains one configuration,
a search calls :func:`prepare_vae` once and :func:`fit_vae_config` per trial.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jax
import numpy as np
from anndata import AnnData

from .. import _logging as logg
from .. import config as _config
from .._names import LIKELIHOODS
from ..data import TrainData, prepare_unsupervised
from ..nn import VAE_MODELS, build_vae
from ._epochs import FitResult
from ._vae import fit_vae

if TYPE_CHECKING:
    from ..config._schema import Config


def check_vae_model(model: str) -> None:
    if model not in VAE_MODELS:
        raise ValueError(f"Unknown unsupervised model '{model}'; choose 'resvae' or 'vae'.")


def prepare_vae(
    adata: AnnData,
    *,
    model: str = "resvae",
    layer: str | None = None,
    use_raw: bool = False,
    likelihood: str | None = None,
    split_key: str | None = None,
    cfg: Mapping[str, Any] | str | Path | Config | None = None,
    rng: int = 0,
) -> tuple[TrainData, str, dict]:
    """Prepare the unlabelled problem once; return ``(data, input kind, architecture dict)``.

    The architecture is the config's ``models.<model>`` with the likelihood resolved; a
    search overrides its ``n_layers``, ``first_width``, ``decay`` and ``input_keep``.
    """
    cfg = _config.validate(cfg)
    check_vae_model(model)
    section = getattr(cfg.models, model)
    lik = likelihood if likelihood is not None else section.likelihood
    if lik not in ("auto", *LIKELIHOODS):
        raise ValueError(f"Unknown likelihood '{lik}'; choose one of 'auto', {', '.join(map(repr, LIKELIHOODS))}.")
    data, kind, lik = prepare_unsupervised(
        adata,
        layer=layer,
        use_raw=use_raw,
        split_key=split_key,
        data_cfg=cfg.data,
        likelihood=lik,
        rng=np.random.default_rng(rng),
    )
    what = {"none": "used as is", "log1p": "log1p", "normalize_log1p": "normalised to 1e4 per cell, log1p"}
    scaled = "raw counts to the network (log1p inside)" if lik == "nb" else "then per-gene 0-1 scaling"
    logg.info(
        f"    adata.{data.pipeline.source.where} looks like {kind} values: {what[data.pipeline.preprocess]}, "
        f"{scaled}; {lik} likelihood"
    )
    arch = {"model": model, **section.model_dump(mode="json"), "likelihood": lik}
    if arch["latent"] == "auto":
        arch["latent"] = auto_latent(len(data.idx["train"]), data.pipeline.n_features)
        logg.info(f"    latent code of {arch['latent']} dimensions ({len(data.idx['train'])} training cells)")
    return data, kind, arch


def auto_latent(n_train: int, n_genes: int) -> int:
    """The latent size ``"auto"`` means: 128, at most a quarter of the training cells and a third of the genes, at least 2.

    A 128-d code for 30 training samples or 48 genes is mostly noise dimensions: on the Golub
    microarray (30 training samples) a latent of 8 gave Davies-Bouldin 1.86 against 2.70 for
    128, on the 48-gene qPCR data 16 gave 2.31 against 2.61 (see docs/benchmarks.md).
    """
    return int(max(2, min(128, n_train // 4, n_genes // 3)))


def fit_vae_config(
    data: TrainData,
    arch: dict,
    cfg: Mapping[str, Any] | str | Path | Config | None = None,
    *,
    rng: int = 0,
    callback: Callable[[int, dict], None] | None = None,
) -> FitResult:
    """Train one (Res-)VAE configuration; ``-result.best_val_loss`` is its validation ELBO.

    Parameters
    ----------
    data
        From :func:`prepare_vae`.
    arch
        Architecture dict (``model``, ``n_layers``, ``first_width``, ``decay``, ``latent``,
        ``input_keep``, ``activation``, ``likelihood``, ``kl_warmup``).
    cfg
        The validated config (its ``trainer`` section is used).
    rng
        Seed.
    callback
        ``callback(epoch, metrics)`` after each epoch (``metrics["val_loss"]`` is the negative
        validation ELBO); may raise ``optuna.TrialPruned``.

    Returns
    -------
    The :class:`~autogenome_sc.train.FitResult` of the best epoch.
    """
    cfg = _config.validate(cfg)
    net = build_vae(arch, data.pipeline.n_features)
    return fit_vae(
        net,
        data,
        cfg.trainer,
        jax.random.key(rng),
        kl_warmup=int(arch.get("kl_warmup", 10)),
        callback=callback,
        desc=f"training {arch['model']}",
    )
