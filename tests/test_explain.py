"""Expected gradients (autogenome_sc.explain), ag.tl.explain, ag.get and the explanation plots."""

from __future__ import annotations

import warnings

import anndata as ad
import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import pytest
import shap

import autogenome_sc as ag
from autogenome_sc.explain import NetworkOutput, expected_gradients, model_output
from autogenome_sc.nn import build_network

matplotlib.use("Agg")

MONO, B = "CD14+ Monocyte", "CD19+ B"
# Canonical markers, fixed from the literature before looking at any result: the top marker
# genes of the "CD14 Mono" and "B naive" types of the Azimuth human PBMC reference
# (Hao et al., Cell 2021, "Integrated analysis of multimodal single-cell data").
MARKERS = {
    MONO: ["S100A9", "CTSS", "S100A8", "LYZ", "VCAN", "S100A12", "IL1B", "CD14", "G0S2", "FCN1"],
    B: ["IGHM", "IGHD", "CD79A", "IL4R", "MS4A1", "CXCR4", "BTG1", "TCL1A", "CD79B", "YBX3"],
}


def linear(w, x):
    return x @ w


def _net(kind: str, n_genes: int, n_out: int, seed: int = 0):
    arch = {
        "mlp": {"model": "mlp", "widths": [16, 16]},
        "resnet": {"model": "resnet", "width": 16, "n_blocks": 2},
        "densenet": {"model": "densenet", "block_structure": [2, 2], "growth_rate": 8},
    }[kind]
    net = build_network({**arch, "input_keep": 1.0, "dropout": 0.0}, n_out)
    v = net.init(jax.random.key(seed), jnp.zeros((1, n_genes)))
    # non-trivial running statistics so that eval-mode BatchNorm matters
    gen = np.random.default_rng(seed)

    def perturb(path, a):
        if "var" in str(path[-1]):
            return jnp.asarray(gen.uniform(0.5, 2.0, a.shape), jnp.float32)
        return jnp.asarray(gen.normal(0, 0.3, a.shape), jnp.float32)

    v = {"params": v["params"], "batch_stats": jax.tree_util.tree_map_with_path(perturb, v["batch_stats"])}
    return NetworkOutput(net), v


# ----------------------------------------------------------------------------- the estimator
def test_linear_model_gives_exact_shap_values():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(12, 3)).astype(np.float32)
    x, bg = rng.random((5, 12), np.float32), rng.random((9, 12), np.float32)
    exact = (x - bg.mean(0))[:, :, None] * w[None]
    # stratified draws use every background row equally often: exact for a linear model
    phi = expected_gradients(linear, jnp.asarray(w), x, bg, n_samples=18, sampling="stratified", rng=3)
    np.testing.assert_allclose(phi, exact, atol=1e-5)
    # i.i.d. draws (shap's): exact given the background rows actually drawn
    idx = rng.integers(0, 9, (5, 7))
    t = rng.random((5, 7)).astype(np.float32)
    phi = expected_gradients(linear, jnp.asarray(w), x, bg, draws=(idx, t))
    np.testing.assert_allclose(phi, (x[:, None, :] - bg[idx]).mean(1)[:, :, None] * w[None], atol=1e-5)


