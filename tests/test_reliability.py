"""Nothing lost, nothing written outside: saves under races, links and kills; study journals under torn writes."""

from __future__ import annotations

import errno
import json
import multiprocessing
import os
import re
import subprocess
import sys
from pathlib import Path

import optuna
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
