"""Choosing the winner: the linear mode, cross-validated re-scoring, ensembles, the final fit, the budget."""

import json
import shutil
from types import SimpleNamespace

import anndata
import jax
import numpy as np
import pandas as pd
import pytest
from scipy.special import softmax

import autogenome_sc as ag
from autogenome_sc import config
from autogenome_sc.data import prepare
from autogenome_sc.search import open_study
from autogenome_sc.search._choose import greedy_weights
from autogenome_sc.search._cv import candidates, seeds_of
from autogenome_sc.search._final import _bag
from autogenome_sc.search._select import select

CV = {
    "trainer": {"max_epochs": 4, "patience": 4},
    "search": {
        "modes": ["linear", "resnet"],
        "pruner": "none",
        "n_startup_trials": 2,
        "cv_folds": 3,
        "cv_configs": 2,
        "spaces": {"resnet_widths": [16], "resnet_blocks": [1], "n_genes": [None, 200], "batch_size": [64]},
    },
}


def _cfg(**search):
    cfg = json.loads(json.dumps(CV))
    cfg["search"].update(search)
    return cfg


def _opened(adata, tmp_path, name, n_trials=3, **search):
    """A study of the CV config (``search`` settings changed) on ``adata`` (pbmc68k_reduced), its ``n_trials`` trials run."""
    opened = open_study(
        adata, "bulk_labels", cfg=config.validate(_cfg(**search)), modes=None, n_trials=n_trials, timeout=None,
        layer=None, use_raw=True, split_key=None, storage=None, study_name=name, run_dir=tmp_path, rng=0, keep=4,
    )  # fmt: skip
    opened.searcher.run(n_trials, None)
    return opened


def _search(adata, tmp_path, name, **kw):
    ag.tl.search(adata, "bulk_labels", n_trials=3, use_raw=True, run_dir=tmp_path, study_name=name, **kw)
    return adata.uns["ag"]


def test_linear_mode_learns_and_its_explanations_are_exact(pbmc):
    ag.tl.train(pbmc, "bulk_labels", model="linear", use_raw=True, config={"trainer": {"l2": 1e-3}}, rng=0)
    uns = pbmc.uns["ag"]
    assert uns["metrics"]["accuracy"] > 0.7
    assert pbmc.obsm["X_ag"].shape == (pbmc.n_obs, 10)  # the embedding of a linear model is its logits
    model = ag.read_model(uns["model_path"])
    assert model.architecture["model"] == "linear"
    cells = np.arange(30)
    train = np.flatnonzero(pbmc.obs["ag_split"].to_numpy()[cells] == "train")
    n = len(train)  # every background cell drawn exactly once per explained cell: the mean is exact
    exp = ag.tl.explain(pbmc[cells].copy(), output="logit", n_background=n, n_samples=n, return_explanation=True)
    # expected gradients of a linear model are exact SHAP values: w_gc * (x_g - mean of the background x'_g)
    kernel = np.asarray(model.variables["params"]["head"]["kernel"])
    pipe, _, _ = model.pipeline(pbmc[cells].copy(), use_raw=True)
    bg = pipe.block(train)
    x = pipe.block(np.arange(len(cells)))
    want = (x - bg.mean(axis=0))[:, :, None] * kernel[None]
    np.testing.assert_allclose(exp.values, want, rtol=1e-3, atol=1e-5)


def test_cv_selection_is_deterministic_and_its_model_round_trips(pbmc, tmp_path):
    a, b = pbmc.copy(), pbmc.copy()
    ua = _search(a, tmp_path, "a", config=_cfg(), rng=0)
    ub = _search(b, tmp_path, "b", config=_cfg(), rng=0)
    sel = ua["selection"]
    assert sel["method"] == "cv" and sel["n_folds"] == 3 and sel["final"] == "bag"
    assert sel["n_cells"] == int((a.obs["ag_split"] != "test").sum())
    table = sel["table"]
    assert "linear" in set(table["mode"])  # the best linear configuration is always re-scored
    assert table["weight"].sum() == pytest.approx(1.0)
    pd.testing.assert_frame_equal(table.drop(columns="seconds"), ub["selection"]["table"].drop(columns="seconds"))
    np.testing.assert_array_equal(a.obs["ag_prediction"], b.obs["ag_prediction"])
    np.testing.assert_array_equal(a.obs["ag_confidence"], b.obs["ag_confidence"])
    # the winner is the best cross-validated configuration under search.select_by (default: the mean of
    # accuracy and macro-F1, ties broken by the loss), or the ensemble that beats it
    chosen = table[table["weight"] > 0]
    if sel["chosen"] == "single":
        score = ((table["accuracy"] + table["macro_f1"]) / 2).round(9)
        best = table[score == score.max()]
        assert len(chosen) == 1 and chosen["trial"].iloc[0] == best.loc[best["loss"].idxmin(), "trial"]
    assert list(ua["best"]["ensemble"]) == list(chosen["trial"])
    board = ua["leaderboard"]
    assert np.isfinite(board.loc[board["trial"].isin(table["trial"]), "cv_loss"]).all()
    # the scores over the 3 folds: means with their standard errors, float64 in both tables
    for col in ("fold_accuracy", "fold_accuracy_se", "fold_macro_f1", "fold_macro_f1_se", "temperature"):
        assert table[col].dtype == np.float64 and board["cv_" + col].dtype == np.float64
        assert np.isfinite(table[col]).all()
        np.testing.assert_array_equal(board.set_index("trial").loc[table["trial"], "cv_" + col], table[col])
    assert (table["fold_accuracy_se"] > 0).any() and (table["fold_accuracy_se"] < 0.1).all()
    assert np.allclose(table["fold_accuracy"], table["accuracy"], atol=0.01)  # stratified folds: nearly the pooled
    # the bag: one member per fold of each chosen configuration, saved and loaded as one model
    model = ag.read_model(ua["model_path"])
    assert model.architecture["model"] == "ensemble" and len(model.architecture["members"]) == 3 * len(chosen)
    pred = model.predict(pbmc, use_raw=True)
    np.testing.assert_array_equal(pred["prediction"].astype(str), a.obs["ag_prediction"].astype(str))
    np.testing.assert_allclose(pred["confidence"], a.obs["ag_confidence"], rtol=1e-5)
    # the novelty score of an ensemble is the input space's, like any model's, and it survives saving
    assert "points" in model.novelty_
    np.testing.assert_allclose(pred["uncertainty"], a.obs["ag_uncertainty"], rtol=1e-5, atol=1e-6)
    # calibrated on the out-of-fold outputs, explained like any model, written h5ad-safe
    assert model.calibration["n_val"] == sel["n_cells"] and 0.05 < model.temperature < 20
    ag.tl.explain(a, max_cells=20, n_samples=20, n_background=20)
    assert a.uns["ag"]["importance"]["values"].shape == (pbmc.raw.n_vars, 11)  # 10 classes and overall
    a.write_h5ad(tmp_path / "a.h5ad")
    back = anndata.read_h5ad(tmp_path / "a.h5ad").uns["ag"]
    pd.testing.assert_frame_equal(back["selection"]["table"], table, check_dtype=False)
    assert back["leaderboard"]["cv_fold_macro_f1_se"].dtype == np.float64


