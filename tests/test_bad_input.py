"""Every bad input gets one clear sentence."""

import numpy as np
import pytest
import scipy.sparse as sp
from anndata import AnnData
from conftest import FAST, synthetic_counts

import autogenome_sc as ag


def _train(adata, label="cell_type", **kw):
    return ag.tl.train(adata, label, config=kw.pop("config", FAST), **kw)


def test_label_key_not_in_obs(counts):
    with pytest.raises(KeyError, match="label_key 'celltype' is not a column of adata.obs"):
        _train(counts, "celltype")


@pytest.mark.parametrize("value", [np.nan, np.inf])
@pytest.mark.parametrize("sparse", [True, False])
def test_nan_or_inf_in_matrix(counts, value, sparse):
    X = counts.X.toarray()
    X[3, 4] = value
    counts.X = sp.csr_matrix(X) if sparse else X
    with pytest.raises(ValueError, match="NaN or infinite values"):
        _train(counts)


def test_one_class_only(counts):
    counts.obs["one"] = "T cell"
    with pytest.raises(ValueError, match="single class \\('T cell'\\)"):
        _train(counts, "one")


def test_class_too_small_is_named(counts):
    labels = counts.obs["cell_type"].astype(str).to_numpy()
    labels[:2] = "rare"
    counts.obs["with_rare"] = labels
    with pytest.raises(ValueError, match="Class 'rare' has 2 cell"):
        _train(counts, "with_rare")


def test_non_numeric_target_for_regression(counts):
    with pytest.raises(ValueError, match="Regression needs a numeric target"):
        _train(counts, config={**FAST, "loss": {"name": "mse"}})


def test_missing_layer(counts):
    with pytest.raises(KeyError, match="Layer 'counts' is not in adata.layers"):
        _train(counts, layer="counts")


def test_empty_anndata(counts):
    with pytest.raises(ValueError, match="AnnData object is empty"):
        _train(counts[:0].copy())


def test_duplicated_var_names(counts):
    names = counts.var_names.tolist()
    names[1] = names[0]
    counts.var_names = names
    with pytest.raises(ValueError, match="duplicated var_names.*var_names_make_unique"):
        _train(counts)


def test_missing_labels(counts):
    labels = counts.obs["cell_type"].astype(object)
    labels.iloc[0] = None
    counts.obs["partial"] = labels
    with pytest.raises(ValueError, match="1 cells have no value"):
        _train(counts, "partial")


def test_unknown_model_and_bad_config(counts):
    with pytest.raises(ValueError, match="Unknown model 'xgboost'"):
        ag.tl.train(counts, "cell_type", model="xgboost")
    with pytest.raises(ValueError, match="Invalid config field 'trainer.lr': unknown key"):
        ag.tl.train(counts, "cell_type", config={"trainer": {"lr": 0.1}})
    with pytest.raises(ValueError, match="Invalid config field 'trainer.batch_size'"):
        ag.tl.train(counts, "cell_type", config={"trainer": {"batch_size": "big"}})


def test_not_anndata():
    with pytest.raises(TypeError, match="Expected an AnnData object"):
        ag.tl.train(np.zeros((10, 3)), "x")


def test_auc_loss_needs_binary_labels(counts):
    with pytest.raises(ValueError, match="AUC loss is for binary labels"):
        _train(counts, config={**FAST, "loss": {"name": "auc"}})


def test_config_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ag.config.load(tmp_path / "none.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{oops")
    with pytest.raises(ValueError, match="not valid JSON"):
        ag.config.load(bad)
    good = tmp_path / "good.json"
    ag.config.save({"trainer": {"max_epochs": 5}}, good)
    assert ag.config.load(good).trainer.max_epochs == 5


def test_query_without_the_matrix_kind_of_training_is_warned(counts):
    ag.tl.train(counts, "cell_type", config=FAST)
    q = synthetic_counts(n_cells=30)
    q.X = q.X.toarray() - 1.0  # centred values: not counts
    with pytest.warns(UserWarning, match="trained on counts input but adata.X looks like scaled"):
        ag.tl.predict(q, counts.uns["ag"]["model_path"])


def test_bad_query(counts):
    ag.tl.train(counts, "cell_type", config=FAST)
    with pytest.raises(TypeError, match="Expected an AnnData object as query"):
        ag.tl.predict(counts.X, counts.uns["ag"]["model_path"])
    with pytest.raises(ValueError, match="AnnData object is empty"):
        ag.tl.predict(AnnData(np.zeros((0, counts.n_vars), np.float32)), counts.uns["ag"]["model_path"])


def test_a_query_of_another_kind_than_the_reference_is_warned_with_what_was_done(counts):
    import scanpy as sc

    ref = counts.copy()
    sc.pp.normalize_total(ref, target_sum=1e4)
    sc.pp.log1p(ref)
    ag.tl.train(ref, "cell_type", config=FAST)
    query = counts[:60].copy()  # the same cells as raw counts
    with pytest.warns(
        UserWarning,
        match=r"trained on log input but adata.X looks like counts: it was normalised to "
        r"1e4 per cell and log1p'd before the model's scaling \(the training cells were used as is\)",
    ):
        ag.tl.predict(query, ref.uns["ag"]["model_path"])
    # what was done makes the two comparable: the labels agree with those of the log query
    logged = ref[:60].copy()
    ag.tl.predict(logged, ref.uns["ag"]["model_path"])
    assert (query.obs["ag_prediction"] == logged.obs["ag_prediction"]).mean() > 0.9


def test_a_counts_matrix_with_a_negative_value_says_it_is_treated_as_scaled(counts):
    bad = counts.copy()
    bad.X = bad.X.toarray()
    bad.X[3, 5] = -1.0
    with pytest.warns(UserWarning, match=r"looks like counts but holds 1 negative value\(s\) .* treated as scaled"):
        ag.tl.train(bad, "cell_type", config=FAST)
    assert bad.uns["ag"]["preprocessing"]["input"] == "scaled"
