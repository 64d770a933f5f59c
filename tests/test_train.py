import anndata
import jax
import numpy as np
import pytest
import scipy.sparse as sp
from conftest import FAST, synthetic_counts

import autogenome_sc as ag
from autogenome_sc import config
from autogenome_sc.data import prepare
from autogenome_sc.nn import build_network
from autogenome_sc.train import fit, make_apply, one_cycle
from autogenome_sc.train._loop import _train_chunk_fn


def _prepared(counts, cfg):
    """The training problem of ``counts``' cell types under ``cfg``'s data section (the package's 8:1:1 split)."""
    data, _ = prepare(
        counts, "cell_type", layer=None, use_raw=False, split_key=None, data_cfg=cfg.data, loss="auto",
        rng=np.random.default_rng(0),
    )  # fmt: skip
    return data


def test_learns_pbmc_bulk_labels(pbmc):
    ag.tl.train(pbmc, "bulk_labels", model="resnet", rng=0)
    m = pbmc.uns["ag"]["metrics"]
    assert m["accuracy"] >= 0.75  # chance (majority class) is 0.34
    assert m["macro_f1"] > 0.5
    n_classes = pbmc.obs["bulk_labels"].nunique()
    assert m["confusion_matrix"].shape == (n_classes, n_classes)
    assert m["confusion_matrix"].sum() == (pbmc.obs["ag_split"] == "test").sum() == m["n_test"]
    assert list(pbmc.uns["ag"]["classes"]) == list(pbmc.obs["bulk_labels"].cat.categories)
    assert pbmc.obs["ag_prediction"].dtype == "category"
    assert pbmc.obs["ag_confidence"].between(0, 1).all()
    assert pbmc.obsm["X_ag"].shape == (pbmc.n_obs, 256)
    # the kept weights are those of the best validation epoch
    h = pbmc.uns["ag"]["history"]
    assert m["best_epoch"] == h["epoch"][np.argmin(h["val_loss"])]
    assert m["best_val_loss"] == pytest.approx(h["val_loss"].min())


@pytest.mark.parametrize("model", ["mlp", "resnet", "densenet"])
def test_each_model_trains_and_compiles_once(counts, model):
    # tiny chunks (131 rows = 4 steps of 32): 15 steps per epoch in 4 chunks, the last one padded
    cfg = config.validate(
        {
            **FAST,
            "data": {"chunk_mb": 0.1},
            "trainer": {"batch_size": 32, "max_epochs": 6},
            "models": {
                "mlp": {"widths": [32]},
                "resnet": {"width": 32, "n_blocks": 1},
                "densenet": {"block_structure": [2, 2], "growth_rate": 8},
            },
        }
    )
    data = _prepared(counts, cfg)
    steps, k = data.steps_per_chunk(data.batch_size_for(cfg.trainer.batch_size))
    assert (steps, k) == (15, 4)
    arch = {"model": model, **getattr(cfg.models, model).model_dump()}
    _train_chunk_fn.cache_clear()  # compiled steps are cached by architecture: start from none
    make_apply.cache_clear()
    res = fit(build_network(arch, data.n_out), data, cfg.trainer, cfg.loss, jax.random.key(0))
    assert len(res.history["epoch"]) == cfg.trainer.max_epochs
    assert res.n_traces == {"train_chunk": 1, "apply": 1}
    # another fit of this architecture, with other rates and dropout, compiles nothing
    other = cfg.trainer.model_copy(update={"learning_rate": 1e-3, "weight_decay": 0.0, "max_epochs": 2})
    again = fit(build_network({**arch, "dropout": 0.4}, data.n_out), data, other, cfg.loss, jax.random.key(1))
    assert again.n_traces == {"train_chunk": 0, "apply": 0}
    assert res.history["val_accuracy"].max() > 0.5  # 4 well-separated types