def test_out_of_fold_outputs_come_from_models_that_never_saw_the_cell(pbmc, tmp_path):
    opened = _opened(pbmc, tmp_path, "oof")
    s = opened.searcher
    sel = select(s, seed=0)
    assert sel.method == "cv" and len(sel.scored) >= 2
    rows = sel.rows
    np.testing.assert_array_equal(rows, np.sort(np.flatnonzero(opened.data.split != "test")))
    for scored in sel.scored:
        seen = np.zeros(len(pbmc), int)
        # the fold models at the chosen epoch (what search.final="bag" keeps): the models whose outputs were scored
        for fit in _bag(s, scored):
            held, train = fit.data.idx["val"], fit.data.idx["train"]
            assert not np.intersect1d(held, train).size and not np.intersect1d(held, opened.data.idx["test"]).size
            seen[held] += 1
            pos = np.searchsorted(rows, held)
            net_out = _outputs(fit, held)
            np.testing.assert_allclose(scored.held_out[pos], net_out, rtol=1e-4, atol=1e-5)
        assert (seen[rows] == 1).all() and (seen[opened.data.idx["test"]] == 0).all()


def test_cv_seeds_average_several_networks_per_fold_and_the_bag_keeps_them(pbmc, tmp_path):
    opened = _opened(pbmc, tmp_path, "seeds", n_trials=2, cv_seeds=2, modes=["resnet"])
    s = opened.searcher
    sel = select(s, seed=0)
    rows = sel.rows
    net = sel.scored[0]
    assert net.mode == "resnet"
    # the linear mode, the solved families and the trees train once per fold
    assert [seeds_of(t, s.cfg.search) for t in s.study.trials] == [2, 2]
    for mode in ("linear", "svm", "logistic", "trees"):
        assert seeds_of(SimpleNamespace(params={"mode": mode}), s.cfg.search) == 1
    fits = _bag(s, net)
    assert len(fits) == 6 and len({f.seed_offset for f in fits}) == 6  # two initialisations per fold
    mix = np.zeros((len(rows), len(pbmc.obs["bulk_labels"].cat.categories)))
    seen = np.zeros(len(rows), int)
    outs = {}
    for fit in fits:
        held = fit.data.idx["val"]
        assert not np.intersect1d(held, fit.data.idx["train"]).size
        pos = np.searchsorted(rows, held)
        outs.setdefault(tuple(held[:5]), []).append(_outputs(fit, held))
        mix[pos] += softmax(np.asarray(_outputs(fit, held), np.float64), axis=1)
        seen[pos] += 1
    assert (seen == 2).all()
    # the two networks of a fold differ, and the held-out outputs scored are their averaged probabilities
    assert all(not np.allclose(a, b) for a, b in outs.values())
    np.testing.assert_allclose(softmax(net.held_out.astype(np.float64), axis=1), mix / 2, rtol=1e-4, atol=1e-5)
    # the final model is the bag of all six, saved and loaded as one model
    a = pbmc.copy()
    cfg = _cfg(cv_seeds=2, ensemble=1, modes=["resnet"])
    ag.tl.search(a, "bulk_labels", n_trials=2, use_raw=True, run_dir=tmp_path, study_name="bag", config=cfg, rng=0)
    model = ag.read_model(a.uns["ag"]["model_path"])
    assert model.architecture["model"] == "ensemble" and len(model.architecture["members"]) == 6
    np.testing.assert_array_equal(model.predict(pbmc, use_raw=True)["prediction"], a.obs["ag_prediction"])


