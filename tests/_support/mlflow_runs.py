"""The runs of one MLflow experiment as a table shaped like ``mlflow.search_runs``'s, read
through a client of the given store. Why not ``mlflow.search_runs``: it needs
``mlflow.set_tracking_uri``, which sets ``MLFLOW_TRACKING_URI`` in the process environment
and sends every later test's study into this test's store."""
from __future__ import annotations

import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import ViewType


def runs_frame(tracking_uri: str, experiment_name: str) -> pd.DataFrame:
    """One row per run: ``run_id``, ``status``, then ``tags.*``, ``params.*``, ``metrics.*``."""
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(experiment_name)
    if experiment is None:
        return pd.DataFrame(columns=["run_id", "status"])
    rows, token = [], None
    while True:
        page = client.search_runs([experiment.experiment_id], run_view_type=ViewType.ALL,
                                  max_results=1000, page_token=token)
        for run in page:
            row = {"run_id": run.info.run_id, "status": run.info.status}
            row.update({f"tags.{k}": v for k, v in run.data.tags.items()})
            row.update({f"params.{k}": v for k, v in run.data.params.items()})
            row.update({f"metrics.{k}": v for k, v in run.data.metrics.items()})
            rows.append(row)
        token = page.token
        if not token:
            return pd.DataFrame(rows)
