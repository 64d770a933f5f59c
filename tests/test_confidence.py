"""Calibration, open-set rejection, label smoothing and the reliability diagram (issue 9)."""

from __future__ import annotations

import anndata
import matplotlib
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
from conftest import as_format_2
from scipy.special import softmax
from sklearn.metrics import roc_auc_score
from sklearn.neighbors import kneighbors_graph

import autogenome_sc as ag
from autogenome_sc.train import expected_calibration_error, fit_temperature, uncertainty

matplotlib.use("Agg")

UNSEEN = "CD19+ B"  # a lineage of its own: no reference class is a near neighbour of it
CONFIG = {"trainer": {"max_epochs": 40, "patience": 10}, "models": {"resnet": {"width": 128, "n_blocks": 2}}}


@pytest.fixture(scope="module")
def open_set(tmp_path_factory):
    """A model trained on pbmc68k_reduced without B cells; every cell predicted with reject=0.9."""
    full = sc.datasets.pbmc68k_reduced()
    ref = full[full.obs["bulk_labels"] != UNSEEN].copy()
    cfg = dict(CONFIG, save={"path": str(tmp_path_factory.mktemp("m") / "model")})
    ag.tl.train(ref, "bulk_labels", use_raw=True, config=cfg, rng=0)
    model = ag.read_model(ref.uns["ag"]["model_path"])
    query = full.copy()
    ag.tl.predict(query, model, use_raw=True, reject=0.9)
    return ref, model, query


# ---------------------------------------------------------------------------- calibration
def test_fit_temperature_recovers_the_true_temperature():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (4000, 6))
    y = np.array([rng.choice(6, p=p) for p in softmax(logits / 2.5, axis=1)])
    assert fit_temperature(logits, y) == pytest.approx(2.5, rel=0.1)
    # the calibrated probabilities are well calibrated, the raw ones are not
    assert expected_calibration_error(softmax(logits / 2.5, axis=1), y) < 0.03
    assert expected_calibration_error(softmax(logits, axis=1), y) > 0.1


def test_calibration_lowers_ece_and_is_stored(open_set):
    ref, model, _ = open_set
    metrics = ref.uns["ag"]["metrics"]
    assert metrics["ece_after"] < metrics["ece_before"]
    assert metrics["temperature"] == pytest.approx(model.calibration["temperature"])
    assert model.temperature != 1.0
    # the stored confidence uses the temperature: recompute it from raw outputs
    out, _, _ = model.outputs(ref, use_raw=True)
    expected = softmax(out / model.temperature, axis=1).max(axis=1)
    np.testing.assert_allclose(ref.obs["ag_confidence"], expected, rtol=1e-5)
    # the validation ECE in uns is the one of the stored confidences
    val = (ref.obs["ag_split"] == "val").to_numpy()
    y = ref.obs["bulk_labels"].cat.codes.to_numpy()  # same order as the model's sorted classes
    assert list(ref.obs["bulk_labels"].cat.categories) == model.classes_
    p = softmax(out[val] / model.temperature, axis=1)
    assert metrics["ece_after"] == pytest.approx(expected_calibration_error(p, y[val]))
    # the temperature minimises the validation NLL: any other temperature does worse
    nll = {t: -np.log(softmax(out[val] / t, axis=1)[np.arange(val.sum()), y[val]]).mean() for t in (0.5, 1.0, 2.0)}
    best = -np.log(p[np.arange(val.sum()), y[val]]).mean()
    assert all(best <= v + 1e-9 for v in nll.values())
    rel = ref.uns["ag"]["reliability"]
    assert rel["test"]["after"]["count"].sum() == (ref.obs["ag_split"] == "test").sum()


def test_save_load_keeps_calibration(open_set, tmp_path):
    _, model, query = open_set
    again = ag.read_model(model.path)
    assert again.calibration == pytest.approx(model.calibration)
    assert set(again.novelty_) == set(model.novelty_)
    df = again.predict(query, use_raw=True)
    np.testing.assert_allclose(df["confidence"], query.obs["ag_confidence"], rtol=1e-5)
    np.testing.assert_allclose(df["uncertainty"], query.obs["ag_uncertainty"], rtol=1e-5, atol=1e-6)


