"""Boosted trees: scikit-learn's fitted trees read into ``nn.Trees``, the ``trees`` search mode, Tree SHAP."""

from __future__ import annotations

import dataclasses
import json
import shutil
import warnings

import numpy as np
import pytest
from _search_helpers import four_types

import autogenome_sc as ag
from autogenome_sc.train._trees import _floor32, fit_trees

SETTINGS = {"learning_rate": 0.2, "max_leaf_nodes": 7, "l2_regularization": 0.0, "max_iter": 40}


def _problem(pbmc, classes=None):
    """pbmc68k_reduced's ``.raw`` as the search prepares it (0-1 scaled), with only ``classes`` if given."""
    from test_solvers import _solved_problem  # the same problem the solved families are tested on

    if classes is not None:
        pbmc = pbmc[pbmc.obs["bulk_labels"].isin(classes)].copy()
    return _solved_problem(pbmc)


def _outputs(arch, result, data, rows):
    from autogenome_sc.nn import build_network
    from autogenome_sc.train import make_apply, predict_arrays

    out, _ = predict_arrays(make_apply(build_network(arch, data.n_out)), result.variables, data.pipeline, rows)
    return out


@pytest.fixture(scope="module")
def multiclass(_pbmc):
    data = _problem(_pbmc)
    arch, result = fit_trees(data, SETTINGS)
    return data, arch, result


def test_the_arrays_evaluate_as_scikit_learns_trees(multiclass):
    from sklearn.ensemble import HistGradientBoostingClassifier

    data, arch, result = multiclass
    x, train, val = data.pipeline.cache, data.idx["train"], data.idx["val"]
    # the same model fitted by scikit-learn alone, to the stages the validation loss chose
    best = result.best_epoch + 1
    ref = HistGradientBoostingClassifier(
        learning_rate=0.2, max_iter=best, max_leaf_nodes=7, l2_regularization=0.0, early_stopping=False, random_state=0
    ).fit(x[train], data.y[train])
    ours = _outputs(arch, result, data, np.arange(len(data.y)))
    np.testing.assert_allclose(ours, ref.decision_function(x), atol=2e-5)
    assert arch["n_trees"] == best * data.n_out and (ours.argmax(1) == ref.predict(x)).all()
    # every stage is an epoch: the validation outputs after each one, the best chosen by the validation loss
    assert result.val_outputs.shape == (len(result.history["epoch"]), len(val), data.n_out)
    assert result.best_epoch == int(np.argmin(result.history["val_loss"]))
    np.testing.assert_allclose(result.val_outputs[result.best_epoch], ours[val], atol=2e-5)
    assert result.history["val_accuracy"][result.best_epoch] > 0.6


def test_a_share_of_the_genes_at_each_split_is_scikit_learns_and_reruns_identically(_pbmc):
    """``max_features`` reaches scikit-learn: the staged fit is its one-shot fit, the seed fixes the draw."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    data = _problem(_pbmc)
    settings = {**SETTINGS, "max_iter": 20, "max_features": 0.2}
    arch, result = fit_trees(data, settings, seed=3)
    x, train = data.pipeline.cache, data.idx["train"]
    ref = HistGradientBoostingClassifier(
        learning_rate=0.2, max_iter=result.best_epoch + 1, max_leaf_nodes=7, max_features=0.2, early_stopping=False,
        random_state=3,
    ).fit(x[train], data.y[train])  # fmt: skip
    ours = _outputs(arch, result, data, np.arange(len(data.y)))
    np.testing.assert_allclose(ours, ref.decision_function(x), atol=2e-5)
    _, again = fit_trees(data, settings, seed=3)
    _, other = fit_trees(data, settings, seed=4)
    _, every = fit_trees(data, {**settings, "max_features": 1.0}, seed=3)
    np.testing.assert_array_equal(again.val_outputs, result.val_outputs)
    assert not np.allclose(other.val_outputs[-1], result.val_outputs[-1])  # another draw of genes
    assert not np.allclose(every.val_outputs[-1], result.val_outputs[-1])


def test_fewer_bins_reach_scikit_learn(_pbmc):
    """``max_bins`` reaches scikit-learn: 15 bins per gene give its 15-bin trees, not its 255-bin ones."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    data = _problem(_pbmc)
    settings = {**SETTINGS, "max_iter": 10, "max_bins": 15}
    arch, result = fit_trees(data, settings, seed=0)
    x, train = data.pipeline.cache, data.idx["train"]
    ours = _outputs(arch, result, data, np.arange(len(data.y)))
    for bins in (15, 255):
        ref = HistGradientBoostingClassifier(
            learning_rate=0.2, max_iter=result.best_epoch + 1, max_leaf_nodes=7, max_bins=bins, early_stopping=False,
            random_state=0,
        ).fit(x[train], data.y[train])  # fmt: skip
        assert np.allclose(ours, ref.decision_function(x), atol=2e-5) is (bins == 15)


