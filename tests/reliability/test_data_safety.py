"""Data safety: no command destroys or changes what another command wrote.

Every case runs ``svite-search`` as a real process against real stores (a finished study, a
finished S²ViTE training run and its slim model, all written by real processes) and hashes
every file before and after:

* ``train --out`` a study directory, or a trial directory inside one, is refused (``--fresh``
  included) and ``--fresh`` elsewhere removes only the run's own files;
* ``export-slim`` never overwrites its own input or any file that is not a slim model;
* ``report`` writes nothing outside the report folder, opens the storage read-only and refuses a
  missing or empty one instead of creating it;
* a storage URL's password is written nowhere (MLflow params and artifacts, the study's files,
  the report, the output);
* files are written with the mode the umask gives, not 0600;
* ``summary.md`` shows HTML from parameter values and error messages as text.
"""
from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from reliability_support import CRASH_SPEC, TRAIN_CONFIG, cli_command, cli_env, run_cli, spec_with, tree_digest, write_yaml
from _support.waiting import HANG_S


class Stores:
    """A copy of the reference study, a training run and its slim model."""

    def __init__(self, root: Path, study: Path, run: Path, slim: Path) -> None:
        self.root, self.study, self.run, self.slim = root, study, run, slim

    def digest(self) -> dict[str, dict[str, str]]:
        return {"study": tree_digest(self.study), "run": tree_digest(self.run), "slim": tree_digest(self.slim.parent)}


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory, reference_study: Path) -> Stores:
    root = tmp_path_factory.mktemp("data-safety")
    study = root / "study"
    shutil.copytree(reference_study, study)
    run = root / "run"
    done = run_cli("train", write_yaml(root / "train.yaml", TRAIN_CONFIG), "--out", run, "--no-progress", cwd=root)
    assert done.returncode == 0, done.stderr[-3000:]
    slim = root / "slim" / "model.pt"
    slim.parent.mkdir()
    done = run_cli("export-slim", run / "last.pt", "--out", slim, cwd=root)
    assert done.returncode == 0, done.stderr[-3000:]
    return Stores(root, study, run, slim)


def refused(stores: Stores, *argv: Any, names: str, cwd: Path | None = None, also: Path | None = None) -> str:
    """Run ``svite-search ARGV``: exit 2, nothing on stdout, one stderr line naming ``names``,
    and every store (and ``also``) byte-identical. Returns the line."""
    before = stores.digest(), tree_digest(also) if also else None
    done = run_cli(*argv, cwd=cwd or stores.root)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2, done.stderr[-3000:]
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"svite-search {argv[0]}: error:") and names in lines[0], lines[0]
    assert done.stdout == ""
    assert (stores.digest(), tree_digest(also) if also else None) == before, "a refused command changed files"
    return lines[0]


# ----------------------------------------------------------------------------- train


@pytest.mark.parametrize("where", [".", "trials/0", "trials/7/new"], ids=["study", "trial", "new_dir_in_study"])
def test_train_never_writes_into_a_study(stores: Stores, where: str) -> None:
    out = stores.study / where
    config = write_yaml(stores.root / "train.yaml", TRAIN_CONFIG)
    for extra in ((), ("--fresh",)):
        line = refused(stores, "train", config, "--out", out, "--no-progress", *extra, names=str(out))
        assert "study" in line
    assert not (stores.study / "trials" / "7").exists()


