"""Heartbeats of a driver's running trials, so another driver sharing the storage can tell a lost
trial from a slow one."""
from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Iterable

import optuna

from ._drivers import HEARTBEAT_S

log = logging.getLogger(__name__)


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
            try:
                self.storage.record_heartbeat(trial_id)
            except Exception as err:  # a missed beat only delays nothing; never stop the study
                log.debug("heartbeat of trial id %s failed: %s", trial_id, err)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.beat()

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