def _outputs(fit, idx):
    from autogenome_sc.search._driver import outputs_of

    return outputs_of(fit, idx)


def test_ensemble_averages_member_probabilities_each_with_its_own_scaling(pbmc, tmp_path):
    uns = _search(pbmc, tmp_path, "e", config=_cfg(), rng=0)
    model = ag.read_model(uns["model_path"])
    members = model.architecture["members"]
    assert all("input" in m for m in members)
    # members fitted on other folds have other scalings: their input constants differ
    shifts = [np.asarray(model.variables["inputs"][f"input_{i}"]["shift"]) for i in range(len(members))]
    assert not np.allclose(shifts[0], shifts[1])
    got = model.predict_proba(pbmc[:100].copy(), use_raw=True).to_numpy()
    want = softmax(np.log(_member_mix(model, pbmc, 100)) / model.temperature, axis=1)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


def _member_mix(model, adata, n):
    """The weighted average of an ensemble's member probabilities, each member run on its own (first ``n`` cells)."""
    from autogenome_sc.nn import build_network, member_input
    from autogenome_sc.nn._fc import InputTransform

    members = model.architecture["members"]
    weights = np.asarray(model.architecture["weights"]) / np.sum(model.architecture["weights"])
    temperatures = model.architecture.get("temperatures", [1.0] * len(members))
    pipe, _, _ = model.pipeline(adata, use_raw=True)
    x = pipe.block(np.arange(n))
    mix = 0
    for i, (arch, w, t) in enumerate(zip(members, weights, temperatures, strict=True)):
        spec = member_input(arch["input"])
        xi = InputTransform(*spec).apply({"inputs": model.variables["inputs"][f"input_{i}"]}, x)
        net = build_network(arch, len(model.classes_))
        v = {
            c: model.variables[c][f"members_{i}"]
            for c in ("params", "batch_stats")
            if f"members_{i}" in model.variables.get(c, {})
        }
        with jax.default_matmul_precision("highest"):  # as the model predicts (exact, also on a GPU's TF32)
            out, _ = net.apply(v, xi, train=False)
        mix = mix + w * softmax(np.asarray(out, np.float64) / t, axis=1)
    return mix


def test_an_ensemble_with_temperatures_saves_loads_and_predicts_the_same(pbmc, tmp_path, monkeypatch):
    import autogenome_sc.search._select as select_module

    def first_two(scored, y, task, max_members, by, **kw):  # an ensemble of two configurations, whatever they score
        w = np.zeros(len(scored))
        w[:2] = [0.6, 0.4]
        mix = sum(wi * softmax(s.tempered, axis=1) for wi, s in zip(w, scored, strict=True) if wi > 0)
        return w, "ensemble", np.log(mix).astype(np.float32)

    monkeypatch.setattr(select_module, "choose", first_two)
    a = pbmc.copy()
    uns = _search(a, tmp_path, "t", config=_cfg(final="refit"), rng=0)  # refit: one member per configuration
    table = uns["selection"]["table"]
    model = ag.read_model(uns["model_path"])
    temperatures = model.architecture["temperatures"]
    np.testing.assert_allclose(temperatures, table["temperature"].to_numpy()[:2])
    assert len(model.architecture["members"]) == 2 and not np.allclose(temperatures, 1.0)
    assert np.isfinite(uns["leaderboard"]["cv_temperature"]).sum() == len(table)
    # what the search predicted is what the loaded model predicts, and each member is divided by its temperature
    pred = model.predict(pbmc, use_raw=True)
    np.testing.assert_array_equal(pred["prediction"].astype(str), a.obs["ag_prediction"].astype(str))
    np.testing.assert_allclose(pred["confidence"], a.obs["ag_confidence"], rtol=1e-6)
    got = model.predict_proba(pbmc[:100].copy(), use_raw=True).to_numpy()
    want = softmax(np.log(_member_mix(model, pbmc, 100)) / model.temperature, axis=1)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    again = ag.read_model(model.save(tmp_path / "again"))
    assert again.id_ == model.id_  # the temperatures are in the checksum, and the same again
    np.testing.assert_array_equal(again.predict_proba(pbmc, use_raw=True), model.predict_proba(pbmc, use_raw=True))
    # a model.json whose temperatures were changed is refused before anything is built
    for bad, match in (([1.0], "one number per member"), ([-1.0, 1.0], "positive finite numbers")):
        path = tmp_path / f"bad{len(bad)}"
        shutil.copytree(model.path, path)
        meta = json.loads((path / "model.json").read_text())
        meta["architecture"]["temperatures"] = bad
        (path / "model.json").write_text(json.dumps(meta))
        with pytest.raises(ValueError, match=match):
            ag.read_model(path)


def test_refit_trains_once_more_on_train_and_validation(pbmc, tmp_path):
    uns = _search(pbmc, tmp_path, "r", config=_cfg(final="refit", ensemble=1), rng=0)
    sel = uns["selection"]
    assert sel["final"] == "refit" and sel["chosen"] == "single"
    model = ag.read_model(uns["model_path"])
    assert model.architecture["model"] in ("linear", "resnet")  # one network, not a bag
    epochs = int(sel["table"].loc[sel["table"]["weight"] > 0, "epochs"].iloc[0])
    hist = uns["history"]
    assert len(hist["epoch"]) == epochs and np.isnan(hist["val_loss"]).all()  # no validation cells left


