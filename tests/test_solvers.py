"""The linear families solved to convergence (train/_solvers.py) and their search modes ``logistic`` and ``svm``."""

from __future__ import annotations

import warnings

import jax
import numpy as np
import pytest
from scipy.special import logsumexp
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import MinMaxScaler
from sklearn.svm import LinearSVC

import autogenome_sc as ag
from autogenome_sc.train._solvers import WIDE, fit_solved, solve_linear, watch_traces

#: Our objective (float32 weights) at most this far above scikit-learn's solved to a tight tolerance (float64):
#: 1e-5 of the objective. Below it is fine: scikit-learn's lbfgs also stops when an iteration gains less than
#: 64 float64 epsilons, which left it 1e-5 above ours on the balanced problem.
OBJECTIVE_RTOL = 1e-5


def sklearn_objective(loss, coef, intercept, x, y, C, weights):
    """scikit-learn's objective of ``coef`` (outputs x genes), ``intercept`` on ``x``, ``y`` with row ``weights``."""
    logits = x @ np.asarray(coef, np.float64).T + intercept
    if loss == "logistic":
        if coef.shape[0] == 1:
            ce = np.logaddexp(0.0, logits[:, 0]) - (y == 1) * logits[:, 0]
        else:
            ce = logsumexp(logits, axis=1) - logits[np.arange(len(y)), y]
        return 0.5 * float((coef**2).sum()) + C * float(weights @ ce)
    t = (
        np.where(y == 1, 1.0, -1.0)[:, None]
        if coef.shape[0] == 1
        else np.where(np.eye(coef.shape[0])[y] > 0, 1.0, -1.0)
    )
    hinge = np.maximum(0.0, 1.0 - t * logits) ** 2
    return 0.5 * float((coef**2).sum() + (intercept**2).sum()) + C * float(weights @ hinge.sum(1))


@pytest.fixture(scope="module")
def problem(_pbmc):
    """300 cells and 300 genes of pbmc68k_reduced's ``.raw`` (0-1 scaled as the peers scale it) and their classes."""
    gen = np.random.default_rng(0)
    rows = np.sort(gen.choice(_pbmc.n_obs, 300, replace=False))
    x = MinMaxScaler(clip=True).fit_transform(_pbmc.raw.X[rows][:, :300].toarray()).astype(np.float32)
    _, y = np.unique(_pbmc.obs["bulk_labels"].astype(str).to_numpy()[rows], return_inverse=True)
    return x, y


def _sklearn(loss, C, class_weight=None):
    if loss == "logistic":
        return LogisticRegression(C=C, tol=1e-8, max_iter=20_000, class_weight=class_weight)
    return LinearSVC(C=C, tol=1e-8, max_iter=200_000)


@pytest.mark.parametrize("loss", ["logistic", "svm"])
@pytest.mark.parametrize("case", ["multiclass", "binary", "balanced", "wide"])
def test_solvers_reach_scikit_learns_optimum(problem, loss, case):
    x, y = problem
    n_classes = int(y.max()) + 1
    if case == "wide":  # 60 cells of 300 genes: solved in the span of the rows (WIDE), lifted back to genes
        x, (_, y) = x[:60], np.unique(y[:60], return_inverse=True)
        n_classes = int(y.max()) + 1
        assert x.shape[1] >= WIDE * len(y)
    if case == "binary":  # scikit-learn fits one vector for two classes: the same model, another parametrisation
        keep = np.isin(y, [5, 9])
        x, y, n_classes = x[keep], (y[keep] == 9).astype(np.int64), 2
    weights = np.ones(len(y))
    if case == "balanced":  # scikit-learn's class weights; for LinearSVC as sample weights (see fit_solved)
        counts = np.bincount(y, minlength=n_classes)
        weights = len(y) / (n_classes * counts[y])
    C = 0.5
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = _sklearn(loss, C, "balanced" if case == "balanced" else None)
        theirs.fit(x, y, sample_weight=weights if loss == "svm" and case == "balanced" else None)
    ours = solve_linear(x, y, n_classes, loss, C, weights=weights)
    coef, intercept = ours.kernel.T.astype(np.float64), ours.bias.astype(np.float64)
    if n_classes == 2:
        coef, intercept = (
            (coef[1:] - coef[:1], intercept[1:] - intercept[:1]) if loss == "logistic" else (coef[1:], intercept[1:])
        )
    x64 = x.astype(np.float64)
    mine = sklearn_objective(loss, coef, intercept, x64, y, C, weights)
    best = sklearn_objective(loss, theirs.coef_, theirs.intercept_, x64, y, C, weights)
    assert best * (1 - 1e-4) <= mine <= best * (1 + OBJECTIVE_RTOL)
    assert ours.objective == pytest.approx(mine, rel=OBJECTIVE_RTOL)  # the value it reports is that objective
    assert ours.grad_max <= 1e-6 and ours.n_iter > 0
    assert np.array_equal((x64 @ ours.kernel + ours.bias).argmax(1), np.asarray(theirs.predict(x)))


