"""Claiming the next trial of a shared study under a lock, so that drivers sharing a storage
never create a trial past ``n_trials``.

Why a lock: a driver counts the study's finished and running trials, then asks for a new trial.
Two drivers that count at the same moment both see a free place and both create a trial; the
second one's claim is surplus (:func:`._recovery.claim_is_surplus`) and is given back, but a
trial Optuna has created cannot be deleted, so it stayed WAITING in a finished study. Counting
and asking under one lock per study closes that window: the second driver counts the first
one's new trial and waits.

The lock is the storage's own where it can be: a PostgreSQL advisory lock keyed by the study's
name (released by the server when the driver's connection closes, so a killed driver never
holds it; a lost machine's session lasts until the server notices its connection is gone), or
for sqlite an ``flock`` on the database's folder, shared by the studies whose files sit there
(sqlite is shared only by processes of one machine, and the kernel drops the lock with the
process). Other storages have no lock here and keep the give-back safety net. A lock held
longer than :data:`CLAIM_WAIT_S` (a stopped process), or one that cannot be taken at all, lets
the claim go ahead with one warning, under the same safety net. The lock is held for one count
and one ``ask()`` (the sampler's suggestion included), never while a trial runs.
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
#: first and longest pause between two attempts at a lock another driver holds (it holds it for
#: one count and one ask, so most waits end after the first pauses)
_POLL_S, _POLL_MAX_S = 0.02, 0.5


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
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            finally:
                os.close(fd)  # closing the last descriptor drops the lock anyway


class _AdvisoryLock:
    """A PostgreSQL session advisory lock on one connection of its own, kept open between claims
    (opened again only after an error)."""

    def __init__(self, url: str, key: int) -> None:
        import sqlalchemy
        from sqlalchemy.pool import NullPool

        self._sql = sqlalchemy
        self._engine = sqlalchemy.create_engine(url, poolclass=NullPool)
        self._key = key
        self._connection: Any = None

    def _run(self, statement: str) -> Any:
        if self._connection is None:
            self._connection = self._engine.connect()
        try:
            value = self._connection.execute(self._sql.text(statement), {"key": self._key}).scalar()
            self._connection.commit()
            return value
        except BaseException:
            connection, self._connection = self._connection, None
            with contextlib.suppress(Exception):
                connection.close()  # the server drops the session's advisory locks with it
            raise

    def try_acquire(self) -> bool:
        return bool(self._run("SELECT pg_try_advisory_lock(:key)"))

    def release(self) -> None:
        self._run("SELECT pg_advisory_unlock(:key)")


def _lock_key(study_name: str) -> int:
    digest = hashlib.sha256(f"svite-search claim {study_name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class ClaimLock:
    """The lock drivers of one study take to count its trials and ask for the next one.

    ``on_wait`` is called once each time the lock is found held by another driver, before
    waiting for it (progress output, and the tests' view of who waited)."""

    def __init__(self, url: str, study_name: str, on_wait: Callable[[], None] | None = None) -> None:
        self.on_wait = on_wait
        self._warned = False
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
                try:
                    backend.release()
                except Exception as err:  # the claim is made; the kernel or the server drops the lock anyway
                    self._warn(f"the study's claim lock was not released cleanly ({type(err).__name__}: "
                               f"{mask_url(first_line(err))})")

    def _warn(self, message: str) -> None:
        """Warn once per lock, then at debug level: a lock in trouble stays in trouble."""
        (log.debug if self._warned else log.warning)(message)
        self._warned = True

    def _attempt(self, backend: _DirectoryLock | _AdvisoryLock) -> bool | None:
        """One try: True (taken), False (held by another driver), None (it cannot be taken)."""
        try:
            return backend.try_acquire()
        except Exception as err:  # the storage's own calls say why, if they fail too
            self._warn(f"the study's claim lock cannot be taken ({type(err).__name__}: "
                       f"{mask_url(first_line(err))}); claiming without it")
            return None

    def _acquire(self, backend: _DirectoryLock | _AdvisoryLock) -> bool:
        got = self._attempt(backend)
        if got is not False:
            return bool(got)
        if self.on_wait is not None:
            self.on_wait()
        deadline, pause = time.monotonic() + CLAIM_WAIT_S, _POLL_S
        while time.monotonic() < deadline:
            time.sleep(pause)
            pause = min(2 * pause, _POLL_MAX_S)
            got = self._attempt(backend)
            if got is not False:
                return bool(got)
        self._warn(f"another driver of this study held its claim lock for over {CLAIM_WAIT_S:.0f} s; "
                   "claiming without it")
        return False


def _places_taken(study: optuna.Study, n_trials: int) -> bool:
    trials = study.get_trials(deepcopy=False)
    return study_counts(study, trials).finished + len(live_running(study, trials)) >= n_trials


def claim_trial(study: optuna.Study, storage: optuna.storages.BaseStorage, n_trials: int,
                lock: ClaimLock, before_ask: Callable[[], Any] | None = None) -> optuna.Trial | None:
    """The next trial this driver runs, signed with its driver id, or None when the finished
    trials and the trials live drivers run already make ``n_trials`` (wait: another starts
    only if one of them fails). Counting and asking happen under ``lock``; a driver that counts
    for other reasons too (the local executor) holds the lock itself and calls :func:`ask_claimed`.
    ``before_ask`` runs under the lock once a place is free, just before the ask (early
    stopping queues a promotion there, which the ask then takes)."""
    if _places_taken(study, n_trials):
        return None  # no place looks free: no need to lock (Tune asks again and again while it waits)
    with lock.held():
        if _places_taken(study, n_trials):  # counted again under the lock: the count that decides
            return None
        if before_ask is not None:
            before_ask()
        return ask_claimed(study, storage, n_trials)


def ask_claimed(study: optuna.Study, storage: optuna.storages.BaseStorage, n_trials: int) -> optuna.Trial | None:
    """Ask for the trial a count under the claim lock found a place for, and sign it; None when
    it is surplus after all (the claim went ahead unlocked, or another driver's did: given back)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # heartbeats outside Study.optimize are ours
        trial = study.ask()
    # the safety net for claims made without the lock (a storage with none, a lock in trouble):
    # of two trials asked at once, the one written second finds the other and is given back
    if claim_is_surplus(study, trial.number, n_trials):
        give_back(study, storage, trial.number)
        return None
    trial.set_user_attr(DRIVER_ATTR, driver_id())
    return trial
