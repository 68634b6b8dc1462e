"""MLflow logging of a single ``svite-search train`` run (when ``tracking.enabled``).

The store defaults to ``sqlite:///<run dir>/mlflow.db`` (MLflow 3 no longer accepts a bare
file store), unless ``tracking.uri`` or ``MLFLOW_TRACKING_URI`` names another one.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Iterator

from .._mapping import flatten
from .._study_dir import MLFLOW_DB, sqlite_url
from ..config import RunConfig


def default_tracking_uri(directory: str | Path, explicit: str | None = None) -> str:
    if explicit:
        return explicit
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return sqlite_url(directory, MLFLOW_DB)


def numeric_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    return {
        k.replace("@", "_"): float(v)
        for k, v in metrics.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    }


class _NullTracker:
    def on_epoch(self, metrics: dict[str, Any]) -> None:
        pass

    def finish(self, result: dict[str, Any]) -> None:
        pass


class _MlflowTracker:
    def __init__(self, mlflow: Any, run_id: str) -> None:
        self.mlflow, self.run_id = mlflow, run_id

    def on_epoch(self, metrics: dict[str, Any]) -> None:
        step = int(metrics.get("epoch", 0))
        self.mlflow.log_metrics(numeric_metrics({k: v for k, v in metrics.items() if k != "epoch"}), step=step)

    def finish(self, result: dict[str, Any]) -> None:
        final = {f"final.{k}": v for k, v in numeric_metrics(result).items()}
        self.mlflow.log_metrics(final)


@contextlib.contextmanager
def maybe_track_training(cfg: RunConfig, out_dir: str | Path) -> Iterator[Any]:
    """Log one training run to MLflow when ``cfg.tracking.enabled``; otherwise do nothing.

    The run ends FAILED (with the error as a tag) when training raises.
    """
    if not cfg.tracking.enabled:
        yield _NullTracker()
        return
    import mlflow

    Path(out_dir).mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(default_tracking_uri(out_dir, cfg.tracking.uri))
    mlflow.set_experiment(cfg.tracking.experiment or "svite-search-train")
    with mlflow.start_run(run_name=cfg.name) as run:
        mlflow.set_tags({"svite.method": cfg.method, "svite.kind": "train"})
        from .._redact import mask_credentials

        mlflow.log_params({k: str(v) for k, v in flatten(mask_credentials(cfg.to_dict())).items()})
        tracker = _MlflowTracker(mlflow, run.info.run_id)
        try:
            yield tracker
        except BaseException as err:
            mlflow.set_tag("svite.error", f"{type(err).__name__}: {err}"[:5000])
            mlflow.end_run(status="FAILED")
            raise
