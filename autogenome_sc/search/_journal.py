"""The study's journal file, kept readable through a full disk and a killed process.

Optuna's journal is one JSON record per line, appended. A write cut short (no space left,
a process killed mid-write) leaves a partial last line; Optuna skips it when reading, but
the next append lands on the same line, and from then on every read of the study fails.
Two guards keep that from happening:

- :class:`Journal` appends under Optuna's own lock file (so plain Optuna processes sharing
  the file stay in step) and, when a write fails, cuts the file back to where it was: a
  full disk leaves no partial record. A partial line found before an append (a writer
  killed mid-write) is cut off first.
- :func:`repair` runs when the journal is opened: a last line that is not a whole record
  is cut off, with a warning that says so, after the original file is copied beside it
  (``<journal>.torn-<time>``). A damaged line inside the file (a record written onto a
  partial one by an earlier version) is restored to the record when the partial piece can
  be told apart, else the study is refused in one sentence.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock, JournalStorage

from .._logging import warn

_BLOCK = 1 << 16
#: How every record of Optuna's journal starts (``json.dumps`` of a dict whose first key is the operation).
_RECORD_START = b'{"op_code":'


class Journal(JournalFileBackend):
    """Optuna's journal file backend whose appends leave a whole record or nothing (see the module docstring)."""

    def __init__(self, path: str | Path) -> None:
        self._path = str(path)
        self._append_lock = JournalFileSymlinkLock(self._path)  # Optuna's default: the same lock file
        super().__init__(self._path, lock_obj=self._append_lock)

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        """Append ``logs``, one line each; on failure the file is cut back to its length before the write."""
        data = ("\n".join(json.dumps(log, separators=(",", ":")) for log in logs) + "\n").encode()
        with _locked(self._append_lock):
            fd = os.open(self._path, os.O_RDWR | os.O_APPEND)
            try:
                size = os.fstat(fd).st_size
                if size and _byte_at(fd, size - 1) != b"\n":  # a writer killed mid-write: cut its partial record
                    _cut_torn_tail(Path(self._path), before="appending")
                    size = os.fstat(fd).st_size
                try:
                    _write_all(fd, data)
                    os.fsync(fd)
                except OSError as e:
                    os.ftruncate(fd, size)  # no partial record; cutting frees space, so it works on a full disk
                    raise OSError(
                        e.errno,
                        f"Could not write to the study journal '{self._path}' ({e.strerror}); the journal was left "
                        "as it was before this write. Free some space and run the search again to continue",
                    ) from None
            finally:
                os.close(fd)


def open_journal(path: str | Path) -> JournalStorage:
    """Optuna's ``JournalStorage`` on the file ``path``, repaired first where a write was cut short."""
    path = Path(path)
    if path.exists():
        lock = JournalFileSymlinkLock(str(path))
        with _locked(lock):
            repair(path)
    try:
        return JournalStorage(Journal(path))
    except ValueError as e:  # a damaged line inside the file (json.JSONDecodeError is a ValueError)
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    with _locked(JournalFileSymlinkLock(str(path))):
        if not repair(path, whole=True):
            raise ValueError(
                f"The study journal '{path}' cannot be read ({first}) and holds no damaged line that could be "
                "repaired; move it aside to start the study afresh, or use another study_name."
            )
    return JournalStorage(Journal(path))


def repair(path: Path, *, whole: bool = False) -> bool:
    """Cut a partial last record off ``path`` (``whole``: also restore damaged lines inside); whether it changed.

    Call with the journal's lock held. The original file is copied to ``<path>.torn-<time>``
    first; a warning says what was dropped and where the copy is.
    """
    if whole:
        return _repair_inside(path)
    return _cut_torn_tail(path, before="opening")


