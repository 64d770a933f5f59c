"""Nothing lost, nothing written outside: saves under races, links and kills; study journals under torn writes."""

from __future__ import annotations

import errno
import json
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import anndata
import numpy as np
import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

import autogenome_sc as ag
from autogenome_sc.io import _atomic
from autogenome_sc.search import _journal, make_storage
from autogenome_sc.search._journal import open_journal

ROOT = Path(__file__).resolve().parents[1]


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# ---------------------------------------------------------------------------- saves
def test_overwrite_never_writes_through_links_in_the_folder(trained, tmp_path):
    _, model = trained
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "mine.json").write_text("precious")
    (outside / "mine.bin").write_bytes(b"precious")
    path = tmp_path / "m"
    path.mkdir()
    (path / "model.json").symlink_to(outside / "mine.json")
    (path / "weights.msgpack").symlink_to(outside / "mine.bin")
    with pytest.raises(FileExistsError, match="exists and is not empty; pass overwrite=True"):
        model.save(path)
    model.save(path, overwrite=True)
    assert (outside / "mine.json").read_text() == "precious" and (outside / "mine.bin").read_bytes() == b"precious"
    assert not (path / "model.json").is_symlink() and not (path / "weights.msgpack").is_symlink()
    assert ag.read_model(path).id_ == model.id_
    assert sorted(p.name for p in outside.iterdir()) == ["mine.bin", "mine.json"]
    assert _hidden(tmp_path) == []  # no temporary folder left behind


def test_a_saved_folder_gets_the_permissions_of_any_new_folder(trained, tmp_path):
    _, model = trained
    model.save(tmp_path / "m")
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "f").write_bytes(b"")
    mode = lambda p: p.stat().st_mode & 0o777  # noqa: E731
    assert mode(tmp_path / "m") == mode(tmp_path / "plain")
    assert mode(tmp_path / "m" / "model.json") == mode(tmp_path / "plain" / "f")


def test_a_dangling_link_never_creates_its_target(trained, tmp_path):
    _, model = trained
    path, target = tmp_path / "m", tmp_path / "elsewhere" / "created.json"
    path.mkdir()
    (path / "model.json").symlink_to(target)
    model.save(path, overwrite=True)
    assert not target.exists() and not target.parent.exists()
    assert ag.read_model(path).id_ == model.id_


def test_a_linked_folder_is_refused_and_left_alone(trained, tmp_path):
    _, model = trained
    real = tmp_path / "real"
    model.save(real)
    before = {p.name: p.read_bytes() for p in real.iterdir()}
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    for overwrite in (False, True):
        with pytest.raises(FileExistsError, match="'.*link' is a symbolic link; a model is saved into a folder"):
            model.save(link, overwrite=overwrite)
    assert {p.name: p.read_bytes() for p in real.iterdir()} == before