def test_validation_route_for_large_data_and_no_cv(pbmc, tmp_path):
    uns = _search(pbmc, tmp_path, "v", config=_cfg(cv_max_cells=100), rng=0)
    assert (
        uns["selection"]["method"] == "validation"
        and uns["selection"]["n_cells"] == (pbmc.obs["ag_split"] == "val").sum()
    )
    assert "heldout_loss" in uns["leaderboard"]


def test_candidates_add_the_best_linear_configuration(pbmc, tmp_path):
    cfg = config.validate(_cfg(cv_configs=1))
    opened = open_study(
        pbmc, "bulk_labels", cfg=cfg, modes=None, n_trials=4, timeout=None, layer=None, use_raw=True,
        split_key=None, storage=None, study_name="c", run_dir=tmp_path, rng=0, keep=4,
    )  # fmt: skip
    opened.searcher.run(4, None)
    top = opened.searcher.top_trials()
    chosen = candidates(opened.searcher, 1)
    assert chosen[0].number == top[0].number
    if top[0].params["mode"] != "linear":
        assert len(chosen) == 2 and chosen[1].params["mode"] == "linear"


def test_candidates_add_the_best_linear_model_on_all_genes_and_on_selected_genes(tmp_path):
    """On wide data both linear floors are re-scored, however the small validation split ranks them."""
    adata = ag.datasets.synthetic(160, 2400, n_types=3, rng=0)
    cfg = config.validate({"search": {"cv_configs": 1}, "trainer": {"max_epochs": 3, "patience": 3}})
    opened = open_study(
        adata, "cell_type", cfg=cfg, modes=["linear", "mlp"], n_trials=6, timeout=None, layer=None,
        use_raw=False, split_key=None, storage=None, study_name="floors", run_dir=tmp_path, rng=0, keep=6,
    )  # fmt: skip
    opened.searcher.run(6, None)
    top = opened.searcher.top_trials()
    chosen = candidates(opened.searcher, 1)
    linear = [t for t in chosen if t.params["mode"] == "linear"]
    assert {bool(t.params.get("n_genes")) for t in linear} == {False, True}  # the portfolio ran both kinds
    assert chosen[0].number == top[0].number and len(linear) == 2
    assert len(chosen) == len({t.number for t in chosen}) <= 3


def test_the_solved_families_are_floors_and_cross_validated_cheapest_first(tmp_path):
    """The best SVM and logistic trials are always re-scored, and the floors go first, the solved ones first.

    On HSMM a 60 s search ran out of time in the linear mode's cross-validation before the SVM's
    (docs/benchmarks.md): a floor that costs a second must not wait behind one that costs twenty.
    The order goes by mode, not by measured time, so the same search re-scores in the same order.
    """
    from autogenome_sc.search._cv import cheap_first

    adata = ag.datasets.synthetic(160, 2400, n_types=3, rng=0)
    cfg = config.validate({"search": {"cv_configs": 1}, "trainer": {"max_epochs": 3, "patience": 3}})
    opened = open_study(
        adata, "cell_type", cfg=cfg, modes=["linear", "svm", "logistic", "mlp"], n_trials=8, timeout=None,
        layer=None, use_raw=False, split_key=None, storage=None, study_name="solved", run_dir=tmp_path, rng=0,
        keep=8,
    )  # fmt: skip
    opened.searcher.run(8, None)
    done = opened.searcher.top_trials()
    chosen = candidates(opened.searcher, 1)
    for mode in ("svm", "logistic"):
        best = next(t for t in done if t.params["mode"] == mode)  # top_trials ranks by the validation metric
        assert best in chosen
    ordered = [t.params["mode"] for t in cheap_first(chosen)]
    solved = [m for m in ordered if m in ("svm", "logistic")]
    assert ordered == solved + [m for m in ordered if m == "linear"] + [m for m in ordered if m == "mlp"]
    linear = [t for t in chosen if t.params["mode"] == "linear"]
    assert [t for t in cheap_first(chosen) if t.params["mode"] == "linear"] == linear  # each group keeps its ranks


def _one_trees_trial(tmp_path, spaces: dict):
    """A study of one trees trial (``spaces`` for its search spaces) on 160 synthetic cells of 3 types: the study, the trial."""
    adata = ag.datasets.synthetic(160, 300, n_types=3, rng=0)
    cfg = config.validate({"search": {"modes": ["trees"], "spaces": spaces}})
    opened = open_study(
        adata, "cell_type", cfg=cfg, modes=None, n_trials=1, timeout=None, layer=None, use_raw=False,
        split_key=None, storage=None, study_name="trees", run_dir=tmp_path, rng=0, keep=1,
    )  # fmt: skip
    opened.searcher.run(1, None)
    (trial,) = opened.searcher.top_trials(1)
    return opened, trial


