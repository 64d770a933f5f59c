"""Stacking (issue 28, item 3): a meta-learner on the best configurations' out-of-fold log-probabilities."""

import json
import shutil
import warnings

import numpy as np
import pytest
from _search_helpers import four_types
from scipy.special import softmax

import autogenome_sc as ag
from autogenome_sc.search._choose import Scored, stack_features, stacked


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
    trees = _scored(sure + gen.normal(0, 1, (n, k)), folds, y, 3, mode="trees")  # the best, but never stacked
    st = stacked([weak, a, trees, b], y, k)
    assert st is not None and sorted(st.members) == [1, 3]
    assert st.coef.shape == (2 * k, k) and st.intercept.shape == (k,)
    assert st.scores.accuracy > max(a.accuracy, b.accuracy) + 0.2
    # its out-of-fold logits come from meta-learners that never saw the rows they score
    x = stack_features([softmax([weak, a, trees, b][i].tempered, axis=1) for i in st.members])
    assert not np.allclose(st.held_out, x @ st.coef + st.intercept, atol=1e-3)
    np.testing.assert_array_equal(st.held_out.argmax(1), st.scores.pred)
    # a class absent from the rows gets no prediction; without folds (the validation split) nothing is stacked
    assert stacked([a, b], y, k + 1).intercept[k] < -10
    assert stacked([_scored(a.held_out, None, y, 0), _scored(b.held_out, None, y, 1)], y, k) is None
    assert stacked([a, trees], y, k) is None
    # two classes: scikit-learn's one column becomes the second class's logit against the first's
    two = np.isin(y, [0, 2])
    y2, f2 = (y[two] == 2).astype(int), folds[two]
    pair = [_scored(s.held_out[two][:, [0, 2]], f2, y2, i) for i, s in enumerate((a, b))]
    st2 = stacked(pair, y2, 2)
    assert st2 is not None and st2.intercept[0] == 0 and not st2.coef[:, 0].any()
    assert st2.scores.accuracy > 0.9


def _stack_by_hand(model, adata, n):
    """A stacked model's logits on the first ``n`` cells, from each member run on its own."""
    import jax

    from autogenome_sc.nn import build_network, member_input
    from autogenome_sc.nn._fc import InputTransform

    arch = model.architecture
    pipe, _, _ = model.pipeline(adata, use_raw=True)
    x = pipe.block(np.arange(n))
    groups = np.asarray(arch["groups"])
    weights, temperatures = np.asarray(arch["weights"]), arch.get("temperatures", [1.0] * len(groups))
    probs = []
    for i, member in enumerate(arch["members"]):
        xi = InputTransform(*member_input(member["input"])).apply(
            {"inputs": model.variables["inputs"][f"input_{i}"]}, x
        )
        v = {c: model.variables[c][f"members_{i}"] for c in ("params", "batch_stats")
             if f"members_{i}" in model.variables.get(c, {})}  # fmt: skip
        with jax.default_matmul_precision("highest"):
            out, _ = build_network(member, len(model.classes_)).apply(v, xi, train=False)
        probs.append(softmax(np.asarray(out, np.float64) / temperatures[i], axis=1))
    logs = []
    for g in range(groups.max() + 1):
        w = weights[groups == g] / weights[groups == g].sum()
        logs.append(np.log(sum(wi * probs[i] for wi, i in zip(w, np.flatnonzero(groups == g), strict=True)) + 1e-12))
    return np.concatenate(logs, axis=1) @ np.asarray(arch["coef"]) + np.asarray(arch["intercept"])


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
