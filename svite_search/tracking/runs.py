"""MLflow logging of a single ``svite-search train`` run (when ``tracking.enabled``).

The store defaults to ``sqlite:///<run dir>/mlflow.db`` (MLflow 3 no longer accepts a bare
file store), unless ``tracking.uri`` or ``MLFLOW_TRACKING_URI`` names another one.
"""
from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any, Iterator

from .._mapping import flatten
from .._redact import mask_credentials
from ..config import RunConfig
from ._client import (
    default_artifact_location,
    experiment_id,
    log_params,
    make_client,
    metric_key,
    numeric_metrics,
    resolve_tracking_uri,
    retry,
)


class _NullTracker:
    def on_epoch(self, metrics: dict[str, Any]) -> None:
        pass

    def finish(self, result: dict[str, Any]) -> None:
        pass


class _MlflowTracker:
    """Epoch and final metrics of one run, written through its own client (never MLflow's
    process-wide "current run", so nothing outlives the run in the process)."""

    def __init__(self, client: Any, run_id: str) -> None:
        self.client, self.run_id = client, run_id

    def _log(self, metrics: dict[str, float], step: int) -> None:
        if not metrics:
            return
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(metric_key(k), v, now, step) for k, v in metrics.items()]
        retry(lambda: self.client.log_batch(self.run_id, metrics=batch), what="log metrics")

    def on_epoch(self, metrics: dict[str, Any]) -> None:
        step = int(metrics.get("epoch", 0))
        self._log(numeric_metrics({k: v for k, v in metrics.items() if k != "epoch"}), step)

    def finish(self, result: dict[str, Any]) -> None:
        self._log({f"final.{k}": v for k, v in numeric_metrics(result).items()}, 0)


@contextlib.contextmanager
def maybe_track_training(cfg: RunConfig, out_dir: str | Path) -> Iterator[Any]:
    """Log one training run to MLflow when ``cfg.tracking.enabled``; otherwise do nothing.

    The run ends FAILED (with the error as a tag) when training raises. Why a client and not
    ``mlflow.start_run``: MLflow's fluent API sets ``MLFLOW_TRACKING_URI`` and
    ``MLFLOW_EXPERIMENT_ID`` in the process environment, and a study started later in the same
    process (or any subprocess it starts) would then record into this run's store.
    """
    if not cfg.tracking.enabled:
        yield _NullTracker()
        return
    def call(fn: Any, what: str) -> Any:
        return retry(fn, what=what)

    Path(out_dir).mkdir(parents=True, exist_ok=True)
    uri = resolve_tracking_uri(out_dir, cfg.tracking.uri)
    client = make_client(uri)
    experiment = experiment_id(client, cfg.tracking.experiment or "svite-search-train",
                               default_artifact_location(out_dir, uri), call)
    tags = {"svite.method": cfg.method, "svite.kind": "train"}
    run_id = call(lambda: client.create_run(experiment, run_name=cfg.name, tags=tags), "create the run").info.run_id
    params = flatten(mask_credentials(cfg.to_dict()))
    call(lambda: log_params(client, run_id, params), "log params")
    try:
        yield _MlflowTracker(client, run_id)
    except BaseException as err:
        retry(lambda: client.set_tag(run_id, "svite.error", f"{type(err).__name__}: {err}"[:5000]), what="tag")
        retry(lambda: client.set_terminated(run_id, status="FAILED"), what="end the run")
        raise
    retry(lambda: client.set_terminated(run_id, status="FINISHED"), what="end the run")
