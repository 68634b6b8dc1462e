"""Heartbeats of a driver's running trials, so another driver sharing the storage can tell a lost
trial from a slow one."""
from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Iterable

import optuna

from ._drivers import HEARTBEAT_S

log = logging.getLogger(__name__)


def heartbeats_on(storage: Any) -> bool:
    """Whether ``storage`` records trial heartbeats (an RDB storage opened with a heartbeat
    interval): what Optuna's own ``is_heartbeat_enabled`` checks, through the public method."""
    interval = getattr(storage, "get_heartbeat_interval", None)
    return interval is not None and interval() is not None


def record_beat(storage: Any, trial_id: int) -> None:
    """One heartbeat of a running trial; a missed beat only delays a recovery, never the study."""
    try:
        storage.record_heartbeat(trial_id)
    except Exception as err:
        log.debug("heartbeat of trial id %s failed: %s", trial_id, err)


class Heartbeat:
    """Records a heartbeat for every running trial of this driver, so another driver sharing the
    storage can tell a lost trial (no heartbeat for the grace period) from a slow one."""

    def __init__(self, storage: optuna.storages.RDBStorage, trial_ids: Callable[[], Iterable[int]],
                 interval: float = HEARTBEAT_S) -> None:
        self.storage, self.trial_ids, self.interval = storage, trial_ids, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="svite-heartbeat", daemon=True)

    def beat(self) -> None:
        for trial_id in list(self.trial_ids()):
            record_beat(self.storage, trial_id)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.beat()

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