def test_one_compilation_serves_every_penalty_and_both_families(problem):
    x, y = problem
    x = x[:, :123]  # a shape no other test compiles
    traces = watch_traces()
    sols = [solve_linear(x, y, 10, loss, C) for loss in ("logistic", "svm") for C in (0.01, 1.0, 100.0)]
    assert traces() == {"solve": 1}
    norms = [float(np.linalg.norm(s.kernel)) for s in sols]
    assert norms[0] < norms[1] < norms[2] and norms[3] < norms[4] < norms[5]  # a weaker penalty, larger weights
    # rows of weight 0 are not trained on: the same solution as without them (and still no new compilation)
    weights = np.ones(len(y))
    weights[::3] = 0
    y_noisy = y.copy()
    y_noisy[::3] = 0
    a = solve_linear(x, y_noisy, 10, "logistic", 1.0, weights=weights)
    b = solve_linear(x[weights > 0], y[weights > 0], 10, "logistic", 1.0)
    np.testing.assert_allclose(a.kernel, b.kernel, atol=2e-4)
    assert traces() == {"solve": 2}  # b's matrix has another shape


def _solved_problem(pbmc):
    from autogenome_sc.data import prepare

    cfg = ag.config.validate(None)
    data, _ = prepare(
        pbmc, "bulk_labels", layer=None, use_raw=True, split_key=None, data_cfg=cfg.data, loss="auto",
        rng=np.random.default_rng(0),
    )  # fmt: skip
    return data.with_inputs("minmax")


def test_fit_solved_gives_linear_weights_with_a_temperature_for_the_svm(pbmc):
    from autogenome_sc.nn import build_network
    from autogenome_sc.train import host_loss, make_apply, predict_arrays, softmax_t

    data = _solved_problem(pbmc)
    net = build_network({"model": "linear", "input_keep": 1.0}, data.n_out)
    val = data.idx["val"]
    for loss in ("logistic", "svm"):
        result = fit_solved(data, loss, 1.0)
        assert set(result.variables["params"]["head"]) == {"kernel", "bias"} and result.best_epoch == 0
        with jax.default_matmul_precision("highest"):  # the solver's outputs are exact; so is this reference
            out, _ = predict_arrays(make_apply(net), result.variables, data.pipeline, val)
        np.testing.assert_allclose(out, result.val_outputs[0], rtol=1e-4, atol=1e-4)
        assert result.best_val_loss == pytest.approx(host_loss("cross_entropy", out, data.y[val]), rel=1e-4)
        assert result.history["val_accuracy"][0] > 0.6 and np.isfinite(result.epoch_seconds)
    # the SVM's margins were divided by a temperature fitted on held-out inner folds: softmax(outputs) is a
    # probability no more confident than its accuracy warrants on the validation split
    svm = fit_solved(data, "svm", 1.0)
    probs = softmax_t(svm.val_outputs[0])
    assert probs.max(1).mean() < svm.history["val_accuracy"][0] + 0.15
    with pytest.raises(ValueError, match="classifies"):
        import dataclasses

        fit_solved(dataclasses.replace(data, task="regression"), "svm", 1.0)


def test_expected_gradients_equal_the_closed_form_for_both_families(pbmc):
    # a linear model's SHAP values of its logits are w_g (x_g - mean x'_g); expected gradients must give them
    # (at full precision: explain runs under autogenome_sc._precision.exact, whatever the device's default)
    from autogenome_sc.explain import NetworkOutput, expected_gradients
    from autogenome_sc.nn import build_network

    data = _solved_problem(pbmc)
    net = build_network({"model": "linear", "input_keep": 1.0}, data.n_out)
    x, background = data.pipeline.cache[data.idx["val"][:6]], data.pipeline.cache[data.idx["train"][:40]]
    for loss in ("logistic", "svm"):
        variables = fit_solved(data, loss, 1.0).variables
        kernel = np.asarray(variables["params"]["head"]["kernel"], np.float64)
        exact = (x - background.mean(0))[:, :, None] * kernel[None]
        phi = expected_gradients(NetworkOutput(net, output="logit"), variables, x, background, n_samples=40)
        np.testing.assert_allclose(phi, exact, rtol=1e-4, atol=1e-5 * np.abs(exact).max())


def test_modes_search_save_load_predict_and_explain(pbmc, tmp_path):
    config = {"search": {"n_startup_trials": 1, "ensemble": 2}}
    ag.tl.search(pbmc, "bulk_labels", use_raw=True, modes=["logistic", "svm"], n_trials=3, config=config,
                 run_dir=tmp_path, rng=0)  # fmt: skip
    uns = pbmc.uns["ag"]
    board = uns["leaderboard"]
    assert set(board["mode"]) == {"logistic", "svm"} and set(board["state"]) == {"complete"}
    assert set(board["epochs"]) == {1} and "learning_rate" not in board  # solved: no trainer hyperparameters
    first = board.sort_values("trial").iloc[:2]  # the portfolio: the peers' recipes
    assert (
        list(first["mode"]) == ["svm", "logistic"] and set(first["C"]) == {1.0} and set(first["scaling"]) == {"minmax"}
    )
    assert uns["selection"]["method"] == "cv"  # their fold models went through cross-validation
    assert uns["selection"]["final"] == "refit"  # solved families are refitted, and the record says so
    model = ag.read_model(uns["model_path"])
    chosen = int((uns["selection"]["table"]["weight"] > 0).sum())
    members = model.architecture.get("members", [model.architecture])
    assert len(members) == chosen  # each chosen solved configuration refitted once on train + validation, not bagged
    pred = model.predict(pbmc, use_raw=True)["prediction"]
    assert (pred == pbmc.obs["ag_prediction"]).all()
    assert uns["metrics"]["accuracy"] > 0.7
    ag.tl.explain(pbmc, max_cells=10, n_background=10, n_samples=10)
    assert uns["importance"]["values"].shape == (pbmc.raw.n_vars, len(model.classes_) + 1)