def test_model_saved_without_calibration_loads_with_temperature_one(open_set, tmp_path):
    _, model, query = open_set
    bare = ag.read_model(model.path)
    bare.calibration, bare.novelty_ = {}, {}
    path = bare.save(tmp_path / "old")
    as_format_2(path, lambda meta: meta.pop("calibration"))  # a model of the previous format, without calibration
    old = ag.read_model(path)
    assert old.temperature == 1.0 and old.novelty_ == {}
    out, _, _ = old.outputs(query, use_raw=True)
    df = old.predict(query, use_raw=True)
    np.testing.assert_allclose(df["confidence"], softmax(out, axis=1).max(axis=1), rtol=1e-5)
    np.testing.assert_allclose(df["uncertainty"], 1 - df["confidence"], rtol=1e-5)
    q = ag.tl.predict(query, old, use_raw=True, reject=0.9, copy=True)
    assert q.uns["ag"]["prediction"]["temperature"] == 1.0


# ---------------------------------------------------------------------------- open set
def test_uncertainty_separates_an_unseen_type(open_set):
    ref, _, query = open_set
    unseen = (query.obs["bulk_labels"] == UNSEEN).to_numpy()
    u = query.obs["ag_uncertainty"].to_numpy()
    assert 0 <= u.min() and u.max() <= 1
    assert roc_auc_score(unseen, u) > 0.8
    # on held-out cells only: the unseen type against the reference's test split
    held_out = unseen | query.obs_names.isin(ref.obs_names[ref.obs["ag_split"] == "test"])
    assert roc_auc_score(unseen[held_out], u[held_out]) > 0.8


def test_reject_marks_unseen_cells_unassigned(open_set):
    _, model, query = open_set
    unseen = (query.obs["bulk_labels"] == UNSEEN).to_numpy()
    pred = query.obs["ag_prediction"]
    assert list(pred.cat.categories) == [*model.classes_, "Unassigned"]
    rejected = (pred == "Unassigned").to_numpy()
    assert rejected[unseen].mean() > 0.7
    assert rejected[~unseen].mean() < 0.4
    # the rule: confidence below 0.9 or uncertainty above 0.95
    rule = (query.obs["ag_confidence"] < 0.9) | (query.obs["ag_uncertainty"] > 0.95)
    np.testing.assert_array_equal(rejected, rule.to_numpy())
    info = query.uns["ag"]["prediction"]
    assert info["n_unassigned"] == rejected.sum() and info["reject_uncertainty"] == 0.95


def test_reject_uncertainty_none_leaves_only_the_probability_rule(open_set):
    _, model, query = open_set
    q = ag.tl.predict(query, model, use_raw=True, reject=0.5, reject_uncertainty=None, copy=True)
    rejected = (q.obs["ag_prediction"] == "Unassigned").to_numpy()
    np.testing.assert_array_equal(rejected, (q.obs["ag_confidence"] < 0.5).to_numpy())
    # with the novelty rule (default 0.95) more unseen cells are rejected at the same threshold
    q2 = ag.tl.predict(query, model, use_raw=True, reject=0.5, copy=True)
    unseen = (query.obs["bulk_labels"] == UNSEEN).to_numpy()
    assert (q2.obs["ag_prediction"] == "Unassigned").to_numpy()[unseen].mean() > rejected[unseen].mean()
    plain = ag.tl.predict(query, model, use_raw=True, copy=True)
    assert "Unassigned" not in plain.obs["ag_prediction"].cat.categories


