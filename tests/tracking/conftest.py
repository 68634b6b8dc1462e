"""A fresh sqlite MLflow store per test, copied from one migrated once per session.

Creating an MLflow sqlite store runs its schema migrations (seconds); a copy of an empty,
migrated store is the same store for a fraction of the cost.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def mlflow_store_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def study_dir(tmp_path: Path, mlflow_store_template: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty study directory holding its own (empty) MLflow store."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    directory = tmp_path / "study"
    directory.mkdir()
    shutil.copy(mlflow_store_template, directory / "mlflow.db")
    return directory
