"""A search's budget: ``preset=`` (budget, families and ensemble depth by one word, never over the user's own),
and ``search.stagnation`` (stop starting trials when they stop helping)."""

import numpy as np
import pytest

import autogenome_sc as ag
from autogenome_sc.cli import build_parser
from autogenome_sc.config._presets import PRESETS, with_preset
from autogenome_sc.search import open_study
from autogenome_sc.search._spaces import named_portfolio

FAST = ["linear", "logistic", "svm", "mlp"]


def test_a_preset_fills_only_what_the_config_left_unset():
    cfg = with_preset(ag.config.validate({"search": {"ensemble": 4}}), "fast")
    assert cfg.search.ensemble == 4  # given: kept
    assert cfg.search.cv_configs == 2 and cfg.search.timeout == 30.0  # unset: the preset's
    assert cfg.search.modes is None  # the preset narrows the default modes at the search, not in the config
    best = with_preset(ag.config.validate(None), "best")
    assert (best.search.timeout, best.search.ensemble, best.search.cv_configs) == (900.0, 5, 5)
    assert with_preset(ag.config.validate(None), "default") == ag.config.validate(None)
    assert PRESETS["default"].config == {} and PRESETS["default"].modes is None


@pytest.mark.parametrize(
    ("config", "given"), [({"search": {"n_trials": 7}}, False), ({"search": {"timeout": 12}}, False), (None, True)]
)
def test_a_preset_never_adds_a_timeout_to_a_given_budget(config, given):
    cfg = with_preset(ag.config.validate(config), "fast", budget_given=given)
    assert cfg.search.timeout == (12 if config and "timeout" in config["search"] else None)
    assert cfg.search.ensemble == 2  # the rest of the preset still applies


@pytest.mark.parametrize("bad", ["quick", "FAST", 1, ""])
def test_an_unknown_preset_is_one_clear_sentence(pbmc, bad):
    with pytest.raises(ValueError, match=r"preset must be one of 'fast', 'default', 'best'"):
        ag.tl.search(pbmc, "bulk_labels", preset=bad, use_raw=True)
    assert "ag" not in pbmc.uns  # refused before anything ran


def _opened(adata, label_key, tmp_path, preset, *, modes=None, n_trials=None, timeout=None):
    cfg = with_preset(ag.config.validate(None), preset, budget_given=n_trials is not None or timeout is not None)
    return open_study(
        adata, label_key, cfg=cfg, modes=modes, n_trials=n_trials, timeout=timeout, layer=None, use_raw=True,
        split_key=None, storage=None, study_name="p", run_dir=tmp_path, rng=0,
        preset_modes=None if preset is None else PRESETS[preset].modes,
    )  # fmt: skip


def test_fast_narrows_the_families_and_sets_the_budget(pbmc, tmp_path):
    opened = _opened(pbmc, "bulk_labels", tmp_path / "a", "fast")
    assert opened.searcher.modes == FAST and (opened.n_trials, opened.timeout) == (None, 30.0)
    # the arguments win: the modes asked for by name, the budget given
    opened = _opened(pbmc, "bulk_labels", tmp_path / "b", "fast", modes=["resnet"], n_trials=3)
    assert opened.searcher.modes == ["resnet"] and (opened.n_trials, opened.timeout) == (3, None)
    # without a preset, the defaults: every mode that can learn the labels, 60 s
    opened = _opened(pbmc, "bulk_labels", tmp_path / "c", None)
    assert {"resnet", "densenet", "trees"} <= set(opened.searcher.modes)
    assert (opened.n_trials, opened.timeout) == (None, 60.0)


def test_the_default_budget_is_a_minute_for_labels_and_30_trials_or_240_s_for_the_res_vae():
    from autogenome_sc.search import resolve_budget

    cfg = ag.config.validate({})
    assert resolve_budget(None, None, cfg) == (None, 60.0)
    assert resolve_budget(None, None, cfg, supervised=False) == (30, 240.0)
    # a budget given anywhere replaces the default whole
    assert resolve_budget(5, None, cfg) == (5, None)
    assert resolve_budget(None, 10.0, cfg, supervised=False) == (None, 10.0)
    assert resolve_budget(None, None, ag.config.validate({"search": {"n_trials": 7}})) == (7, None)


def test_a_continued_study_keeps_its_trial_count_and_a_default_one_gets_another_minute(pbmc, tmp_path):
    # a study started with n_trials: a run continuing it without a budget takes that count
    _opened(pbmc, "bulk_labels", tmp_path / "counted", None, n_trials=12)
    again = _opened(pbmc, "bulk_labels", tmp_path / "counted", None)
    assert (again.n_trials, again.timeout) == (12, None)
    # a study started with the default budget records no count: each continuing run searches 60 s more
    _opened(pbmc, "bulk_labels", tmp_path / "timed", None)
    again = _opened(pbmc, "bulk_labels", tmp_path / "timed", None)
    assert (again.n_trials, again.timeout) == (None, 60.0)