@pytest.mark.parametrize("path", ["", "  ", ".", "..", "models/.."])
def test_a_path_naming_no_folder_of_its_own_is_refused(trained, tmp_path, monkeypatch, path):
    _, model = trained
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    with pytest.raises(ValueError, match="The save path .*(is empty|names no folder of its own)"):
        model.save(path, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["models"]
    with pytest.raises(ValueError, match="Invalid config field 'save.path'"):
        ag.config.validate({"save": {"path": ""}})


def test_a_save_that_fails_midway_leaves_the_old_model_whole(trained, tmp_path, monkeypatch):
    _, model = trained
    path = tmp_path / "m"
    model.save(path)
    before = {p.name: p.read_bytes() for p in path.iterdir()}
    other = ag.read_model(path)
    other.scaler_scale_ = other.scaler_scale_ * 2
    written = []

    def fail_after_one(p, content):
        if written:
            raise OSError(28, "No space left on device")
        written.append(p)
        real_write(p, content)

    real_write = _atomic._write_new
    monkeypatch.setattr(_atomic, "_write_new", fail_after_one)
    with pytest.raises(OSError, match="No space left"):
        other.save(path, overwrite=True)
    assert {p.name: p.read_bytes() for p in path.iterdir()} == before
    assert _hidden(tmp_path) == []
    monkeypatch.setattr(_atomic, "_write_new", real_write)
    other.save(path, overwrite=True)  # asked, and complete: replaced
    assert ag.read_model(path).id_ == other.id_ != model.id_


def test_a_path_taken_while_writing_is_not_overwritten(trained, tmp_path, monkeypatch):
    """The create-once rule, in one process: another save takes the path between the checks and the rename."""
    _, model = trained
    path = tmp_path / "m"
    real_write = _atomic._write_new

    def another_save_meanwhile(p, content):
        if not path.exists():
            path.mkdir()
            (path / "model.json").write_text("the other save's")
        real_write(p, content)

    monkeypatch.setattr(_atomic, "_write_new", another_save_meanwhile)
    with pytest.raises(FileExistsError, match="was created by another save while this model was being written"):
        model.save(path)
    assert (path / "model.json").read_text() == "the other save's"
    assert _hidden(tmp_path) == []


def test_replacing_without_the_exchange_call_still_works(trained, tmp_path, monkeypatch):
    """Where the system cannot swap two folders in one step, the old model is moved aside, then removed."""
    _, model = trained
    path = tmp_path / "m"
    model.save(path)
    other = ag.read_model(path)
    other.scaler_scale_ = other.scaler_scale_ * 3
    monkeypatch.setattr(_atomic, "_exchange", lambda a, b: False)
    other.save(path, overwrite=True)
    assert ag.read_model(path).id_ == other.id_ and _hidden(tmp_path) == []


_KILLED_SAVE = """
import os, signal, sys
import autogenome_sc as ag
from autogenome_sc.io import _atomic
model = ag.read_model(sys.argv[1])
model.scaler_scale_ = model.scaler_scale_ * 2
real = _atomic._write_new
def write_then_die(path, content):
    real(path, content)
    os.kill(os.getpid(), signal.SIGKILL)  # killed after the first file of the new model
_atomic._write_new = write_then_die
model.save(sys.argv[1], overwrite=True)
"""


def test_a_killed_save_leaves_the_old_model_readable(trained, tmp_path):
    _, model = trained
    path = tmp_path / "m"
    model.save(path)
    before = {p.name: p.read_bytes() for p in path.iterdir()}
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", _KILLED_SAVE, str(path)], env=env, capture_output=True, timeout=300)
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    assert {p.name: p.read_bytes() for p in path.iterdir()} == before
    assert ag.read_model(path).id_ == model.id_
    # what the kill left: one hidden, incomplete folder beside the model, never inside it
    (left,) = _hidden(tmp_path)
    assert left.startswith(".m.saving-") and os.listdir(tmp_path / left) == ["weights.msgpack"]


def test_two_processes_saving_to_one_new_path_exactly_one_succeeds(trained, tmp_path):
    from _save_race import saver

    _, model = trained
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    targets = [str(tmp_path / f"race{i}") for i in range(6)]
    procs = [ctx.Process(target=saver, args=(str(model.path), f, barrier, targets, results)) for f in (2.0, 3.0)]
    for p in procs:
        p.start()
    try:
        got = [results.get(timeout=300) for _ in range(2 * len(targets))]
    finally:
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():  # pragma: no cover - only when the test already failed
                p.kill()
    assert [p.exitcode for p in procs] == [0, 0]
    for target in targets:
        outcomes = {what: (factor, detail) for factor, t, what, detail in got if t == target}
        assert sorted(outcomes) == ["refused", "saved"], outcomes
        assert re.search(
            r"(was created by another save while this model was being written|exists and is not empty)",
            outcomes["refused"][1],
        )
        winner = outcomes["saved"][1]
        assert json.loads((Path(target) / "model.json").read_text())["checksum"] == winner
        assert ag.read_model(target).id_ == winner
    assert _hidden(tmp_path) == []


# ---------------------------------------------------------------------------- study journals
def _journal_with_trials(path: Path, n: int = 3) -> optuna.Study:
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    study = optuna.create_study(study_name="s", storage=JournalStorage(JournalFileBackend(str(path))))
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=n)
    return study


def _plain_optuna(path: Path) -> optuna.Study:
    """The study as Optuna alone reads it (no repair)."""
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    return optuna.load_study(study_name="s", storage=JournalStorage(JournalFileBackend(str(path))))


def _load(path: Path) -> optuna.Study:
    return optuna.load_study(study_name="s", storage=open_journal(path))


