"""The local Ray instance a search driver starts, and what a killed driver left of it.

A driver that starts Ray itself (no ``executor.address``, no ``RAY_ADDRESS``) gives it a
session folder of its own (``/tmp/rayXXXXXXXX``) and records it in the study directory
(``ray/local-<host>-<pid>.json``) before starting it. It stops that instance on every way out
(:func:`stop_local`: Ray's own shutdown, then any of the session's processes still alive, then
the folder). A driver killed without warning (SIGKILL, the OOM killer) cannot; its Ray agents
(dashboard, runtime-env) live on and the folder stays. The next driver on the study finds the
record of a driver that no longer runs on this host and stops that session
(:func:`clean_leftovers`).

Only what a record names is touched: processes are chosen by the session folder in their
command line and by owner (this user), never by name, and never another user's or a live
driver's Ray.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

from .._io import atomic_write_text
from .._study_dir import RAY_DIR
from .study import driver_gone, driver_id

log = logging.getLogger(__name__)

RECORD_GLOB = "local-*.json"
#: the Ray major release whose ``ray.init`` takes a local instance's folder as ``_temp_dir``
SESSION_FOLDER_RAY_MAJOR = 2


def session_folder_kwargs(session_dir: str, ray_version: str | None = None) -> dict[str, str]:
    """``ray.init``'s keyword that puts a local instance's files in ``session_dir``.

    Ray has no public argument for it: ``_temp_dir`` is one of ``ray.init``'s hidden options
    (documented as unstable), and the only way to give one instance a folder of its own, whose
    path every one of its processes then carries in its command line (how this module finds
    them). So it is passed here alone, and only on the Ray major release it was tested with;
    on another this raises one line before anything is started or written."""
    if ray_version is None:
        import ray

        ray_version = ray.__version__
    major = ray_version.split(".", 1)[0]
    if not major.isdigit() or int(major) != SESSION_FOLDER_RAY_MAJOR:
        raise RuntimeError(
            f"Ray {ray_version}: a local Ray instance is only started with Ray {SESSION_FOLDER_RAY_MAJOR}.x "
            f"(install 'ray[tune,train]<{SESSION_FOLDER_RAY_MAJOR + 1}'), or join a running one with "
            "executor.address or RAY_ADDRESS"
        )
    return {"_temp_dir": session_dir}


def _record_path(study_dir: Path) -> Path:
    return study_dir / RAY_DIR / f"local-{socket.gethostname()}-{os.getpid()}.json"


def _session_processes(session_dir: str) -> list[int]:
    """This user's processes whose command line names ``session_dir`` (Ray passes its session
    folder to every process it starts)."""
    needle = os.fsencode(session_dir.rstrip("/") + "/")
    found = []
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else []:
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if entry.stat().st_uid != os.getuid():
                continue
            if needle in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
        except OSError:  # it ended meanwhile, or is not ours to read
            continue
    return found


def stop_session_processes(session_dir: str, wait_s: float = 10.0) -> list[int]:
    """SIGTERM, then after ``wait_s`` SIGKILL, every process of the session; returns their pids."""
    pids = _session_processes(session_dir)
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and set(pids) & set(_session_processes(session_dir)):
        time.sleep(0.05)
    for pid in set(pids) & set(_session_processes(session_dir)):
        _signal(pid, signal.SIGKILL)
    return pids


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _is_own_session_dir(path: str) -> bool:
    """A folder this module creates: ``<tempdir>/ray*``, owned by this user."""
    folder = Path(path)
    try:
        return (folder.parent.resolve() == Path(tempfile.gettempdir()).resolve() and folder.name.startswith("ray")
                and folder.is_dir() and folder.stat().st_uid == os.getuid())
    except OSError:
        return False


def clean_leftovers(study_dir: Path) -> list[str]:
    """Stop the Ray sessions that drivers of this study, now gone from this host, started and
    could not stop; returns their folders."""
    cleaned = []
    for record in sorted((study_dir / RAY_DIR).glob(RECORD_GLOB)):
        try:
            data = json.loads(record.read_text())
        except (OSError, ValueError):
            continue
        driver, session_dir = data.get("driver"), data.get("session_dir")
        host = str(driver or "").rpartition(":")[0]
        if not isinstance(session_dir, str) or host != socket.gethostname() or not driver_gone(driver):
            continue  # another machine's driver, or one still running
        pids = stop_session_processes(session_dir)
        if _is_own_session_dir(session_dir):
            shutil.rmtree(session_dir, ignore_errors=True)
        record.unlink(missing_ok=True)
        log.info("stopped the Ray session %s a killed search left (%d processes)", session_dir, len(pids))
        cleaned.append(session_dir)
    return cleaned


def start_local(study_dir: Path, **init_kwargs: Any) -> str:
    """Clean up after killed drivers of the study, then start a local Ray instance in a session
    folder of its own, recorded in the study directory first; returns the folder."""
    import ray

    session_folder_kwargs("")  # an untested Ray is refused before anything is written
    clean_leftovers(study_dir)
    session_dir = tempfile.mkdtemp(prefix="ray")  # short: unix socket paths have a length limit
    record = _record_path(study_dir)
    record.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(record, json.dumps({"driver": driver_id(), "session_dir": session_dir}) + "\n")
    try:
        ray.init(**session_folder_kwargs(session_dir), **init_kwargs)
    except BaseException:
        stop_local(study_dir, session_dir)
        raise
    return session_dir


def stop_local(study_dir: Path, session_dir: str, *, keep_logs: bool = False) -> None:
    """Shut down the local instance of :func:`start_local`: Ray's shutdown, any of its processes
    still alive, its folder (kept with ``keep_logs``: Ray's session logs) and its record."""
    import ray

    try:
        ray.shutdown()
    finally:
        stop_session_processes(session_dir)
        if not keep_logs and _is_own_session_dir(session_dir):
            shutil.rmtree(session_dir, ignore_errors=True)
        _record_path(study_dir).unlink(missing_ok=True)