def test_two_classes_and_a_class_absent_from_training(_pbmc):
    data = _problem(_pbmc, ["CD14+ Monocyte", "CD19+ B"])
    arch, result = fit_trees(data, SETTINGS)
    out = _outputs(arch, result, data, data.idx["val"])
    assert arch["n_trees"] == result.best_epoch + 1  # one tree per stage: the second class's logit
    assert (out.argmax(1) == data.y[data.idx["val"]]).mean() > 0.9
    # a class with no training cell gets a logit far below the others, never a prediction
    y = data.y.copy()
    y[data.idx["train"][y[data.idx["train"]] == 1]] = 0
    one = dataclasses.replace(data, y=y)
    with pytest.raises(ValueError, match="at least two classes"):
        fit_trees(one, SETTINGS)
    with pytest.raises(ValueError, match="classifies"):
        fit_trees(dataclasses.replace(data, task="regression"), SETTINGS)


def test_thresholds_rounded_down_to_float32_keep_every_decision():
    gen = np.random.default_rng(0)
    t = gen.normal(size=1000) * 10.0 ** gen.integers(-3, 3, 1000)
    v = np.concatenate([t.astype(np.float32), np.nextafter(t.astype(np.float32), np.float32(np.inf))])
    floor = _floor32(t)
    for vi in (v[:1000], v[1000:]):  # float32 values at and just above each threshold
        assert ((vi <= floor) == (vi.astype(np.float64) <= t)).all()


def test_tree_shap_is_exact_for_the_logits(multiclass):
    from autogenome_sc.explain._trees import tree_shap

    data, arch, result = multiclass
    x = data.pipeline.cache[data.idx["val"][:20]]
    background = data.pipeline.cache[data.idx["train"][:50]]
    phi, base = tree_shap(result.variables["params"], x, background)
    assert phi.shape == (20, data.pipeline.n_features, data.n_out)
    np.testing.assert_allclose(base, _outputs(arch, result, data, data.idx["train"][:50]).mean(0), atol=1e-5)
    # local accuracy: per cell and class the values sum to the logit minus the base value
    np.testing.assert_allclose(phi.sum(1) + base, _outputs(arch, result, data, data.idx["val"][:20]), atol=1e-4)
    used = np.unique(
        result.variables["params"]["feature"][result.variables["params"]["left"] != np.arange(arch["n_nodes"])]
    )
    unused = np.setdiff1d(np.arange(data.pipeline.n_features), used)
    assert np.abs(phi[:, unused]).max() == 0  # a gene no tree splits on has no part


@pytest.fixture(scope="module")
def searched(_pbmc, tmp_path_factory):
    """A search of the trees mode only, on 300 cells of 4 types; its model saved."""
    adata = four_types(_pbmc)
    path = tmp_path_factory.mktemp("trees") / "model"
    config = {
        "search": {"spaces": {"trees_learning_rate": [0.2], "trees_leaf_nodes": [7], "n_genes": [200]}, "cv_folds": 3},
        "save": {"path": str(path)},
    }
    ag.tl.search(adata, label_key="bulk_labels", use_raw=True, modes=["trees"], n_trials=2, config=config,
                 run_dir=path.parent / "runs", rng=0)  # fmt: skip
    return adata, path