@pytest.mark.parametrize("newline", [False, True])
def test_a_torn_last_line_is_dropped_with_a_copy_kept(tmp_path, newline):
    path = tmp_path / "s.journal.log"
    _journal_with_trials(path)
    whole = path.read_bytes()
    last = whole.splitlines(keepends=True)[-1]
    path.write_bytes(whole + last[: len(last) // 2] + (b"\n" if newline else b""))  # a write cut short
    torn = path.read_bytes()
    with pytest.warns(UserWarning, match=r"ended with a partial record \(\d+ bytes.*The original file is kept as"):
        study = _load(path)
    assert path.read_bytes() == whole
    (backup,) = tmp_path.glob("s.journal.log.torn-*")
    assert backup.read_bytes() == torn
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)  # and it goes on
    assert len(_plain_optuna(path).trials) == 4


def test_a_journal_damaged_by_an_append_onto_a_torn_line_is_restored(tmp_path):
    """What the previous version left: a record appended onto the partial one, readable by no one."""
    path = tmp_path / "s.journal.log"
    _journal_with_trials(path)
    lines = path.read_bytes().splitlines(keepends=True)
    damaged = [*lines[:-2], lines[-2][:40], *lines[-2:]]  # a record once cut short, then written again
    path.write_bytes(b"".join(damaged))
    with pytest.raises(ValueError):
        _plain_optuna(path)
    with pytest.warns(UserWarning, match=r"held partial records .*40 bytes.*kept"):
        study = _load(path)
    assert path.read_bytes() == b"".join(lines)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 3
    # a damaged line with no record to tell apart: refused in one sentence, the file left as it was
    bad = b"".join([*lines[:2], b"not a record\n", *lines[2:]])
    path.write_bytes(bad)
    with pytest.raises(ValueError, match=r"'.*s.journal.log' is damaged at line 3 \(not a record"):
        _load(path)
    assert path.read_bytes() == bad


def test_a_full_disk_leaves_no_partial_record(tmp_path, monkeypatch):
    path = tmp_path / "s.journal.log"
    _journal_with_trials(path, n=1)
    study = _load(path)
    before = path.read_bytes()

    def half_then_full(fd, data):
        os.write(fd, data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(_journal, "_write_all", half_then_full)
    with pytest.raises(
        OSError, match=r"Could not write to the study journal .*\(No space left on device\); the journal"
    ):
        study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    assert path.read_bytes() == before
    monkeypatch.undo()
    assert len(_load(path).trials) == 1  # readable, nothing to repair


def test_an_append_after_a_killed_writer_cuts_its_partial_record_first(tmp_path):
    path = tmp_path / "s.journal.log"
    _journal_with_trials(path, n=1)
    study = _load(path)
    whole = path.read_bytes()
    with open(path, "ab") as f:  # another worker killed in the middle of its write
        f.write(whole.splitlines()[-1][:25])
    with pytest.warns(UserWarning, match="found appending it, the partial record was dropped"):
        study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    assert path.read_bytes().startswith(whole)
    assert [t.state for t in _plain_optuna(path).trials] == [TrialState.COMPLETE] * 2


def test_a_search_continues_from_a_torn_journal(tmp_path):
    from _search_helpers import TINY
    from conftest import synthetic_counts

    adata = synthetic_counts(n_cells=300, n_genes=60, n_types=3)
    kw = {"config": TINY, "study_name": "torn", "run_dir": tmp_path}
    ag.tl.search(adata, "cell_type", n_trials=1, **kw)
    path = tmp_path / "torn.journal.log"
    last = path.read_bytes().splitlines(keepends=True)[-1]
    with open(path, "ab") as f:
        f.write(last[: len(last) // 2])
    with pytest.warns(UserWarning, match="ended with a partial record"):
        ag.tl.search(adata, "cell_type", n_trials=2, **kw)
    board = adata.uns["ag"]["leaderboard"]
    assert len(board) == 2 and set(board["state"]) <= {"complete", "pruned"}
    assert len(_plain_optuna_named(path, "torn").trials) == 2


def _plain_optuna_named(path: Path, name: str) -> optuna.Study:
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    return optuna.load_study(study_name=name, storage=JournalStorage(JournalFileBackend(str(path))))


@pytest.mark.parametrize(
    ("storage", "error", "match"),
    [
        ("bogus://x", ValueError, r"^storage 'bogus://x' is not a storage the search can open: give None .*sqlite"),
        ("results.db", ValueError, r"^storage 'results.db' is not a storage"),
        ("", ValueError, r"^storage '' is not a storage"),
        ("redis://u:secret@host/0", ValueError, r"^storage 'redis://\*\*\*@host/0' is not"),  # no password shown
        (5, TypeError, r"^storage must be None, a database URL or an Optuna storage object, not int\.$"),
    ],
)
def test_storage_is_checked_before_optuna_sees_it(tmp_path, storage, error, match):
    cfg = ag.config.validate(None)
    with pytest.raises(error, match=match):
        make_storage(storage, tmp_path, "s", cfg.search)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------- a real full disk
_FULL_DISK = """
import errno, json, os, sys
from pathlib import Path
import optuna
import autogenome_sc as ag
from autogenome_sc.search._driver import storage_failure
from autogenome_sc.search._journal import open_journal
disk, source = Path(sys.argv[1]), sys.argv[2]
model = ag.read_model(source)
model.save(disk / "m")
before = {p.name: p.read_bytes() for p in (disk / "m").iterdir()}
other = ag.read_model(source)
other.scaler_scale_ = other.scaler_scale_ * 2
study = optuna.create_study(study_name="s", storage=open_journal(disk / "s.journal.log"))
study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
journal = (disk / "s.journal.log").read_bytes()
fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)  # the disk filled up by something else
try:
    while True:
        os.write(fd, b"0" * 4096)
except OSError as e:
    assert e.errno == errno.ENOSPC
finally:
    os.close(fd)
out = {}
try:
    other.save(disk / "m", overwrite=True)
    out["save"] = "no error"
except OSError as e:
    out["save"] = f"{e.errno} {e}"
out["journal"] = "no error"
for _ in range(2000):  # appends fill the journal's last page, then one finds the disk full
    try:
        study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    except (OSError, AssertionError) as e:  # Optuna's assertion when a trial's end could not be written
        e = storage_failure(e) or e
        out["journal"] = f"{getattr(e, 'errno', None)} {e}"
        break
out["model_whole"] = {p.name: p.read_bytes() for p in (disk / "m").iterdir()} == before
text = (disk / "s.journal.log").read_bytes()
out["journal_whole"] = text.startswith(journal) and text.endswith(b"\\n") and all(
    json.loads(line) for line in text.splitlines()
)
out["hidden"] = sorted(p.name for p in disk.iterdir() if p.name.startswith("."))
os.remove(disk / "filler")
out["trials_after"] = len(optuna.load_study(study_name="s", storage=open_journal(disk / "s.journal.log")).trials)
out["trials_before"] = len(study.trials)
other.save(disk / "m", overwrite=True)
out["replaced"] = ag.read_model(disk / "m").id_ == other.id_
print("RESULT " + json.dumps(out))
"""


def test_a_full_tmpfs_leaves_the_model_and_the_journal_whole(trained, tmp_path):
    """A real full disk: a small tmpfs mounted in a user namespace (``unshare -rm``), where the system allows it."""
    _, model = trained
    disk = tmp_path / "disk"
    disk.mkdir()
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-rm", "true"], capture_output=True).returncode:
        pytest.skip("no user namespaces here to mount a small tmpfs in (test_a_save_that_fails_midway simulates one)")
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    script = f'mount -t tmpfs -o size=1m tmpfs "$1" && exec "{sys.executable}" -c "$2" "$1" "$3"'
    proc = subprocess.run(
        ["unshare", "-rm", "sh", "-c", script, "sh", str(disk), _FULL_DISK, str(model.path)],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.split("RESULT ", 1)[1])
    assert out["save"].startswith(f"{errno.ENOSPC} ") and out["journal"].startswith(f"{errno.ENOSPC} "), out
    assert out["model_whole"] and out["journal_whole"] and out["hidden"] == [], out
    assert out["trials_after"] == out["trials_before"] > 2 and out["replaced"], out


def test_a_full_disk_under_the_save_at_the_system_call_leaves_nothing(trained, tmp_path, monkeypatch):
    """ENOSPC simulated where the system reports it (os.write after some bytes), not in the package's own helper."""
    _, model = trained
    path = tmp_path / "m"
    model.save(path)
    before = {p.name: p.read_bytes() for p in path.iterdir()}
    other = ag.read_model(path)
    other.scaler_scale_ = other.scaler_scale_ * 2
    room = [sum(len(b) for b in before.values()) // 2]  # half a model's bytes left on the disk
    real_fdopen = os.fdopen

    class FillingFile:
        def __init__(self, f):
            self.f = f

        def write(self, data):
            n = self.f.write(bytes(data[: max(room[0], 0)]))
            room[0] -= n
            if n < len(data):
                raise OSError(errno.ENOSPC, "No space left on device")
            return n

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    monkeypatch.setattr(os, "fdopen", lambda *a, **kw: FillingFile(real_fdopen(*a, **kw)))
    with pytest.raises(OSError, match="No space left on device"):
        other.save(path, overwrite=True)
    monkeypatch.setattr(os, "fdopen", real_fdopen)
    assert room[0] <= 0  # the disk did fill up
    assert {p.name: p.read_bytes() for p in path.iterdir()} == before
    assert _hidden(tmp_path) == []


# ---------------------------------------------------------------------------- input checked before the work
def _labelled(values) -> anndata.AnnData:
    from conftest import synthetic_counts

    adata = synthetic_counts(n_cells=120, n_genes=30)
    adata.obs["y"] = values
    return adata


@pytest.mark.parametrize(
    ("values", "loss", "match"),
    [
        (np.where(np.arange(120) % 2, 1e38, 1.0), "auto", r"has 60 values that are infinite or beyond \+-1e\+15 "),
        (np.where(np.arange(120) % 2, -np.inf, 1.0), "auto", r"has 60 values that are infinite or beyond"),
        (np.where(np.arange(120) % 2, np.inf, 1.0), "cross_entropy", r"has 60 values that are infinite \(e\.g\. inf\)"),
        (np.array([1, "1", "b"] * 40, dtype=object), "auto", r"holds labels 1 and '1', which are the same as text"),
        (pd.Categorical([1, "1", "b"] * 40), "auto", r"holds labels 1 and '1', which are the same as text"),
    ],
)
def test_labels_are_refused_before_any_training(tmp_path, values, loss, match):
    adata = _labelled(values)
    with pytest.raises(ValueError, match=r"^adata.obs\['y'\] " + match):
        ag.tl.train(adata, "y", config={"loss": {"name": loss}})
    assert not (tmp_path / "models").exists()  # nothing trained, nothing saved
    assert "ag" not in adata.uns


def test_a_view_of_a_backed_anndata_is_loaded_for_a_copy_and_refused_otherwise(trained, tmp_path):
    adata, model = trained
    adata.write_h5ad(tmp_path / "b.h5ad")
    backed = anndata.read_h5ad(tmp_path / "b.h5ad", backed="r")
    view = backed[10:60]
    for call in (lambda: ag.tl.predict(view, model), lambda: ag.tl.train(view, "cell_type")):
        with pytest.raises(ValueError, match=r"^adata is a view|^query is a view"):
            call()
    with pytest.raises(ValueError, match=r"is backed by '.*b.h5ad' and copy=True would load all of it"):
        ag.tl.predict(backed, model, copy=True)
    assert not (tmp_path / "models").exists()
    out = ag.tl.predict(view, model, copy=True)
    assert not out.isbacked and out.n_obs == 50
    expected = model.predict(adata[10:60].copy())
    assert (out.obs["ag_prediction"].astype(str).to_numpy() == expected["prediction"].astype(str).to_numpy()).all()


@pytest.mark.parametrize("key", ["a/b", "", " ", "x\ny", 5])
def test_key_added_must_be_a_name_h5ad_can_store(trained, key):
    adata, model = trained
    with pytest.raises((ValueError, TypeError), match=r"^key_added must be"):
        ag.tl.predict(adata, model, key_added=key)
    with pytest.raises((ValueError, TypeError), match=r"^key_added must be"):
        ag.tl.train(adata, "cell_type", key_added=key)
    assert "ag_prediction" in adata.obs and not any(str(k).startswith(str(key)) for k in adata.uns if key)


def test_the_cli_refuses_a_bad_out_or_key_before_reading_or_writing(trained, tmp_path, capsys):
    from autogenome_sc.cli import main

    adata, model = trained
    data = tmp_path / "d.h5ad"
    adata.write_h5ad(data)
    (tmp_path / "folder").mkdir()
    base = ["predict", str(data), "--model", str(model.path)]
    assert main([*base, "--out", str(tmp_path / "folder")]) == 1
    assert "--out '" in capsys.readouterr().err
    assert main(["search", str(data), "--label-key", "cell_type", "--out", str(tmp_path / "folder")]) == 1
    assert "is a folder" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "o.h5ad"), "--key-added", "a/b"]) == 1
    assert "--key-added must be a non-empty name without '/'" in capsys.readouterr().err
    assert not (tmp_path / "o.h5ad").exists() and not (tmp_path / "ag_runs").exists()
    assert main([*base, "--out", str(tmp_path / "o.h5ad"), "--key-added", "a_b"]) == 0
    assert "a_b_prediction" in anndata.read_h5ad(tmp_path / "o.h5ad").obs


def test_steps_per_epoch_are_bounded():
    assert ag.config.validate({"trainer": {"min_steps_per_epoch": 10_000}}).trainer.min_steps_per_epoch == 10_000
    with pytest.raises(ValueError, match=r"'trainer.min_steps_per_epoch': Input should be less than or equal to 10000"):
        ag.config.validate({"trainer": {"min_steps_per_epoch": 10**9}})


# ---------------------------------------------------------------------------- continued studies, failing trials
def test_a_continued_study_with_other_modes_is_refused_before_any_trial(tmp_path):
    from _search_helpers import TINY
    from conftest import synthetic_counts

    adata = synthetic_counts(n_cells=150, n_genes=40)
    storage = open_journal(tmp_path / "s.journal.log")
    study = optuna.create_study(study_name="s", storage=storage)
    study.enqueue_trial({"mode": "mlp"})
    study.optimize(lambda t: t.suggest_categorical("mode", ["mlp", "resnet"]) and 1.0, n_trials=1)
    journal = (tmp_path / "s.journal.log").read_bytes()
    with pytest.raises(
        ValueError,
        match=r"^Study 's' drew 'mode' from \['mlp', 'resnet'\], this search from \['mlp'\]; continue it with the same",
    ):
        ag.tl.search(adata, "cell_type", modes=["mlp"], n_trials=3, config=TINY, study_name="s", run_dir=tmp_path)
    after = (tmp_path / "s.journal.log").read_bytes()
    assert after.startswith(journal) and b'"state": 1' not in after[len(journal) :]  # no trial was started
    assert len(_plain_optuna(tmp_path / "s.journal.log").trials) == 1


def test_trials_failing_in_a_row_stop_the_search_with_the_first_reason(tmp_path, monkeypatch):
    from _search_helpers import TINY
    from conftest import synthetic_counts

    from autogenome_sc.search._driver import MAX_FAILED_IN_ROW, Searcher

    calls = []

    def broken(self, tc, report, desc, *a, **kw):
        calls.append(desc)
        raise RuntimeError(f"broken number {len(calls)}")

    monkeypatch.setattr(Searcher, "train", broken)
    adata = synthetic_counts(n_cells=150, n_genes=40)
    with pytest.raises(RuntimeError, match=rf"stopped: {MAX_FAILED_IN_ROW} trials in a row failed, the first with "
                       r"trial 0 \(.*\): RuntimeError: broken number 1\.$"):  # fmt: skip
        ag.tl.search(adata, "cell_type", timeout=600, config=TINY, study_name="f", run_dir=tmp_path)
    assert len(calls) == MAX_FAILED_IN_ROW


def test_automatic_study_names_are_unique_within_a_process():
    from autogenome_sc.search._run import auto_study_name

    names = [auto_study_name("cell type/fine") for _ in range(5)] + [auto_study_name(None)]
    assert len(set(names)) == 6
    assert all(re.fullmatch(r"[A-Za-z0-9_.-]+", n) for n in names) and names[0].startswith("cell_type_fine_")
