"""``register_mode`` adds a searchable mode end to end: argument, config, CLI-free search, saved model."""

import json

import pytest
from _search_helpers import TINY

import autogenome_sc as ag
from autogenome_sc import _names
from autogenome_sc.search import MODES, Mode, register_mode


def _toy_suggest(trial, spaces, models):
    """A thin MLP whose depth is this mode's own search dimension."""
    depth = trial.suggest_int("toy_depth", 1, 2)
    return {"model": "mlp", "widths": [8] * depth, "input_keep": 1.0, "dropout": 0.0, "activation": "tanh"}


@pytest.fixture
def toy_mode():
    mode = register_mode(Mode("toy", supervised=True, suggest=_toy_suggest))
    yield mode
    del MODES["toy"]  # the one registry: _names.MODES is the same dict


def test_a_registered_mode_is_searched_saved_and_loaded(toy_mode, pbmc, tmp_path):
    assert "toy" in _names.mode_names() and ag.config.validate({"search": {"modes": ["toy"]}}).search.modes == ["toy"]
    cfg = json.loads(json.dumps(TINY))
    cfg["search"]["modes"] = ["toy"]  # through the config, as an expert would
    ag.tl.search(pbmc, "bulk_labels", n_trials=3, config=cfg, run_dir=tmp_path, use_raw=True, rng=0)
    board = pbmc.uns["ag"]["leaderboard"]
    assert set(board["mode"]) == {"toy"} and set(board["toy_depth"]) <= {1, 2}
    assert set(board["state"]) == {"complete"}
    model = ag.read_model(pbmc.uns["ag"]["model_path"])
    members = model.architecture.get("members", [model.architecture])
    assert all(m["activation"] == "tanh" and m["widths"][0] == 8 for m in members)
    pred = model.predict(pbmc, use_raw=True)["prediction"].astype(str)
    assert (pred.to_numpy() == pbmc.obs["ag_prediction"].astype(str).to_numpy()).all()
    assert pbmc.uns["ag"]["metrics"]["accuracy"] > 0.3  # chance is about 0.1


def test_an_unregistered_mode_is_refused_in_one_sentence(pbmc):
    with pytest.raises(ValueError, match=r"unknown search mode 'toy'; choose from linear, logistic, svm, trees, mlp"):
        ag.config.validate({"search": {"modes": ["toy"]}})
    with pytest.raises(ValueError, match="Unknown search mode 'toy'"):
        ag.tl.search(pbmc, "bulk_labels", modes=["toy"], n_trials=1)
    with pytest.raises(ValueError, match="plain word"):
        register_mode(Mode("../x", supervised=True, suggest=_toy_suggest))
