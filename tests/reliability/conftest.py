"""Fixtures of the reliability suite (helpers live in :mod:`reliability_support`)."""
from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator

import pytest

from reliability_support import CRASH_SPEC, run_cli, write_yaml


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty, migrated MLflow sqlite store: creating one runs migrations for seconds, a copy
    of it is the same store at once."""
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def new_study_dir(tmp_path: Path, mlflow_template: Path) -> Callable[[str], Path]:
    """``new_study_dir(name)``: a study directory under ``tmp_path`` holding an empty MLflow store."""

    def make(name: str = "study") -> Path:
        directory = tmp_path / name
        directory.mkdir()
        shutil.copy(mlflow_template, directory / "mlflow.db")
        return directory

    return make


@pytest.fixture(scope="session")
def reference_study(tmp_path_factory: pytest.TempPathFactory, mlflow_template: Path, worker_id: str) -> Path:
    """:data:`CRASH_SPEC` run once, uninterrupted, by a real ``svite-search search`` process:
    the baseline that interrupted runs and the determinism check compare against. Tests must
    not write into it (copy it first). One run serves the whole session: the pytest-xdist
    workers share the session's temporary root, and the first to get there runs it under a lock
    while the others wait for it."""
    from filelock import FileLock

    shared = tmp_path_factory.getbasetemp() if worker_id == "master" else tmp_path_factory.getbasetemp().parent
    root = shared / "reference"
    study_dir = root / "study"
    with FileLock(str(root) + ".lock"):
        if not (root / "done").is_file():
            shutil.rmtree(root, ignore_errors=True)  # what a worker that failed here left
            study_dir.mkdir(parents=True)
            spec = write_yaml(root / "crash.yaml", CRASH_SPEC)
            shutil.copy(mlflow_template, study_dir / "mlflow.db")
            done = run_cli("search", spec, "--out", study_dir, "--no-progress", "--json", cwd=root)
            assert done.returncode == 0, done.stderr[-3000:]
            (root / "done").touch()
    return study_dir


@pytest.fixture
def crash_spec_file(tmp_path: Path) -> Path:
    return write_yaml(tmp_path / "crash.yaml", CRASH_SPEC)


@pytest.fixture(scope="session")
def ray_address() -> Iterator[str]:
    """The address of the test session's Ray instance (2 CPUs), for ``search`` processes to join
    with ``RAY_ADDRESS`` instead of each starting a Ray of its own."""
    ray = pytest.importorskip("ray")
    started = not ray.is_initialized()
    temp_dir = tempfile.mkdtemp(prefix="ray") if started else None
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=temp_dir)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        if started:
            ray.shutdown()
            shutil.rmtree(temp_dir, ignore_errors=True)
