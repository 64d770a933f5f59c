"""Res-VAE / VAE: likelihood, determinism, AnnData results, saved models, bad input."""

from __future__ import annotations

import anndata as ad
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.sparse as sp
from scipy import stats

import autogenome_sc as ag
from autogenome_sc.nn import build_vae, nb_log_prob
from autogenome_sc.train import fit_vae_config, prepare_vae
from autogenome_sc.train._vae import _TRACES

ARCH = {"first_width": 128, "n_layers": 3, "decay": 0.5, "latent": 16, "kl_warmup": 3}
FAST_VAE = {"trainer": {"max_epochs": 10, "patience": 10}, "models": {"resvae": ARCH, "vae": ARCH}}


def test_nb_log_prob_matches_scipy():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 60, 500).astype(np.float64)
    mu = rng.gamma(1.0, 5.0, 500) + 1e-3
    theta = rng.gamma(2.0, 2.0, 500) + 1e-2
    ours = np.asarray(nb_log_prob(jnp.asarray(x), jnp.asarray(mu), jnp.asarray(theta), eps=0.0))
    ref = stats.nbinom.logpmf(x, n=theta, p=theta / (theta + mu))
    np.testing.assert_allclose(ours, ref, rtol=2e-4, atol=2e-4)


def test_skip_connections_concatenate_earlier_outputs():
    arch = {"n_layers": 3, "first_width": 64, "decay": 0.5, "latent": 8, "input_keep": 1.0}
    arch.update(activation="relu", likelihood="mse")
    x = jnp.zeros((2, 30))
    res = jax.eval_shape(build_vae({"model": "resvae", **arch}, 30).init, jax.random.key(0), x)["params"]
    vae = jax.eval_shape(build_vae({"model": "vae", **arch}, 30).init, jax.random.key(0), x)["params"]
    # encoder widths 64, 32, 16: the Res-VAE's third unit reads 64 + 32 features, the VAE's 32
    assert res["enc_2"]["Dense_0"]["kernel"].shape == (96, 16)
    assert vae["enc_2"]["Dense_0"]["kernel"].shape == (32, 16)
    # the latent heads read every encoder unit (Res-VAE) or the last one (VAE)
    assert res["z_mean"]["kernel"].shape == (112, 8)
    assert vae["z_mean"]["kernel"].shape == (16, 8)
    # decoder: z (8) joins the concatenation; output reads all decoder units (16 + 32 + 64)
    assert res["dec_1"]["Dense_0"]["kernel"].shape == (8 + 16, 32)
    assert res["out"]["kernel"].shape == (112, 30)


@pytest.fixture(scope="module")
def pbmc_vae(_pbmc, tmp_path_factory):
    adata = _pbmc.copy()
    cfg = {**FAST_VAE, "save": {"path": str(tmp_path_factory.mktemp("resvae") / "model")}}
    ag.tl.train(adata, None, model="resvae", use_raw=True, config=cfg, rng=0)
    return adata


def test_pbmc_latent_separates_cell_types(pbmc_vae, tmp_path):
    from sklearn.metrics import silhouette_score

    a = pbmc_vae
    z = a.obsm["X_ag"]
    assert z.shape == (a.n_obs, 16) and np.isfinite(z).all()
    labels = a.obs["bulk_labels"].to_numpy()
    sil = silhouette_score(z, labels)
    shuffled = silhouette_score(z, np.random.default_rng(0).permutation(labels))
    assert sil > 0 > shuffled
    uns = a.uns["ag"]
    assert uns["task"] == "embedding" and uns["params"]["arch_model"] == "resvae"
    assert uns["params"]["arch_likelihood"] == "mse"  # log values in raw.X -> the paper's loss
    assert np.isfinite(uns["metrics"]["val_elbo"]) and uns["metrics"]["val_elbo"] < 0
    hist = uns["history"]
    assert hist["val_loss"][-1] < hist["val_loss"][0]  # training improved the validation ELBO
    assert "ag_reconstruction" not in a.layers  # only on request
    assert set(a.obs["ag_split"].cat.categories) == {"train", "val", "test"}
    # h5ad round trip
    a.write_h5ad(tmp_path / "a.h5ad")
    b = ad.read_h5ad(tmp_path / "a.h5ad")
    np.testing.assert_array_equal(b.obsm["X_ag"], z)
    assert b.uns["ag"]["metrics"]["val_elbo"] == pytest.approx(uns["metrics"]["val_elbo"])
    np.testing.assert_allclose(b.uns["ag"]["history"]["val_loss"], hist["val_loss"])