def _cut_torn_tail(path: Path, *, before: str) -> bool:
    """Cut the end of ``path`` back to its last whole, readable record."""
    size = path.stat().st_size
    if size == 0:
        return False
    with open(path, "rb") as f:
        end = _after_last_newline(f, size)
        cut = end
        if end == size:  # terminated: is the last line a record? (an unterminated one never is: Optuna ends each)
            start = _after_last_newline(f, size - 1)
            f.seek(start)
            if not _is_record(f.read(size - start)):
                cut = start
    if cut == size:
        return False
    backup = _backup(path)
    with open(path, "r+b") as f:
        f.truncate(cut)
        f.flush()
        os.fsync(f.fileno())
    warn(
        f"The study journal '{path}' ended with a partial record ({size - cut} bytes: its last write was cut short, "
        f"by a full disk or a killed process); found {before} it, the partial record was dropped and the study "
        f"continues from the records before it. The original file is kept as '{backup}'."
    )
    return True


def _repair_inside(path: Path) -> bool:
    """Restore lines that hold a partial record followed by a whole one (appended onto it); whether any was."""
    lines = path.read_bytes().splitlines(keepends=True)
    fixed, dropped = [], 0
    for i, line in enumerate(lines):
        body = line.rstrip(b"\r\n")
        if _is_record(body):
            fixed.append(line)
            continue
        if i == len(lines) - 1:  # a partial last line: dropped
            dropped += len(line)
            continue
        record = _record_after_partial(body)
        if record is None:
            raise ValueError(
                f"The study journal '{path}' is damaged at line {i + 1} (not a record, and no record can be told "
                "apart in it); move it aside to start the study afresh, or use another study_name."
            )
        dropped += len(body) - len(record)
        fixed.append(record + b"\n")
    if not dropped:
        return False
    backup = _backup(path)
    tmp = path.with_name(path.name + ".repairing")
    with open(tmp, "wb") as f:
        f.writelines(fixed)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    warn(
        f"The study journal '{path}' held partial records (writes cut short by a full disk or a killed process, "
        f"{dropped} bytes); they were dropped and the records written after them kept. The original file is kept "
        f"as '{backup}'."
    )
    return True


def _record_after_partial(body: bytes) -> bytes | None:
    """The whole record at the end of ``body``, a partial record with a whole one appended onto it; else None."""
    start = body.find(_RECORD_START, 1)
    while start != -1:
        if _is_record(body[start:]):
            return body[start:]
        start = body.find(_RECORD_START, start + 1)
    return None


def _is_record(line: bytes) -> bool:
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):
        return False
    return isinstance(record, dict) and "op_code" in record


def _after_last_newline(f, end: int) -> int:
    """Offset just after the last newline in the first ``end`` bytes of ``f`` (0 if none)."""
    pos = end
    while pos > 0:
        start = max(0, pos - _BLOCK)
        f.seek(start)
        block = f.read(pos - start)
        i = block.rfind(b"\n")
        if i != -1:
            return start + i + 1
        pos = start
    return 0


def _backup(path: Path) -> Path:
    """Copy ``path`` to ``<path>.torn-<time>`` (a name not taken); refuse in one sentence where there is no room."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    backup, i = path.with_name(f"{path.name}.torn-{stamp}"), 1
    while backup.exists():
        backup, i = path.with_name(f"{path.name}.torn-{stamp}-{i}"), i + 1
    try:
        shutil.copyfile(path, backup)
    except OSError as e:
        backup.unlink(missing_ok=True)
        raise OSError(
            e.errno,
            f"The study journal '{path}' needs repair (a write was cut short) but a copy of it could not be kept "
            f"first ({e.strerror}); free some space and run again",
        ) from None
    return backup


def _byte_at(fd: int, offset: int) -> bytes:
    os.lseek(fd, offset, os.SEEK_SET)  # writes still go to the end (O_APPEND)
    return os.read(fd, 1)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


@contextmanager
def _locked(lock: JournalFileSymlinkLock) -> Iterator[None]:
    lock.acquire()
    try:
        yield
    finally:
        lock.release()
