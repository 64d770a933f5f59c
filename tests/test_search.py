import inspect
import json
import os
import subprocess
import sys
import time

import anndata
import matplotlib
import matplotlib.pyplot
import numpy as np
import optuna
import pandas as pd
import pytest
from _search_helpers import TINY, cli, wait_for_running_trial
from optuna.trial import TrialState

import autogenome_sc as ag
from autogenome_sc.search import leaderboard, recover_stale_trials
from autogenome_sc.search._record import PORTFOLIO_ATTR
from autogenome_sc.search._study import HEARTBEAT_ATTR, WORKER_ATTR

matplotlib.use("Agg")


def _cfg(**search):
    cfg = json.loads(json.dumps(TINY))
    cfg["search"].update(search)
    return cfg


def test_search_writes_results_resumes_and_round_trips(pbmc, tmp_path):
    run_dir = tmp_path / "runs"
    cfg = _cfg(ensemble=2)
    ag.tl.search(pbmc, "bulk_labels", n_trials=3, config=cfg, study_name="s", run_dir=run_dir, use_raw=True, rng=0)
    uns = pbmc.uns["ag"]
    board, best = uns["leaderboard"], uns["best"]
    assert (run_dir / "s.journal.log").is_file()
    assert list(board["trial"]) == [0, 1, 2]
    assert set(board["mode"]) <= {"mlp", "resnet"} and set(board["state"]) <= {"complete", "pruned"}
    done = board[board["state"] == "complete"]
    # chosen on held-out predictions (here the validation split), never on the test split
    sel = uns["selection"]
    assert sel["method"] == "validation" and sel["n_cells"] == (pbmc.obs["ag_split"] == "val").sum()
    table = sel["table"]
    assert list(table["trial"]) == list(done.sort_values(["value", "trial"])["trial"][:2])  # the 2 best
    chosen = table[table["weight"] > 0]
    assert (
        list(best["ensemble"]) == list(chosen["trial"])
        and best["trial"] == chosen.loc[chosen["weight"].idxmax(), "trial"]
    )
    if sel["chosen"] == "single":
        assert best["trial"] == int(done.loc[done["value"].idxmin(), "trial"])
        assert best["value"] == pytest.approx(done["value"].min())
    # evaluated once on the test split, written like ag.tl.train
    assert 0 < uns["metrics"]["accuracy"] <= 1 and uns["metrics"]["n_test"] == (pbmc.obs["ag_split"] == "test").sum()
    assert set(pbmc.obs["ag_prediction"].cat.categories) == set(pbmc.obs["bulk_labels"].cat.categories)
    model = ag.read_model(uns["model_path"])
    if sel["chosen"] == "ensemble":
        assert model.architecture["model"] == "ensemble" and len(model.architecture["members"]) == 2
    else:
        assert model.architecture["model"] == best["mode"]
    pred = model.predict(pbmc, use_raw=True)["prediction"]
    assert (pred.astype(str).to_numpy() == pbmc.obs["ag_prediction"].astype(str).to_numpy()).all()
    # h5ad round trip of leaderboard and best
    path = tmp_path / "a.h5ad"
    pbmc.write_h5ad(path)
    back = anndata.read_h5ad(path).uns["ag"]
    pd.testing.assert_frame_equal(back["leaderboard"].reset_index(drop=True), board, check_dtype=False)
    assert back["best"]["params"] == dict(best["params"])
    # the plot reads the leaderboard only
    ax = ag.pl.search_history(pbmc, show=False)
    labels = {t.get_text() for t in ax.get_legend().get_texts()}
    assert labels & {"mlp", "resnet"} and "best so far" in labels
    fig, given = matplotlib.pyplot.subplots()
    assert ag.pl.search_history(pbmc, ax=given, show=False) is given
    matplotlib.pyplot.close("all")

    # resume: the 3 trials count toward n_trials=4, so exactly 1 more runs
    cfg1 = _cfg()
    kw = {"config": cfg1, "study_name": "s", "run_dir": run_dir, "use_raw": True}
    ag.tl.search(pbmc, "bulk_labels", n_trials=4, rng=0, **kw)
    board2 = pbmc.uns["ag"]["leaderboard"]
    assert list(board2["trial"]) == [0, 1, 2, 3]
    chosen_by = [c for c in board.columns if c.startswith(("heldout_", "cv_"))]  # this run's selection
    kept = board2.iloc[:3][board.columns].drop(columns=["seconds", *chosen_by])
    pd.testing.assert_frame_equal(kept, board.drop(columns=["seconds", *chosen_by]), check_dtype=False)
    # a resumed run must not repeat the earlier draws of the sampler
    hp = [
        c
        for c in board2.columns
        if c not in ("trial", "state", "value", "val_loss", "val_accuracy", "seconds", "worker", "best_epoch", "epochs")
        and c not in chosen_by
    ]
    assert tuple(board2.loc[3, hp].astype(str)) not in {tuple(r) for r in board2.loc[:2, hp].astype(str).to_numpy()}
    emb = pbmc.obsm["X_ag"].copy()
    # nothing left to run: the winner (not in this process's memory) is retrained from its
    # parameters with the same rng and gives the same model
    ag.tl.search(pbmc, "bulk_labels", n_trials=4, rng=0, **kw)
    assert len(pbmc.uns["ag"]["leaderboard"]) == 4
    np.testing.assert_allclose(pbmc.obsm["X_ag"], emb, rtol=1e-4, atol=1e-5)
    # same study, other data (another split): refused
    with pytest.raises(ValueError, match="different data"):
        ag.tl.search(pbmc, "bulk_labels", n_trials=6, rng=1, **kw)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"label_key": None, "modes": ["resnet"]}, "needs a label_key"),
        ({"modes": ["resvae"]}, "unsupervised"),
        ({"eval_key": "bulk_labels"}, "eval_key and reconstruct are for unsupervised search"),
        ({"label_key": None, "eval_key": "nope"}, "eval_key 'nope' is not a column"),
        ({"label_key": None, "config": {"search": {"metric": "val_accuracy"}}}, "judged by the validation ELBO"),
        ({"modes": ["transformer"]}, "Unknown search mode 'transformer'"),
        ({"modes": []}, "modes is empty"),
        ({"n_trials": 0}, "n_trials must be a positive integer"),
        ({"timeout": -1}, "timeout must be a positive"),
        ({"storage": "not-a-url"}, "storage 'not-a-url' is not a storage the search can open: give None"),
        ({"storage": "bogus://x"}, r"storage 'bogus://x' is not a storage .* \(postgresql://user:pw@host/db, mysql"),
        ({"config": {"search": {"spaces": {"mlp_widths": []}}}}, "search.spaces.mlp_widths"),
        ({"config": {"search": {"spaces": {"learning_rate": [0, 1e-3]}}}}, "search.spaces.learning_rate"),
        ({"label_key": "no_such_column"}, "no_such_column"),
    ],
)
def test_search_bad_input(pbmc, tmp_path, kwargs, match):
    kwargs = {"label_key": "bulk_labels", "run_dir": tmp_path, **kwargs}
    label = kwargs.pop("label_key")
    with pytest.raises((ValueError, KeyError), match=match):
        ag.tl.search(pbmc, label, **kwargs)


