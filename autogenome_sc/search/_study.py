"""The Optuna study: storage (journal file or any URL), sampler, pruner, crash recovery.

Crash recovery. A worker killed mid-trial leaves its trial RUNNING. With an RDB storage
(PostgreSQL, MySQL, SQLite) Optuna's own heartbeat finds such trials and
:class:`optuna.storages.RetryFailedTrialCallback` re-enqueues them. Optuna 5.0's
``JournalStorage`` has no heartbeat, so for journal files we keep one ourselves: each
running trial records its worker (host, process id) and a heartbeat time in its system
attributes; a RUNNING trial is stale when its worker ran on this host and that process is
gone, or when its heartbeat is older than the grace period (a worker on another machine
sharing the file). Stale trials are failed and a copy of their parameters is enqueued.
"""

from __future__ import annotations

import os
import random
import socket
import threading
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import optuna
from optuna.storages import BaseStorage, RDBStorage
from optuna.trial import TrialState

from ._journal import open_journal
from ._record import TrialRecord

if TYPE_CHECKING:
    from ..config._schema import SearchConfig

WORKER_ATTR = "ag_worker"
HEARTBEAT_ATTR = "ag_heartbeat"

try:  # Optuna >= 4.x renamed the callback; keep both spellings working
    from optuna.storages import RetryHeartbeatStaleTrialCallback as _Retry
except ImportError:  # pragma: no cover - older Optuna
    from optuna.storages import RetryFailedTrialCallback as _Retry


def journal_path(run_dir: str | Path, study_name: str) -> Path:
    """The journal file of ``study_name`` in ``run_dir``."""
    return Path(run_dir) / f"{study_name}.journal.log"


#: The databases a storage URL may name (Optuna's RDB storage, through SQLAlchemy; a driver may follow a "+").
DATABASES = ("postgresql", "mysql", "sqlite")


def check_storage(storage: str | Path | BaseStorage | None) -> None:
    """Refuse, in one sentence, a storage the search cannot open, before Optuna (or any work) sees it."""
    if storage is None or isinstance(storage, BaseStorage):
        return
    if not isinstance(storage, str | Path):
        raise TypeError(
            f"storage must be None, a database URL or an Optuna storage object, not {type(storage).__name__}."
        )
    url = str(storage)
    scheme = url.split("://", 1)[0].split("+", 1)[0].lower() if "://" in url else None
    if scheme not in DATABASES:
        raise ValueError(
            f"storage '{_redact(url)}' is not a storage the search can open: give None (a journal file in run_dir), "
            "a database URL (postgresql://user:pw@host/db, mysql://user:pw@host/db or sqlite:///path.db) or an "
            "Optuna storage object."
        )


def make_storage(
    storage: str | Path | BaseStorage | None, run_dir: str | Path, study_name: str, search_cfg: SearchConfig
) -> BaseStorage:
    """An Optuna storage: ``None`` -> a journal file in ``run_dir`` (repaired where a write was cut short); a URL -> RDB with heartbeat."""
    check_storage(storage)
    if storage is None:
        path = journal_path(run_dir, study_name)
        path.parent.mkdir(parents=True, exist_ok=True)
        return open_journal(path)
    if isinstance(storage, str | Path):
        return _rdb(str(storage), search_cfg)
    return storage  # an Optuna storage object


def _rdb(url: str, search_cfg: SearchConfig, attempts: int = 5) -> RDBStorage:
    """RDBStorage with Optuna's heartbeat; retried because workers starting together race to create tables."""
    for i in range(attempts):
        try:
            with warnings.catch_warnings():  # heartbeat and its retry callback are marked experimental
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return RDBStorage(
                    url,
                    heartbeat_interval=search_cfg.heartbeat_interval,
                    grace_period=search_cfg.grace_period,
                    heartbeat_stale_trial_callback=_Retry(max_retry=search_cfg.max_retry),
                )
        except ImportError as e:
            raise ImportError(
                f"Cannot open '{url.split('://')[0]}' storage ({e}); for PostgreSQL install 'psycopg[binary]'."
            ) from None
        except Exception as e:  # noqa: BLE001 - connection errors of any driver
            if i == attempts - 1:
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise ConnectionError(f"Cannot connect to the study storage '{_redact(url)}': {first}") from None
            time.sleep(0.5 + random.random())
    raise AssertionError("unreachable: the last attempt returns or raises")


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


