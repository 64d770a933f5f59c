import json

import numpy as np
import pytest

import autogenome_sc as ag


def test_saved_model_reproduces_training_predictions(trained, tmp_path):
    adata, model = trained
    assert model.classes_ == list(adata.obs["cell_type"].cat.categories)
    assert model.var_names_.equals(adata.var_names)
    assert model.metrics_["accuracy"] == adata.uns["ag"]["metrics"]["accuracy"]
    meta = json.loads((model.path / "model.json").read_text())
    assert meta["versions"]["jax"] and meta["preprocessing"]["input"] == "counts"
    pred = model.predict(adata)
    assert (pred["prediction"] == adata.obs["ag_prediction"]).all()
    np.testing.assert_allclose(pred["confidence"], adata.obs["ag_confidence"], rtol=1e-5)
    model.save(tmp_path / "copy")
    again = ag.read_model(tmp_path / "copy").predict_proba(adata)
    assert list(again.columns) == model.classes_
    np.testing.assert_allclose(again.max(axis=1), adata.obs["ag_confidence"], rtol=1e-5)


def test_query_with_other_gene_order_and_missing_genes(trained):
    adata, model = trained
    query = adata[:100, ::-1].copy()  # reversed gene order
    ag.tl.predict(query, model)
    assert (query.obs["ag_prediction"] == adata.obs["ag_prediction"][:100]).all()
    np.testing.assert_allclose(query.obsm["X_ag"], adata.obsm["X_ag"][:100], rtol=1e-5, atol=1e-5)
    assert query.uns["ag"]["prediction"]["genes_missing_fraction"] == 0
    # drop 10% of the genes and add unknown ones: warned, still labels most cells the same
    keep = adata.var_names[20:]
    partial = adata[:, keep].copy()
    partial.var_names = list(keep[:-5]) + [f"new{i}" for i in range(5)]
    with pytest.warns(UserWarning, match=r"25 of the model's 200 genes \(12.5%\) are missing"):
        ag.tl.predict(partial, model.path)
    assert (partial.obs["ag_prediction"] == adata.obs["ag_prediction"]).mean() > 0.7


def test_query_sharing_too_few_genes_is_refused(trained):
    adata, model = trained
    query = adata[:, :50].copy()
    with pytest.raises(ValueError, match="shares only 50 of the model's 200 genes"):
        ag.tl.predict(query, model)


def test_predict_copy_and_raw_counts_query(trained):
    adata, model = trained
    query = adata[:50].copy()
    query.obs = query.obs[["cell_type"]]
    out = ag.tl.predict(query, model, copy=True, key_added="q")
    assert "q_prediction" in out.obs and "q_prediction" not in query.obs


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        ("missing", "does not exist"),
        ("no_json", "model.json is missing"),
        ("no_weights", "weights.msgpack is missing"),
        ("other_format", "another format"),
        ("bad_json", "not valid JSON"),
        ("bad_weights", "could not be read"),
        ("file", "is a file"),
    ],
)
def test_damaged_model_directories(trained, tmp_path, damage, match):
    _, model = trained
    path = tmp_path / "m"
    model.save(path)
    if damage == "missing":
        path = tmp_path / "nowhere"
    elif damage == "no_json":
        (path / "model.json").unlink()
    elif damage == "no_weights":
        (path / "weights.msgpack").unlink()
    elif damage == "other_format":
        (path / "model.json").write_text(json.dumps({"format": "keras"}))
    elif damage == "bad_json":
        (path / "model.json").write_text("{not json")
    elif damage == "bad_weights":
        (path / "weights.msgpack").write_bytes(b"\x00garbage")
    elif damage == "file":
        path = path / "model.json"
    with pytest.raises((FileNotFoundError, ValueError, NotADirectoryError), match=match):
        ag.read_model(path)


def test_save_refuses_to_overwrite(trained):
    _, model = trained
    with pytest.raises(FileExistsError, match="overwrite=True"):
        model.save(model.path)


def test_gene_warning_points_at_the_callers_line(trained):
    adata, model = trained
    partial = adata[:, adata.var_names[20:]].copy()
    with pytest.warns(UserWarning, match="are missing from the query") as record:
        ag.tl.predict(partial, model)
    assert record[0].filename == __file__  # the user's line, not a file inside the package


def test_the_trained_input_round_trips_and_an_old_model_json_still_names_it(counts, tmp_path):
    from conftest import FAST, as_format_2

    counts.layers["counts"] = counts.X.copy()
    counts.raw = counts.copy()
    counts.X = counts.X.log1p()  # a different matrix in X: explaining the wrong one would show
    ag.tl.train(counts, "cell_type", layer="counts", config=FAST, key_added="lay")
    ag.tl.train(counts, "cell_type", use_raw=True, config=FAST, key_added="raw")
    lay, raw = (ag.read_model(counts.uns[k]["model_path"]) for k in ("lay", "raw"))
    assert (lay.layer, lay.use_raw, raw.layer, raw.use_raw) == ("counts", False, None, True)
    assert json.loads((raw.path / "model.json").read_text())["matrix"] == {"layer": None, "use_raw": True}
    assert raw.input_recorded and ag.read_model(raw.save(tmp_path / "again")).use_raw
    # a model saved before the input was recorded (format 2): ag.tl.explain reads adata's record
    ag.tl.explain(counts, key="raw", n_samples=10, n_background=10, max_cells=20)
    new = dict(counts.uns["raw"]["shap"])
    old_path = tmp_path / "old"
    raw.save(old_path)
    old_id = as_format_2(old_path, lambda meta: meta.pop("matrix"))
    old = ag.read_model(old_path)
    assert (old.layer, old.use_raw, old.input_recorded, old.id_) == (None, False, False, old_id)
    counts.uns["raw"].update(model_path=str(old_path), model_id=old_id)  # as the old model wrote it
    ag.tl.explain(counts, key="raw", n_samples=10, n_background=10, max_cells=20)
    np.testing.assert_array_equal(counts.uns["raw"]["shap"]["data"], new["data"])
    np.testing.assert_array_equal(counts.uns["raw"]["shap"]["values"], new["values"])