def test_train_fresh_removes_only_the_run_files(stores: Stores, tmp_path: Path) -> None:
    run = tmp_path / "mine"
    shutil.copytree(stores.run, run)
    (run / "notes.txt").write_text("the user's own notes\n")
    (run / "data").mkdir()
    (run / "data" / "keep.csv").write_text("a,b\n1,2\n")
    config = write_yaml(tmp_path / "train.yaml", TRAIN_CONFIG)
    done = run_cli("train", config, "--out", run, "--fresh", "--no-progress", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (run / "notes.txt").read_text() == "the user's own notes\n"
    assert (run / "data" / "keep.csv").read_text() == "a,b\n1,2\n"
    assert {"last.pt", "config.yaml", "result.json"} <= {p.name for p in run.iterdir()}


# ----------------------------------------------------------------------------- export-slim


def test_export_slim_never_overwrites_its_input_or_other_files(stores: Stores) -> None:
    checkpoint = stores.run / "last.pt"
    refused(stores, "export-slim", checkpoint, "--out", checkpoint, names=str(checkpoint))
    for victim in (stores.study / "optuna.db", stores.study / "trials" / "0" / "last.pt", stores.run / "result.json"):
        refused(stores, "export-slim", checkpoint, "--out", victim, names=str(victim))
    # the same file under another name (a symbolic link) is still the input
    link = stores.root / "link.pt"
    link.unlink(missing_ok=True)
    link.symlink_to(checkpoint)
    refused(stores, "export-slim", checkpoint, "--out", link, names=str(link))


# ----------------------------------------------------------------------------- report


def test_report_writes_only_its_report_folder(stores: Stores, tmp_path: Path) -> None:
    study = tmp_path / "study"
    shutil.copytree(stores.study, study)
    outside = {k: v for k, v in tree_digest(study).items() if not k.startswith("report/")}
    done = run_cli("report", study, "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert {k: v for k, v in tree_digest(study).items() if not k.startswith("report/")} == outside
    assert (study / "report" / "summary.md").is_file()


@pytest.mark.parametrize("damage", ["missing", "empty"])
def test_report_refuses_a_missing_or_empty_storage_and_creates_none(stores: Stores, tmp_path: Path,
                                                                    damage: str) -> None:
    study = tmp_path / "study"
    shutil.copytree(stores.study, study)
    db = study / "optuna.db"
    if damage == "missing":
        db.unlink()
    else:
        db.write_bytes(b"")
    refused(stores, "report", study, names=str(db), also=study)
    assert (db.exists(), db.exists() and db.stat().st_size) == ((False, False) if damage == "missing" else (True, 0))


# ----------------------------------------------------------------------------- secrets, modes, escaping

SECRET = "s3cret-pw-4711"


def test_a_storage_password_is_written_nowhere(tmp_path: Path, mlflow_template: Path) -> None:
    study = tmp_path / "study"
    study.mkdir()
    shutil.copy(mlflow_template, study / "mlflow.db")
    storage = f"sqlite:///{study / 'optuna.db'}?password={SECRET}"
    spec = spec_with(CRASH_SPEC, search={**CRASH_SPEC["search"], "n_trials": 1, "storage": storage},
                     train={**CRASH_SPEC["train"], "epochs": 1, "max_steps_per_epoch": 1})
    done = run_cli("search", write_yaml(tmp_path / "spec.yaml", spec), "--out", study, "--no-progress", "--json",
                   cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert SECRET not in done.stdout + done.stderr
    leaked = [str(p.relative_to(study)) for p in study.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
    assert leaked == [], f"the storage password is written in {leaked}"
    assert "password=***" in (study / "spec.yaml").read_text()
    assert (study / "report" / "summary.md").is_file()  # the report still found the storage


def test_files_take_the_mode_the_umask_gives(stores: Stores, tmp_path: Path) -> None:
    def run(*argv: Any) -> None:
        done = subprocess.run(cli_command(*argv), cwd=tmp_path, env=cli_env(), capture_output=True, text=True,
                              timeout=HANG_S, preexec_fn=lambda: os.umask(0o027))
        assert done.returncode == 0, done.stderr[-3000:]

    run("train", write_yaml(tmp_path / "train.yaml", TRAIN_CONFIG), "--out", tmp_path / "run", "--no-progress")
    run("export-slim", tmp_path / "run" / "last.pt", "--out", tmp_path / "slim.pt")
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in [*(tmp_path / "run").iterdir(), tmp_path / "slim.pt"]}
    assert modes == {"last.pt": 0o640, "config.yaml": 0o640, "result.json": 0o640, "slim.pt": 0o640}, modes


def test_summary_shows_html_from_parameters_and_errors_as_text(stores: Stores, tmp_path: Path) -> None:
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution
    from optuna.trial import TrialState, create_trial

    study_dir = tmp_path / "study"
    shutil.copytree(stores.study, study_dir)
    url = f"sqlite:///{study_dir / 'optuna.db'}"
    study = optuna.load_study(study_name=optuna.get_all_study_names(url)[0], storage=url)
    payload = '<img src=x onerror="alert(1)">'
    dists = {"sparsity.density": FloatDistribution(0.2, 0.8), "data.randaug": CategoricalDistribution([payload, "x"])}
    study.add_trial(create_trial(params={"sparsity.density": 0.5, "data.randaug": payload}, distributions=dists,
                                 values=[99.0, 1e-6], user_attrs={"method": "svite"}))
    study.add_trial(create_trial(state=TrialState.FAIL, params={"sparsity.density": 0.4},
                                 distributions={"sparsity.density": dists["sparsity.density"]},
                                 user_attrs={"fail_reason": "<script>alert(2)</script>"}))
    done = run_cli("report", study_dir, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    text = (study_dir / "report" / "summary.md").read_text()
    assert "&lt;img" in text and "&lt;script&gt;" in text, text
    assert "<img" not in text and "<script" not in text, text