@pytest.mark.parametrize("kind", ["mlp", "resnet", "densenet"])
def test_completeness_within_monte_carlo_error(kind):
    rng = np.random.default_rng(1)
    f, v = _net(kind, 20, 4)
    x, bg = rng.random((6, 20), np.float32), rng.random((25, 20), np.float32)
    target = np.asarray(f(v, x)) - np.asarray(f(v, bg)).mean(0)  # f(x) - E f(x')
    gaps = np.stack(
        [expected_gradients(f, v, x, bg, n_samples=50, sampling="iid", rng=r).sum(1) - target for r in range(6)]
    )
    se = gaps.std(0, ddof=1) / np.sqrt(len(gaps))
    assert np.mean(np.abs(gaps.mean(0)) <= 4 * se + 1e-7) >= 0.95  # unbiased: mean gap within MC error
    assert np.abs(gaps).mean() < 0.5 * np.abs(target).mean()  # and the estimate is informative
    strat = np.stack(
        [expected_gradients(f, v, x, bg, n_samples=50, sampling="stratified", rng=r).sum(1) - target for r in range(6)]
    )
    # stratified t and background without replacement: smaller error at the same n_samples
    assert np.sqrt((strat**2).mean()) < 0.75 * np.sqrt((gaps**2).mean())
    assert np.abs(strat[0] - strat[1]).max() > 1e-6  # another rng, other draws
    if kind == "resnet":  # same rng -> same values, whatever the chunking
        again = expected_gradients(f, v, x, bg, n_samples=50, sampling="stratified", rng=0, chunk_size=4).sum(1)
        np.testing.assert_allclose(again - target, strat[0], atol=1e-6)
        np.testing.assert_allclose(model_output(f, v, x, batch_size=4), np.asarray(f(v, x)), atol=1e-6)


def _numpy_mlp_grad(v, z, c):
    """d softmax_c / d z of MLP(widths=[h]) in eval mode, by hand (numpy backprop)."""
    p, s = v["params"], v["batch_stats"]
    w1, b1 = np.asarray(p["FCUnit_0"]["Dense_0"]["kernel"]), np.asarray(p["FCUnit_0"]["Dense_0"]["bias"])
    g, beta = np.asarray(p["FCUnit_0"]["BatchNorm_0"]["scale"]), np.asarray(p["FCUnit_0"]["BatchNorm_0"]["bias"])
    mu, var = np.asarray(s["FCUnit_0"]["BatchNorm_0"]["mean"]), np.asarray(s["FCUnit_0"]["BatchNorm_0"]["var"])
    w2, b2 = np.asarray(p["head"]["kernel"]), np.asarray(p["head"]["bias"])
    inv = g / np.sqrt(var + 1e-5)
    pre = (z @ w1 + b1 - mu) * inv + beta
    h = np.maximum(pre, 0)
    logits = h @ w2 + b2
    e = np.exp(logits - logits.max(1, keepdims=True))
    prob = e / e.sum(1, keepdims=True)
    dlogits = prob[:, [c]] * (np.eye(w2.shape[1])[c] - prob)
    dpre = (dlogits @ w2.T) * (pre > 0) * inv
    return dpre @ w1.T


def test_equals_numpy_gradient_explainer_loop_with_the_same_draws():
    rng = np.random.default_rng(2)
    n_genes, n_out, n_samples = 7, 3, 40
    net = build_network({"model": "mlp", "widths": [8], "input_keep": 1.0, "dropout": 0.0}, n_out)
    v = net.init(jax.random.key(0), jnp.zeros((1, n_genes)))
    v = jax.tree.map(np.asarray, v)
    v["batch_stats"]["FCUnit_0"]["BatchNorm_0"]["mean"] = rng.normal(size=8).astype(np.float32) * 0.2
    v["batch_stats"]["FCUnit_0"]["BatchNorm_0"]["var"] = rng.uniform(0.5, 2, 8).astype(np.float32)
    x, bg = rng.random((4, n_genes), np.float32), rng.random((10, n_genes), np.float32)
    # the draws of shap.GradientExplainer.shap_values(rseed=7): per class, reseed; per row and
    # sample, a background index then t
    rs = np.random.RandomState(7)
    idx, t = np.zeros((4, n_samples), int), np.zeros((4, n_samples))
    for j in range(4):
        for k in range(n_samples):
            idx[j, k] = rs.choice(len(bg))
            t[j, k] = rs.uniform()
    ref = np.zeros((4, n_genes, n_out))
    for c in range(n_out):  # the GradientExplainer loop, in numpy
        for j in range(4):
            samples = t[j][:, None] * x[j] + (1 - t[j][:, None]) * bg[idx[j]]
            ref[j, :, c] = (_numpy_mlp_grad(v, samples, c) * (x[j] - bg[idx[j]])).mean(0)
    phi = expected_gradients(NetworkOutput(net), v, x, bg, draws=(idx, t), chunk_size=3)
    np.testing.assert_allclose(phi, ref, rtol=1e-4, atol=1e-6)