def test_a_search_of_trees_refits_on_the_stages_cross_validation_chose(searched):
    adata, path = searched
    sel = adata.uns["ag"]["selection"]
    assert sel["method"] == "cv" and sel["final"] == "refit"
    model = ag.read_model(path)
    assert model.architecture["model"] == "trees"
    table = sel["table"]
    chosen_stages = int(table.loc[table["weight"] > 0, "epochs"].iloc[0])
    assert model.architecture["n_trees"] == chosen_stages * 4  # four classes, one tree each per stage
    # the saved model predicts what the search wrote
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again = model.predict(adata, use_raw=True)
    assert (again["prediction"].astype(str).to_numpy() == adata.obs["ag_prediction"].astype(str).to_numpy()).all()
    np.testing.assert_allclose(again["uncertainty"], adata.obs["ag_uncertainty"], rtol=1e-5, atol=1e-6)
    test = adata.obs["ag_split"] == "test"
    accuracy = (adata.obs["ag_prediction"][test].astype(str) == adata.obs["bulk_labels"][test].astype(str)).mean()
    assert accuracy > 0.7


def test_a_tree_model_tells_cells_of_unseen_types(searched, _pbmc):
    """ag_uncertainty reads the input space: it works for trees as for networks (issue 33, item 4)."""
    from sklearn.metrics import roc_auc_score

    adata, path = searched
    query = _pbmc.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ag.tl.predict(query, path, use_raw=True, reject="auto")
    unseen = ~query.obs["bulk_labels"].isin(adata.obs["bulk_labels"].unique()).to_numpy()  # T cells, CD34+
    test = query.obs_names.isin(adata.obs_names[adata.obs["ag_split"] == "test"])
    held = unseen | test
    u = query.obs["ag_uncertainty"].to_numpy()
    assert roc_auc_score(unseen[held], u[held]) > 0.85
    rejected = (query.obs["ag_prediction"] == "Unassigned").to_numpy()
    assert rejected[unseen].mean() > 0.5 and rejected[test].mean() < 0.15
    # reading the query as a whole works for what a search returns too: its test split is the kept held-out cells
    aware = ag.tl.predict(query, path, use_raw=True, reject="auto", query_aware=True, copy=True)
    assert aware.uns["ag"]["prediction"]["query_aware"]
    u_aware = aware.obs["ag_uncertainty"].to_numpy()
    assert roc_auc_score(unseen[held], u_aware[held]) > 0.85 and not np.allclose(u_aware, u)
    rejected = (aware.obs["ag_prediction"] == "Unassigned").to_numpy()
    assert rejected[unseen].mean() > 0.5 and rejected[test].mean() < 0.15


def test_a_tree_model_is_explained_in_logits_exactly(searched):
    adata, _ = searched
    with pytest.warns(UserWarning, match="explained in logits"):
        explanation = ag.tl.explain(adata, max_cells=30, n_background=40, return_explanation=True)
    assert adata.uns["ag"]["shap"]["params"]["output"] == "logit"
    model = ag.read_model(adata.uns["ag"]["model_path"])
    logits, _ = model.net.apply(model.variables, np.asarray(explanation.data, np.float32))
    np.testing.assert_allclose(explanation.values.sum(1) + explanation.base_values, logits, atol=1e-4)
    importance = ag.get.importance_df(adata)
    assert importance.shape[1] == 5 and (importance.to_numpy() >= 0).all()