def test_saved_embedding_model_embeds_a_query(pbmc_vae):
    a = pbmc_vae
    model = ag.read_model(a.uns["ag"]["model_path"])
    assert model.task == "embedding" and "embedding" in repr(model)
    np.testing.assert_allclose(model.embed(a, use_raw=True), a.obsm["X_ag"], rtol=1e-4, atol=1e-4)
    # a query with its genes reordered and a few missing: aligned by name, with a warning
    raw = a.raw.to_adata()
    order = np.random.default_rng(1).permutation(raw.n_vars)
    query = raw[:, order].copy()
    np.testing.assert_allclose(model.embed(query), a.obsm["X_ag"], rtol=1e-4, atol=1e-4)
    with pytest.warns(UserWarning, match="missing from the query"):
        z = model.embed(query[:, 20:].copy())
    assert z.shape == a.obsm["X_ag"].shape
    with pytest.raises(ValueError, match="embedding model"):
        model.predict(query)
    ag.tl.predict(query, model, key_added="q")
    np.testing.assert_allclose(query.obsm["X_q"], a.obsm["X_ag"], rtol=1e-4, atol=1e-4)
    assert "q_prediction" not in query.obs


def test_nb_counts_same_rng_same_latent_and_reconstruction(counts):
    cfg = {**FAST_VAE, "trainer": {"max_epochs": 4, "patience": 4}}
    a = ag.tl.train_vae(counts, reconstruct=True, eval_key="cell_type", config=cfg, rng=3, copy=True)
    b = ag.tl.train_vae(counts, reconstruct=True, config=cfg, rng=3, copy=True)
    assert a.uns["ag"]["params"]["arch_likelihood"] == "nb"  # counts -> NB under "auto"
    np.testing.assert_array_equal(a.obsm["X_ag"], b.obsm["X_ag"])
    rec = a.layers["ag_reconstruction"]
    assert rec.shape == counts.shape and (rec >= 0).all()
    # NB means are the observed library size times softmax-normalised rates: rows sum to the library
    np.testing.assert_allclose(rec.sum(1), np.asarray(counts.X.sum(1)).ravel(), rtol=1e-3)
    m = a.uns["ag"]["metrics"]
    assert {"davies_bouldin", "silhouette", "leiden_ari", "leiden_nmi"} <= set(m)
    # scib-metrics (the scib extra, installed with the test extra): its rescaled silhouette is (ours + 1) / 2
    assert m["scib_silhouette_label"] == pytest.approx((m["silhouette"] + 1) / 2, abs=1e-3)
    assert 0 <= m["scib_nmi_kmeans"] <= 1 and -0.5 <= m["scib_ari_kmeans"] <= 1
    # one compilation for both fits; a third fit of the architecture (as in a search) reuses it
    data, _, arch = prepare_vae(counts, model="resvae", cfg=ag.config.validate(cfg), rng=3)  # a's split
    assert _TRACES[("train_chunk", build_vae(arch, counts.n_vars))] == 1
    c = fit_vae_config(data, arch, cfg, rng=4)
    assert c.n_traces == {"train_chunk": 0, "terms": 0} and len(c.history["val_loss"]) == 4
    assert -c.best_val_loss != pytest.approx(a.uns["ag"]["metrics"]["val_elbo"])  # another rng, other weights
    # the saved NB model reads raw counts, and refuses log values
    model = ag.read_model(a.uns["ag"]["model_path"])
    np.testing.assert_allclose(model.embed(counts), a.obsm["X_ag"], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(model.reconstruct(counts), rec, rtol=1e-3, atol=1e-3)
    logged = counts.copy()
    logged.X = logged.X.log1p()
    with pytest.raises(ValueError, match="reads raw counts"):
        model.embed(logged)


def test_random_split_is_8_1_1():
    from autogenome_sc.data import random_split

    split = random_split(700, (0.8, 0.1, 0.1), np.random.default_rng(0))
    assert [(split == s).sum() for s in ("train", "val", "test")] == [560, 70, 70]
    assert not np.array_equal(split, random_split(700, (0.8, 0.1, 0.1), np.random.default_rng(1)))
    with pytest.raises(ValueError, match="at least 3 cells"):
        random_split(2, (0.8, 0.1, 0.1), np.random.default_rng(0))


def test_bad_input(pbmc, counts):
    with pytest.raises(ValueError, match="negative values"):
        ag.tl.train_vae(pbmc, likelihood="nb", config=FAST_VAE)  # X is z-scored
    with pytest.raises(ValueError, match="non-integer values"):
        ag.tl.train_vae(pbmc, use_raw=True, likelihood="nb", config=FAST_VAE)  # raw holds log values
    with pytest.raises(ValueError, match="raw counts, which the 'mse' likelihood"):
        ag.tl.train_vae(counts, likelihood="mse", config={"data": {"preprocess": "none"}})
    with pytest.raises(ValueError, match="Unknown unsupervised model"):
        ag.tl.train_vae(pbmc, model="resnet")
    with pytest.raises(ValueError, match="Unknown likelihood"):
        ag.tl.train_vae(pbmc, likelihood="poisson")
    with pytest.raises(ValueError, match="unsupervised; pass label_key=None"):
        ag.tl.train(pbmc, "bulk_labels", model="resvae")
    with pytest.raises(KeyError, match="eval_key 'nope'"):
        ag.tl.train_vae(pbmc, eval_key="nope")
    with pytest.raises(ValueError, match="Invalid config field 'models.resvae.decay'"):
        ag.tl.train_vae(pbmc, config={"models": {"resvae": {"decay": 1.5}}})
    bad = counts.copy()
    bad.X = sp.csr_matrix(bad.X.toarray() * 0.5)
    with pytest.raises(ValueError, match="non-integer values"):
        ag.tl.train_vae(bad, likelihood="nb")
    assert "X_ag" not in pbmc.obsm and "X_ag" not in counts.obsm


def test_suggest_vae_arch_samples_the_papers_space():
    import optuna

    spaces = ag.config.validate(None).search.spaces
    assert spaces.resvae_layers == [3, 4, 5] and spaces.resvae_decay == [0.8, 0.6, 0.5]
    assert spaces.resvae_first_widths == [4096, 2048, 1024, 512, 256, 128]
    from autogenome_sc.search._spaces import suggest_vae_arch

    base = {"model": "resvae", "latent": 128, "likelihood": "mse", "n_layers": 3}
    trial = optuna.trial.FixedTrial({"n_layers": 5, "first_width": 256, "decay": 0.6, "input_keep": 0.6})
    arch = suggest_vae_arch(trial, spaces, base)
    assert arch == {**base, "n_layers": 5, "first_width": 256, "decay": 0.6, "input_keep": 0.6}
    with pytest.raises(ValueError):
        suggest_vae_arch(
            optuna.trial.FixedTrial({"n_layers": 7, "first_width": 256, "decay": 0.6, "input_keep": 0.6}), spaces, base
        )


def test_plain_vae_through_tl_train(counts):
    cfg = {**FAST_VAE, "trainer": {"max_epochs": 2, "patience": 2}}
    out = ag.tl.train(counts, None, model="vae", config=cfg, key_added="vae", rng=0, copy=True)
    assert out.obsm["X_vae"].shape == (counts.n_obs, ARCH["latent"]) and np.isfinite(out.obsm["X_vae"]).all()
    assert out.uns["vae"]["params"]["model"] == "vae" and out.uns["vae"]["params"]["arch_likelihood"] == "nb"
    assert "X_vae" not in counts.obsm


def test_dense_narrow_data_get_a_gaussian_likelihood_and_a_small_latent_that_stay_alive(pbmc):
    from sklearn.metrics import davies_bouldin_score

    # 48 dense genes (pbmc68k_reduced's z-scored X, the most variable), the width of a qPCR panel
    raw_var = pbmc.raw.to_adata()[:, pbmc.var_names].X.toarray().var(axis=0)
    a = pbmc[:, np.argsort(-raw_var)[:48]].copy()
    data, _, arch = prepare_vae(a)
    assert arch["likelihood"] == "gaussian"  # dense values under "auto"
    assert arch["latent"] == 16  # "auto": a third of 48 genes
    _, _, sparse_arch = prepare_vae(pbmc, use_raw=True)
    assert sparse_arch["likelihood"] == "mse" and sparse_arch["latent"] == 128  # log-normalised, mostly zeros
    cfg = {"trainer": {"max_epochs": 25, "patience": 25}, "models": {"resvae": {"first_width": 128}}}
    scores = {}
    for lik in ("mse", "gaussian"):
        out = ag.tl.train_vae(a, likelihood=lik, rng=0, copy=True, config=cfg)
        z = out.obsm["X_ag"]
        scores[lik] = (int((z.std(axis=0) > 0.1).sum()), davies_bouldin_score(z, a.obs["bulk_labels"]))
    # with a fixed unit noise scale the code collapses towards the prior; a learned scale keeps it
    assert scores["gaussian"][0] == 16 > scores["mse"][0]
    assert scores["gaussian"][1] < scores["mse"][1]
    model = ag.read_model(out.uns["ag"]["model_path"])
    np.testing.assert_allclose(model.embed(a), out.obsm["X_ag"], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("latent", [0, -3, True])
def test_latent_size_must_be_auto_or_positive(latent):
    from autogenome_sc import config

    with pytest.raises(ValueError, match="latent size must be 'auto' or a positive integer"):
        config.validate({"models": {"resvae": {"latent": latent}}})
    assert config.validate({"models": {"resvae": {"latent": 8}}}).models.resvae.latent == 8
