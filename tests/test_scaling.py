"""Scaling that real matrices cannot break: denormals, huge values, near-constant and all-zero genes, queries
far outside the training range."""

import numpy as np
import pandas as pd
import pytest
from anndata import AnnData

import autogenome_sc as ag
from autogenome_sc import config
from autogenome_sc.data import GeneStats, Scaler, prepare

QUICK = {"trainer": {"max_epochs": 6, "patience": 6}, "models": {"resnet": {"width": 32, "n_blocks": 1}}}


def _hostile(n_cells=240, seed=0) -> AnnData:
    """Log-like values with a learnable signal, plus genes of every kind that broke the old scaling."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n_cells)
    signal = rng.normal(0, 1, (n_cells, 30)).astype(np.float32) + 2.0 * np.eye(3, 30, dtype=np.float32)[y] * 3
    denormal = np.zeros((n_cells, 10), np.float32)
    denormal[rng.random((n_cells, 10)) < 0.3] = np.float32(1e-45)  # the smallest float32 denormal
    denormal[:, 5:] *= 50  # up to 7e-44
    huge = (rng.random((n_cells, 5)) * 1e30).astype(np.float32)  # large but finite
    near_constant = (5.0 + 1e-7 * rng.random((n_cells, 5))).astype(np.float32)
    zero = np.zeros((n_cells, 5), np.float32)
    X = np.concatenate([signal, denormal, huge, near_constant, zero], axis=1)
    a = AnnData(X)
    a.obs_names = [f"c{i}" for i in range(n_cells)]
    a.var_names = [f"g{j}" for j in range(X.shape[1])]
    a.obs["label"] = pd.Categorical([f"t{v}" for v in y])
    return a


@pytest.mark.parametrize("how", ["minmax", "zscore"])
def test_spread_below_tolerance_is_a_constant_gene(how):
    rng = np.random.default_rng(0)
    train = np.stack(
        [
            rng.normal(0, 1, 50),  # ordinary
            np.where(rng.random(50) < 0.5, 1e-45, 0.0),  # denormal noise: range 1e-45
            5.0 + 1e-7 * rng.random(50),  # near-constant (below float32 resolution of 5.0 times 16 ulps)
            np.zeros(50),  # zero in every training cell
        ],
        axis=1,
    ).astype(np.float32)
    scaler = GeneStats.fit_chunks([train]).scaler(how)
    assert scaler.scale[0] > 0 and (scaler.scale[1:] == 0).all()
    query = np.array([[0.5, 1e-30, 7.0, 1e6]], np.float32)  # far outside every training range
    out = scaler.transform(query.copy())
    assert np.isfinite(out).all()
    assert (out[0, 1:] == 0).all()  # genes without training variance carry no signal, even far away
    lo, hi = (0.0, 1.0) if how == "minmax" else (-10.0, 10.0)
    assert out.min() >= lo and out.max() <= hi


def test_transform_never_returns_a_non_finite_value():
    scaler = Scaler(np.array([-3e38, 0.0], np.float32), np.array([0.0, 1e-38], np.float32), 0.0, 1.0, "minmax")
    out = scaler.transform(np.array([[3e38, 3e38]], np.float32))  # (x - shift) overflows to inf; inf * 0 is NaN
    assert np.isfinite(out).all() and out.tolist() == [[0.0, 1.0]]


@pytest.mark.parametrize("scaling", ["minmax", "zscore"])
def test_hostile_matrix_trains_and_nothing_non_finite_reaches_the_network(scaling):
    a = _hostile()
    cfg = config.validate({**QUICK, "data": {"scaling": scaling}})
    data, _ = prepare(
        a, "label", layer=None, use_raw=False, split_key=None, data_cfg=cfg.data, loss="auto",
        rng=np.random.default_rng(0),
    )  # fmt: skip
    x = data.pipeline.block(np.arange(a.n_obs))
    assert np.isfinite(x).all() and np.abs(x).max() <= 10
    scale = data.pipeline.scaler.scale
    assert (scale[30:40] == 0).all()  # denormal genes: constant
    assert (scale[45:55] == 0).all()  # near-constant and all-zero genes
    assert (scale[:30] > 0).all() and (scale[40:45] > 0).all()  # signal and huge (but spread) genes are kept
    ag.tl.train(a, "label", config={**QUICK, "data": {"scaling": scaling}}, rng=0)
    assert a.uns["ag"]["metrics"]["accuracy"] > 0.8
    assert np.isfinite(a.uns["ag"]["history"]["val_loss"]).all()


def test_a_query_outside_the_training_range_gives_the_labels_of_one_clipped_by_hand():
    a = _hostile()
    ag.tl.train(a, "label", config=QUICK, rng=0)
    model = ag.read_model(a.uns["ag"]["model_path"])
    train = a.obs["ag_split"].to_numpy() == "train"
    lo, hi = a.X[train].min(axis=0), a.X[train].max(axis=0)
    rng = np.random.default_rng(1)
    wild = a.copy()
    wild.X = a.X * rng.choice(np.float32([0.0, 1.0, 40.0]), a.X.shape) - rng.random(a.X.shape).astype(np.float32)
    wild.X[:, :10] += 1e4  # far above the training range
    clipped = wild.copy()
    clipped.X = np.clip(wild.X, lo, hi)
    p_wild, p_clip = model.predict(wild), model.predict(clipped)
    pd.testing.assert_series_equal(p_wild["prediction"], p_clip["prediction"])
    np.testing.assert_allclose(p_wild["confidence"], p_clip["confidence"], rtol=1e-5)


def test_models_of_earlier_versions_get_bounded_scaling_too(trained):
    adata, model = trained
    model.preprocessing_.pop("scaling", None)  # as saved before scaling was bounded
    model.preprocessing_.pop("clip", None)
    scaler = model.scaler()
    assert scaler.kind == "minmax" and scaler.clip == (0.0, 1.0)


def test_search_on_denormal_fpkm_completes(tmp_path):
    """The time-course crash: FPKM float32 holding denormals; every trial used to fail."""
    rng = np.random.default_rng(0)
    counts = ag.datasets.synthetic(120, 400, n_types=3, effect_size=1.0, rng=0).X.toarray()
    fpkm = (counts / rng.lognormal(7, 0.5, 400) * 1e9 / counts.sum(axis=1, keepdims=True)).astype(np.float32)
    fpkm[(fpkm == 0) & (rng.random(fpkm.shape) < 0.1)] = np.float32(1e-45)
    a = AnnData(fpkm)
    a.obs["stage"] = pd.Categorical(ag.datasets.synthetic(120, 400, n_types=3, effect_size=1.0, rng=0).obs["cell_type"])
    cfg = {**QUICK, "search": {"modes": ["linear", "resnet"], "cv_folds": 0, "pruner": "none"}}
    ag.tl.search(a, "stage", n_trials=3, config=cfg, run_dir=tmp_path)
    board = a.uns["ag"]["leaderboard"]
    assert (board["state"] == "complete").all()
    assert np.isfinite(board["val_loss"]).all()
    assert a.uns["ag"]["metrics"]["accuracy"] > 0.5


def test_when_every_trial_fails_the_error_says_why(pbmc, tmp_path):
    cfg = {"trainer": {"max_epochs": 3, "learning_rate": 1e30}, "search": {"modes": ["mlp"], "pruner": "none"}}
    cfg["search"]["spaces"] = {"learning_rate": [1e30, 1e30], "mlp_widths": [8], "mlp_layers": [1]}
    with pytest.raises(RuntimeError, match=r"first failure was trial 0 \(mlp\): Training diverged: the training loss"):
        ag.tl.search(pbmc, "bulk_labels", n_trials=2, config=cfg, run_dir=tmp_path, use_raw=True)