def test_a_fold_that_runs_longer_than_its_trial_is_cut_to_the_trials_epochs(tmp_path, monkeypatch):
    """A mode with its own loop (the trees) can boost more stages in a fold than its trial did.

    A search stopped early by search.stagnation left time to cross-validate a trees trial of 50
    stages whose fold ran 60, and the out-of-fold curves could not take them (a crash, found by
    benchmarks/accuracy.py). The trial's stages bound the choice, as ``stop_after`` bounds a network's.
    """
    from autogenome_sc.search._budget import Budget
    from autogenome_sc.search._cv import cross_validate
    from autogenome_sc.search._driver import Searcher
    from autogenome_sc.search._record import TrialRecord

    opened, trial = _one_trees_trial(tmp_path, {"trees_stages": 6})
    n_epochs = int(TrialRecord.from_trial(trial).epochs)
    train = Searcher.train

    def boosts_longer(self, *args, **kw):
        fitted = train(self, *args, **kw)
        out = fitted.result.val_outputs
        fitted.result.val_outputs = np.concatenate([out, np.repeat(out[-1:], 10, axis=0)])  # 10 stages more
        return fitted

    monkeypatch.setattr(Searcher, "train", boosts_longer)
    notes: list[str] = []
    scored, rows = cross_validate(opened.searcher, [trial], 2, 0, Budget(None), notes)
    assert len(scored) == 1 and not notes
    assert scored[0].held_out.shape == (len(rows), 3) and scored[0].epochs[0] < n_epochs


def test_a_fold_of_trees_boosts_after_the_trials_time_is_over(tmp_path, monkeypatch):
    """Cross-validation runs after the trials' time: the trees of a fold boost until the selection's deadline.

    They were given the trials' own deadline, which has passed by then: every fold stopped after its
    first ten stages and the trees were scored, and refitted, on those.
    """
    from autogenome_sc.search._budget import Budget
    from autogenome_sc.search._cv import cross_validate
    from autogenome_sc.search._driver import Searcher
    from autogenome_sc.train._trees import STEP

    opened, trial = _one_trees_trial(tmp_path, {"trees_stages": 40, "trees_learning_rate": [0.05]})
    stages: list[int] = []
    train = Searcher.train

    def counted(self, *args, **kw):
        fitted = train(self, *args, **kw)
        stages.append(len(fitted.result.history["epoch"]))
        return fitted

    monkeypatch.setattr(Searcher, "train", counted)
    budget = Budget(600.0)
    budget.start_trials()
    budget.trials_end = budget.clock() - 1.0  # the trials' time is over, as when the selection starts
    opened.searcher.budget = budget  # one budget for the trials and the selection, as in a search
    notes: list[str] = []
    scored, _ = cross_validate(opened.searcher, [trial], 2, 0, budget, notes)
    assert len(scored) == 1 and not notes
    assert len(stages) == 2 and min(stages) > STEP


def test_greedy_weights_keep_only_members_that_help():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    good = np.full((300, 3), 0.1)
    good[np.arange(300), y] = 0.8
    bad = np.full((300, 3), 1 / 3)
    w = greedy_weights([bad, good, bad], lambda p: -np.log(p[np.arange(300), y]).mean(), max_members=3)
    assert w.tolist() == [0.0, 1.0, 0.0]


def test_search_stays_within_its_timeout(pbmc, tmp_path, monkeypatch):
    import time

    from autogenome_sc.search._driver import Searcher

    # behaviour, not speed (benchmarks/ time searches): the clock jumps past the 20 s timeout once
    # the first trial has trained, however fast or busy the machine is. That trial finishes (the
    # budget never stops the first one); no other starts and none is cross-validated.
    real, late = time.perf_counter, []
    train = Searcher.train

    def first_trial_takes_an_hour(self, *args, **kw):
        fitted = train(self, *args, **kw)
        late.append(3600.0)
        return fitted

    monkeypatch.setattr(time, "perf_counter", lambda: real() + sum(late[:1]))
    monkeypatch.setattr(Searcher, "train", first_trial_takes_an_hour)
    ag.tl.search(pbmc, "bulk_labels", timeout=20, use_raw=True, run_dir=tmp_path, rng=0)
    uns = pbmc.uns["ag"]
    started = uns["leaderboard"].query("state != 'waiting'")  # the portfolio's other trials stay queued
    assert len(started) == 1 and started["state"].iloc[0] == "complete"
    sel = uns["selection"]
    assert sel["method"] == "validation" and sel["search_seconds"] > 3600
    assert any("no configuration finished its cross-validation in time" in n for n in sel["notes"]), sel["notes"]
    assert np.isfinite(uns["metrics"]["accuracy"])  # then the final fit, evaluation and saving


def test_gene_selection_and_scaling_use_training_cells_only(pbmc):
    cfg = config.validate({})
    data, _ = prepare(
        pbmc, "bulk_labels", layer=None, use_raw=True, split_key=None, data_cfg=cfg.data, loss="auto",
        rng=np.random.default_rng(0),
    )  # fmt: skip
    other = pbmc.copy()
    held = np.flatnonzero(data.split != "train")
    raw = other.raw.to_adata()
    raw.X = raw.X.toarray()
    raw.X[held] = np.random.default_rng(1).random((len(held), raw.n_vars)) * 50
    other.raw = raw
    data2, _ = prepare(
        other, "bulk_labels", layer=None, use_raw=True, split_key=None, data_cfg=cfg.data, loss="auto",
        rng=np.random.default_rng(0),
    )  # fmt: skip
    for scaling, n in (("zscore", 100), ("minmax", None)):
        v1, v2 = data.with_inputs(scaling, n), data2.with_inputs(scaling, n)
        np.testing.assert_array_equal(v1.pipeline.var_names, v2.pipeline.var_names)
        np.testing.assert_allclose(v1.pipeline.scaler.shift, v2.pipeline.scaler.shift, rtol=1e-5)
        np.testing.assert_allclose(v1.pipeline.scaler.scale, v2.pipeline.scaler.scale, rtol=1e-5)
    assert len(data.with_inputs("zscore", 100).pipeline.var_names) == 100
    assert data.with_inputs("minmax", 10_000) is data.with_inputs("minmax", None)  # more than there are: all genes


