"""Nothing lost, nothing written outside: saves under races, links and kills; study journals under torn writes."""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import autogenome_sc as ag
from autogenome_sc.io import _atomic

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
