"""Real services for the scale-out tests, started here and stopped by their own handles.

* :class:`PostgresServer`: a throwaway PostgreSQL cluster (``initdb`` into a temporary
  directory, the server listening on 127.0.0.1 at a free port and on a unix socket in that
  directory). Run as root, the cluster belongs to the ``postgres`` user (PostgreSQL refuses to
  run as root).
* :class:`MlflowServer`: ``mlflow server`` on 127.0.0.1 at a free port, with a sqlite backend
  and proxied artifacts (``--serve-artifacts``).

Where a service cannot be started the tests that need it are skipped with the reason, except
under ``CI=true``, where that is a failure: CI installs both.
"""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def unavailable(reason: str) -> None:
    """Skip (or, in CI, fail) a test whose service cannot be started."""
    if in_ci():
        pytest.fail(f"{reason} (CI must provide it)", pytrace=False)
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(condition, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:
    """Poll ``condition`` (a state, never a fixed pause) until it holds or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what}: the process ended with code {proc.returncode}")
        time.sleep(0.05)
    raise AssertionError(f"{what}: not reached within {timeout:.0f} s")


# ----------------------------------------------------------------------------- PostgreSQL


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


class PostgresServer:
    """A PostgreSQL cluster of its own; :meth:`stop` stops only this one."""

    def __init__(self, *, durable: bool = False) -> None:
        self.durable = durable  # fsync on, as a real server runs; off for tests (faster, nothing to keep)
        self.initdb, self.pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
        if not (self.initdb and self.pg_ctl):
            raise RuntimeError("PostgreSQL is not installed (initdb/pg_ctl not found; apt-get install postgresql)")
        self.root = Path(tempfile.mkdtemp(prefix="svite-pg-"))
        self.data, self.socket_dir = self.root / "data", self.root
        self.port = free_port()
        self.user = "svite"
        self._owner: int | None = None
        if os.geteuid() == 0:
            try:
                entry = pwd.getpwnam("postgres")
            except KeyError:
                raise RuntimeError("running as root and there is no 'postgres' user to own the cluster") from None
            self._owner = entry.pw_uid
            os.chown(self.root, entry.pw_uid, entry.pw_gid)

    def _run(self, *args: str) -> subprocess.CompletedProcess:
        command = list(args)
        if self._owner is not None:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(command, capture_output=True, text=True, timeout=120)

    def start(self) -> None:
        """Create the cluster (first call) and start the server (again, after :meth:`kill`)."""
        if not (self.data / "PG_VERSION").exists():
            done = self._run(self.initdb, "-D", str(self.data), "-U", self.user, "--auth=trust", "-E", "UTF8",
                             *(() if self.durable else ("--no-sync",)))
            if done.returncode != 0:
                raise RuntimeError(f"initdb failed: {done.stderr.strip()[-500:]}")
        options = f"-h 127.0.0.1 -p {self.port} -k {self.socket_dir} -c max_connections=200"
        if not self.durable:
            options += " -c fsync=off"
        done = self._run(self.pg_ctl, "-D", str(self.data), "-o", options, "-l", str(self.root / "server.log"),
                         "-w", "-t", "120", "start")
        if done.returncode != 0:
            log = (self.root / "server.log").read_text() if (self.root / "server.log").exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {done.stderr.strip()[-300:]} {log[-500:]}")

    def kill(self) -> None:
        """Stop the server at once (``immediate``: no shutdown checkpoint, as a crash); its data stay."""
        self._run(self.pg_ctl, "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run(self.pg_ctl, "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        """A new, empty database; returns its SQLAlchemy URL."""
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user=self.user, dbname="postgres",
                             autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


# ----------------------------------------------------------------------------- MLflow server


class MlflowServer:
    """``mlflow server`` of its own (sqlite backend, proxied artifacts) on 127.0.0.1.

    :meth:`kill` ends it the hard way (SIGKILL to its process group: the server and its
    workers), :meth:`start` brings it back on the same port and the same stores."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        mlflow_cli = Path(sys.executable).with_name("mlflow")
        self.command = [
            str(mlflow_cli) if mlflow_cli.exists() else "mlflow", "server",
            "--host", "127.0.0.1", "--port", str(self.port),
            "--backend-store-uri", f"sqlite:///{self.root / 'server.db'}",
            "--serve-artifacts", "--artifacts-destination", str(self.root / "artifacts"),
            "--workers", "1",
        ]

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def start(self, timeout: float = 180) -> None:
        env = dict(os.environ, MLFLOW_DISABLE_TELEMETRY="true")
        log = open(self.root / "server.log", "a")
        self.proc = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True)
        log.close()
        try:
            wait_until(self.healthy, timeout, "mlflow server healthy", self.proc)
        except AssertionError as err:
            tail = (self.root / "server.log").read_text()[-1500:]
            self.kill()
            raise RuntimeError(f"{err}\n{tail}") from None

    def kill(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)  # its own session: only this server's processes
            except ProcessLookupError:
                pass
        self.proc.wait(timeout=30)
        self.proc = None
