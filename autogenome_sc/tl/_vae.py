"""``train_vae``: one Res-VAE (or plain VAE) on unlabelled cells; latent means and reconstructions in AnnData.

For a search: :func:`~autogenome_sc.train.prepare_vae` once,
:func:`~autogenome_sc.train.fit_vae_config` per trial, then :func:`~autogenome_sc.tl._finish.finish` for the winner.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from anndata import AnnData

from .. import _logging as logg
from .. import config as _config
from .._checks import check_key_added, check_rng, writable
from .._docs import INPUT_SPLIT_KEY, doc_params
from ..train import check_vae_model, fit_vae_config, prepare_vae
from ._finish import finish
from ._results import log_finished


@doc_params(input_split_key=INPUT_SPLIT_KEY)
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
    {input_split_key}
    likelihood
        ``"mse"`` or ``"bernoulli"`` on 0-1 scaled log-expression (the paper's), ``"nb"``
        (negative binomial) on raw counts, ``"auto"`` (``"nb"`` for raw counts, else ``"mse"``),
        or ``None`` for the config's choice.
    reconstruct
        Also write the reconstruction of every cell (computed in chunks; dense, cells x genes).
    eval_key
        Column of ``adata.obs`` with known groups to score the latent space against.
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
    rng, cfg, key_added = check_rng(rng), _config.validate(config), check_key_added(key_added)
    _check_arguments(adata, model, use_raw=use_raw, reconstruct=reconstruct, eval_key=eval_key)
    adata = writable(adata, copy)
    start = logg.info(f"training {model} (unsupervised)")
    data, kind, arch = prepare_vae(
        adata, model=model, layer=layer, use_raw=use_raw, likelihood=likelihood, split_key=split_key, cfg=cfg, rng=rng
    )
    result = fit_vae_config(data, arch, cfg, rng=rng)
    fitted = finish(
        adata, data, kind, arch, result, cfg, key_added=key_added, rng=rng, reconstruct=reconstruct, eval_key=eval_key
    )
    log_finished(start, fitted, f"validation ELBO {fitted.metrics_['val_elbo']:.2f} per cell")
    return adata if copy else None


def _check_arguments(adata: AnnData, model: str, *, use_raw: bool, reconstruct: bool, eval_key: str | None) -> None:
    """A VAE model name, an ``eval_key`` column of ``adata.obs``, and a reconstruction ``adata`` can hold."""
    check_vae_model(model)
    if eval_key is not None and eval_key not in adata.obs.columns:
        raise KeyError(f"eval_key '{eval_key}' is not a column of adata.obs.")
    if reconstruct and use_raw and adata.raw is not None and not adata.raw.var_names.equals(adata.var_names):
        raise ValueError(
            "reconstruct=True with use_raw=True needs adata.raw to hold the same genes as adata; "
            "reconstruct from a layer instead."
        )
