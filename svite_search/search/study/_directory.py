"""Create or resume the study of a study directory (see the package docstring for the rules)."""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import yaml

from ..._io import atomic_write_text  # not via ..train: reading a study needs no torch
from ..._redact import mask_credentials, mask_url
from ..._study_dir import DB_FILE, SPEC_FILE, STUDY_FILE, check_study_files, read_spec_copy
from ...errors import UserInputError
from ..spec import StudySpec, initial_queue, spec_from_dict
from ._drivers import SOURCE_ATTR
from ._recovery import recover_interrupted, retries_first
from ._samplers import make_pruner, make_sampler
from ._storage import open_storage, remember_url, storage_url


@dataclass
class StudyHandle:
    """An opened study: the Optuna study, its storage and what resuming it found."""

    spec: StudySpec
    study_dir: Path
    study: optuna.Study
    storage: optuna.storages.RDBStorage
    url: str
    resumed: bool = False
    recovered: list[int] = field(default_factory=list)


def _write_study_files(handle: StudyHandle, source: str) -> None:
    spec, study_dir = handle.spec, handle.study_dir
    study_dir.mkdir(parents=True, exist_ok=True)
    header = "# The study spec this directory was created with (svite-search search); spec_hash names it.\n"
    body = yaml.safe_dump({"spec_hash": spec.spec_hash, "spec": mask_credentials(spec.raw)}, sort_keys=False)
    atomic_write_text(study_dir / SPEC_FILE, header + body)
    storage = {"url": f"sqlite:///{DB_FILE}", "relative": True} if source == "study_dir" else {"url": mask_url(handle.url), "source": source}
    info = {
        "study_name": spec.name,
        "spec_hash": spec.spec_hash,
        "objectives": [o.to_dict() for o in spec.objectives],
        "constraints": [c.name for c in spec.constraints],
        "n_trials": spec.n_trials,
        "storage": storage,
    }
    atomic_write_text(study_dir / STUDY_FILE, json.dumps(info, indent=2) + "\n")


def _check_same_study(spec: StudySpec, study_dir: Path, existing: optuna.Study | None, force: bool) -> None:
    saved = read_spec_copy(study_dir)
    theirs = (saved or {}).get("spec_hash")
    if theirs is None and existing is not None:
        theirs = existing.user_attrs.get("spec_hash")
    if theirs is not None and theirs != spec.spec_hash and not force:
        raise UserInputError(
            f"{study_dir}: holds study {spec.name!r} created from a different spec "
            f"(spec hash {theirs} here, {spec.spec_hash} now); pass --force to continue it with this "
            "spec, or choose another --out"
        )
    if existing is not None:
        theirs_dirs = [d.name.lower() for d in existing.directions]
        if theirs_dirs != spec.directions:
            raise UserInputError(
                f"{study_dir}: study {spec.name!r} optimises {theirs_dirs}, the spec {spec.directions}; "
                "objectives cannot change in a study: choose another --out"
            )


def prepare_study(spec: StudySpec, study_dir: str | Path, *, force: bool = False, parallel: bool = False) -> StudyHandle:
    """Create or resume the study of ``study_dir`` (see the module docstring)."""
    study_dir = Path(study_dir)
    if study_dir.exists() and not study_dir.is_dir():
        raise UserInputError(f"{study_dir}: exists and is not a directory")
    try:
        study_dir.mkdir(parents=True, exist_ok=True)
        probe = study_dir / ".writable"
        probe.touch()
        probe.unlink()
    except OSError as err:
        raise UserInputError(f"{study_dir}: cannot be used as the study directory ({err.strerror or err})") from None
    check_study_files(study_dir)  # a damaged study.json, spec.yaml or store: refused before any is opened
    url, source = storage_url(spec, study_dir)
    storage = open_storage(url)
    remember_url(study_dir, url)
    try:
        existing = optuna.load_study(study_name=spec.name, storage=storage)
    except KeyError:
        existing = None
    _check_same_study(spec, study_dir, existing, force)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study = optuna.create_study(
            study_name=spec.name,
            storage=storage,
            directions=spec.directions,
            sampler=make_sampler(spec, parallel=parallel),
            pruner=make_pruner(spec),
            load_if_exists=True,
        )
        if existing is None:
            study.set_metric_names(spec.metrics)
    study.set_user_attr("spec_hash", spec.spec_hash)
    handle = StudyHandle(spec, study_dir, study, storage, url, resumed=existing is not None)
    if not study.user_attrs.get("queued"):
        for params in initial_queue(spec):
            study.enqueue_trial(params, user_attrs={SOURCE_ATTR: "grid" if spec.search.sampler == "grid" else "enqueue"},
                                skip_if_exists=True)
        study.set_user_attr("queued", True)
    retries_first(study, storage)
    handle.recovered = recover_interrupted(study, storage)
    _write_study_files(handle, source)
    return handle


def spec_of(study_dir: str | Path) -> StudySpec | None:
    """The validated spec a study directory was created with (None if it has none)."""
    saved = read_spec_copy(Path(study_dir))
    return spec_from_dict(saved["spec"]) if saved and isinstance(saved.get("spec"), dict) else None
