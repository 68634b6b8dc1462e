"""The study directory: its layout (the one place that names its files), and what it holds,
judged without writing a byte to it.

Layout of a study directory ``DIR`` (who writes each entry)::

    DIR/study.json       search: study name, objectives, n_trials and where the storage is
    DIR/spec.yaml        search: ``{spec_hash, spec}``, the spec the study was created with
    DIR/optuna.db        search: the Optuna storage (sqlite), unless search.storage,
                         SVITE_STORAGE_URL or OPTUNA_STORAGE names a database URL
    DIR/trials/<n>/      trial n's run directory (the trainer writes config.yaml, last.pt and
                         result.json there)
    DIR/mlflow.db        tracking: the default MLflow store, its artifacts in DIR/mlartifacts/
    DIR/report/          search (when it ends) and report: the Pareto-front report
    DIR/ray/             the ray executor's Tune files

Every reader and writer of a study directory names these entries through this module
(:func:`trial_dir`, :func:`report_dir`, :func:`sqlite_url`, the constants below), never by a
string of its own.

Commands other than ``search`` must never change a study: ``train`` refuses to write into one
(or into a trial directory inside one), ``export-slim`` refuses to overwrite its files, and
``report`` only reads it (its storage opened read-only). ``search`` itself checks the files it
would resume from before it opens any store, so a damaged ``study.json``, ``spec.yaml`` or sqlite
file is a one-line error (exit code 2) rather than a traceback, or a new empty store written over
the evidence.

Imports only the standard library, YAML and the error types (the command line calls it before
anything heavy is loaded).
"""
from __future__ import annotations

import json
import os
import sqlite3
import struct
from pathlib import Path
from typing import Any

from .errors import UserInputError, first_line

STUDY_FILE = "study.json"
SPEC_FILE = "spec.yaml"
DB_FILE = "optuna.db"
TRIALS_DIR = "trials"
MLFLOW_DB = "mlflow.db"
MLFLOW_ARTIFACTS = "mlartifacts"
REPORT_DIR = "report"
RAY_DIR = "ray"
#: The files of a run directory (a trial's, or a ``train`` run's): the trainer writes them.
RUN_CONFIG, RUN_CHECKPOINT, RUN_RESULT = "config.yaml", "last.pt", "result.json"
#: Folders inside a study that hold its trials' and stores' files (a study.json there is not a study).
INNER_DIRS = (TRIALS_DIR, RAY_DIR, MLFLOW_ARTIFACTS)

#: Files only a study directory has (``search`` writes them; ``train`` never does).
STUDY_MARKERS = (STUDY_FILE, DB_FILE)
#: The sqlite stores of a study directory.
SQLITE_STORES = (DB_FILE, MLFLOW_DB)
_SQLITE_MAGIC = b"SQLite format 3\x00"


def _absolute(path: str | Path) -> Path:
    """``path`` made absolute and normalised without requiring it to exist (``..`` resolved)."""
    return Path(os.path.realpath(os.path.abspath(os.fspath(path))))


def trial_dir(study_dir: str | Path, number: int) -> Path:
    """Where trial ``number`` of a study trains: its config.yaml, checkpoint and result.json."""
    return Path(study_dir) / TRIALS_DIR / str(int(number))


def report_dir(study_dir: str | Path) -> Path:
    """Where a study's report goes unless ``report --out`` says otherwise."""
    return Path(study_dir) / REPORT_DIR


def sqlite_url(study_dir: str | Path, name: str = DB_FILE) -> str:
    """The SQLAlchemy URL of one of a study directory's own sqlite stores (absolute)."""
    return f"sqlite:///{Path(study_dir).resolve() / name}"


def holds_study(directory: Path) -> bool:
    """Whether ``directory`` is a study directory (it has a file only ``search`` writes)."""
    return any((directory / name).is_file() for name in STUDY_MARKERS)


def enclosing_study(path: str | Path) -> Path | None:
    """The study directory ``path`` is, or lies inside (``runs/q`` for ``runs/q/trials/0``), or None."""
    probe = _absolute(path)
    for directory in (probe, *probe.parents):
        if directory.is_dir() and holds_study(directory):
            return directory
    return None


