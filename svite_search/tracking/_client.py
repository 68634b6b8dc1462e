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

import logging
import re
import time
from pathlib import Path
from typing import Any, Callable, TypeVar

from .runs import default_tracking_uri

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Messages of errors worth retrying: sqlite lock contention and a tracking server that blinks.
_TRANSIENT = ("database is locked", "database table is locked", "database is busy", "connection reset",
              "temporarily unavailable", "max retries exceeded", "503", "502")
_BAD_KEY_CHARS = re.compile(r"[^A-Za-z0-9_\-. /]")
#: MLflow's limit on a parameter value (3.x); longer values are truncated, not refused.
MAX_PARAM_LENGTH = 6000


def is_transient(err: BaseException) -> bool:
    """True for an error a retry may cure (lock contention, a busy server)."""
    text = f"{type(err).__name__}: {err}".lower()
    return any(marker in text for marker in _TRANSIENT)


def retry(call: Callable[[], T], *, attempts: int = 8, first_pause: float = 0.2, what: str = "mlflow call") -> T:
    """Run ``call``; on a transient error wait (0.2 s, doubling, at most 5 s) and try again."""
    pause = first_pause
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except Exception as err:  # MlflowException wraps sqlalchemy's OperationalError
            if attempt == attempts or not is_transient(err):
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


def resolve_tracking_uri(study_dir: str | Path, explicit: str | None = None) -> str:
    """The store of a study: ``explicit`` (the spec's ``tracking.uri``), else
    ``MLFLOW_TRACKING_URI``, else ``sqlite:///<study dir>/mlflow.db``."""
    return default_tracking_uri(study_dir, explicit)


def default_artifact_location(study_dir: str | Path, tracking_uri: str) -> str | None:
    """Artifacts beside a study's own sqlite store (``<study dir>/mlartifacts``); ``None`` (the
    server's default) for any other store."""
    own = f"sqlite:///{Path(study_dir).resolve() / 'mlflow.db'}"
    if tracking_uri == own:
        return (Path(study_dir).resolve() / "mlartifacts").as_uri()
    return None


def make_client(tracking_uri: str) -> Any:
    """An ``MlflowClient`` for ``tracking_uri`` (creating a sqlite store runs its migrations)."""
    from mlflow import MlflowClient

    if not tracking_uri.startswith("sqlite:///"):
        return retry(lambda: MlflowClient(tracking_uri=tracking_uri), what="open the MLflow store")
    from filelock import FileLock

    db_path = Path(tracking_uri[len("sqlite:///"):])
    db_path.parent.mkdir(parents=True, exist_ok=True)
    # A new sqlite store is created by running its migrations; two processes doing that at once
    # collide ("table already exists"). One at a time, under a lock beside the database.
    with FileLock(str(db_path) + ".lock", timeout=600):
        client = retry(lambda: MlflowClient(tracking_uri=tracking_uri), what="open the MLflow store")
        retry(lambda: client.search_experiments(max_results=1), what="create the MLflow store")
    return client