def test_reject_auto_rejects_by_uncertainty_alone(open_set, tmp_path):
    ref, model, query = open_set
    q = ag.tl.predict(query, model, use_raw=True, reject="auto", copy=True)
    rejected = (q.obs["ag_prediction"] == "Unassigned").to_numpy()
    u = q.obs["ag_uncertainty"].to_numpy()
    np.testing.assert_array_equal(rejected, u > 0.95)  # no confidence threshold: the uncertainty's alone
    info = q.uns["ag"]["prediction"]
    assert info["reject"] == "auto" and info["reject_uncertainty"] == 0.95 and info["n_unassigned"] == rejected.sum()
    # about 5% of cells like the reference's held-out ones; many more of the type it never saw
    unseen = (q.obs["bulk_labels"] == UNSEEN).to_numpy()
    test = q.obs_names.isin(ref.obs_names[ref.obs["ag_split"] == "test"])
    assert rejected[test].mean() < 0.15 and rejected[unseen].mean() > 3 * max(rejected[test].mean(), 0.05)
    # training reported that share of its held-out test cells in advance, from the same uncertainty
    in_ref = (ref.obs["ag_split"] == "test").to_numpy()
    reported = ref.uns["ag"]["metrics"]["auto_rejected_test"]
    assert reported == pytest.approx(float((ref.obs["ag_uncertainty"].to_numpy()[in_ref] > 0.95).mean()))
    assert reported == pytest.approx(rejected[test].mean()) and model.metrics_["auto_rejected_test"] == reported
    looser = ag.tl.predict(query, model, use_raw=True, reject="auto", reject_uncertainty=0.8, copy=True)
    assert (looser.obs["ag_prediction"] == "Unassigned").sum() > rejected.sum()
    q.write_h5ad(tmp_path / "q.h5ad")  # the rule's name is h5ad-safe
    assert anndata.read_h5ad(tmp_path / "q.h5ad").uns["ag"]["prediction"]["reject"] == "auto"
    with pytest.raises(ValueError, match="reject='auto' rejects by ag_uncertainty alone"):
        ag.tl.predict(query, model, use_raw=True, reject="auto", reject_uncertainty=None, copy=True)


def test_input_space_uncertainty_is_the_rank_among_held_out_cells(monkeypatch):
    from autogenome_sc.train._confidence import (
        KNN_NEIGHBOURS,
        KNN_POINTS,
        fit_input_novelty,
        fit_input_space,
        input_evidence,
    )

    rng = np.random.default_rng(2)
    n_train, n_genes = 6000, 40
    spread = rng.uniform(0.1, 3.0, n_genes)
    X = rng.normal(size=(n_train + 6000, n_genes)).astype(np.float32) * spread
    y = rng.choice(4, n_train, p=[0.6, 0.3, 0.097, 0.003])  # a class of about 18 cells among 6000

    def block(rows):
        return X[rows]

    train, val, query = np.arange(n_train), np.arange(n_train, n_train + 1000), np.arange(n_train + 1000, len(X))
    space = fit_input_space(block, train, y)
    assert space["points"].shape == (KNN_POINTS, min(50, n_genes))  # at most KNN_POINTS kept...
    assert np.bincount(space["point_class"], minlength=4)[3] == (y == 3).sum()  # ...and the rare class whole
    np.testing.assert_array_equal(fit_input_space(block, train, y)["points"], space["points"])  # reproducible
    monkeypatch.setattr("autogenome_sc.train._confidence.KNN_GENES", 10)  # wide input: the most variable genes
    narrow = fit_input_space(block, train, y)
    np.testing.assert_array_equal(narrow["genes"], np.sort(np.argsort(-spread)[:10]))
    assert narrow["projection"].shape == (10, 10)
    # the distance, block by block, is the brute-force mean distance to the k nearest kept cells
    d, p_lr = input_evidence(block, query[:300], space)
    coords = X[query[:300]] @ space["projection"] - space["offset"]
    brute = np.sort(np.linalg.norm(coords[:, None, :] - space["points"][None], axis=2), axis=1)[:, :KNN_NEIGHBOURS]
    assert d.shape == (300, 2)
    np.testing.assert_allclose(d[:, 0], brute.mean(axis=1), rtol=1e-3)
    # beside it, the squared Mahalanobis distance to the nearest class mean, one shrunk covariance for all classes
    from sklearn.covariance import LedoitWolf

    pts, cls = space["points"].astype(np.float64), space["point_class"]
    means = np.stack([pts[cls == c].mean(axis=0) for c in range(4)])
    precision = LedoitWolf().fit(pts - means[cls]).precision_
    maha = np.stack([np.einsum("ij,jk,ik->i", coords - m, precision, coords - m) for m in means], axis=1)
    np.testing.assert_allclose(d[:, 1], maha.min(axis=1), rtol=1e-3)
    # the reference-space classifier: probabilities over the classes it saw, from the same components
    assert list(space["lr_classes"]) == [0, 1, 2, 3] and p_lr.shape == (300, 4)
    np.testing.assert_allclose(p_lr, softmax(coords @ space["lr_coef"] + space["lr_intercept"], axis=1), rtol=1e-4)
    conf = rng.uniform(0.5, 1, len(X))

    def evidence(rows):
        dist, probs = input_evidence(block, rows, space)
        return dist, probs.max(axis=1)

    d_val, lr_val = evidence(val)
    state = fit_input_novelty(space, d_val, conf[val], lr_val)
    u = uncertainty(None, conf[query], state, *evidence(query))
    # cells drawn like the held-out reference cells: uncertainty is roughly uniform
    assert np.quantile(u, 0.9) == pytest.approx(0.9, abs=0.05)
    assert np.mean(u > 0.95) == pytest.approx(0.05, abs=0.03)
    X[query[:50]] += 8.0  # cells far from every reference cell
    far = uncertainty(None, conf[query[:50]], state, *evidence(query[:50]))
    assert far.min() > 0.99
    # the two distances, each standardised on the held-out cells, weigh half each
    assert state["dist_loc"].shape == state["dist_scale"].shape == (2,)
    np.testing.assert_array_equal(state["dist_weights"], [0.5, 0.5])
    # statistics saved before the Mahalanobis distance: the neighbour distance alone, at full weight
    old = {k: v for k, v in space.items() if not k.startswith("maha_")}
    d_old, p_old = input_evidence(block, val, old)
    np.testing.assert_array_equal(d_old, d_val[:, 0])
    old_state = fit_input_novelty(old, d_old, conf[val], p_old.max(axis=1))
    assert "dist_weights" not in old_state and np.ndim(old_state["dist_loc"]) == 0
    raw = (d_old - old_state["dist_loc"]) / old_state["dist_scale"]
    assert np.quantile(raw, 0.9) == pytest.approx(1.0) and np.median(raw) == pytest.approx(0.0, abs=1e-12)


