"""Find and open the Optuna study of a study directory, read-only.

A directory written by ``svite-search search`` (it has ``study.json``) is opened by the search's
own reader (:func:`svite_search.search.study.load_study`), which knows where its storage is. A
directory laid out the same way by hand (an Optuna study in ``DIR/optuna.db``, or in the database
``search.storage`` of ``DIR/spec.yaml`` names) is opened from those; the study is the spec's
``name``, or the only study in the storage. The layout is :mod:`svite_search._study_dir`'s. A
directory without a storage is a user error (exit code 2), never a fresh empty study.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .._study_dir import DB_FILE, SPEC_FILE, STUDY_FILE, readonly_storage_url, sqlite_url
from ..errors import UserInputError


def read_spec(study_dir: Path) -> dict[str, Any]:
    """The spec a study directory holds (``search``'s ``{spec_hash, spec}`` copy, or a spec
    mapping written by hand), or ``{}``."""
    path = study_dir / SPEC_FILE
    if not path.is_file():
        return {}
    from ..config import read_yaml

    data = read_yaml(path)
    if isinstance(data, dict) and isinstance(data.get("spec"), dict) and "spec_hash" in data:
        return data["spec"]  # the search harness's copy: {spec_hash, spec}
    if not isinstance(data, dict):
        raise UserInputError(f"{path}: damaged (not a mapping)")
    return data


def storage_of(study_dir: Path, spec: dict[str, Any]) -> str:
    """The read-only storage URL of a study directory without ``study.json``."""
    search = spec.get("search") if isinstance(spec.get("search"), dict) else {}
    if isinstance(search.get("storage"), str) and search["storage"]:
        return readonly_storage_url(search["storage"])
    if (study_dir / DB_FILE).is_file():
        return readonly_storage_url(sqlite_url(study_dir, DB_FILE))
    raise UserInputError(f"{study_dir}: not a study directory (no {STUDY_FILE}, no {DB_FILE} and no "
                         f"search.storage in {SPEC_FILE})")


def load_study_dir(study_dir: str | Path) -> tuple[Any, dict[str, Any]]:
    """``(optuna.Study, spec)`` of a study directory (see the module docstring)."""
    import optuna

    study_dir = Path(study_dir)
    if not study_dir.is_dir():
        raise UserInputError(f"{study_dir}: no such directory")
    spec = read_spec(study_dir)
    if (study_dir / STUDY_FILE).is_file():
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
