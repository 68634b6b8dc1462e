"""MLflow writes off the search driver's critical path: one writer thread, in call order.

Why: a trial's MLflow calls (its run, params, per-epoch and final metrics, artifacts, status)
cost the driver some 0.1-0.2 s of sqlite work per trial, time in which it could be starting
the next trial. :class:`BackgroundTracker` wraps a :class:`~svite_search.tracking.study.StudyTracker`:
:meth:`start` runs at once (a store that cannot be opened is still an error the search sees
before its first trial), the per-trial calls are queued to one thread that runs them in the
order they were made, and :meth:`end` (or reading anything from the tracker) waits for the
queue to drain first. Writes stay best-effort as before: a failed one is logged and skipped.
If the process exits with writes still queued, an exit hook gives them a little time; a run
left open is closed on resume, as after a killed driver.
"""
from __future__ import annotations

import atexit
import logging
import queue
import threading
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

log = logging.getLogger(__name__)

#: seconds the exit hook waits for queued writes of a driver that ends without end()
EXIT_FLUSH_S = 30.0


class BackgroundTracker:
    """A study tracker whose per-trial writes run on a background thread (see the module doc)."""

    enabled = True

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self._queue: "queue.Queue[Callable[[], Any] | None]" = queue.Queue()
        self._thread: threading.Thread | None = None
        self._closed = False

    # ------------------------------------------------------------------ queue

    def _worker(self) -> None:
        while True:
            job = self._queue.get()
            try:
                if job is None:
                    return
                job()
            except Exception as err:  # noqa: BLE001 - a tracking write never stops a study
                log.warning("MLflow: a queued write failed, skipped: %s: %s", type(err).__name__, err)
            finally:
                self._queue.task_done()

    def _submit(self, job: Callable[[], Any]) -> None:
        if self._thread is None or self._closed:
            job()  # not started (or already ended): write at once, as the inner tracker does
            return
        self._queue.put(job)

    def flush(self) -> None:
        """Wait until every queued write has run."""
        if self._thread is not None and self._thread.is_alive():
            self._queue.join()

    def _flush_at_exit(self) -> None:
        if self._thread is None or not self._thread.is_alive() or self._closed:
            return
        done = threading.Event()
        threading.Thread(target=lambda: (self._queue.join(), done.set()), daemon=True).start()
        if not done.wait(EXIT_FLUSH_S):
            log.warning("MLflow: %d queued writes were not made before exit", self._queue.qsize())

    # ------------------------------------------------------------------ tracker API

    def start(self) -> None:
        self._inner.start()
        if self._thread is None:
            self._thread = threading.Thread(target=self._worker, name="svite-mlflow-writer", daemon=True)
            self._thread.start()
            atexit.register(self._flush_at_exit)

    def trial_started(self, number: int, params: Mapping[str, Any], config: Any = None) -> None:
        params = dict(params or {})
        self._submit(lambda: self._inner.trial_started(number, params, config))

    def trial_epoch(self, number: int, metrics: Mapping[str, Any]) -> None:
        metrics = dict(metrics)
        self._submit(lambda: self._inner.trial_epoch(number, metrics))

    def trial_finished(self, number: int, state: Any, result: Mapping[str, Any] | None = None,
                       error: str | None = None) -> None:
        result = dict(result or {})
        self._submit(lambda: self._inner.trial_finished(number, state, result, error))

    def close_stale(self, numbers: Iterable[int] | None = None) -> list[int]:
        self.flush()
        return self._inner.close_stale(numbers)

    def reconcile(self, study: Any, study_dir: str | Path, logged_elsewhere: Callable[[Any], bool] | None = None) -> list[int]:
        """Back-fill through this tracker (its writes queued in order after the ones before)."""
        from .backfill import backfill_study

        self.flush()
        return backfill_study(self, study, study_dir, logged_elsewhere)

    def end(self, pareto: list[dict[str, Any]], report_dir: str | Path | None = None) -> None:
        """Drain the queue, then log the study's end (as :meth:`StudyTracker.end`)."""
        self.flush()
        try:
            self._inner.end(pareto, report_dir)
        finally:
            self._stop()

    def _stop(self) -> None:
        if self._thread is not None and not self._closed:
            self._closed = True
            self._queue.put(None)
            self._thread.join(timeout=EXIT_FLUSH_S)
            atexit.unregister(self._flush_at_exit)

    def __getattr__(self, name: str) -> Any:
        """Anything else (``client``, ``trial_runs``, ``tracking_uri`` ...) is the inner
        tracker's, read once the writes queued before it have been made."""
        if name.startswith("__") or name in ("_inner", "_queue", "_thread", "_closed"):
            raise AttributeError(name)
        self.flush()
        return getattr(self._inner, name)
