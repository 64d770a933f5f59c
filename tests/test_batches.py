"""batch_key: per-batch standardisation in training, in the saved model, and of a query's own batches."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import FAST

import autogenome_sc as ag
from autogenome_sc.data import BatchStandardizer, read_batches

FASTER = {**FAST, "trainer": {"max_epochs": 25, "patience": 25}}


def _batched(effect=1.0, n=900, genes=300, seed=5):
    return ag.datasets.synthetic(n, genes, n_types=4, n_batches=3, batch_effect=effect, effect_size=1.0, rng=seed)


def test_standardizer_matches_numpy_per_batch():
    rng = np.random.default_rng(0)
    X = rng.normal(5.0, 2.0, (60, 7))
    X[:, 3] = 4.0  # constant everywhere
    codes = np.repeat([0, 1, 2], 20).astype(np.int32)
    X[codes == 1] = X[codes == 1] * 3.0 + 100.0  # a batch effect: stretched and shifted
    X[codes == 2, 5] = 7.0  # constant within one batch only
    rows = np.flatnonzero(np.arange(60) % 4 != 0)  # "training" rows: three quarters of each batch
    st = BatchStandardizer.fit("b", ["a", "b", "c"], codes, lambda idx: X[idx], rows, 7, chunk_rows=11)
    Z = st.apply(X.astype(np.float32).copy(), np.arange(60))
    for b in range(3):
        fit = rows[codes[rows] == b]
        mean, sd = X[fit].mean(axis=0), X[fit].std(axis=0)
        want = np.divide(X[codes == b] - mean, sd, out=np.zeros_like(X[codes == b]), where=sd > 1e-9)
        np.testing.assert_allclose(Z[codes == b], want, rtol=1e-4, atol=1e-4)
    assert np.all(Z[:, 3] == 0) and np.all(Z[codes == 2, 5] == 0)
    assert np.isfinite(Z).all()


def test_batch_without_training_rows_uses_all_its_cells():
    X = np.arange(40, dtype=np.float64).reshape(20, 2)
    codes = np.repeat([0, 1], 10).astype(np.int32)
    st = BatchStandardizer.fit("b", ["x", "y"], codes, lambda idx: X[idx], np.arange(10), 2, chunk_rows=64)
    np.testing.assert_allclose(st.mean[1], X[10:].mean(axis=0), rtol=1e-6)


def test_bad_batch_columns_are_refused_in_one_sentence(counts):
    with pytest.raises(KeyError, match="batch_key 'nope' is not a column"):
        read_batches(counts, "nope")
    with pytest.raises(TypeError, match="batch_key must be the name of a column"):
        ag.tl.train(counts, "cell_type", model="mlp", batch_key=3, config=FAST)
    counts.obs["batch"] = ["a"] * (counts.n_obs - 1) + ["b"]
    with pytest.raises(ValueError, match="single cell"):
        ag.tl.train(counts, "cell_type", model="mlp", batch_key="batch", config=FAST)
    counts.obs["batch"] = pd.Series([None] + ["a"] * (counts.n_obs - 1), index=counts.obs_names, dtype=object)
    with pytest.raises(ValueError, match="1 cells have no value"):
        ag.tl.train(counts, "cell_type", model="mlp", batch_key="batch", config=FAST)
    with pytest.raises(ValueError, match="batch_key is for supervised"):
        ag.tl.train(counts, None, model="resvae", batch_key="batch")
    with pytest.raises(ValueError, match="batch_key is for supervised"):
        ag.tl.search(counts, None, batch_key="batch", n_trials=1)


def test_batch_key_transfers_labels_to_a_batch_the_reference_lacks():
    adata = _batched()
    ref = adata[adata.obs["batch"] != "batch_2"].copy()
    query = adata[adata.obs["batch"] == "batch_2"].copy()
    truth = query.obs["cell_type"].astype(str).to_numpy()
    acc = {}
    for key in (None, "batch"):
        ag.tl.train(ref, "cell_type", model="mlp", batch_key=key, config=FASTER, rng=0)
        q = query.copy()
        ag.tl.predict(q, ref.uns["ag"]["model_path"])  # the model's batch column is found in the query
        acc[key] = float((q.obs["ag_prediction"].astype(str).to_numpy() == truth).mean())
        assert q.uns["ag"]["prediction"]["n_batches"] == (1 if key else 0)
    # strong gene-wise batch effects: the unseen batch is labelled far better when standardised on itself
    assert acc["batch"] > 0.85, acc
    assert acc["batch"] > acc[None] + 0.05, acc  # about +0.09 on this data (seeds 5 and 6)
    model = ag.read_model(ref.uns["ag"]["model_path"])
    assert model.batch_key == "batch"
    assert json.loads((model.path / "model.json").read_text())["preprocessing"]["batch_key"] == "batch"


def test_query_batches_are_standardised_on_themselves():
    adata = _batched(effect=0.3, n=600, genes=200, seed=2)
    counts = adata.X.toarray()
    adata.X = np.log1p(counts / counts.sum(axis=1, keepdims=True) * 1e4).astype(np.float32)  # log-normalised
    ref = adata[adata.obs["batch"] != "batch_2"].copy()
    ag.tl.train(ref, "cell_type", model="mlp", batch_key="batch", config=FAST, rng=0)
    model = ag.read_model(ref.uns["ag"]["model_path"])
    query = adata[adata.obs["batch"] == "batch_2"].copy()
    # a gene-wise batch effect on the query (each gene stretched and shifted its own way) changes nothing:
    # the query's batch is standardised on its own cells
    shifted = query.copy()
    g = np.random.default_rng(1)
    shifted.X = shifted.X * g.uniform(0.5, 2.0, query.n_vars) + g.uniform(0.0, 3.0, query.n_vars)
    p1 = model.predict_proba(query).to_numpy()
    p2 = model.predict_proba(shifted).to_numpy()
    np.testing.assert_allclose(p1, p2, atol=1e-4)
    # without the column the query is one batch, with a warning; the labels are those of that one batch
    bare = query.copy()
    del bare.obs["batch"]
    with pytest.warns(UserWarning, match="every cell is taken as one batch"):
        p3 = model.predict_proba(bare).to_numpy()
    np.testing.assert_allclose(p1, p3, atol=1e-5)
    # another column name at prediction
    renamed = query.copy()
    renamed.obs["run"] = renamed.obs["batch"]
    del renamed.obs["batch"]
    np.testing.assert_allclose(p1, model.predict_proba(renamed, batch_key="run").to_numpy(), atol=1e-5)


def test_model_without_batches_refuses_a_batch_key(counts):
    ag.tl.train(counts, "cell_type", model="mlp", config=FAST)
    counts.obs["batch"] = "a"
    with pytest.raises(ValueError, match="trained without a batch_key"):
        ag.tl.predict(counts, counts.uns["ag"]["model_path"], batch_key="batch")


def test_search_with_batch_key_saves_it_and_explains(counts):
    from _search_helpers import TINY

    counts.obs["batch"] = np.where(np.arange(counts.n_obs) % 2 == 0, "r1", "r2")
    ag.tl.search(counts, "cell_type", n_trials=2, batch_key="batch", config=TINY, run_dir=ag.settings.model_dir)
    model = ag.read_model(counts.uns["ag"]["model_path"])
    assert model.batch_key == "batch"
    ag.tl.explain(counts, max_cells=20, n_samples=8, n_background=10)
    imp = ag.get.importance_df(counts)
    assert imp.shape[0] == counts.n_vars and np.isfinite(imp.to_numpy()).all() and imp.to_numpy().max() > 0


def test_untrusted_batch_key_is_refused(counts, tmp_path):
    ag.tl.train(counts, "cell_type", model="mlp", batch_key=None, config=FAST)
    path = counts.uns["ag"]["model_path"]
    meta = json.loads((ag.read_model(path).path / "model.json").read_text())
    from autogenome_sc.io._validate import DamagedModel, check_meta

    meta["preprocessing"]["batch_key"] = 3
    with pytest.raises(DamagedModel, match="batch_key"):
        check_meta(meta, tmp_path)