def test_estimator_rejects_bad_input():
    f, v = linear, jnp.ones((5, 2))
    x, bg = np.zeros((3, 5), np.float32), np.zeros((4, 5), np.float32)
    with pytest.raises(ValueError, match="same number of genes"):
        expected_gradients(f, v, x, np.zeros((4, 6)))
    with pytest.raises(ValueError, match="Unknown sampling"):
        expected_gradients(f, v, x, bg, sampling="sobol")
    with pytest.raises(ValueError, match="n_samples"):
        expected_gradients(f, v, x, bg, n_samples=0)
    with pytest.raises(ValueError, match="out of range"):
        expected_gradients(f, v, x, bg, draws=(np.full((3, 2), 9), np.zeros((3, 2))))
    with pytest.raises(ValueError, match="draws must be"):
        expected_gradients(f, v, x, bg, draws=(np.zeros((2, 2), int), np.zeros((2, 2))))


# ----------------------------------------------------------------------------- on pbmc68k_reduced
@pytest.fixture(scope="module")
def explained(tmp_path_factory):
    import scanpy as sc

    adata = sc.datasets.pbmc68k_reduced()
    cfg = {"save": {"path": str(tmp_path_factory.mktemp("explain") / "model")}}
    ag.tl.train(adata, "bulk_labels", use_raw=True, config=cfg, rng=0)
    exp = ag.tl.explain(
        adata, groups=[MONO, B], n_background=100, n_samples=100, max_cells=150, return_explanation=True, rng=0
    )
    return adata, exp


def test_explanation_and_importance_on_pbmc(explained):
    adata, exp = explained
    classes = list(adata.uns["ag"]["classes"])
    s = adata.uns["ag"]["shap"]
    n = len(s["obs_names"])
    assert n == 150 and exp.values.shape == (n, adata.raw.n_vars, len(classes))
    assert exp.base_values.shape == (n, len(classes)) and list(exp.output_names) == classes
    assert list(exp.feature_names) == list(adata.raw.var_names)
    np.testing.assert_allclose(exp.base_values.sum(1), 1.0, atol=1e-5)  # mean probabilities
    # completeness on the trained network: base + sum of SHAP ~= the predicted probabilities
    model = ag.read_model(adata.uns["ag"]["model_path"])
    assert abs(model.temperature - 1) > 0.05  # calibrated: the explained probabilities are softmax(logits / T)
    proba = model.predict_proba(adata, use_raw=True)
    p = proba.loc[list(s["obs_names"]), classes].to_numpy()
    # (relative Monte-Carlo error ~0.15 at 100 draws; a wrong base or scale would give ~1)
    assert np.abs(exp.base_values + exp.values.sum(1) - p).mean() < 0.25 * np.abs(p - exp.base_values).mean()
    # the explained cells are those of the requested groups, counted per class
    labels = adata.obs.loc[list(s["obs_names"]), "bulk_labels"].astype(str)
    assert set(labels) == {MONO, B}
    imp = ag.get.importance_df(adata)
    n_cells = dict(zip(imp.columns, adata.uns["ag"]["importance"]["n_cells"], strict=True))
    assert n_cells[MONO] == (labels == MONO).sum() and n_cells["overall"] == n
    assert imp.drop(columns=[MONO, B, "overall"]).abs().to_numpy().max() == 0
    np.testing.assert_allclose(imp["overall"], imp[[MONO, B]].sum(1), rtol=1e-5)
    cells = (labels == MONO).to_numpy()
    np.testing.assert_allclose(imp[MONO], np.abs(exp[:, :, MONO].values[cells]).sum(0), rtol=1e-4)
    shap.plots.beeswarm(exp[:, :, B], show=False)  # usable by shap's own plots
    matplotlib.pyplot.close("all")