def test_mahalanobis_distance_of_classes_without_spread():
    """Classes of one kept cell each have no residuals: the distance stays finite, 0 at each class's own cell."""
    from autogenome_sc.train._confidence import _class_gaussians, _mahalanobis

    points = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32) * 100
    stats = _class_gaussians(points, np.arange(4))
    d = _mahalanobis(np.vstack([points, points.mean(axis=0, keepdims=True)]), stats)
    assert np.isfinite(d).all() and d[4] > 0 and (d[:4] <= 1e-9 * d[4]).all()  # 0 up to rounding


def test_density_ratio_matches_sizes_and_finds_a_gathered_unseen_type(monkeypatch):
    """The query term: about 0 for a query drawn like the reference, whatever its size; high for a new tight group."""
    from autogenome_sc.train._confidence import (
        QUERY_MIN_CELLS,
        fit_input_novelty,
        fit_input_space,
        input_evidence,
        project,
    )
    from autogenome_sc.train._confidence import matched_neighbours as matched

    assert matched(49, 5000) == (10, 1020) and matched(19_999, 5000) == (40, 10) and matched(4, 3) == (4, 3)
    rng = np.random.default_rng(3)
    n_genes = 30
    centres = rng.normal(0, 4, (3, n_genes))
    y_all = rng.choice(3, 9000)
    X = (centres[y_all] + rng.normal(size=(9000, n_genes))).astype(np.float32)

    def block(rows):
        return X[rows]

    train, val, query = np.arange(3000), np.arange(3000, 3400), np.arange(3400, 9000)
    space = fit_input_space(block, train, y_all[train])
    conf = rng.uniform(0.5, 1, len(X))
    d_val, p_val = input_evidence(block, val, space)
    state = fit_input_novelty(space, d_val, conf[val], p_val.max(axis=1), project(block, val, space))
    assert state["held_out_points"].shape == (400, 30) and state["held_out_raw"].shape == (400,)
    assert len(input_evidence(block, query, space, query=True)) == 2  # statistics without held-out cells
    assert len(input_evidence(block, query[: QUERY_MIN_CELLS - 1], state, query=True)) == 2  # too few cells
    assert len(input_evidence(block, query[:300], state)) == 2  # not asked for
    dist, probs, density, held = input_evidence(block, query[:300], state, query=True)
    # brute force: log(mean distance to the nearest reference cells, k_ref of them by weight, each weighing its
    # class's share of the query over its share of the kept cells / to the k_query nearest other cells of the
    # query, whose pool holds the kept held-out cells too)
    coords = X[query[:300]] @ space["projection"] - space["offset"]
    pool = np.concatenate([coords, state["held_out_points"]])
    k_query, k_ref = matched(len(pool) - 1, len(space["points"]))
    query_share = softmax(pool @ space["lr_coef"] + space["lr_intercept"], axis=1).mean(axis=0)
    ref_share = np.bincount(space["point_class"]) / len(space["points"])
    w = (query_share / ref_share)[space["point_class"]]
    w *= len(w) / w.sum()
    D = np.linalg.norm(pool[:, None] - space["points"][None], axis=2)
    order = np.argsort(D, axis=1)
    d_sorted, w_sorted = np.take_along_axis(D, order, axis=1), w[order]
    counted = np.clip(k_ref - (np.cumsum(w_sorted, axis=1) - w_sorted), 0, w_sorted)
    to_ref = (d_sorted * counted).sum(axis=1) / counted.sum(axis=1)
    to_query = np.sort(np.linalg.norm(pool[:, None] - pool[None], axis=2), axis=1)[:, 1 : k_query + 1].mean(axis=1)
    np.testing.assert_allclose(np.r_[density, held], np.log(to_ref / to_query), rtol=1e-3, atol=1e-4)
    # drawn like the reference: about 0 at any size
    for n in (100, 1000, 5600):
        assert abs(np.median(input_evidence(block, query[:n], state, query=True)[2])) < 0.1
    # a larger query than the pool compares a fixed random subset: the same result twice, still about 0
    monkeypatch.setattr("autogenome_sc.train._confidence.QUERY_POOL", 1000)
    sub = input_evidence(block, query[:3000], state, query=True)[2]
    np.testing.assert_array_equal(sub, input_evidence(block, query[:3000], state, query=True)[2])
    assert abs(np.median(sub)) < 0.1
    monkeypatch.undo()
    # a known class that makes up 80% of the query (a third of the reference): not more novel for that alone,
    # and the others not less; against the reference as it is, the ratio would move both
    enriched = np.concatenate([query[y_all[query] == 0][:1000], query[y_all[query] != 0][:250]])
    common = np.arange(1250) < 1000
    recomposed = input_evidence(block, enriched, state, query=True)[2]
    monkeypatch.setattr("autogenome_sc.train._confidence.QUERY_RECOMPOSE_CLIP", 1.0)  # weights of 1
    as_it_is = input_evidence(block, enriched, state, query=True)[2]
    monkeypatch.undo()
    assert abs(np.median(recomposed[common])) < 0.02 and abs(np.median(recomposed[~common])) < 0.03
    assert np.median(as_it_is[common]) > 0.03 and np.median(as_it_is[~common]) < -0.04
    # with the held-out cells read in the same query, the score is their rank: about 5% above 0.95
    d_q, p_q, *density_q = input_evidence(block, query, state, query=True)
    u = uncertainty(None, conf[query], state, d_q, p_q.max(axis=1), tuple(density_q))
    assert np.mean(u > 0.95) == pytest.approx(0.05, abs=0.025)
    # 200 cells of a new type beside a known one, gathered together: the ratio finds them
    direction = rng.normal(size=n_genes)
    X[query[:200]] = centres[0] + np.sqrt(n_genes) * direction / np.linalg.norm(direction)
    X[query[:200]] += 0.5 * rng.normal(size=(200, n_genes))
    d_q, p_q, *density_q = input_evidence(block, query, state, query=True)
    new = np.arange(len(query)) < 200
    assert roc_auc_score(new, density_q[0]) > 0.99
    aware = uncertainty(None, conf[query], state, d_q, p_q.max(axis=1), tuple(density_q))
    alone = uncertainty(None, conf[query], state, d_q, p_q.max(axis=1))
    assert roc_auc_score(new, aware) > roc_auc_score(new, alone) + 0.2
    assert np.mean(aware[new] > 0.95) > 0.8 > 0.3 > np.mean(alone[new] > 0.95)
    assert np.mean(aware[~new] > 0.95) < 0.1


