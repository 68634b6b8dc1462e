"""Find and open the Optuna study of a study directory, read-only in spirit.

A directory written by ``svite-search search`` has ``study.json`` (study name, where the storage
is) and ``spec.yaml`` (``{spec_hash, spec}``); the search harness's own reader opens it. For
other directories the storage is, in order: a URL in ``DIR/storage.txt``, ``search.storage`` in
``DIR/spec.yaml``, then ``DIR/optuna.db`` (sqlite) or ``DIR/optuna.journal`` (Optuna's journal
file); the study is the spec's ``name``, or the only study in the storage. A directory without
any of these is a user error (exit code 2), never a fresh empty study.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .._study_dir import readonly_storage_url
from ..errors import UserInputError


def read_spec(study_dir: Path) -> dict[str, Any]:
    """The spec copy the search wrote into the study directory, or ``{}``."""
    path = study_dir / "spec.yaml"
    if not path.is_file():
        return {}
    from ..config import read_yaml

    data = read_yaml(path)
    if isinstance(data, dict) and isinstance(data.get("spec"), dict) and "spec_hash" in data:
        return data["spec"]  # the search harness's copy: {spec_hash, spec}
    if not isinstance(data, dict):
        raise UserInputError(f"{path}: damaged (not a mapping)")
    return data


def storage_of(study_dir: Path, spec: dict[str, Any]) -> Any:
    """The Optuna storage (URL or storage object) of a study directory."""
    import optuna

    pointer = study_dir / "storage.txt"
    if pointer.is_file() and pointer.read_text().strip():
        return readonly_storage_url(pointer.read_text().strip())
    search = spec.get("search") if isinstance(spec.get("search"), dict) else {}
    if isinstance(search.get("storage"), str) and search["storage"]:
        return readonly_storage_url(search["storage"])
    sqlite = study_dir / "optuna.db"
    if sqlite.is_file():
        return readonly_storage_url(f"sqlite:///{sqlite.resolve()}")
    journal = study_dir / "optuna.journal"
    if journal.is_file():
        from optuna.storages.journal import JournalFileBackend

        return optuna.storages.JournalStorage(JournalFileBackend(str(journal)))
    raise UserInputError(f"{study_dir}: not a study directory (no optuna.db, optuna.journal or storage.txt)")


def load_study_dir(study_dir: str | Path) -> tuple[Any, dict[str, Any]]:
    """``(optuna.Study, spec)`` of a study directory written by ``svite-search search``."""
    import optuna

    study_dir = Path(study_dir)
    if not study_dir.is_dir():
        raise UserInputError(f"{study_dir}: no such directory")
    spec = read_spec(study_dir)
    if (study_dir / "study.json").is_file():
        from ..search.study import load_study

        return load_study(study_dir), spec
    storage = storage_of(study_dir, spec)
    names = optuna.get_all_study_names(storage)
    name = spec.get("name") if isinstance(spec.get("name"), str) else None
    if name not in names:
        if len(names) != 1:
            listed = ", ".join(names) or "none"
            raise UserInputError(f"{study_dir}: cannot tell which study to report (studies in the storage: {listed})")
        name = names[0]
    return optuna.load_study(study_name=name, storage=storage), spec
