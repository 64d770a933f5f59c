"""Label hierarchies: label_key=[coarse, fine], labels per level that nest, rejection falling back to a coarse level."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pytest
from conftest import FAST

import autogenome_sc as ag
from autogenome_sc._keys import strings
from autogenome_sc.data._hierarchy import label_levels, read_hierarchy
from autogenome_sc.io._validate import DamagedModel, check_meta

LINEAGE = {
    "CD14+ Monocyte": "myeloid",
    "Dendritic": "myeloid",
    "CD56+ NK": "NK",
    "CD19+ B": "B",
    "CD34+": "progenitor",
    "CD4+/CD25 T Reg": "T",
    "CD8+ Cytotoxic T": "T",
    "CD4+/CD45RO+ Memory": "T",
    "CD8+/CD45RA+ Naive Cytotoxic": "T",
    "CD4+/CD45RA+/CD25- Naive T": "T",
}


@pytest.fixture
def pbmc_levels(pbmc):
    pbmc.obs["lineage"] = pbmc.obs["bulk_labels"].map(LINEAGE).astype("category")
    return pbmc


def test_levels_must_nest_and_exist(pbmc_levels):
    a = pbmc_levels
    assert label_levels("x") == ("x", ["x"])
    assert label_levels(["a", "b"]) == ("b", ["a", "b"])
    with pytest.raises(ValueError, match="names a column twice"):
        label_levels(["a", "a"])
    with pytest.raises(TypeError, match="list of columns from coarse to fine"):
        ag.tl.train(a, ["lineage", 3], model="mlp", config=FAST)
    with pytest.raises(ValueError, match="empty list"):
        ag.tl.train(a, [], model="mlp", config=FAST)
    codes = a.obs["bulk_labels"].cat.codes.to_numpy()
    classes = list(a.obs["bulk_labels"].cat.categories)
    h = read_hierarchy(a, ["lineage", "bulk_labels"], classes, codes)
    assert h is not None and h.parents["lineage"][classes.index("Dendritic")] == "myeloid"
    a.obs["broken"] = a.obs["lineage"].astype(str)
    a.obs.loc[a.obs_names[a.obs["bulk_labels"] == "CD19+ B"][0], "broken"] = "T"  # one B cell under "T"
    with pytest.raises(ValueError, match="'CD19\\+ B' of adata.obs\\['bulk_labels'\\] falls under more than one"):
        ag.tl.train(a, ["broken", "bulk_labels"], model="mlp", use_raw=True, config=FAST)
    with pytest.raises(KeyError, match="level 'nope' is not a column"):
        ag.tl.train(a, ["nope", "bulk_labels"], model="mlp", use_raw=True, config=FAST)
    a.obs["n_genes_f"] = a.obs["n_genes"].astype(float)
    with pytest.raises(ValueError, match="for classification"):
        ag.tl.train(a, ["lineage", "n_genes_f"], model="mlp", use_raw=True, config=FAST)


def test_levels_nest_score_and_fall_back(pbmc_levels):
    a = pbmc_levels
    ag.tl.train(a, ["lineage", "bulk_labels"], model="mlp", use_raw=True, config=FAST, rng=0)
    fine, coarse = a.obs["ag_prediction_bulk_labels"].astype(str), a.obs["ag_prediction_lineage"].astype(str)
    assert (fine == a.obs["ag_prediction"].astype(str)).all()
    assert (coarse == fine.map(LINEAGE)).all()  # the labels agree with the hierarchy, cell by cell
    assert (a.obs["ag_confidence_lineage"] >= a.obs["ag_confidence_bulk_labels"] - 1e-6).all()
    m = a.uns["ag"]["metrics"]
    test = (a.obs["ag_split"] == "test").to_numpy()
    truth = a.obs["lineage"].astype(str).to_numpy()[test]
    assert m["levels"]["lineage"]["accuracy"] == pytest.approx(float((coarse.to_numpy()[test] == truth).mean()))
    assert m["levels"]["lineage"]["accuracy"] >= m["accuracy"]  # confusions within T cells no longer count
    assert a.uns["ag"]["params"]["label_key"] == "bulk_labels"
    assert list(a.uns["ag"]["params"]["label_levels"]) == ["lineage", "bulk_labels"]
    ag.tl.explain(a, max_cells=30, n_samples=8, n_background=10)  # per fine class, as without levels
    assert list(ag.get.importance_df(a).columns[:-1]) == list(a.obs["bulk_labels"].cat.categories)

    model = ag.read_model(a.uns["ag"]["model_path"])
    assert model.hierarchy is not None and model.hierarchy.levels == ["lineage", "bulk_labels"]
    q = a.copy()
    ag.tl.predict(q, model, use_raw=True, reject=0.9, reject_uncertainty=None)
    conf_fine = q.obs["ag_confidence_bulk_labels"].to_numpy()
    conf_coarse = q.obs["ag_confidence_lineage"].to_numpy()
    main = q.obs["ag_prediction"].astype(str).to_numpy()
    sure = conf_fine >= 0.9
    fallback = ~sure & (conf_coarse >= 0.9)
    assert (main[sure] == fine.to_numpy()[sure]).all()
    assert fallback.sum() > 0 and (main[fallback] == coarse.to_numpy()[fallback]).all()  # "T" rather than nothing
    assert (main[~sure & ~fallback] == "Unassigned").all()
    assert (q.obs["ag_prediction_bulk_labels"].astype(str).to_numpy()[~sure] == "Unassigned").all()
    # flat rejection with the same probabilities would have left every unsure cell unassigned
    assert (main == "Unassigned").sum() == int((~sure & ~fallback).sum()) < int((~sure).sum())
    q.write_h5ad(ag.settings.model_dir / "q.h5ad")  # every level's columns are h5ad-safe
    # probabilities per level: the fine classes', and each coarser level's summed over its fine classes
    back = ad.read_h5ad(ag.settings.model_dir / "q.h5ad")
    names = back.uns["ag"]["probabilities"]
    fine_p, coarse_p = back.obsm["ag_probabilities"], back.obsm["ag_probabilities_lineage"]
    assert list(strings(names["ag_probabilities"])) == list(model.classes_)
    lineages = list(strings(names["ag_probabilities_lineage"]))
    assert lineages == sorted(set(LINEAGE.values())) and coarse_p.shape == (q.n_obs, len(lineages))
    for j, lineage in enumerate(lineages):
        members = [i for i, c in enumerate(model.classes_) if LINEAGE[c] == lineage]
        np.testing.assert_allclose(coarse_p[:, j], fine_p[:, members].sum(axis=1), atol=1e-5)
    col = [lineages.index(c) for c in coarse]  # the confidence of a level is its label's column
    np.testing.assert_allclose(coarse_p[np.arange(q.n_obs), col], conf_coarse, atol=1e-5)


def test_untrusted_hierarchy_is_refused(pbmc_levels, tmp_path):
    a = pbmc_levels
    ag.tl.train(a, ["lineage", "bulk_labels"], model="mlp", use_raw=True, config=FAST)
    meta = json.loads((ag.read_model(a.uns["ag"]["model_path"]).path / "model.json").read_text())
    check_meta(meta, tmp_path)
    meta["hierarchy"]["parents"]["lineage"] = meta["hierarchy"]["parents"]["lineage"][:-1]  # one class short
    with pytest.raises(DamagedModel, match="'hierarchy'"):
        check_meta(meta, tmp_path)
    assert np.all(np.isin(meta["hierarchy"]["levels"], ["lineage", "bulk_labels"]))


def test_search_takes_levels_too(pbmc_levels):
    from _search_helpers import TINY

    a = pbmc_levels
    ag.tl.search(a, ["lineage", "bulk_labels"], n_trials=2, use_raw=True, config=TINY, run_dir=ag.settings.model_dir)
    fine = a.obs["ag_prediction"].astype(str)
    assert (a.obs["ag_prediction_lineage"].astype(str) == fine.map(LINEAGE)).all()
    assert "lineage" in a.uns["ag"]["metrics"]["levels"]
    assert ag.read_model(a.uns["ag"]["model_path"]).hierarchy.levels == ["lineage", "bulk_labels"]


def test_an_unseen_fine_type_falls_back_to_its_lineage(pbmc_levels, tmp_path):
    """Novelty is judged at each level with that level's confidence: an unseen T cell type can stay "T"."""
    from flax import serialization

    from autogenome_sc.io._validate import check_weights

    a = pbmc_levels
    unseen = (a.obs["bulk_labels"] == "CD4+/CD25 T Reg").to_numpy()
    ref = a[~unseen].copy()
    ref.obs["bulk_labels"] = ref.obs["bulk_labels"].cat.remove_unused_categories()
    ag.tl.train(ref, ["lineage", "bulk_labels"], model="mlp", use_raw=True, config=FAST, rng=0)
    model = ag.read_model(ref.uns["ag"]["model_path"])
    assert set(model.novelty_levels_) == {"lineage"}  # the coarser level: its own standardisation and reference
    assert "points" not in model.novelty_levels_["lineage"] and "points" in model.novelty_  # one input space

    q = a.copy()
    ag.tl.predict(q, model, use_raw=True, reject="auto")
    u_fine = q.obs["ag_uncertainty"].to_numpy()
    u_coarse = q.obs["ag_uncertainty_lineage"].to_numpy()
    assert ((u_coarse >= 0) & (u_coarse < 1)).all()
    main = q.obs["ag_prediction"].astype(str).to_numpy()
    fine = q.obs["ag_prediction_bulk_labels"].astype(str).to_numpy()
    coarse = q.obs["ag_prediction_lineage"].astype(str).to_numpy()
    novel_fine, novel_coarse = u_fine > 0.95, (u_coarse > 0.95) & (u_fine > 0.95)
    assert (fine[novel_fine] == "Unassigned").all() and (main[~novel_fine] == fine[~novel_fine]).all()
    falls = novel_fine & ~novel_coarse
    assert (main[falls] == coarse[falls]).all() and (coarse[falls] != "Unassigned").all()
    assert (main[novel_coarse] == "Unassigned").all() and (coarse[novel_coarse] == "Unassigned").all()
    # the levels kept nest: no cell keeps its fine label with its lineage unassigned
    assert not ((fine != "Unassigned") & (coarse == "Unassigned")).any()
    # the point: unseen T Reg cells the fine level rejects mostly keep "T", where before they had no label at all
    assert (falls & unseen).sum() > 0 and (main[falls & unseen] == "T").mean() > 0.8
    # with the lineage's confidence, the unseen cells are less unusual than among the fine types
    assert np.median(u_coarse[unseen]) < np.median(u_fine[unseen])
    # query_aware: each level reads the same density ratios, ranked among its own held-out scores; still nested
    assert (
        "held_out_raw" in model.novelty_levels_["lineage"] and "held_out_points" not in model.novelty_levels_["lineage"]
    )
    aware = ag.tl.predict(q, model, use_raw=True, reject="auto", query_aware=True, copy=True)
    assert aware.uns["ag"]["prediction"]["query_aware"]
    a_fine, a_coarse = aware.obs["ag_uncertainty"].to_numpy(), aware.obs["ag_uncertainty_lineage"].to_numpy()
    assert not np.allclose(a_coarse, u_coarse) and ((a_coarse >= 0) & (a_coarse < 1)).all()
    fine_a = aware.obs["ag_prediction_bulk_labels"].astype(str).to_numpy()
    coarse_a = aware.obs["ag_prediction_lineage"].astype(str).to_numpy()
    assert not ((fine_a != "Unassigned") & (coarse_a == "Unassigned")).any()
    assert (a_fine[unseen] > 0.95).mean() >= (u_fine[unseen] > 0.95).mean()

    # the statistics travel with the model, and forged ones are refused
    state = serialization.msgpack_restore((model.path / "weights.msgpack").read_bytes())
    n_genes = len(model.var_names_)
    check_weights(state, n_genes, tmp_path, len(model.classes_), {"lineage": 5})
    with pytest.raises(DamagedModel, match="levels the model's hierarchy does not have"):
        check_weights(state, n_genes, tmp_path, len(model.classes_), {})
    state["novelty_levels"]["lineage"]["reference"] = state["novelty_levels"]["lineage"]["reference"][::-1]
    with pytest.raises(DamagedModel, match="novelty statistics in weights.msgpack are damaged"):
        check_weights(state, n_genes, tmp_path, len(model.classes_), {"lineage": 5})