def test_the_final_choice_follows_the_loss_unless_another_is_clearly_more_accurate():
    from autogenome_sc.search._choose import Scored, choose

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 200)
    # "sharp" is right on 95% of the cells but very sure when wrong (a high log-loss);
    # "soft" is right on 75% and never sure (a lower log-loss)
    sharp = np.full((200, 3), -10.0)
    right = rng.random(200) < 0.95
    sharp[np.arange(200), np.where(right, y, (y + 1) % 3)] = 10.0
    soft = np.zeros((200, 3))
    right = rng.random(200) < 0.75
    soft[np.arange(200), np.where(right, y, (y + 1) % 3)] = 1.0
    scored = [Scored(0, "linear", [], soft, [3], 0.0), Scored(1, "resnet", [], sharp, [3], 0.0)]
    for s in scored:
        s.score_on(y, "classification", 3, temper=False)  # the rules, on the outputs' own scales
    assert scored[1].accuracy > scored[0].accuracy and scored[1].loss > scored[0].loss
    w, chosen, _ = choose(scored, y, "classification", 1, "accuracy_f1")
    assert (w.tolist(), chosen) == ([0.0, 1.0], "single")
    w, _, _ = choose(scored, y, "classification", 1, "loss")
    assert w.tolist() == [1.0, 0.0]
    w, _, _ = choose(scored, y, "classification", 1, "loss_or_accuracy")
    assert w.tolist() == [0.0, 1.0]  # 20 points more accurate on 200 cells: clearly
    # two cells more: not clearly, so the lower log-loss wins
    close = soft.copy()
    wrong = np.flatnonzero(close.argmax(axis=1) != y)[:2]
    close[wrong, y[wrong]] = 2.0
    near = Scored(3, "mlp", [], close * 5.0, [3], 0.0)  # sharper: a higher log-loss
    near.score_on(y, "classification", 3, temper=False)
    assert near.accuracy == pytest.approx(scored[0].accuracy + 0.01) and near.loss > scored[0].loss
    w, _, _ = choose([scored[0], near], y, "classification", 1, "loss_or_accuracy")
    assert w.tolist() == [1.0, 0.0]
    w, _, _ = choose([scored[0], near], y, "classification", 1, "accuracy_f1")
    assert w.tolist() == [0.0, 1.0]
    # equal accuracy and F1 (the same predictions): the lower log-loss wins
    twin = Scored(2, "mlp", [], sharp * 0.3, [3], 0.0)
    twin.score_on(y, "classification", 3, temper=False)
    w, _, _ = choose([scored[1], twin], y, "classification", 1, "accuracy_f1")
    assert w.tolist() == [0.0, 1.0]


def test_balanced_class_weights_are_the_weighted_log_loss_and_raise_rare_class_recall(pbmc):
    import jax.numpy as jnp
    from sklearn.metrics import log_loss, recall_score

    from autogenome_sc.train._losses import balanced_weights, cross_entropy, weighted_cross_entropy

    y = pd.Categorical(pbmc.obs["bulk_labels"]).codes.astype(np.int64)
    w = balanced_weights(y, 10)
    assert np.isclose(w[y].sum(), len(y))  # they average to 1 over the cells
    out = np.random.default_rng(0).normal(size=(len(y), 10)).astype(np.float32)
    got = float(weighted_cross_entropy(jnp.asarray(out), jnp.asarray(y), 0.0, jnp.asarray(w)))
    assert got == pytest.approx(log_loss(y, softmax(out, axis=1), sample_weight=w[y], labels=np.arange(10)), rel=1e-5)
    ones = float(weighted_cross_entropy(jnp.asarray(out), jnp.asarray(y), 0.1, jnp.ones(10)))
    assert ones == pytest.approx(float(cross_entropy(jnp.asarray(out), jnp.asarray(y), 0.1)), rel=1e-6)

    recalls = {}
    for weight in ("none", "balanced"):
        a = pbmc.copy()
        # a strong penalty: the unweighted fit gives up the rare classes (macro recall about 0.46)
        cfg = {"trainer": {"l2": 0.3, "max_epochs": 30, "patience": 30}, "loss": {"class_weight": weight}}
        ag.tl.train(a, "bulk_labels", model="linear", use_raw=True, config=cfg, rng=0)
        held = a.obs["ag_split"].to_numpy() != "train"
        truth, pred = a.obs["bulk_labels"].astype(str)[held], a.obs["ag_prediction"].astype(str)[held]
        recalls[weight] = recall_score(truth, pred, average="macro", zero_division=0)
    assert recalls["balanced"] > recalls["none"] + 0.1  # the mean recall over classes: rare classes count as much