def test_a_forged_tree_is_refused_on_load(searched, tmp_path):
    from flax import serialization

    from autogenome_sc.io._validate import checksum

    _, path = searched
    for key, value in (("feature", 10**6), ("left", 10**6), ("right", -1), ("feature", 0.5)):
        forged = tmp_path / f"{key}{value}"
        shutil.copytree(path, forged)
        state = serialization.msgpack_restore((forged / "weights.msgpack").read_bytes())
        state["variables"]["params"][key] = np.full_like(state["variables"]["params"][key], value)
        (forged / "weights.msgpack").write_bytes(serialization.msgpack_serialize(state))
        meta = json.loads((forged / "model.json").read_text())
        meta["checksum"] = checksum(meta, (forged / "weights.msgpack").read_bytes())
        (forged / "model.json").write_text(json.dumps(meta))
        with pytest.raises(ValueError, match="a tree in weights.msgpack splits on a gene or points at a node"):
            ag.read_model(forged)


def test_the_portfolio_ends_with_scikit_learns_default_trees():
    from autogenome_sc.search._run import default_modes
    from autogenome_sc.search._spaces import named_portfolio

    # the entries' order and inputs are tested with the others' (test_search_modes.py); its settings here
    trees = named_portfolio(ag.config.validate(None), default_modes(), n_vars=765, n_train=500)["trees"]
    assert (trees["trees_learning_rate"], trees["trees_leaf_nodes"], trees["trees_l2"]) == (0.1, 31, 0.0)
    assert "trees" in default_modes()
    narrow_space = ag.config.validate({"search": {"spaces": {"trees_leaf_nodes": [7, 15]}}})
    assert "trees" not in named_portfolio(narrow_space, ["trees"], 765, 500)  # only where the spaces offer it


def test_trees_never_join_an_ensemble():
    from autogenome_sc.search._choose import Scored, greedy_ensemble

    gen = np.random.default_rng(0)
    y = gen.integers(0, 3, 90)
    good = np.eye(3)[y] * 3 + gen.normal(size=(90, 3))

    def scored(mode, out):
        s = Scored(0, mode, [], out.astype(np.float32), [0], 0.0)
        s.score_on(y, "classification", 3)
        return s

    pair = [scored("trees", good), scored("mlp", good[::-1].copy()), scored("svm", good + gen.normal(size=(90, 3)))]
    found = greedy_ensemble(pair, y, "classification", 3)
    assert found is None or found[0][0] == 0
    assert greedy_ensemble(pair[:2], y, "classification", 3) is None  # one member left: no ensemble


def test_balanced_trees_are_binned_without_weights(_pbmc):
    """With class weights, scikit-learn gets at most ``max_bins`` values per gene: it never bins by weighted quantiles.

    Its weighted quantiles took 5-6 s per fit on pbmc68k_reduced and 50 s on the ALL microarray's 5,000
    genes; the bins are the unweighted ones, and the trees, read back, decide on the genes' own values
    as scikit-learn's fit on the binned values does.
    """
    from sklearn.ensemble import HistGradientBoostingClassifier

    from autogenome_sc.train._losses import balanced_weights
    from autogenome_sc.train._trees import bin_edges, binned

    data = _problem(_pbmc)
    x, train = data.pipeline.cache, data.idx["train"]
    arch, result = fit_trees(data, {**SETTINGS, "max_iter": 10, "max_bins": 15}, class_weight="balanced")
    edges = bin_edges(x[train], 15)
    values = binned(x[train], edges)
    assert max(len(np.unique(column)) for column in values.T) <= 15 < max(len(np.unique(c)) for c in x[train].T)
    weights = balanced_weights(data.y[train], data.n_out)[data.y[train]]
    ref = HistGradientBoostingClassifier(
        learning_rate=0.2, max_iter=result.best_epoch + 1, max_leaf_nodes=7, max_bins=15, early_stopping=False,
        random_state=0,
    ).fit(values, data.y[train], sample_weight=weights)  # fmt: skip
    ours = _outputs(arch, result, data, np.arange(len(data.y)))
    np.testing.assert_allclose(ours, ref.decision_function(binned(x, edges)), atol=2e-5)
    # the weights reached the fit: without them the trees differ
    _, plain = fit_trees(data, {**SETTINGS, "max_iter": 10, "max_bins": 15})
    assert not np.allclose(plain.val_outputs[-1], result.val_outputs[-1])
