"""The Optuna storage of a study: which URL, opened how (heartbeats, sqlite lock waits, a schema
race between two new drivers), and reopened for reading from the study directory alone."""
from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path
from typing import Any

import optuna

from ..._redact import is_masked, mask_url
from ..._study_dir import DB_FILE, STUDY_FILE, read_spec_copy, read_study_json, readonly_storage_url, sqlite_url
from ...errors import UserInputError, first_line
from ..spec import StudySpec
from ._drivers import GRACE_S, HEARTBEAT_S
from ._recovery import requeue

log = logging.getLogger(__name__)

#: study directory -> the storage URL this process opened it with (its password is never written down,
#: so the report a search writes at its end finds it here)
_OPENED_URLS: dict[str, str] = {}
STORAGE_ENV = ("SVITE_STORAGE_URL", "OPTUNA_STORAGE")
SCHEMA_ATTEMPTS = 5


def storage_url(spec: StudySpec, study_dir: Path) -> tuple[str, str]:
    """The storage URL and where it came from: ``spec``, ``env:NAME`` or ``study_dir``."""
    if spec.search.storage:
        return spec.search.storage, "spec"
    for name in STORAGE_ENV:
        if os.environ.get(name):
            return os.environ[name], f"env:{name}"
    return sqlite_url(study_dir, DB_FILE), "study_dir"


def open_storage(url: str) -> optuna.storages.RDBStorage:
    """An RDB storage with heartbeats (so a trial of a lost machine can be failed and rerun);
    sqlite waits for a lock instead of failing at once."""
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        engine_kwargs = {"connect_args": {"timeout": 60}}
    for attempt in range(SCHEMA_ATTEMPTS):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    url,
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=HEARTBEAT_S,
                    grace_period=GRACE_S,
                    heartbeat_stale_trial_callback=requeue,
                )
        except Exception as err:
            # Two drivers opening a new database at once both create its schema; the loser
            # of that race ("already exists") finds the schema complete on its next attempt.
            if attempt + 1 < SCHEMA_ATTEMPTS and _schema_race(err):
                log.debug("storage schema created by another driver meanwhile (%s); opening again", err)
                continue
            first = first_line(err)
            raise UserInputError(mask_url(f"search.storage: cannot open {url}: {type(err).__name__}: {first}")) from None
    raise AssertionError("unreachable")  # pragma: no cover


def _schema_race(err: BaseException) -> bool:
    text = str(err).lower()
    return "already exists" in text or "duplicate" in text


def remember_url(study_dir: Path, url: str) -> None:
    """Remember the URL this process opened ``study_dir``'s storage with (see :func:`load_study`)."""
    _OPENED_URLS[os.path.realpath(study_dir)] = url


def load_study(study_dir: str | Path) -> optuna.Study:
    """Open the study of a study directory for reading (the report uses this)."""
    study_dir = Path(study_dir)
    info = read_study_json(study_dir)
    if info is None:
        raise UserInputError(f"{study_dir}: not a study directory (no {STUDY_FILE})")
    storage = info.get("storage") or {}
    if storage.get("relative"):
        url = sqlite_url(study_dir, DB_FILE)
    elif str(storage.get("source", "")).startswith("env:") and os.environ.get(storage["source"][4:]):
        url = os.environ[storage["source"][4:]]
    else:
        saved = (read_spec_copy(study_dir) or {}).get("spec") or {}
        url = str(((saved.get("search") or {}).get("storage")) or storage.get("url") or "")
        if is_masked(url):  # the password is never written down: this process or the environment knows it
            url = _OPENED_URLS.get(os.path.realpath(study_dir)) or next(
                (os.environ[name] for name in STORAGE_ENV if os.environ.get(name)), "")
            if not url:
                raise UserInputError(f"{study_dir}: its storage needs a password, which is not kept in the study "
                                     f"directory; set {STORAGE_ENV[0]} to the storage URL")
    return optuna.load_study(study_name=info["study_name"], storage=readonly_storage_url(url))