def test_predict_query_aware(open_set, tmp_path):
    """``query_aware=True``: the density ratio in ag_uncertainty; recorded; refused with a warning where it cannot be."""
    ref, model, query = open_set
    assert model.query_aware_available
    aware = ag.tl.predict(query, model, use_raw=True, reject="auto", query_aware=True, copy=True)
    alone = ag.tl.predict(query, model, use_raw=True, reject="auto", copy=True)
    assert aware.uns["ag"]["prediction"]["query_aware"] and not alone.uns["ag"]["prediction"]["query_aware"]
    np.testing.assert_array_equal(aware.obs["ag_confidence"], alone.obs["ag_confidence"])
    unseen = (query.obs["bulk_labels"] == UNSEEN).to_numpy()
    held_out = unseen | query.obs_names.isin(ref.obs_names[ref.obs["ag_split"] == "test"])
    u, u0 = aware.obs["ag_uncertainty"].to_numpy(), alone.obs["ag_uncertainty"].to_numpy()
    assert not np.allclose(u, u0)
    assert roc_auc_score(unseen[held_out], u[held_out]) > 0.9
    rejected = (aware.obs["ag_prediction"] == "Unassigned").to_numpy()
    np.testing.assert_array_equal(rejected, u > 0.95)
    assert rejected[unseen].mean() > 0.6 and rejected[held_out & ~unseen].mean() < 0.15
    # the same after saving and loading, and from the model's own predict
    again = ag.read_model(model.save(tmp_path / "m"))
    q2 = ag.tl.predict(query, again, use_raw=True, query_aware=True, copy=True)
    np.testing.assert_allclose(q2.obs["ag_uncertainty"], u, rtol=1e-6)
    np.testing.assert_allclose(again.predict(query, use_raw=True, query_aware=True)["uncertainty"], u, rtol=1e-6)
    # too few cells to read as a whole: a warning, and the reference's score
    small = query[:30].copy()
    with pytest.warns(UserWarning, match="query_aware=True needs at least 50 query cells"):
        ag.tl.predict(small, model, use_raw=True, query_aware=True)
    assert not small.uns["ag"]["prediction"]["query_aware"]
    plain = ag.tl.predict(query[:30], model, use_raw=True, copy=True)
    np.testing.assert_array_equal(small.obs["ag_uncertainty"], plain.obs["ag_uncertainty"])
    # a model saved before the density ratio (no query statistics) loads, and warns the same way
    old = ag.read_model(model.path)
    old.novelty_ = {
        k: v for k, v in old.novelty_.items() if k not in ("query_weight", "held_out_raw", "held_out_points")
    }
    old = ag.read_model(old.save(tmp_path / "old"))
    assert not old.query_aware_available
    with pytest.warns(UserWarning, match="query_aware=True needs"):
        q3 = ag.tl.predict(query, old, use_raw=True, query_aware=True, copy=True)
    np.testing.assert_allclose(q3.obs["ag_uncertainty"], u0, rtol=1e-6)