@pytest.mark.parametrize("model", ["mlp", "resnet"])
def test_compile_fit_compiles_what_the_fit_runs(counts, model):
    """Compiled ahead (in a worker thread, as the search does), the fit traces nothing and learns the same."""
    import threading

    from autogenome_sc.train._loop import compile_fit

    cfg = config.validate({**FAST, "trainer": {"batch_size": 32, "max_epochs": 3}})
    data = _prepared(counts, cfg)
    assert data.cache_rows()  # a small problem: its rows on the device
    arch = {"model": model, "width": 24, "n_blocks": 1} if model == "resnet" else {"model": "mlp", "widths": [24, 24]}
    net = build_network(arch, data.n_out)
    _train_chunk_fn.cache_clear()
    make_apply.cache_clear()
    cold = fit(net, data, cfg.trainer, cfg.loss, jax.random.key(5))
    assert cold.n_traces == {"train_chunk": 1, "apply": 1}
    _train_chunk_fn.cache_clear()
    make_apply.cache_clear()
    done = []
    worker = threading.Thread(
        target=lambda: done.append(compile_fit(net, data, cfg.trainer, cfg.loss, jax.random.key(5)))
    )
    worker.start()
    worker.join()
    assert done == [True]
    warm = fit(net, data, cfg.trainer, cfg.loss, jax.random.key(5))
    assert warm.n_traces == {"train_chunk": 0, "apply": 0}
    np.testing.assert_array_equal(warm.history["val_loss"], cold.history["val_loss"])
    for a, b in zip(jax.tree.leaves(warm.variables), jax.tree.leaves(cold.variables), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_same_rng_same_result_and_different_rng_differs(counts):
    a, b, c = counts.copy(), counts.copy(), counts.copy()
    ag.tl.train(a, "cell_type", config=FAST, rng=3)
    ag.tl.train(b, "cell_type", config=FAST, rng=3)
    ag.tl.train(c, "cell_type", config=FAST, rng=4)
    np.testing.assert_array_equal(a.obs["ag_split"], b.obs["ag_split"])
    np.testing.assert_array_equal(a.obsm["X_ag"], b.obsm["X_ag"])
    np.testing.assert_array_equal(a.obs["ag_confidence"], b.obs["ag_confidence"])
    assert not np.array_equal(a.obsm["X_ag"], c.obsm["X_ag"])


def test_sparse_and_dense_give_the_same_model(counts):
    dense = counts.copy()
    dense.X = counts.X.toarray()
    ag.tl.train(counts, "cell_type", config=FAST, rng=0)
    ag.tl.train(dense, "cell_type", config=FAST, rng=0)
    np.testing.assert_allclose(counts.obsm["X_ag"], dense.obsm["X_ag"], rtol=1e-5, atol=1e-5)
    assert (counts.obs["ag_prediction"] == dense.obs["ag_prediction"]).all()
    assert sp.issparse(counts.X)


def test_copy_leaves_input_untouched(counts):
    before = counts.copy()
    out = ag.tl.train(counts, "cell_type", config=FAST, copy=True)
    assert "ag_prediction" in out.obs and "ag" in out.uns
    assert "ag_prediction" not in counts.obs and "ag" not in counts.uns and "X_ag" not in counts.obsm
    assert (counts.X != before.X).nnz == 0


def test_key_added_renames_everything(counts):
    ag.tl.train(counts, "cell_type", config=FAST, key_added="mine")
    assert {"mine_prediction", "mine_confidence", "mine_split"} <= set(counts.obs.columns)
    assert "X_mine" in counts.obsm and "mine" in counts.uns and "ag" not in counts.uns


def test_layer_and_use_raw(pbmc):
    pbmc.layers["lognorm"] = pbmc.raw.X.copy()
    ag.tl.train(pbmc, "bulk_labels", layer="lognorm", config=FAST)
    assert pbmc.uns["ag"]["preprocessing"]["matrix"] == "layers['lognorm']"
    assert pbmc.uns["ag"]["preprocessing"]["input"] == "log"
    ag.tl.train(pbmc, "bulk_labels", use_raw=True, config=FAST, key_added="raw")
    assert pbmc.uns["raw"]["preprocessing"]["matrix"] == "raw.X"


def test_counts_are_normalised_and_say_so(counts, ag_log):
    ag.settings.verbosity = 2
    ag.tl.train(counts, "cell_type", config=FAST)
    assert "looks like counts values: normalised to 1e4 per cell, log1p" in ag_log.text
    assert counts.uns["ag"]["preprocessing"]["applied"] == "normalize_log1p"


def test_h5ad_round_trip(counts, tmp_path):
    ag.tl.train(counts, "cell_type", config=FAST)
    counts.write_h5ad(tmp_path / "a.h5ad")
    back = anndata.read_h5ad(tmp_path / "a.h5ad")
    np.testing.assert_array_equal(back.obsm["X_ag"], counts.obsm["X_ag"])
    assert (back.obs["ag_prediction"] == counts.obs["ag_prediction"]).all()
    uns = back.uns["ag"]
    np.testing.assert_array_equal(uns["metrics"]["confusion_matrix"], counts.uns["ag"]["metrics"]["confusion_matrix"])
    assert uns["metrics"]["accuracy"] == counts.uns["ag"]["metrics"]["accuracy"]
    assert config.validate(__import__("json").loads(uns["config"])) == config.validate(FAST)
    np.testing.assert_array_equal(uns["history"]["val_loss"], counts.uns["ag"]["history"]["val_loss"])
    ag.pl.confusion_matrix(back, show=False)  # plots work from the re-read object


def test_regression_on_float_target():
    a = synthetic_counts(n_cells=600, n_genes=100, seed=2, sparse=False)
    lib = np.log1p(a.X.sum(1))
    a.obs["score"] = (np.log1p(a.X[:, :10]).sum(1) / lib).astype(float)
    ag.tl.train(a, "score", config={"trainer": {"max_epochs": 40}, "models": {"resnet": {"width": 64}}})
    m = a.uns["ag"]["metrics"]
    assert a.uns["ag"]["task"] == "regression" and "confidence" not in "".join(a.obs.columns)
    assert m["r2"] > 0.5 and m["pearson"] > 0.7
    assert a.obs["ag_prediction"].dtype == np.float32
    with pytest.raises(ValueError, match="'mse' loss has no classes to weigh"):
        ag.tl.train(a, "score", config={"trainer": {"max_epochs": 1}, "loss": {"class_weight": "balanced"}})


def test_auc_loss_on_imbalanced_binary():
    a = synthetic_counts(n_cells=500, n_types=4, seed=1)
    a.obs["is_type0"] = (a.obs["cell_type"] == "type0").map({True: "yes", False: "no"}).astype("category")
    ag.tl.train(a, "is_type0", config={**FAST, "loss": {"name": "auc"}, "trainer": {"max_epochs": 15}})
    from sklearn.metrics import roc_auc_score

    test = a.obs["ag_split"] == "test"
    p_yes = np.where(a.obs["ag_prediction"] == "yes", a.obs["ag_confidence"], 1 - a.obs["ag_confidence"])
    assert roc_auc_score(a.obs["is_type0"][test] == "yes", p_yes[test]) > 0.9


def test_one_cycle_schedule_shape():
    cfg = config.Config().trainer
    lr, mom = one_cycle(cfg, 1000)
    lrs = np.array([float(lr(s)) for s in range(0, 1001, 50)])
    moms = np.array([float(mom(s)) for s in range(0, 1001, 50)])
    peak = int(np.argmax(lrs))
    assert lrs[peak] == pytest.approx(cfg.learning_rate, rel=1e-3) and 0 < peak < len(lrs) - 1
    assert lrs[0] < lrs[peak] / 20 and lrs[-1] < lrs[peak] / 1000
    assert np.argmin(moms) == peak and moms[0] == pytest.approx(cfg.momentum)  # momentum moves inversely
    assert moms[peak] == pytest.approx(cfg.momentum - 0.1) and moms[-1] == pytest.approx(cfg.momentum)


def test_split_key_is_respected(counts):
    split = np.array(["train"] * counts.n_obs, dtype=object)
    split[:60], split[60:120] = "val", "test"
    counts.obs["fold"] = split
    ag.tl.train(counts, "cell_type", config=FAST, split_key="fold")
    np.testing.assert_array_equal(counts.obs["ag_split"].astype(str), split.astype(str))
    assert counts.uns["ag"]["metrics"]["n_test"] == 60


def test_bf16_mixed_precision_trains_float32_parameters_to_the_same_accuracy(pbmc):
    accs, embs = {}, {}
    for precision in ("float32", "bf16"):
        a = pbmc.copy()
        cfg = {"trainer": {"max_epochs": 15, "precision": precision}}
        ag.tl.train(a, "bulk_labels", model="mlp", use_raw=True, config=cfg, rng=0)
        accs[precision], embs[precision] = a.uns["ag"]["metrics"]["accuracy"], a.obsm["X_ag"]
        model = ag.read_model(a.uns["ag"]["model_path"])
        assert {leaf.dtype for leaf in jax.tree.leaves(model.variables)} == {np.dtype("float32")}
    assert abs(accs["bf16"] - accs["float32"]) <= 0.05
    assert not np.allclose(embs["bf16"], embs["float32"], atol=1e-3)  # it did compute in bfloat16
    with pytest.raises(ValueError, match="precision"):
        ag.tl.train(pbmc.copy(), "bulk_labels", use_raw=True, config={"trainer": {"precision": "fp8"}})


def test_fc_units_without_batch_norm_train_save_and_load(pbmc):
    # a plain MLP (Dense -> ReLU), as scikit-learn's MLPClassifier: no BatchNorm layer, no batch statistics
    cfg = {"trainer": {"max_epochs": 30, "patience": 30}, "models": {"mlp": {"batch_norm": False, "dropout": 0.0}}}
    ag.tl.train(pbmc, "bulk_labels", model="mlp", config=cfg, rng=0)
    assert pbmc.uns["ag"]["metrics"]["accuracy"] >= 0.75  # chance (majority class) is 0.34
    model = ag.read_model(pbmc.uns["ag"]["model_path"])
    assert model.architecture["batch_norm"] is False
    assert not jax.tree.leaves(model.variables.get("batch_stats", {}))
    assert all(set(unit) == {"Dense_0"} for name, unit in model.variables["params"].items() if name != "head")
    probs = model.predict_proba(pbmc)
    assert np.array_equal(np.asarray(probs).argmax(1), pbmc.obs["ag_prediction"].cat.codes.to_numpy())
    with_bn = build_network({"model": "resnet", "width": 8, "n_blocks": 1}, 3)
    without = build_network({"model": "resnet", "width": 8, "n_blocks": 1, "batch_norm": False}, 3)
    x = np.ones((4, 5), np.float32)
    assert "batch_stats" in with_bn.init(jax.random.key(0), x)
    assert "batch_stats" not in without.init(jax.random.key(0), x)
