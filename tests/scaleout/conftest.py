"""Fixtures of the scale-out suite: a real PostgreSQL server and a real MLflow tracking server,
each started once and stopped by its own handle (see :mod:`services`)."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Iterator

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "reliability"))  # reliability_support: CLI processes, store readers

from services import MlflowServer, PostgresServer, unavailable  # noqa: E402


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server of the test session's own (skipped, outside CI, where none can start)."""
    try:
        import psycopg  # noqa: F401
    except ImportError:
        unavailable("the PostgreSQL driver is not installed (pip install 'svite-search[postgres]')")
    try:
        server = PostgresServer()
    except RuntimeError as err:
        unavailable(f"no PostgreSQL server can be started here: {err}")
    try:
        server.start()
    except (RuntimeError, OSError) as err:
        server.stop()
        unavailable(f"no PostgreSQL server can be started here: {err}")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres: PostgresServer, request: pytest.FixtureRequest) -> str:
    """A fresh database on the session's server, named after the test."""
    name = "t_" + "".join(c if c.isalnum() else "_" for c in request.node.name.lower())[:50]
    return postgres.create_database(name)


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """``mlflow server`` shared by a module's tests (starting one takes a while); a test that
    kills it starts it again. Each test uses an experiment of its own."""
    import shutil

    if shutil.which("mlflow") is None and not (Path(sys.executable).with_name("mlflow")).exists():
        unavailable("the mlflow server is not installed (pip install 'svite-search[server]')")
    try:
        import mlflow.server  # noqa: F401  (the full package, not mlflow-skinny)
        import flask  # noqa: F401
    except ImportError:
        unavailable("the mlflow server is not installed (pip install 'svite-search[server]')")
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server"))
    try:
        server.start()
    except RuntimeError as err:
        unavailable(f"mlflow server did not start: {err}")
    try:
        yield server
    finally:
        server.kill()