def test_a_model_saved_with_embedding_novelty_keeps_its_score(open_set, tmp_path):
    """Models saved before the input-space distance hold class centroids of the embedding: their score is unchanged."""
    ref, model, query = open_set
    out, emb, _ = model.outputs(query, use_raw=True)
    p = softmax(out / model.temperature, axis=1)
    rows = np.flatnonzero(query.obs_names.isin(ref.obs_names[ref.obs["ag_split"] == "train"]))
    val = np.flatnonzero(query.obs_names.isin(ref.obs_names[ref.obs["ag_split"] == "val"]))
    y = pd.Categorical(query.obs["bulk_labels"].astype(str)[rows], categories=model.classes_).codes
    old = ag.read_model(model.path)
    old.novelty_ = ag.train.fit_novelty(emb[rows], y, len(model.classes_), emb[val], p[val].max(axis=1))
    again = ag.read_model(old.save(tmp_path / "old"))
    assert again.input_evidence(again.pipeline(query, use_raw=True)[0], query.n_obs) is None
    expected = uncertainty(emb, p.max(axis=1), old.novelty_)
    np.testing.assert_allclose(again.predict(query, use_raw=True)["uncertainty"], expected, rtol=1e-5, atol=1e-6)


def test_uncertainty_is_the_rank_among_validation_cells():
    rng = np.random.default_rng(1)
    state = ag.train.fit_novelty(
        rng.normal(size=(300, 8)), rng.integers(0, 3, 300), 3, rng.normal(size=(200, 8)), rng.uniform(0.5, 1, 200)
    )
    emb, conf = rng.normal(size=(5000, 8)), rng.uniform(0.5, 1, 5000)
    u = uncertainty(emb, conf, state)
    # cells drawn like the validation cells: uncertainty is roughly uniform
    assert np.quantile(u, 0.9) == pytest.approx(0.9, abs=0.05)
    assert np.mean(u > 0.95) == pytest.approx(0.05, abs=0.03)
    far = uncertainty(emb[:50] + 10, conf[:50], state)
    assert far.min() > 0.99