@pytest.mark.parametrize(("group", "least"), [(MONO, 2), (B, 3)])
def test_top_genes_include_canonical_markers(explained, group, least):
    # Measured while writing this test (n_samples=100, 150 cells): B finds CD79A, CD79B, MS4A1
    # for training seeds 0, 1 and 2. Monocyte finds CTSS, FCN1, S100A9 for seeds 0 and 1 but
    # none for seed 2, whose top Monocyte genes (C1QA, TMEM176A/B, FCER1A, FCGR3A, CD33) are
    # those that separate monocytes from the "Dendritic" class, which in this data set also
    # expresses S100A8/9, LYZ and CTSS. The lists were not changed after these runs.
    # Measured again when training changed (bounded scaling, at least 8 steps per epoch), seeds
    # 0, 1, 2: B markers at ranks (0, 1, 2, 30), (0, 10, 18, 23), (0, 1, 4, 20) of 765 genes;
    # the 7 Monocyte markers' best ranks (7, 37, 50), (0, 31, 120), (15, 77, 125); the code
    # before the change gave (0, 2, 4), (5, 42, 120), (12, 75, 114): at seed 0 that is 3 in
    # the top 50 before and 2 now, the rest within the same spread. By chance 7 of 765 genes
    # would put 0.46 in the top 50, so 2 Monocyte markers there is still far from chance.
    adata, _ = explained
    present = [g for g in MARKERS[group] if g in adata.raw.var_names]
    assert len(present) >= 4  # the test is meaningful on these 765 genes
    top50 = set(ag.get.importance_df(adata, group).index[:50])
    found = sorted(top50 & set(present))
    assert len(found) >= least, f"{group}: markers {present}, found in top 50: {found}"


def test_h5ad_round_trip_keeps_class_names_with_slashes(explained, tmp_path):
    adata, _ = explained
    path = tmp_path / "explained.h5ad"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        adata.write_h5ad(path)
    assert not [w for w in caught if "slash" in str(w.message).lower()]
    back = ad.read_h5ad(path)
    before, after = ag.get.importance_df(adata), ag.get.importance_df(back)
    assert "CD4+/CD25 T Reg" in after.columns
    assert list(after.columns) == list(before.columns) and list(after.index) == list(before.index)
    np.testing.assert_allclose(after.to_numpy(), before.to_numpy())
    e1, e2 = ag.get.explanation(adata), ag.get.explanation(back)
    np.testing.assert_array_equal(e1.values, e2.values)
    assert list(e2.output_names) == list(e1.output_names) and list(e2.feature_names) == list(e1.feature_names)
    assert back.uns["ag"]["shap"]["values"].dtype == np.float16  # compact


def _top_down(ax):
    """Gene labels of the y axis, from the top of the plot down."""
    return [t.get_text() for t in sorted(ax.get_yticklabels(), key=lambda t: -t.get_position()[1])]


def test_plots_return_axes_and_name_genes(explained):
    adata, _ = explained
    fig, ax0 = matplotlib.pyplot.subplots()
    ax = ag.pl.shap_summary(adata, MONO, n_genes=12, ax=ax0, show=False)
    assert ax is ax0
    assert _top_down(ax) == list(ag.get.importance_df(adata, MONO).index[:12])
    swarms = [c for c in ax.collections if c.get_array() is not None]  # shap's beeswarm: one coloured swarm per gene
    assert len(swarms) == 12 and all(len(c.get_offsets()) == len(adata.uns["ag"]["shap"]["values"]) for c in swarms)
    ax = ag.pl.shap_summary(adata, show=False)
    top = list(ag.get.importance_df(adata, "overall").index[:20])
    assert _top_down(ax) == top
    assert {t.get_text() for t in ax.get_legend().get_texts()} >= {MONO, B}
    ax = ag.pl.importance(adata, B, n_genes=5, show=False)
    assert _top_down(ax) == list(ag.get.importance_df(adata, B).index[:5])
    assert ag.pl.confusion_matrix(adata, show=False) is not None
    matplotlib.pyplot.close("all")