def is_sqlite_file(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(len(_SQLITE_MAGIC)) == _SQLITE_MAGIC
    except OSError:
        return False


def check_sqlite(path: Path) -> None:
    """Refuse (naming ``path``) an sqlite file that is not one, is cut short, or fails sqlite's
    own quick check. Opened read-only: nothing is written, not even a journal. A missing or
    empty file passes (there is nothing to damage; the caller decides whether it may be created)."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return
    if size == 0:
        return
    try:
        with open(path, "rb") as handle:
            header = handle.read(100)
    except OSError as err:
        raise UserInputError(f"{path}: cannot be read ({err.strerror or err})") from None
    if len(header) < 100 or not header.startswith(_SQLITE_MAGIC):
        raise UserInputError(f"{path}: not an sqlite database (damaged or overwritten)")
    journal = path.with_name(path.name + "-journal")
    if journal.is_file() and journal.stat().st_size:
        return  # a write was cut short: sqlite rolls it back when the store is next opened for writing
    page_size = struct.unpack(">H", header[16:18])[0]
    page_size = 65536 if page_size == 1 else page_size
    change_counter, pages = struct.unpack(">II", header[24:32])
    valid_for = struct.unpack(">I", header[92:96])[0]
    expected = pages * page_size if valid_for == change_counter else 0
    if page_size < 512 or size % page_size or size < expected:
        raise UserInputError(f"{path}: truncated sqlite database ({size} bytes of {expected or 'whole pages'})")
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    except sqlite3.Error:
        return  # cannot be opened read-only here (a lock, a permission): the store's own open will say
    try:
        verdict = db.execute("PRAGMA quick_check").fetchone()
    except sqlite3.OperationalError:
        return  # busy or locked by a live writer: not damage
    except sqlite3.DatabaseError as err:
        raise UserInputError(f"{path}: damaged sqlite database ({err})") from None
    finally:
        db.close()
    if not verdict or verdict[0] != "ok":
        raise UserInputError(f"{path}: damaged sqlite database ({verdict[0] if verdict else 'no answer'})")


def read_study_json(study_dir: Path) -> dict[str, Any] | None:
    """``study.json`` of a study directory (None when absent), refused when it is not the JSON
    object ``search`` writes."""
    path = study_dir / STUDY_FILE
    if not path.is_file():
        return None
    try:
        info = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise UserInputError(f"{path}: damaged ({type(err).__name__}: {first_line(err, 80)})") from None
    except OSError as err:
        raise UserInputError(f"{path}: cannot be read ({err.strerror or err})") from None
    if not isinstance(info, dict) or not isinstance(info.get("study_name"), str) or not info["study_name"]:
        raise UserInputError(f"{path}: damaged (not a study file: no study_name)")
    if not isinstance(info.get("storage", {}), dict):
        raise UserInputError(f"{path}: damaged (storage is not a mapping)")
    return info


def read_spec_copy(study_dir: Path) -> dict[str, Any] | None:
    """``spec.yaml`` of a study directory: the ``{spec_hash, spec}`` copy ``search`` writes
    (None when absent), refused when damaged."""
    from .config import read_yaml

    path = study_dir / SPEC_FILE
    if not path.is_file():
        return None
    data = read_yaml(path)
    if not isinstance(data, dict) or not isinstance(data.get("spec"), dict) or not isinstance(data.get("spec_hash"), str):
        raise UserInputError(f"{path}: not the {{spec_hash, spec}} copy `svite-search search` writes (damaged, or "
                             "another file: it is not overwritten)")
    return data


def check_study_files(study_dir: Path) -> None:
    """Refuse a study directory whose own files are damaged, before any store is opened."""
    if not study_dir.is_dir():
        return
    read_study_json(study_dir)
    if (study_dir / SPEC_FILE).is_file() and holds_study(study_dir):
        read_spec_copy(study_dir)
    for name in SQLITE_STORES:
        check_sqlite(study_dir / name)


def readonly_sqlite_url(path: Path) -> str:
    """An SQLAlchemy URL that opens the sqlite file ``path`` read-only (never creates it)."""
    return f"sqlite:///file:{_absolute(path)}?mode=ro&uri=true"


def readonly_storage_url(url: str) -> str:
    """A sqlite storage URL made read-only (the file must exist, whole, and is never written);
    other databases as they are (their permissions are the server's)."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or url.startswith(prefix + "file:"):
        return url
    path = Path(url[len(prefix):].split("?", 1)[0])
    if not path.is_file() or path.stat().st_size == 0:
        raise UserInputError(f"{path}: the study's storage is missing or empty (nothing was read or written)")
    check_sqlite(path)
    return readonly_sqlite_url(path)


def check_output_path(option: str, path: str | Path, *, directory: bool) -> Path:
    """Refuse an output path that cannot be a new file (``directory=False``) or directory: an
    existing file or directory of the other kind, a parent that is a file, or a place that
    cannot be written (a read-only or virtual file system such as ``/proc``). Nothing is
    created. Returns the path."""
    path = Path(path)
    if path.exists():
        if directory and not path.is_dir():
            raise UserInputError(f"{option} {path}: exists and is not a directory")
        if not directory and path.is_dir():
            raise UserInputError(f"{option} {path}: is a directory")
    probe = path if directory and path.is_dir() else path.parent
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        raise UserInputError(f"{option} {path}: cannot be created ({probe} is not a directory)")
    if not os.access(probe, os.W_OK | os.X_OK) or _virtual_fs(probe):
        raise UserInputError(f"{option} {path}: cannot be written ({probe} is not writable)")
    return path


def _virtual_fs(directory: Path) -> bool:
    """Whether ``directory`` is on a kernel file system that holds no user files (``/proc``,
    ``/sys``): root may pass ``os.access`` there, yet no file can be created."""
    try:
        stat = os.statvfs(directory)
    except OSError:
        return False
    if stat.f_flag & getattr(os, "ST_RDONLY", 1):
        return True
    real = _absolute(directory)
    return any(real == Path(root) or Path(root) in real.parents for root in ("/proc", "/sys"))