# ---------------------------------------------------------------------------- smoothing, plots, h5ad
def test_smooth_labels_repairs_scattered_errors(open_set):
    _, model, query = open_set
    q = ag.tl.predict(query, model, use_raw=True, copy=True)
    # a 15-NN graph in the model's embedding, where its predictions are locally constant
    knn = kneighbors_graph(q.obsm["X_ag"], 15, include_self=False)
    q.obsp["connectivities"] = ((knn + knn.T) > 0).astype(np.float32).tocsr()
    clean = q.obs["ag_prediction"].copy()
    rng = np.random.default_rng(0)
    flip = rng.random(q.n_obs) < 0.2
    codes = clean.cat.codes.to_numpy().copy()
    codes[flip] = (codes[flip] + rng.integers(1, len(model.classes_), flip.sum())) % len(model.classes_)
    q.obs["ag_prediction"] = q.obs["ag_prediction"].cat.set_categories(clean.cat.categories)
    q.obs["ag_prediction"] = clean.cat.categories[codes]
    q.obs["ag_prediction"] = q.obs["ag_prediction"].astype(clean.dtype)
    ag.tl.smooth_labels(q)
    smoothed = q.obs["ag_prediction_smoothed"]
    assert (smoothed.to_numpy() == clean.to_numpy()).mean() > 0.9
    assert (q.obs["ag_prediction"].to_numpy() == clean.to_numpy()).mean() < 0.85
    # one cell by hand: the label with the largest neighbour weight (plus its own vote)
    i = int(np.flatnonzero(flip)[0])
    row = q.obsp["connectivities"][i]
    votes = {}
    for j, w in zip(row.indices, row.data, strict=True):
        votes[q.obs["ag_prediction"].iloc[j]] = votes.get(q.obs["ag_prediction"].iloc[j], 0) + w
    votes[q.obs["ag_prediction"].iloc[i]] = votes.get(q.obs["ag_prediction"].iloc[i], 0) + 1.0 + 1e-6
    assert smoothed.iloc[i] == max(votes, key=votes.get)


def test_reliability_plot(open_set):
    ref, _, query = open_set
    ax = ag.pl.reliability(ref, show=False)
    assert len(ax.lines) == 3  # diagonal, before, after
    assert "ECE" in ax.get_legend().get_texts()[1].get_text()
    ax = ag.pl.reliability(query, label_key="bulk_labels", show=False)
    assert len(ax.lines) == 2
    matplotlib.pyplot.close("all")


def test_h5ad_round_trip(open_set, tmp_path):
    ref, _, query = open_set
    for name, adata in (("ref", ref), ("query", query)):
        adata.write_h5ad(tmp_path / f"{name}.h5ad")
        back = anndata.read_h5ad(tmp_path / f"{name}.h5ad")
        assert back.obs["ag_prediction"].equals(adata.obs["ag_prediction"])
        np.testing.assert_array_equal(back.obs["ag_uncertainty"], adata.obs["ag_uncertainty"])
    back = anndata.read_h5ad(tmp_path / "ref.h5ad")
    assert back.uns["ag"]["metrics"]["ece_after"] == ref.uns["ag"]["metrics"]["ece_after"]
    ax = ag.pl.reliability(back, split="val", show=False)
    assert ax is not None
    matplotlib.pyplot.close("all")


# ---------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("reject", [0, 1, 1.5, -0.1, "0.9", True])
def test_reject_outside_unit_interval(open_set, reject):
    _, model, query = open_set
    with pytest.raises(ValueError, match="reject must be"):
        ag.tl.predict(query, model, use_raw=True, reject=reject, copy=True)


def test_bad_reject_uncertainty(open_set):
    _, model, query = open_set
    with pytest.raises(ValueError, match="reject_uncertainty must be"):
        ag.tl.predict(query, model, use_raw=True, reject=0.9, reject_uncertainty=0, copy=True)
    with pytest.raises(ValueError, match="needs reject"):
        ag.tl.predict(query, model, use_raw=True, reject_uncertainty=0.9, copy=True)


