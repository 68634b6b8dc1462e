"""Claiming the next trial of a shared study under a lock, so that drivers sharing a storage
never create a trial past ``n_trials``.

Why a lock: a driver counts the study's finished and running trials, then asks for a new trial.
Two drivers that count at the same moment both see a free place and both create a trial; the
second one's claim is surplus (:func:`._recovery.claim_is_surplus`) and is given back, but a
trial Optuna has created cannot be deleted, so it stayed WAITING in a finished study. Counting
and asking under one lock per study closes that window: the second driver counts the first
one's new trial and waits.

The lock is the storage's own where it can be: a PostgreSQL advisory lock (released by the
server when the driver's connection drops, so a killed driver never holds it), or for sqlite an
``flock`` on the database's directory (sqlite is shared only by processes of one machine, and
the kernel drops the lock with the process). Other storages have no lock here and keep the
give-back safety net. A lock held longer than :data:`CLAIM_WAIT_S` (a stopped process) is
waited out with a warning and the claim goes ahead unlocked, with the same safety net.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import time
import warnings
from typing import Any, Callable, Iterator

import optuna

from ..._redact import mask_url
from ...errors import first_line
from ._drivers import DRIVER_ATTR, driver_id
from ._recovery import claim_is_surplus, give_back, live_running
from ._results import study_counts

log = logging.getLogger(__name__)

#: longest wait for another driver's claim before claiming without the lock
CLAIM_WAIT_S = 60.0
#: between two attempts at a lock another driver holds (it holds it for one count and one ask)
_POLL_S = 0.02


class _DirectoryLock:
    """``flock`` on a directory: no file is created, and the kernel releases it with the process."""

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


class _AdvisoryLock:
    """A PostgreSQL session advisory lock on a connection of its own."""

    def __init__(self, url: str, key: int) -> None:
        import sqlalchemy
        from sqlalchemy.pool import NullPool

        self._sql = sqlalchemy
        self._engine = sqlalchemy.create_engine(url, poolclass=NullPool)
        self._key = key
        self._connection: Any = None

    def try_acquire(self) -> bool:
        connection = self._engine.connect()
        try:
            got = connection.execute(self._sql.text("SELECT pg_try_advisory_lock(:key)"), {"key": self._key}).scalar()
            connection.commit()
        except BaseException:
            connection.close()
            raise
        if not got:
            connection.close()
            return False
        self._connection = connection
        return True

    def release(self) -> None:
        if self._connection is not None:
            connection, self._connection = self._connection, None
            try:
                connection.execute(self._sql.text("SELECT pg_advisory_unlock(:key)"), {"key": self._key})
                connection.commit()
            finally:
                connection.close()  # the server drops a session's advisory locks with it anyway


def _lock_key(study_name: str) -> int:
    digest = hashlib.sha256(f"svite-search claim {study_name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class ClaimLock:
    """The lock drivers of one study take to count its trials and ask for the next one.

    ``on_wait`` is called once each time the lock is found held by another driver, before
    waiting for it (progress output, and the tests' view of who waited)."""

    def __init__(self, url: str, study_name: str, on_wait: Callable[[], None] | None = None) -> None:
        self.on_wait = on_wait
        self._backend: _DirectoryLock | _AdvisoryLock | None = None
        from sqlalchemy.engine import make_url

        parsed = make_url(url)
        if parsed.get_backend_name() == "sqlite":
            database = parsed.database or ""
            if database and database != ":memory:" and not database.startswith("file:"):
                self._backend = _DirectoryLock(os.path.dirname(os.path.abspath(database)) or ".")
        elif parsed.get_backend_name() == "postgresql":
            self._backend = _AdvisoryLock(url, _lock_key(study_name))

    @property
    def kind(self) -> str:
        """``directory`` (sqlite), ``advisory`` (PostgreSQL) or ``none`` (no lock for this storage)."""
        if isinstance(self._backend, _DirectoryLock):
            return "directory"
        return "advisory" if isinstance(self._backend, _AdvisoryLock) else "none"

    @contextlib.contextmanager
    def held(self) -> Iterator[bool]:
        """Hold the lock for the block; yields False when it went ahead without it (no lock
        for this storage, or another driver held it past :data:`CLAIM_WAIT_S`)."""
        backend = self._backend
        acquired = backend is not None and self._acquire(backend)
        try:
            yield acquired
        finally:
            if acquired and backend is not None:
                backend.release()

    def _acquire(self, backend: _DirectoryLock | _AdvisoryLock) -> bool:
        try:
            if backend.try_acquire():
                return True
            if self.on_wait is not None:
                self.on_wait()
            deadline = time.monotonic() + CLAIM_WAIT_S
            while time.monotonic() < deadline:
                time.sleep(_POLL_S)
                if backend.try_acquire():
                    return True
        except Exception as err:  # the lock cannot be taken at all: the storage's own calls say why, if they fail too
            log.warning("the study's claim lock cannot be taken (%s: %s); claiming without it",
                        type(err).__name__, mask_url(first_line(err)))
            return False
        log.warning("another driver of this study held its claim lock for over %.0f s; claiming without it",
                    CLAIM_WAIT_S)
        return False


def claim_trial(study: optuna.Study, storage: optuna.storages.BaseStorage, n_trials: int,
                lock: ClaimLock) -> optuna.Trial | None:
    """The next trial this driver runs, signed with its driver id, or None when the finished
    trials and the trials live drivers run already make ``n_trials`` (wait: another starts
    only if one of them fails). Counting and asking happen under ``lock``."""
    with lock.held():
        trials = study.get_trials(deepcopy=False)
        if study_counts(study, trials).finished + len(live_running(study, trials)) >= n_trials:
            return None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # heartbeats outside Study.optimize are ours
            trial = study.ask()
        # the safety net where the claim went ahead unlocked: a trial past n_trials is given back
        if claim_is_surplus(study, trial.number, n_trials):
            give_back(study, storage, trial.number)
            return None
        trial.set_user_attr(DRIVER_ATTR, driver_id())
        return trial