def test_fast_on_a_regression_leaves_out_the_classifiers_silently(pbmc, tmp_path):
    pbmc.obs["score"] = np.asarray(pbmc.obs["n_genes"], np.float32)  # a number to learn
    opened = _opened(pbmc, "score", tmp_path, "fast")
    assert opened.searcher.modes == ["linear", "mlp"]  # logistic and svm cannot learn a number


def test_search_with_a_preset_runs_and_records_it(pbmc, tmp_path, ag_log):
    tiny = {"trainer": {"max_epochs": 3, "patience": 3}, "search": {"cv_folds": 0, "pruner": "none"}}
    ag.settings.verbosity = 2  # info: the first line names the preset
    ag.tl.search(pbmc, "bulk_labels", preset="fast", n_trials=4, config=tiny, run_dir=tmp_path, use_raw=True, rng=0)
    board = pbmc.uns["ag"]["leaderboard"]
    ran = board[board["state"] != "waiting"]  # the portfolio's entries not reached wait in the study
    assert len(ran) == 4 and set(ran["mode"]) == set(FAST)
    model = ag.read_model(pbmc.uns["ag"]["model_path"])
    search = model.config["search"]
    assert (search["ensemble"], search["cv_configs"], search["timeout"]) == (2, 2, None)  # n_trials given: no timeout
    assert search["pruner"] == "none" and model.config["trainer"]["max_epochs"] == 3  # the user's config kept
    assert "preset 'fast'" in ag_log.text


def test_the_command_line_takes_a_preset():
    parser = build_parser()
    args = parser.parse_args(["search", "d.h5ad", "--label-key", "y", "--out", "o.h5ad", "--preset", "best"])
    assert args.preset == "best"
    args = parser.parse_args(["worker", "--data", "d.h5ad", "--label-key", "y", "--study", "s", "--preset", "fast"])
    assert args.preset == "fast"
    with pytest.raises(SystemExit):
        parser.parse_args(["search", "d.h5ad", "--label-key", "y", "--out", "o.h5ad", "--preset", "quick"])


# ------------------------------------------------------------------ search.stagnation: stop when trials stop helping
def _trial(number, value, *, state=None, portfolio=False):
    from optuna.trial import TrialState, create_trial

    from autogenome_sc.search._record import TrialRecord

    state = state or (TrialState.COMPLETE if value is not None else TrialState.PRUNED)
    attrs = TrialRecord(portfolio=True).to_attrs() if portfolio else {}
    t = create_trial(state=state, value=value if state == TrialState.COMPLETE else None, user_attrs=attrs)
    t.number = number
    return t


def test_stagnant_counts_trials_after_the_portfolio_without_real_progress():
    from optuna.trial import TrialState

    from autogenome_sc.search._driver import stagnant

    portfolio = [_trial(0, 1.0, portfolio=True), _trial(1, 0.8, portfolio=True), _trial(2, 0.9, portfolio=True)]
    assert not stagnant(portfolio, "val_loss", 1, 0.01)  # nothing after the portfolio yet
    flat = [*portfolio, _trial(3, 0.85), _trial(4, None), _trial(5, 0.799)]  # worse, pruned, a gain under 1%
    assert stagnant(flat, "val_loss", 3, 0.01) and not stagnant(flat, "val_loss", 4, 0.01)
    assert not stagnant([*flat, _trial(6, 0.7)], "val_loss", 3, 0.01)  # a real gain starts the count again
    assert not stagnant(flat, "val_loss", 3, 0.0001)  # 0.8 -> 0.799 is progress at a smaller tolerance
    # accuracy is maximised: a higher value is progress
    acc = [_trial(0, 0.80, portfolio=True), _trial(1, 0.79), _trial(2, 0.95)]
    assert not stagnant(acc, "val_accuracy", 1, 0.01) and stagnant(acc[:2], "val_accuracy", 1, 0.01)
    waiting = [*flat, _trial(6, None, state=TrialState.WAITING)]  # the portfolio's entries still queued
    assert not stagnant(waiting, "val_loss", 1, 0.01)
    assert not stagnant([_trial(0, None), _trial(1, None)], "val_loss", 1, 0.01)  # none completed


def test_a_stagnant_search_stops_early_and_says_why(pbmc, tmp_path):
    cfg = {
        "trainer": {"max_epochs": 3, "patience": 3},
        "search": {"modes": ["linear", "mlp"], "cv_folds": 0, "pruner": "none", "stagnation": 2, "stagnation_tol": 0.5},
    }
    ag.tl.search(pbmc, "bulk_labels", n_trials=30, config=cfg, run_dir=tmp_path, use_raw=True, rng=0)
    board = pbmc.uns["ag"]["leaderboard"]
    ran = board[board["state"] != "waiting"]
    n_portfolio = len(named_portfolio(ag.config.validate(cfg), ["linear", "mlp"], pbmc.raw.n_vars, 560))
    assert len(ran) == n_portfolio + 2 < 30  # two trials without a 50% gain after the portfolio, then no more
    notes = list(pbmc.uns["ag"]["selection"]["notes"])
    assert notes and notes[0].startswith(f"trials stopped after {len(ran)}: 2 trials in a row did not improve")