def test_search_history_needs_a_search(pbmc):
    with pytest.raises(KeyError, match="Run `ag.tl.search` first"):
        ag.pl.search_history(pbmc)


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_journal_stale_trials_failed_and_retried(tmp_path):
    """A RUNNING trial whose worker process is gone is failed and retried; live or fresh ones are left."""
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    cfg = ag.config.validate({"search": {"grace_period": 30}})
    storage = JournalStorage(JournalFileBackend(str(tmp_path / "j.log")))
    study = optuna.create_study(study_name="j", storage=storage)
    dead, alive, remote = (study.ask({"x": optuna.distributions.FloatDistribution(0, 1)}) for _ in range(3))
    host = os.uname().nodename
    storage.set_trial_system_attr(dead._trial_id, WORKER_ATTR, {"host": host, "pid": _dead_pid()})
    storage.set_trial_system_attr(alive._trial_id, WORKER_ATTR, {"host": host, "pid": os.getppid()})
    storage.set_trial_system_attr(remote._trial_id, WORKER_ATTR, {"host": "elsewhere", "pid": 1})
    storage.set_trial_system_attr(remote._trial_id, HEARTBEAT_ATTR, time.time() - 31)  # silent for too long
    storage.set_trial_user_attr(dead._trial_id, PORTFOLIO_ATTR, True)  # a portfolio trial stays one when retried
    failed = recover_stale_trials(study, cfg.search)
    assert sorted(failed) == sorted([dead.number, remote.number])
    states = {t.number: t.state for t in study.get_trials()}
    assert states[alive.number] == TrialState.RUNNING
    retries = study.get_trials(states=(TrialState.WAITING,))
    assert sorted(t.system_attrs["failed_trial"] for t in retries) == sorted(failed)
    assert all(WORKER_ATTR not in t.system_attrs for t in retries)
    assert {t.params["x"] for t in retries} == {dead.params["x"], remote.params["x"]}
    marked = {t.system_attrs["failed_trial"]: t.user_attrs.get(PORTFOLIO_ATTR, False) for t in retries}
    assert marked == {dead.number: True, remote.number: False}
    assert recover_stale_trials(study, cfg.search) == []  # idempotent