@pytest.mark.parametrize("flag", ["yes", 1, None])
def test_query_aware_is_true_or_false(open_set, flag):
    _, model, query = open_set
    with pytest.raises(TypeError, match=rf"^query_aware must be True or False, not {type(flag).__name__} "):
        ag.tl.predict(query, model, use_raw=True, query_aware=flag, copy=True)
    with pytest.raises(TypeError, match="query_aware must be True or False"):
        model.predict(query, use_raw=True, query_aware=flag)


def test_smooth_labels_needs_neighbors_and_predictions(open_set):
    _, _, query = open_set
    bare = query.copy()
    del bare.obsp["connectivities"]
    with pytest.raises(KeyError, match=r"sc\.pp\.neighbors"):
        ag.tl.smooth_labels(bare)
    with pytest.raises(KeyError, match=r"sc\.pp\.neighbors\(adata, key_added='nb'\)"):
        ag.tl.smooth_labels(query.copy(), neighbors_key="nb")
    with pytest.raises(KeyError, match=r"ag\.tl\.predict"):
        ag.tl.smooth_labels(query.copy(), key="other")


def test_reliability_bad_input(open_set, pbmc):
    ref, _, query = open_set
    with pytest.raises(KeyError, match=r"ag\.tl\.train"):
        ag.pl.reliability(pbmc, show=False)
    with pytest.raises(ValueError, match="split must be"):
        ag.pl.reliability(ref, split="train", show=False)
    with pytest.raises(KeyError, match="nope"):
        ag.pl.reliability(query, label_key="nope", show=False)


def test_smooth_labels_votes_within_the_users_clusters(open_set):
    _, model, query = open_set
    q = ag.tl.predict(query, model, use_raw=True, copy=True)
    q.obs["cluster"] = q.obs["bulk_labels"].astype(str)  # clusters as a user would have them
    q.obs.loc[q.obs_names[:5], "cluster"] = np.nan  # a few cells in no cluster
    q.obs["cluster"] = q.obs["cluster"].astype("category")
    pred = q.obs["ag_prediction"].astype(str).to_numpy()
    ag.tl.smooth_labels(q, groupby="cluster")
    smoothed = q.obs["ag_prediction_smoothed"].astype(str).to_numpy()
    frac = q.obs["ag_vote_fraction"].to_numpy()
    cluster = q.obs["cluster"].astype(str).to_numpy()
    for c in q.obs["cluster"].cat.categories:  # every cell of a cluster takes its most frequent prediction
        cells = cluster == c
        counts = pd.Series(pred[cells]).value_counts()
        if len(counts) == 1 or counts.iloc[0] > counts.iloc[1]:  # (a tie goes to the label listed first)
            assert set(smoothed[cells]) == {counts.index[0]}
        np.testing.assert_allclose(frac[cells], counts.iloc[0] / cells.sum(), rtol=1e-6)
    np.testing.assert_array_equal(smoothed[:5], pred[:5])  # no cluster: the cell keeps its label
    np.testing.assert_array_equal(frac[:5], 1.0)
    assert (smoothed == q.obs["bulk_labels"].astype(str).to_numpy()).mean() >= (
        pred == q.obs["bulk_labels"].astype(str).to_numpy()
    ).mean()  # voting within true groups can only repair
    with pytest.raises(KeyError, match="leiden"):
        ag.tl.smooth_labels(q, groupby="leiden")
    q.obs["score"] = np.linspace(0, 1, q.n_obs)
    with pytest.raises(ValueError, match="numbers, not groups"):
        ag.tl.smooth_labels(q, groupby="score")
    with pytest.raises(ValueError, match="not both"):
        ag.tl.smooth_labels(q, groupby="cluster", neighbors_key="neighbors")
    q.obs["cluster_id"] = q.obs["cluster"].cat.codes.astype(np.int64)  # integer ids are groups too
    a, b = ag.tl.smooth_labels(q, groupby="cluster_id", copy=True), q
    np.testing.assert_array_equal(a.obs["ag_vote_fraction"].to_numpy()[5:], b.obs["ag_vote_fraction"].to_numpy()[5:])
