"""A small, robust writer over ``mlflow.MlflowClient``.

Why a wrapper: a study writes to MLflow from one process only (the search driver), but the
default store is a sqlite file, and sqlite answers "database is locked" when anything else (an
``mlflow ui`` reading it, a second command on the same directory, a ``train`` run tracking into
the same file) holds its lock for a moment. Such errors are transient, so every call is retried
with a growing pause instead of failing a study that may have trained for hours.

MLflow is imported lazily: ``svite-search --help`` and the modules that only *read* reports stay
fast and do not need it installed.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar

from .._cache import cache_dir
from .._study_dir import MLFLOW_ARTIFACTS, MLFLOW_DB, sqlite_url

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Messages of errors worth retrying: sqlite lock contention and a tracking server that blinks.
_TRANSIENT = ("database is locked", "database table is locked", "database is busy", "connection reset",
              "temporarily unavailable", "max retries exceeded", "503", "502")
_BAD_KEY_CHARS = re.compile(r"[^A-Za-z0-9_\-. /]")
#: MLflow HTTP client settings for a tracking server, unless the environment sets them.
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                 "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}
#: MLflow's limit on a parameter value (3.x); longer values are truncated, not refused.
MAX_PARAM_LENGTH = 6000
#: MLflow accepts at most 100 params (1000 metrics) in one ``log_batch``
PARAM_BATCH = 100


#: Messages of errors that say the tracking server cannot be reached at all.
_UNREACHABLE = ("connection refused", "failed to establish a new connection", "max retries exceeded",
                "name or service not known", "connectionerror", "remote end closed connection",
                "read timed out", "connect timeout")


def is_unreachable(err: BaseException) -> bool:
    """True when ``err`` says the tracking server is down or cannot be reached."""
    text = f"{type(err).__name__}: {err}".lower()
    return any(marker in text for marker in _UNREACHABLE)


def is_transient(err: BaseException) -> bool:
    """True for an error a retry may cure (lock contention, a busy server)."""
    text = f"{type(err).__name__}: {err}".lower()
    return any(marker in text for marker in _TRANSIENT)


def retry(call: Callable[[], T], *, attempts: int = 8, first_pause: float = 0.2, what: str = "mlflow call") -> T:
    """Run ``call``; on a transient error wait (0.2 s, doubling, at most 5 s) and try again.
    A server that cannot be reached is tried twice only: MLflow's HTTP client has already
    retried each request itself."""
    pause = first_pause
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except Exception as err:  # MlflowException wraps sqlalchemy's OperationalError
            if attempt == attempts or not is_transient(err) or (attempt >= 2 and is_unreachable(err)):
                raise
            log.debug("%s: %s (retry %d of %d in %.1f s)", what, err, attempt, attempts - 1, pause)
            time.sleep(pause)
            pause = min(pause * 2, 5.0)
    raise AssertionError("unreachable")  # pragma: no cover


def metric_key(name: str) -> str:
    """A metric or parameter name MLflow accepts (``top1@ema`` -> ``top1_ema``)."""
    return _BAD_KEY_CHARS.sub("_", str(name))


def param_value(value: Any) -> str:
    text = str(value)
    return text if len(text) <= MAX_PARAM_LENGTH else text[: MAX_PARAM_LENGTH - 3] + "..."


def log_params(client: Any, run_id: str, params: Mapping[str, Any], existing: Mapping[str, str] | None = None) -> None:
    """Log the params not yet on the run (MLflow refuses to change a logged param's value), in
    as few batches as MLflow allows. Not retried here: callers choose how."""
    from mlflow.entities import Param

    existing = existing or {}
    todo = [Param(metric_key(k), param_value(v)) for k, v in params.items() if metric_key(k) not in existing]
    for i in range(0, len(todo), PARAM_BATCH):
        client.log_batch(run_id, params=todo[i : i + PARAM_BATCH])


def experiment_id(client: Any, name: str, artifact_location: str | None,
                  call: Callable[[Callable[[], Any], str], Any]) -> str:
    """The id of experiment ``name``: found, restored when deleted, or created. When two
    commands create it at once, the one that lost takes the winner's. Each MLflow request goes
    through ``call(fn, what)`` (the caller's retry)."""
    found = call(lambda: client.get_experiment_by_name(name), "find the experiment")
    if found is None:
        try:
            return str(call(lambda: client.create_experiment(name, artifact_location=artifact_location),
                            "create the experiment"))
        except Exception:
            found = call(lambda: client.get_experiment_by_name(name), "find the experiment")
            if found is None:
                raise
    if found.lifecycle_stage == "deleted":
        call(lambda: client.restore_experiment(found.experiment_id), "restore the experiment")
    return str(found.experiment_id)


def resolve_tracking_uri(directory: str | Path, explicit: str | None = None) -> str:
    """The store of a study or a training run: ``explicit`` (the spec's ``tracking.uri``), else
    ``MLFLOW_TRACKING_URI``, else ``sqlite:///<directory>/mlflow.db``."""
    if explicit:
        return explicit
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return sqlite_url(directory, MLFLOW_DB)


def numeric_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The numbers among ``metrics`` (booleans and text left out), under names MLflow accepts."""
    return {
        metric_key(k): float(v)
        for k, v in metrics.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    }


def default_artifact_location(study_dir: str | Path, tracking_uri: str) -> str | None:
    """Artifacts beside a study's own sqlite store (``<study dir>/mlartifacts``); ``None`` (the
    server's default) for any other store."""
    if tracking_uri == sqlite_url(study_dir, MLFLOW_DB):
        return (Path(study_dir).resolve() / MLFLOW_ARTIFACTS).as_uri()
    return None


def make_client(tracking_uri: str) -> Any:
    """An ``MlflowClient`` for ``tracking_uri``. A new sqlite store starts as a copy of an empty
    store made once per MLflow version (see :func:`_new_sqlite_store`)."""
    from mlflow import MlflowClient

    if tracking_uri.startswith(("http://", "https://")):
        # MLflow retries each request for minutes by default; a study only needs to learn
        # soon that its server is away (it goes on and back-fills the runs later).
        for name, value in HTTP_DEFAULTS.items():
            os.environ.setdefault(name, value)
    if not tracking_uri.startswith("sqlite:///"):
        return retry(lambda: MlflowClient(tracking_uri=tracking_uri), what="open the MLflow store")
    from filelock import FileLock

    db_path = Path(tracking_uri[len("sqlite:///"):])
    db_path.parent.mkdir(parents=True, exist_ok=True)
    # A new sqlite store is created by running its migrations; two processes doing that at once
    # collide ("table already exists"). One at a time, under a lock beside the database.
    with FileLock(str(db_path) + ".lock", timeout=600):
        if not db_path.exists():
            _new_sqlite_store(db_path)
        client = retry(lambda: MlflowClient(tracking_uri=tracking_uri), what="open the MLflow store")
        retry(lambda: client.search_experiments(max_results=1), what="create the MLflow store")
    return client


def _template_store() -> Path | None:
    """An empty, fully migrated MLflow sqlite store for this MLflow version, made on first use.

    Why: MLflow creates a sqlite store by running its whole migration history (some 4-5 s),
    and every study has a store of its own. The migrations' result is the same each time, so
    it is made once and copied. ``None`` when the cache cannot be written (then the store is
    created the usual way).
    """
    import mlflow
    from filelock import FileLock

    directory = cache_dir()
    template = directory / f"mlflow-{mlflow.__version__}-empty.db"
    if template.is_file():
        return template
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with FileLock(str(template) + ".lock", timeout=600):
            if template.is_file():
                return template
            from mlflow import MlflowClient

            with tempfile.TemporaryDirectory(dir=directory) as tmp:
                fresh = Path(tmp) / "empty.db"
                client = MlflowClient(tracking_uri=f"sqlite:///{fresh}")
                client.search_experiments(max_results=1)  # runs the migrations
                del client
                os.replace(fresh, template)
        return template
    except OSError as err:
        log.debug("no MLflow template store (%s): creating the store directly", err)
        return None


def _new_sqlite_store(db_path: Path) -> None:
    """Create the sqlite store ``db_path`` as a copy of the template store; the Default
    experiment's artifact location is set as MLflow would set it here (``./mlruns/0`` under the
    working directory). Copied beside the target, then renamed: never a half-written store."""
    template = _template_store()
    if template is None:
        return
    tmp = db_path.with_name(f".{db_path.name}.{os.getpid()}.tmp")
    try:
        shutil.copyfile(template, tmp)
        with contextlib.closing(sqlite3.connect(tmp)) as db, db:
            now = int(time.time() * 1000)
            db.execute(
                "UPDATE experiments SET artifact_location = ?, creation_time = ?, last_update_time = ? "
                "WHERE experiment_id = 0",
                (os.path.abspath(os.path.join("mlruns", "0")), now, now),
            )
        os.replace(tmp, db_path)
    except (OSError, sqlite3.Error) as err:
        log.debug("could not copy the MLflow template store (%s): creating the store directly", err)
    finally:
        Path(tmp).unlink(missing_ok=True)