def test_candidates_keep_the_network_slots_for_networks():
    """Linear variants ranked high on the validation split take no network's place in the cross-validation."""

    def trial(number, mode, **params):
        return SimpleNamespace(number=number, params={"mode": mode, **params}, user_attrs={})

    ranked = [
        trial(0, "linear", scaling="zscore"),
        trial(1, "linear", scaling="minmax"),
        trial(2, "linear", scaling="zscore", l2=0.1),
        trial(3, "mlp", mlp_width=256),
        trial(4, "resnet", resnet_width=256),
        trial(5, "linear", scaling="minmax", n_genes=500),
        trial(6, "mlp", mlp_width=64),
    ]
    cfg = SimpleNamespace(search=SimpleNamespace(cv_one_per_mode=False))
    searcher = SimpleNamespace(top_trials=lambda: ranked, cfg=cfg)
    got = [t.number for t in candidates(searcher, 2)]
    assert got == [0, 3, 4, 5]  # the two linear floors and the two best networks, in the validation's order
    assert [t.number for t in candidates(searcher, 2, more=2)] == [0, 3, 4, 5, 6, 1]  # networks first
    only_linear = SimpleNamespace(top_trials=lambda: [t for t in ranked if t.params["mode"] == "linear"], cfg=cfg)
    assert [t.number for t in candidates(only_linear, 2)] == [0, 1, 2, 5]  # linear variants fill empty slots


def test_a_cross_validation_started_in_time_may_finish_within_the_grace(pbmc, tmp_path, monkeypatch):
    from autogenome_sc.search import Budget

    s = _opened(pbmc, tmp_path, "grace").searcher
    t0 = 1000.0
    train = s.train

    def run(grace):
        started = []

        def training(*a, **kw):
            started.append(1)
            return train(*a, **kw)

        def clock():  # the first configuration starts in time; once it trains, the deadline has passed
            return t0 + 10.0 if started else t0

        monkeypatch.setattr(s, "train", training)
        # the deadline is t0 + 5.0; the grace a share of the 5 s timeout
        return select(s, seed=0, budget=Budget(5.0, grace=grace / 5.0, clock=clock, start=t0))

    late = run(grace=0.0)
    assert late.method == "validation"
    assert any("ran out" in n for n in late.notes), late.notes
    kept = run(grace=10.0)  # finishing by t0 + 15 is allowed: that configuration is scored, the next does not start
    assert kept.method == "cv" and len(kept.scored) == 1
    assert any("not cross-validated" in n for n in kept.notes)


def _logits(rng, y, accuracy, scale, n_out=3):
    """Logits right on about ``accuracy`` of the cells, ``scale`` sure of themselves."""
    out = rng.normal(0, 0.3, (len(y), n_out))
    right = rng.random(len(y)) < accuracy
    out[np.arange(len(y)), np.where(right, y, (y + 1) % n_out)] += scale
    return out


def test_fold_scores_are_means_over_the_folds_with_their_standard_errors():
    from sklearn.metrics import f1_score

    from autogenome_sc.search._choose import Scored

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    folds = np.arange(300) % 5
    s = Scored(0, "mlp", [], _logits(rng, y, 0.8, 2.0), [3], 0.0, folds)
    s.score_on(y, "classification", 3)
    pred = s.held_out.argmax(axis=1)
    acc = [(pred[folds == f] == y[folds == f]).mean() for f in range(5)]
    f1 = [f1_score(y[folds == f], pred[folds == f], average="macro") for f in range(5)]
    got = s.scores.over_folds()
    assert got["fold_accuracy"] == pytest.approx(np.mean(acc))
    assert got["fold_accuracy_se"] == pytest.approx(np.std(acc, ddof=1) / np.sqrt(5))
    assert got["fold_macro_f1"] == pytest.approx(np.mean(f1))
    assert got["fold_macro_f1_se"] == pytest.approx(np.std(f1, ddof=1) / np.sqrt(5))
    assert s.accuracy == pytest.approx((pred == y).mean())  # the pooled scores are kept as they were
    on_val = Scored(1, "mlp", [], s.held_out, [3], 0.0)  # the validation split: no folds
    on_val.score_on(y, "classification", 3)
    assert all(np.isnan(v) for v in on_val.scores.over_folds().values())


def test_each_configuration_is_tempered_so_a_scaled_copy_scores_and_mixes_the_same():
    from autogenome_sc.search._choose import Scored, choose

    rng = np.random.default_rng(1)
    y = rng.integers(0, 3, 400)
    a, b = _logits(rng, y, 0.85, 1.5), _logits(rng, y, 0.8, 1.5)

    def scored(scale_a, temper=True):
        out = [Scored(0, "linear", [], a * scale_a, [3], 0.0), Scored(1, "mlp", [], b, [3], 0.0)]
        for s in out:
            s.score_on(y, "classification", 3, temper=temper)
        return out

    plain, sharp = scored(1.0), scored(8.0)
    assert sharp[0].temperature == pytest.approx(8.0 * plain[0].temperature, rel=1e-3)
    assert sharp[0].loss == pytest.approx(plain[0].loss, rel=1e-5)  # the loss at the fitted temperature
    w_plain, _, _ = choose(plain, y, "classification", 2, "loss")
    w_sharp, _, _ = choose(sharp, y, "classification", 2, "loss")
    np.testing.assert_allclose(w_sharp, w_plain)  # the ensemble weights do not follow the logits' scale
    raw = scored(8.0, temper=False)  # untempered, the 8x sharper copy is overconfident: its log-loss explodes
    assert raw[0].temperature == 1.0 and raw[0].loss > 2 * sharp[0].loss


