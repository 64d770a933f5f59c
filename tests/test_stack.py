"""Stacking (issue 28, item 3): a meta-learner on the best configurations' out-of-fold log-probabilities (trees: logits)."""

import json
import shutil
import warnings

import numpy as np
import pytest
from _search_helpers import four_types
from scipy.special import softmax

import autogenome_sc as ag
from autogenome_sc.search._choose import Scored, stack_block, stack_features, stacked


def _scored(held: np.ndarray, folds: np.ndarray, y: np.ndarray, trial: int, mode: str = "mlp") -> Scored:
    s = Scored(trial, mode, [], held.astype(np.float32), [0], 0.0, folds)
    s.score_on(y, "classification", held.shape[1])
    return s


def test_a_stack_of_two_configurations_each_right_on_other_classes_beats_both():
    """Each configuration tells two of four classes apart and guesses on the others; the stack learns whom to trust."""
    gen = np.random.default_rng(0)
    n, k = 400, 4
    y = np.repeat(np.arange(k), n // k)
    folds = np.tile(np.arange(5), n // 5)
    sure = np.eye(k)[y] * 4.0

    def expert(classes):  # confident and right on its classes, noise elsewhere
        out = gen.normal(0, 1, (n, k))
        mine = np.isin(y, classes)
        out[mine] += sure[mine]
        out[:, [c for c in range(k) if c not in classes]] -= 1.0  # never says the other classes
        return out

    a, b = _scored(expert([0, 1]), folds, y, 0), _scored(expert([2, 3]), folds, y, 1)
    weak = _scored(gen.normal(0, 1, (n, k)), folds, y, 2)  # a third, worse than both: not a member
    st = stacked([weak, a, b], y, k)
    assert st is not None and sorted(st.members) == [1, 2]
    assert st.coef.shape == (2 * k, k) and st.intercept.shape == (k,)
    assert st.scores.accuracy > max(a.accuracy, b.accuracy) + 0.2
    # its out-of-fold logits come from meta-learners that never saw the rows they score
    x = stack_features([stack_block([weak, a, b][i].tempered, "mlp") for i in st.members])
    np.testing.assert_allclose(x[:, :k], np.log(softmax([weak, a, b][st.members[0]].tempered, axis=1) + 1e-12))
    assert not np.allclose(st.held_out, x @ st.coef + st.intercept, atol=1e-3)
    np.testing.assert_array_equal(st.held_out.argmax(1), st.scores.pred)
    # a class absent from the rows gets no prediction; without folds (the validation split) nothing is stacked
    assert stacked([a, b], y, k + 1).intercept[k] < -10
    assert stacked([_scored(a.held_out, None, y, 0), _scored(b.held_out, None, y, 1)], y, k) is None
    # two classes: scikit-learn's one column becomes the second class's logit against the first's
    two = np.isin(y, [0, 2])
    y2, f2 = (y[two] == 2).astype(int), folds[two]
    pair = [_scored(s.held_out[two][:, [0, 2]], f2, y2, i) for i, s in enumerate((a, b))]
    st2 = stacked(pair, y2, 2)
    assert st2 is not None and st2.intercept[0] == 0 and not st2.coef[:, 0].any()
    assert st2.scores.accuracy > 0.9


def test_boosted_trees_join_a_stack_as_centred_logits():
    """Trees right on two classes beside a model right on the other two: stacked, the meta-learner reads their logits."""
    gen = np.random.default_rng(1)
    n, k = 400, 4
    y = np.repeat(np.arange(k), n // k)
    folds = np.tile(np.arange(5), n // 5)
    half = np.isin(y, [0, 1])
    z_trees, z_net = gen.normal(0, 1, (n, k)), gen.normal(0, 1, (n, k))
    z_trees[half, y[half]] += 6.0  # logits on a wider scale than a network's
    z_net[~half, y[~half]] += 3.0
    trees, net = _scored(z_trees + 50.0, folds, y, 0, mode="trees"), _scored(z_net, folds, y, 1)
    st = stacked([trees, net], y, k)
    assert st is not None and sorted(st.members) == [0, 1]
    block = stack_block(trees.tempered, "trees")
    # centred per cell: the trees' constant offset (+50) is gone, and their block is their tempered logits
    np.testing.assert_allclose(block.mean(axis=1), 0.0, atol=1e-9)
    np.testing.assert_allclose(block, trees.tempered - trees.tempered.mean(axis=1, keepdims=True), rtol=1e-6)
    # fold models' logits are averaged (not their probabilities)
    two = np.stack([trees.tempered, trees.tempered + 1.0])
    np.testing.assert_allclose(stack_block(two, "trees"), block, atol=1e-9)
    assert st.scores.accuracy > max(trees.accuracy, net.accuracy) + 0.2


def _stack_blocks(model, x):
    """What a stacked model's meta-learner reads on the input rows ``x``, one block per group, each member run alone."""
    import jax

    from autogenome_sc.nn import build_network, member_input
    from autogenome_sc.nn._fc import InputTransform

    arch = model.architecture
    groups = np.asarray(arch["groups"])
    weights, temperatures = np.asarray(arch["weights"]), arch.get("temperatures", [1.0] * len(groups))
    tempered = []
    for i, member in enumerate(arch["members"]):
        xi = InputTransform(*member_input(member["input"])).apply(
            {"inputs": model.variables["inputs"][f"input_{i}"]}, x
        )
        v = {c: model.variables[c][f"members_{i}"] for c in ("params", "batch_stats")
             if f"members_{i}" in model.variables.get(c, {})}  # fmt: skip
        with jax.default_matmul_precision("highest"):
            out, _ = build_network(member, len(model.classes_)).apply(v, xi, train=False)
        tempered.append(np.asarray(out, np.float64) / temperatures[i])
    blocks = []
    for g in range(groups.max() + 1):
        members = np.flatnonzero(groups == g)
        w = weights[members] / weights[members].sum()
        if arch["members"][members[0]]["model"] == "trees":  # the trees' logits, centred per cell
            blocks.append(
                sum(wi * (tempered[i] - tempered[i].mean(1, keepdims=True)) for wi, i in zip(w, members, strict=True))
            )
        else:
            blocks.append(
                np.log(sum(wi * softmax(tempered[i], axis=1) for wi, i in zip(w, members, strict=True)) + 1e-12)
            )
    return blocks


def _stack_by_hand(model, adata, n):
    """A stacked model's logits on the first ``n`` cells, from each member run on its own."""
    pipe, _, _ = model.pipeline(adata, use_raw=True)
    blocks = _stack_blocks(model, pipe.block(np.arange(n)))
    return np.concatenate(blocks, axis=1) @ np.asarray(model.architecture["coef"]) + model.architecture["intercept"]


@pytest.fixture(scope="module")
def stack_search(_pbmc, tmp_path_factory):
    """A search told to stack whatever the scores (stack_margin -1), on 4 types of pbmc68k_reduced; its model saved."""
    adata = four_types(_pbmc)
    path = tmp_path_factory.mktemp("stack") / "model"
    cfg = {
        "trainer": {"max_epochs": 8},
        "search": {"stack_margin": -1.0, "cv_folds": 3, "spaces": {"n_genes": [200], "mlp_widths": [32]}},
        "save": {"path": str(path)},
    }
    ag.tl.search(adata, label_key="bulk_labels", use_raw=True, modes=["logistic", "linear", "mlp"], n_trials=4,
                 config=cfg, run_dir=path.parent / "runs", rng=0)  # fmt: skip
    return adata, path


def test_a_stacked_search_saves_loads_and_predicts_what_it_wrote(stack_search, _pbmc, tmp_path):
    adata, path = stack_search
    sel = adata.uns["ag"]["selection"]
    assert sel["chosen"] == "stack" and (sel["table"]["weight"] > 0).sum() == 2
    model = ag.read_model(path)
    arch = model.architecture
    assert arch["average"] == "stack" and len(arch["groups"]) == len(arch["members"])
    assert np.asarray(arch["coef"]).shape == (2 * 4, 4) and len(arch["intercept"]) == 4
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pred = model.predict(adata, use_raw=True)
        proba = model.predict_proba(adata[:50].copy(), use_raw=True).to_numpy()
    np.testing.assert_array_equal(pred["prediction"].astype(str), adata.obs["ag_prediction"].astype(str))
    # the model's outputs are the meta-learner's on the groups' log-probabilities, each member run on its own
    logits = model.outputs(adata[:50].copy(), use_raw=True)[0]
    np.testing.assert_allclose(logits, _stack_by_hand(model, adata, 50), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(proba, softmax(logits / model.temperature, axis=1), rtol=1e-4, atol=1e-6)
    test = adata.obs["ag_split"] == "test"
    assert (adata.obs["ag_prediction"][test].astype(str) == adata.obs["bulk_labels"][test].astype(str)).mean() > 0.8
    # unknown cells: the 6 types the stack never saw are rejected more often than the held-out known ones
    known = _pbmc.obs["bulk_labels"].isin(adata.obs["bulk_labels"].unique()).to_numpy()
    query = ag.tl.predict(_pbmc[~known].copy(), model, use_raw=True, reject="auto", copy=True)
    held = ag.tl.predict(adata[test.to_numpy()].copy(), model, use_raw=True, reject="auto", copy=True)
    unseen = (query.obs["ag_prediction"] == "Unassigned").mean()
    seen = (held.obs["ag_prediction"] == "Unassigned").mean()
    assert unseen > 0.3 and seen < 0.2 and unseen > 2 * seen, (unseen, seen)
    # the meta-learner's numbers are in the checksum, and a model.json whose stack does not fit is refused
    again = ag.read_model(model.save(tmp_path / "again"))
    assert again.id_ == model.id_
    for key, bad, match in (
        ("coef", arch["coef"][:-1], "rows of 4 finite numbers"),
        ("groups", [0] * len(arch["groups"]), "every group used|rows of"),
        ("intercept", arch["intercept"] + [0.0], "one intercept per class|rows of"),
        ("average", "probs", "groups in model.json is not a setting of an ensemble"),
    ):
        bad_path = tmp_path / f"bad_{key}"
        shutil.copytree(model.path, bad_path)
        meta = json.loads((bad_path / "model.json").read_text())
        meta["architecture"][key] = bad
        (bad_path / "model.json").write_text(json.dumps(meta))
        with pytest.raises(ValueError, match=match):
            ag.read_model(bad_path)


def test_a_stacked_model_is_explained_with_local_accuracy(stack_search):
    adata, path = stack_search
    ag.tl.explain(adata, n_background=60, n_samples=60, max_cells=40, output="logit", rng=0)
    exp = ag.tl.explain(adata, n_background=60, n_samples=60, max_cells=40, output="logit", return_explanation=True,
                        rng=0)  # fmt: skip
    model = ag.read_model(path)
    cells = [adata.obs_names.get_loc(c) for c in adata.uns["ag"]["shap"]["obs_names"]]
    logits = model.outputs(adata[cells].copy(), use_raw=True)[0]
    # per cell and class, base value + the sum of the SHAP values ~ the logit (Monte-Carlo error of 60 draws)
    err = np.abs(exp.base_values + exp.values.sum(1) - logits)
    assert err.mean() < 0.25 * np.abs(logits - exp.base_values).mean()


def test_a_stack_with_boosted_trees_saves_predicts_and_is_explained_exactly(_pbmc, tmp_path):
    """Trees and a logistic regression stacked: the model reads the trees' logits, and both SHAP parts are exact."""
    adata = four_types(_pbmc)
    path = tmp_path / "model"
    cfg = {
        "search": {"stack_margin": -1.0, "cv_folds": 3, "spaces": {"n_genes": [200]}},
        "save": {"path": str(path)},
    }
    ag.tl.search(adata, label_key="bulk_labels", use_raw=True, modes=["logistic", "trees"], n_trials=2, config=cfg,
                 run_dir=tmp_path / "runs", rng=0)  # fmt: skip
    sel = adata.uns["ag"]["selection"]
    assert sel["chosen"] == "stack"
    assert set(sel["table"]["mode"][sel["table"]["weight"] > 0]) == {"logistic", "trees"}
    model = ag.read_model(path)
    arch = model.architecture
    assert "trees" in {m["model"] for m in arch["members"]} and len(set(arch["groups"])) == 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pred = model.predict(adata, use_raw=True)
    np.testing.assert_array_equal(pred["prediction"].astype(str), adata.obs["ag_prediction"].astype(str))
    logits = model.outputs(adata[:50].copy(), use_raw=True)[0]
    np.testing.assert_allclose(logits, _stack_by_hand(model, adata, 50), rtol=1e-4, atol=1e-4)
    test = adata.obs["ag_split"] == "test"
    assert (adata.obs["ag_prediction"][test].astype(str) == adata.obs["bulk_labels"][test].astype(str)).mean() > 0.8
    assert ag.read_model(model.save(tmp_path / "again")).id_ == model.id_
    # an architecture that puts the trees in one group with another model is refused in one sentence
    from autogenome_sc.nn import build_network

    k = len(model.classes_)
    mixed = {**arch, "groups": [0] * len(arch["groups"]), "coef": arch["coef"][:k]}
    with pytest.raises(ValueError, match="mixes boosted trees with other models"):
        build_network(mixed, k)
    # explained in logits, with a warning where probabilities were asked for; local accuracy per cell and class
    with pytest.warns(UserWarning, match="boosted trees is explained in logits"):
        ag.tl.explain(adata, n_background=40, n_samples=40, max_cells=30, output="probability", rng=0)
    exp = ag.tl.explain(adata, n_background=40, n_samples=40, max_cells=30, output="logit", return_explanation=True,
                        rng=0)  # fmt: skip
    cells = [adata.obs_names.get_loc(c) for c in adata.uns["ag"]["shap"]["obs_names"]]
    logits = model.outputs(adata[cells].copy(), use_raw=True)[0]
    err = np.abs(exp.base_values + exp.values.sum(1) - logits)
    assert err.mean() < 0.1 * np.abs(logits - exp.base_values).mean(), err.mean()
    # the trees' share is exact: its values sum to the trees' block of the logits minus its mean over the background
    from autogenome_sc.explain._trees import stacked_trees_shap

    pipe, _, _ = model.pipeline(adata, use_raw=True)
    x, bg = pipe.block(np.asarray(cells)), pipe.block(np.flatnonzero(adata.obs["ag_split"] == "train")[:40])
    part = stacked_trees_shap(arch, model.variables, x, bg)
    g = next(arch["groups"][i] for i, m in enumerate(arch["members"]) if m["model"] == "trees")
    block = np.asarray(arch["coef"])[g * k : (g + 1) * k]
    share, share_bg = (_stack_blocks(model, v)[g] @ block for v in (x, bg))
    np.testing.assert_allclose(part.sum(1), share - share_bg.mean(0), atol=1e-3)
    assert np.abs(part.sum(1)).mean() > 0.1