def uses_own_heartbeat(study: optuna.Study) -> bool:
    """Whether this study's crash recovery is ours (journal) rather than Optuna's (RDB)."""
    from optuna.storages.journal import JournalStorage

    storage = study._storage
    inner = getattr(storage, "_backend", storage)  # _CachedStorage wraps RDBStorage
    return isinstance(storage, JournalStorage) or isinstance(inner, JournalStorage)


def make_sampler(seed: int, search_cfg: SearchConfig) -> optuna.samplers.BaseSampler:
    """TPE over the conditional space (mode -> its own parameters)."""
    with warnings.catch_warnings():  # multivariate/group are marked experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(
            seed=seed,
            n_startup_trials=search_cfg.n_startup_trials,
            multivariate=True,
            group=True,
            constant_liar=True,
        )


def make_pruner(search_cfg: SearchConfig, max_epochs: int) -> optuna.pruners.BasePruner:
    """Hyperband, successive halving or none, with epochs as the resource."""
    lo = min(search_cfg.min_epochs, max_epochs)
    if search_cfg.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=lo, max_resource=max_epochs, reduction_factor=3)
    if search_cfg.pruner == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=lo, reduction_factor=3)
    return optuna.pruners.NopPruner()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def worker_name() -> str:
    """``host:pid`` of this process."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _worker_id() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid()}


def is_stale(trial: optuna.trial.FrozenTrial, grace_period: float, now: float | None = None) -> bool:
    """Whether a RUNNING journal trial's worker is gone (see the module docstring)."""
    now = time.time() if now is None else now
    worker = trial.system_attrs.get(WORKER_ATTR)
    beat = trial.system_attrs.get(HEARTBEAT_ATTR)
    if beat is None and trial.datetime_start is not None:
        beat = trial.datetime_start.timestamp()
    if worker is not None and worker.get("host") == socket.gethostname() and not _pid_alive(int(worker["pid"])):
        return True
    return beat is not None and now - float(beat) > grace_period


def recover_stale_trials(study: optuna.Study, search_cfg: SearchConfig) -> list[int]:
    """Fail the stale RUNNING trials and enqueue their retries; return the failed trial numbers."""
    if not uses_own_heartbeat(study):
        optuna.storages.fail_stale_trials(study)  # Optuna's heartbeat (RDB); a no-op elsewhere
        return []
    failed = []
    storage = study._storage
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if (
            t.system_attrs.get(WORKER_ATTR, {}).get("pid") == os.getpid()
            and t.system_attrs.get(WORKER_ATTR, {}).get("host") == socket.gethostname()
        ):
            continue  # our own
        if not is_stale(t, search_cfg.grace_period):
            continue
        try:
            if not storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker got there first
        failed.append(t.number)
        _retry(study, storage.get_trial(t._trial_id), search_cfg.max_retry)
    return failed


def _retry(study: optuna.Study, trial: optuna.trial.FrozenTrial, max_retry: int) -> None:
    system_attrs = {k: v for k, v in trial.system_attrs.items() if k not in (WORKER_ATTR, HEARTBEAT_ATTR)}
    history = [*system_attrs.get("retry_history", []), trial.number]
    if len(history) > max_retry:
        return
    system_attrs.update(failed_trial=system_attrs.get("failed_trial", trial.number), retry_history=history)
    study.add_trial(
        optuna.create_trial(
            state=TrialState.WAITING,
            params=trial.params,
            distributions=trial.distributions,
            system_attrs=system_attrs,
            # a portfolio trial's retry is one too (the pruner leaves it alone)
            user_attrs=TrialRecord(portfolio=TrialRecord.from_trial(trial).portfolio).to_attrs(),
        )
    )


class Heartbeat:
    """Marks a journal trial as alive every ``interval`` seconds from a daemon thread."""

    def __init__(self, study: optuna.Study, trial: optuna.Trial, interval: float, enabled: bool):
        self._storage, self._id = study._storage, trial._trial_id
        self._interval, self._enabled = interval, enabled
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if enabled:
            self._storage.set_trial_system_attr(self._id, WORKER_ATTR, _worker_id())
            self._beat()

    def _beat(self):
        try:
            self._storage.set_trial_system_attr(self._id, HEARTBEAT_ATTR, time.time())
        except Exception:  # noqa: BLE001 - the trial finished meanwhile
            self._stop.set()

    def _run(self):
        while not self._stop.wait(self._interval):
            self._beat()

    def __enter__(self):
        if self._enabled:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        return False