def test_within_noise_prefers_the_ensemble_or_else_the_simplest_close_configuration():
    from autogenome_sc.search._choose import Scored, choose

    rng = np.random.default_rng(2)
    n = 300
    y = rng.integers(0, 3, n)
    folds = np.arange(n) % 5
    net = _logits(rng, y, 0.9, 2.0)
    close = net.copy()  # wrong on three cells the net gets right, right on two it gets wrong: within noise
    wrong = np.flatnonzero(net.argmax(axis=1) == y)[:3]
    close[wrong, (y[wrong] + 1) % 3] += 10.0
    right = np.flatnonzero(net.argmax(axis=1) != y)[:2]
    close[right, y[right]] += 10.0
    far = _logits(rng, y, 0.6, 2.0)  # clearly less accurate

    def run(outputs, modes, by, max_members=1):
        scored = [Scored(i, m, [], o, [3], 0.0, folds) for i, (o, m) in enumerate(zip(outputs, modes, strict=True))]
        for s in scored:
            s.score_on(y, "classification", 3)
        return choose(scored, y, "classification", max_members, by)

    # the net is the best by accuracy_f1; a linear model three cells behind is within noise: chosen
    assert run([net, close], ["resnet", "linear"], "accuracy_f1")[0].tolist() == [1.0, 0.0]
    assert run([net, close], ["resnet", "linear"], "within_noise")[0].tolist() == [0.0, 1.0]
    # two networks within noise: the better one; a linear model clearly behind: not chosen
    assert run([net, close], ["resnet", "mlp"], "within_noise")[0].tolist() == [1.0, 0.0]
    assert run([net, far], ["resnet", "linear"], "within_noise")[0].tolist() == [1.0, 0.0]
    # two networks, each unsure where it is wrong and wrong on other cells: their ensemble beats both
    a, b = np.zeros((n, 3)), np.zeros((n, 3))
    a[np.arange(n), y], b[np.arange(n), y] = 3.0, 3.0
    a[:30], b[30:60] = 0.0, 0.0
    a[np.arange(30), (y[:30] + 1) % 3] = 0.5
    b[np.arange(30, 60), (y[30:60] + 1) % 3] = 0.5
    w, chosen, out = run([a, b, close], ["resnet", "mlp", "linear"], "within_noise", max_members=2)
    assert chosen == "ensemble" and w[2] == 0 and (w[:2] > 0).all() and out.shape == (n, 3)
    assert (out.argmax(axis=1) == y).all()


def test_cv_epochs_by_the_selection_rule_or_the_loss():
    from autogenome_sc.search._cv import best_epoch

    y = np.arange(300) % 3
    wrong = (y + 1) % 3
    # epoch 0: 80% right, never confident (the lowest loss); epoch 1: 90% right, very confident when wrong
    soft = np.eye(3)[np.where(np.arange(300) % 10 < 8, y, wrong)] * 0.5
    sharp = np.eye(3)[np.where(np.arange(300) % 10 < 9, y, wrong)] * 20.0
    curves = np.stack([soft, sharp]).astype(np.float32)
    accuracy = [(c.argmax(1) == y).mean() for c in curves]
    assert accuracy[1] > accuracy[0]
    by_loss = ag.config.validate(None).search
    by_rule = ag.config.validate({"search": {"cv_epochs_by": "select_by"}}).search
    from autogenome_sc.search._choose import outputs_loss

    assert outputs_loss(curves[0], y, "classification") < outputs_loss(curves[1], y, "classification")
    assert best_epoch(curves, y, "classification", 3, by_loss) == 0
    assert best_epoch(curves, y, "classification", 3, by_rule) == 1
    # a regression has no accuracy: the loss chooses
    assert best_epoch(curves[:, :, :1], y.astype(float), "regression", 1, by_rule) in (0, 1)


def test_cv_slots_go_to_each_modes_best_first_when_asked():

    from autogenome_sc.search._cv import candidates

    # the validation split's ranking: svm variants lead, then an MLP, trees, a linear model
    ranked = [
        {"mode": "svm", "C": 1.0},
        {"mode": "svm", "C": 10.0},
        {"mode": "svm", "C": 0.1},
        {"mode": "mlp", "mlp_width": 256},
        {"mode": "trees", "trees_leaf_nodes": 31},
        {"mode": "linear", "l2": 0.01},
    ]
    trials = [SimpleNamespace(number=i, params=p) for i, p in enumerate(ranked)]

    def chosen(one_per_mode):
        cfg = ag.config.validate({"search": {"cv_one_per_mode": one_per_mode}})
        searcher = SimpleNamespace(cfg=cfg, top_trials=lambda n=None: trials)
        return [t.params["mode"] for t in candidates(searcher, 3)]

    # the floors (the best svm, the best linear) always; three slots for the rest
    assert chosen(False) == ["svm", "svm", "svm", "mlp", "linear"]  # svm variants crowd out trees
    assert chosen(True) == ["svm", "svm", "mlp", "trees", "linear"]  # one svm variant, the MLP, the trees
