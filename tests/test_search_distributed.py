"""A study shared by worker processes through a real PostgreSQL server on loopback."""

import json
import shutil
import subprocess
import time
import uuid

import optuna
import pytest
from _search_helpers import TINY, cli, wait_for_running_trial
from optuna.trial import TrialState

URL_BASE = "postgresql://ag:ag@127.0.0.1:5432"

pytestmark = pytest.mark.postgres


def _sh(cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="session")
def postgres_url():
    """Start Debian's PostgreSQL cluster (installed by .ci/run), create user ag and a fresh database."""
    if shutil.which("pg_ctlcluster") is None or shutil.which("pg_lsclusters") is None:
        pytest.skip("PostgreSQL is not installed (apt-get install -y postgresql); the shared-study tests need it")
    clusters = [line.split() for line in _sh("pg_lsclusters --no-header").stdout.splitlines() if line.strip()]
    if not clusters:
        pytest.skip("PostgreSQL is installed but has no cluster (pg_createcluster 15 main)")
    version, name, status = clusters[0][0], clusters[0][1], clusters[0][3]
    started = False
    if status != "online":
        r = _sh(f"pg_ctlcluster {version} {name} start")
        assert r.returncode == 0, f"could not start PostgreSQL: {r.stderr}"
        started = True
    for _ in range(50):
        if _sh("su postgres -c \"psql -tAc 'select 1'\"").stdout.strip() == "1":
            break
        time.sleep(0.2)
    _sh('su postgres -c "psql -c \\"create user ag with password \'ag\' superuser;\\""')  # may exist already
    db = f"agtest_{uuid.uuid4().hex[:8]}"
    r = _sh(f'su postgres -c "createdb -O ag {db}"')
    assert r.returncode == 0, f"could not create the test database: {r.stderr}"
    yield f"{URL_BASE}/{db}"
    _sh(f'su postgres -c "dropdb --if-exists {db}"')
    if started:
        _sh(f"pg_ctlcluster {version} {name} stop")


@pytest.fixture
def data_and_config(tmp_path, _pbmc):
    data = tmp_path / "pbmc.h5ad"
    _pbmc.write_h5ad(data)
    cfg = json.loads(json.dumps(TINY))
    cfg["search"].update(heartbeat_interval=1, grace_period=3)
    path = tmp_path / "cfg.json"
    path.write_text(json.dumps(cfg))
    return data, path, cfg


def _load(url, name):
    return optuna.load_study(study_name=name, storage=url)


def test_two_workers_share_a_study(postgres_url, data_and_config, tmp_path):
    data, cfg_path, _ = data_and_config
    args = ("--data", data, "--label-key", "bulk_labels", "--use-raw", "--storage", postgres_url, "--study", "two")
    args += ("--n-trials", "4", "--config", cfg_path)
    procs = [cli("worker", *args, "--worker-index", i, cwd=tmp_path, wait=False) for i in (1, 2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, err[-2000:]
    trials = _load(postgres_url, "two").get_trials()
    counted = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(counted) == 4  # exactly the requested trials, none lost
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers))  # none duplicated
    # any extra trial is one a worker drew after the budget was met, marked and not run
    assert all(t.user_attrs.get("ag_surplus") for t in trials if t not in counted)
    assert all("val_loss" in t.user_attrs for t in counted if t.state == TrialState.COMPLETE)
    workers = {t.user_attrs["worker"] for t in counted}
    assert len(workers) == 2  # both processes contributed


def test_killed_worker_trial_is_retried(postgres_url, data_and_config, tmp_path):
    data, cfg_path, cfg = data_and_config
    slow = json.loads(json.dumps(cfg))
    slow["trainer"] = {"max_epochs": 400, "patience": 400}
    slow_path = tmp_path / "slow.json"
    slow_path.write_text(json.dumps(slow))
    common = ("--data", data, "--label-key", "bulk_labels", "--use-raw", "--storage", postgres_url, "--study", "kill")
    log = tmp_path / "victim.log"
    victim = cli("worker", *common, "--n-trials", "1", "--config", slow_path, cwd=tmp_path, wait=False, log=log)
    try:
        killed = wait_for_running_trial(lambda: _load(postgres_url, "kill"), victim, log)
    finally:
        victim.kill()
        victim.wait()
    time.sleep(3.5)  # no heartbeat for longer than the grace period
    r = cli("worker", *common, "--n-trials", "1", "--config", cfg_path, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    trials = {t.number: t for t in _load(postgres_url, "kill").get_trials()}
    assert trials[killed].state == TrialState.FAIL
    retries = [t for t in trials.values() if t.system_attrs.get("failed_trial") == killed]
    assert len(retries) == 1 and retries[0].state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert retries[0].params == trials[killed].params
    assert sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials.values()) == 1