def test_killed_embedded_run_resumes_and_retries(pbmc, tmp_path):
    """Kill a process mid-trial (journal file, no database); running the study again retries that trial."""
    data = tmp_path / "pbmc.h5ad"
    pbmc.write_h5ad(data)
    slow = _cfg()
    slow["trainer"] = {"max_epochs": 400, "patience": 400}
    slow_path = tmp_path / "slow.json"
    slow_path.write_text(json.dumps(slow))
    run_dir = tmp_path / "runs"
    proc = cli(
        "worker", "--data", data, "--label-key", "bulk_labels", "--use-raw", "--study", "k", "--run-dir", run_dir,
        "--n-trials", "1", "--config", slow_path, cwd=tmp_path, wait=False, log=tmp_path / "victim.log",
    )  # fmt: skip
    try:
        running = wait_for_running_trial(
            lambda: _journal_study(run_dir / "k.journal.log", "k"), proc, tmp_path / "victim.log"
        )
    finally:
        proc.kill()
        proc.wait()
    ag.tl.search(pbmc, "bulk_labels", n_trials=1, config=_cfg(), study_name="k", run_dir=run_dir, use_raw=True)
    board = pbmc.uns["ag"]["leaderboard"]
    failed = board[board["state"] == "fail"]
    assert list(failed["trial"]) == [running]
    retry = board[board["retry_of"] == running]
    assert len(retry) == 1 and retry["state"].iloc[0] in ("complete", "pruned")
    assert ((board["state"] == "complete") | (board["state"] == "pruned")).sum() == 1
    assert pbmc.uns["ag"]["best"]["trial"] == retry["trial"].iloc[0]
    assert leaderboard(_journal_study(run_dir / "k.journal.log", "k")).shape[0] == len(board)


def _journal_study(path, name):
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    if not path.exists():
        return None
    return optuna.load_study(study_name=name, storage=JournalStorage(JournalFileBackend(str(path))))


def test_search_signature_follows_scanpy():
    sig = inspect.signature(ag.tl.search)
    params = list(sig.parameters.values())
    assert [p.name for p in params[:2]] == ["adata", "label_key"] and params[1].default is None
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params[2:])
    defaults = {p.name: p.default for p in params[2:]}
    assert defaults["copy"] is False and defaults["rng"] == 0 and defaults["key_added"] == "ag"
    assert {"modes", "n_trials", "timeout", "storage", "study_name", "run_dir", "config"} <= set(defaults)
    assert "Returns" in ag.tl.search.__doc__ and "leaderboard" in ag.tl.search.__doc__
