"""Writing a folder of files all at once: complete in a temporary folder beside it, then renamed into place.

A reader never sees a half-written model, a killed save never damages the folder it was to
replace, and nothing is written through a symbolic link:

- the files are created (``O_EXCL``) inside a fresh temporary folder of a random name next
  to the target, so no link can be in their way;
- a new target is created by renaming the finished folder onto its path. POSIX ``rename``
  of a folder succeeds onto a missing path or an empty folder and fails onto a folder that
  holds anything, so of two processes saving to one new path exactly one succeeds (the
  other is told so, and its temporary folder removed);
- an existing target (only with ``overwrite``) is swapped with the finished folder in one
  step where the system offers it (Linux ``renameat2(RENAME_EXCHANGE)``), else moved aside
  and replaced by two renames; the old folder is deleted only after the new one is in place,
  and deleting it removes links, never what they point to.

A save killed midway leaves at most a hidden ``.<name>.saving-*`` folder beside the target.
"""

from __future__ import annotations

import ctypes
import errno
import os
import shutil
import sys
import uuid
from collections.abc import Mapping
from pathlib import Path

#: ``rename`` of a folder onto a folder that holds something.
_NOT_EMPTY = (errno.ENOTEMPTY, errno.EEXIST)


def check_target(path: str | Path) -> Path:
    """``path`` as a folder a save may create: not empty, naming a folder of its own, not a link or a file."""
    if isinstance(path, str) and not path.strip():
        raise ValueError("The save path is empty; give the model a folder of its own, e.g. 'models/pbmc'.")
    path = Path(path)
    if path.name in ("", ".", ".."):
        raise ValueError(
            f"The save path '{path}' names no folder of its own (it would save into an existing folder); "
            "give the model a new folder, e.g. 'models/pbmc'."
        )
    if path.is_symlink():
        raise FileExistsError(
            f"'{path}' is a symbolic link; a model is saved into a folder of its own, never through a link."
        )
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"'{path}' is a file; a model is saved as a folder.")
    return path


def check_replaceable(path: Path, names: set[str], overwrite: bool) -> None:
    """Refuse, in one sentence, to replace a folder that holds anything unless asked, or files other than ``names``."""
    if not path.is_dir() or path.is_symlink():
        return
    held = sorted(p.name for p in path.iterdir())
    if not held:
        return
    if not overwrite:
        raise FileExistsError(
            f"'{path}' exists and is not empty; pass overwrite=True (in a config: save.overwrite) to replace "
            "the model in it, or save elsewhere."
        )
    # a model file may be a link (it is removed, never followed); a folder under a model file's name is not a model's
    others = [n for n in held if n not in names or not ((path / n).is_file() or (path / n).is_symlink())]
    if others:
        raise FileExistsError(
            f"'{path}' holds other files than a model ({', '.join(others[:3])}); overwrite only replaces a "
            "model folder. Save elsewhere."
        )


def write_folder(path: Path, files: Mapping[str, bytes], *, overwrite: bool) -> None:
    """Write ``files`` (name -> content) as the folder ``path``, all at once (see the module docstring)."""
    path = check_target(path)
    check_replaceable(path, set(files), overwrite)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.saving-{uuid.uuid4().hex[:12]}"
    os.mkdir(tmp)  # a fresh name (a clash raises); permissions as any new folder's (tempfile's would be 0o700)
    try:
        for name, content in files.items():
            _write_new(tmp / name, content)
        _fsync(tmp)
        _publish(tmp, path, set(files), overwrite)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync(path.parent)


def _publish(tmp: Path, path: Path, names: set[str], overwrite: bool) -> None:
    """Rename the finished folder ``tmp`` onto ``path``: create it once, or (``overwrite``) replace it."""
    try:
        os.rename(tmp, path)  # onto a missing path or an empty folder; never onto one that holds files
        return
    except OSError as e:
        if e.errno == errno.ENOTDIR:
            raise FileExistsError(
                f"'{path}' became a file or a link while the model was being written; the model was not saved."
            ) from None
        if e.errno not in _NOT_EMPTY:
            raise
    if not overwrite:
        raise FileExistsError(
            f"'{path}' was created by another save while this model was being written; this model was not "
            "saved there (save elsewhere, or pass overwrite=True to replace the other)."
        )
    check_replaceable(path, names, overwrite)
    if _exchange(tmp, path):  # tmp now holds the old model
        shutil.rmtree(tmp)
        return
    old = path.parent / f".{path.name}.replaced-{uuid.uuid4().hex[:12]}"
    os.rename(path, old)
    try:
        os.rename(tmp, path)
    except BaseException:
        os.rename(old, path)  # put the old model back
        raise
    shutil.rmtree(old)


def _write_new(path: Path, content: bytes) -> None:
    """Create ``path`` (it must not exist: no link is followed) and write ``content`` to disk."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o666)
    with os.fdopen(fd, "wb") as f:
        f.write(content)
        f.flush()
        os.fsync(f.fileno())


def _fsync(folder: Path) -> None:
    """Make a folder's entries durable (where the system allows opening a folder)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some file systems refuse fsync on a folder
        pass
    finally:
        os.close(fd)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux ``renameat2`` with ``RENAME_EXCHANGE``); ``False`` where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):  # pragma: no cover - a C library without it (glibc < 2.28, musl)
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):  # pragma: no cover - kernel or file system without it
        return False
    raise OSError(err, os.strerror(err), str(b))