def test_shap_dotplot_draws_each_classs_top_genes_with_scanpy(explained):
    adata, _ = explained
    axes = ag.pl.shap_dotplot(adata, n_genes=4, show=False)
    main = axes["mainplot_ax"]
    drawn = [t.get_text() for t in main.get_xticklabels()]
    want = [g for c in (MONO, B) for g in ag.get.importance_df(adata, c).index[:4]]
    assert drawn == want  # the explained classes' genes, in their order, as sc.pl.dotplot lays them out
    rows = {t.get_text() for t in main.get_yticklabels()}
    assert rows == set(adata.obs["bulk_labels"].cat.categories)  # rows: the label the model learned
    axes = ag.pl.shap_dotplot(adata, n_genes=2, groupby="ag_prediction", show=False)
    assert {t.get_text() for t in axes["mainplot_ax"].get_yticklabels()} <= set(
        adata.obs["ag_prediction"].cat.categories
    )
    with pytest.raises(KeyError, match="not a column"):
        ag.pl.shap_dotplot(adata, groupby="leiden", show=False)
    with pytest.raises(KeyError, match="not in adata.var_names"):
        ag.pl.shap_dotplot(adata[:, :10].copy(), use_raw=False, show=False)
    matplotlib.pyplot.close("all")


def test_explain_rejects_bad_input(explained, pbmc, tmp_path):
    adata, _ = explained
    with pytest.raises(KeyError, match=r"ag\.tl\.train"):
        ag.tl.explain(pbmc)
    with pytest.raises(KeyError, match=r"ag\.tl\.explain"):
        ag.get.importance_df(pbmc)
    with pytest.raises(KeyError, match=r"ag\.tl\.explain"):
        ag.pl.shap_summary(pbmc, show=False)
    with pytest.raises(ValueError, match="Unknown groups"):
        ag.tl.explain(adata, groups="Neutrophil")
    for bad in ({"n_samples": 0}, {"n_background": -1}, {"max_cells": 2.5}, {"chunk_size": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            ag.tl.explain(adata, **bad)
    with pytest.raises(ValueError, match="Unknown output"):
        ag.tl.explain(adata, output="margin")
    with pytest.raises(ValueError, match="Unknown sampling"):
        ag.tl.explain(adata, sampling="sobol")
    with pytest.raises(KeyError, match="Unknown group"):
        ag.pl.shap_summary(adata, "Neutrophil", show=False)
    with pytest.raises(KeyError, match="Unknown group"):
        ag.get.importance_df(adata, "Neutrophil")
    with pytest.raises(ValueError, match="n_genes"):
        ag.pl.importance(adata, n_genes=0, show=False)
    moved = adata.copy()
    moved.uns["ag"] = dict(moved.uns["ag"], model_path=str(tmp_path / "gone"))
    with pytest.raises(FileNotFoundError, match="no longer exists"):
        ag.tl.explain(moved)


def test_explain_regression_model_on_counts(counts, tmp_path):
    from conftest import FAST

    counts.obs["depth"] = np.log1p(np.asarray(counts.X.sum(1)).ravel()).astype(np.float32)
    ag.tl.train(counts, "depth", config=FAST, rng=0)
    exp = ag.tl.explain(counts, n_samples=60, n_background=30, max_cells=40, return_explanation=True, rng=1)
    assert exp.values.shape == (40, counts.n_vars, 1) and list(exp.output_names) == ["depth"]
    imp = ag.get.importance_df(counts)
    assert list(imp.columns) == ["overall"] and list(imp.index) == list(counts.var_names)
    pred = counts.obs.loc[list(counts.uns["ag"]["shap"]["obs_names"]), "ag_prediction"].to_numpy()
    # completeness in the target's units, within the Monte-Carlo error of 60 draws (a wrong
    # output scale would leave a gap comparable to the spread itself)
    err = np.abs(exp.base_values[:, 0] + exp.values[:, :, 0].sum(1) - pred)
    assert err.mean() < 0.2 * np.abs(pred - exp.base_values[:, 0]).mean()
    with pytest.raises(ValueError, match="regression"):
        ag.tl.explain(counts, groups="type0")
