"""Helpers of the reliability suite: tiny study specs, ``svite-search`` as a real process,
readers of a study directory's stores (Optuna, MLflow, report), the consistency check every
interrupted study must pass, and a digest of a directory to prove that a refused command left
it untouched.

Every study here trains a 2-block, width-32 ViT on the embedded digits for a few steps, so a
whole ``svite-search search`` process takes seconds.
"""
from __future__ import annotations

import copy
import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import yaml
from _support.waiting import HANG_S

from svite_search.search.study import trial_attrs

HERE = Path(__file__).resolve().parent
FAULT_CLI = HERE / "fault_models.py"

#: A study of three svite trials, 3 epochs of 4 steps each (about a second per trial).
CRASH_SPEC: dict[str, Any] = {
    "name": "crash",
    "method": "svite",
    "data": {"dataset": "digits", "batch_size": 64},
    "model": {"name": "vit_digits", "embed_dim": 32, "depth": 2, "num_heads": 2},
    "train": {"epochs": 3, "max_steps_per_epoch": 4, "warmup_epochs": 0, "lr": 2.0e-3, "threads": 1},
    "sparsity": {"density": {"low": 0.2, "high": 0.8}, "update_interval": {"low": 1, "high": 3}},
    "search": {"sampler": "tpe", "n_trials": 3, "seed": 0},
    "executor": {"kind": "local"},
}

#: A run config for ``svite-search train`` (one epoch of three steps).
TRAIN_CONFIG: dict[str, Any] = {
    "name": "tiny",
    "method": "s2vite",
    "data": {"dataset": "digits", "batch_size": 64},
    "model": {"name": "vit_digits", "embed_dim": 32, "depth": 2, "num_heads": 2},
    "train": {"epochs": 1, "max_steps_per_epoch": 3, "warmup_epochs": 0, "threads": 1},
    "sparsity": {"head_density": 0.5, "mlp_density": 0.5, "update_interval": 1},
}


def spec_with(base: dict[str, Any], **sections: Any) -> dict[str, Any]:
    """A deep copy of ``base`` with top-level keys replaced."""
    spec = copy.deepcopy(base)
    spec.update(copy.deepcopy(sections))
    return spec


def write_yaml(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


# ----------------------------------------------------------------------------- processes


def cli_env(**extra: str) -> dict[str, str]:
    """The environment of a ``svite-search`` process: no store named from outside the study
    directory, no progress bars, quiet telemetry."""
    env = dict(os.environ)
    for name in ("MLFLOW_TRACKING_URI", "SVITE_STORAGE_URL", "OPTUNA_STORAGE", "RAY_ADDRESS"):
        env.pop(name, None)
    env.update(MLFLOW_DISABLE_TELEMETRY="true", RAY_USAGE_STATS_ENABLED="0", MPLBACKEND="Agg",
               TQDM_DISABLE="1", PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    env.update(extra)
    return env


def cli_command(*args: str, faults: bool = False) -> list[str]:
    """``python -m svite_search ARGS``, or with the faulty models of :mod:`fault_models` registered."""
    entry = [str(FAULT_CLI)] if faults else ["-m", "svite_search"]
    return [sys.executable, *entry, *map(str, args)]


def run_cli(*args: str, cwd: Path, faults: bool = False, timeout: float = HANG_S, **env: str) -> subprocess.CompletedProcess:
    """Run ``svite-search ARGS`` to its end in a real process."""
    return subprocess.run(cli_command(*args, faults=faults), cwd=cwd, env=cli_env(**env), capture_output=True,
                          text=True, timeout=timeout)


def start_cli(*args: str, cwd: Path, log: Path, faults: bool = False, **env: str) -> subprocess.Popen:
    """Start ``svite-search ARGS`` in the background, its output going to ``log``."""
    handle = open(log, "w")
    proc = subprocess.Popen(cli_command(*args, faults=faults), cwd=cwd, env=cli_env(**env), stdout=handle,
                            stderr=subprocess.STDOUT, text=True)
    handle.close()
    return proc


def sigkill(proc: subprocess.Popen) -> None:
    """Kill without warning (no handler, no cleanup: what a lost node or the OOM killer does)."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def wait_for(condition: Callable[[], bool], proc: subprocess.Popen | None, timeout: float = HANG_S,
             poll: float = 0.01) -> None:
    """Poll ``condition`` until it holds; fail if ``proc`` ends first or the timeout passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the process ended (code {proc.returncode}) before the kill point was reached")
        time.sleep(poll)
    raise AssertionError("the kill point was not reached in time")


# ----------------------------------------------------------------------------- stores


def trial_states(study_dir: Path) -> dict[int, str]:
    """Trial number -> Optuna state, read straight from the sqlite file without locking it long
    (polled while a search process writes to it)."""
    path = study_dir / "optuna.db"
    if not path.is_file():
        return {}
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1) as db:
            return dict(db.execute("SELECT number, state FROM trials").fetchall())
    except sqlite3.Error:
        return {}


def load_trials(study_dir: Path) -> list[Any]:
    """Every Optuna trial of the study in ``study_dir``, by number."""
    import optuna

    url = f"sqlite:///{study_dir / 'optuna.db'}"
    names = optuna.get_all_study_names(storage=url)
    assert len(names) == 1, names
    return sorted(optuna.load_study(study_name=names[0], storage=url).get_trials(), key=lambda t: t.number)


def mlflow_runs(study_dir: Path) -> tuple[list[Any], list[Any]]:
    """(study runs, trial runs) of the study's own MLflow store, deleted ones included."""
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    client = MlflowClient(tracking_uri=f"sqlite:///{study_dir / 'mlflow.db'}")
    ids = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
    runs = client.search_runs(ids, run_view_type=ViewType.ALL, max_results=5000)
    parents = [r for r in runs if r.data.tags.get("svite.kind") == "study"]
    trials = [r for r in runs if r.data.tags.get("svite.kind") == "trial"]
    return parents, trials


def tree_digest(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file under ``root`` (empty when it does not exist)."""
    if not root.exists():
        return {}
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


# ----------------------------------------------------------------------------- the consistency check

#: Optuna trial state -> the status its MLflow trial run must end with.
RUN_STATUS = {"COMPLETE": "FINISHED", "FAIL": "FAILED", "PRUNED": "KILLED"}
#: Attributes of a trial that identify its result (not its timing or where it ran).
RESULT_ATTRS = ("top1", "top1_best", "top5", "val_loss", "train_loss", "gmacs", "density", "params_nonzero",
                "top1_history")


def assert_study_consistent(study_dir: Path, n_trials: int) -> list[Any]:
    """What every study must look like once its command has finished, however often it was
    killed on the way; returns its Optuna trials.

    * Optuna: exactly ``n_trials`` COMPLETE trials, nothing left RUNNING, every FAIL with its
      reason, a rerun (``retry_of``) only ever of a failed trial, each failed trial rerun at
      most once;
    * MLflow: one study run (FINISHED), exactly one trial run per trial that ran, nothing left
      RUNNING, each run's status the trial's state, a failed run tagged with its reason, a
      complete run holding the trial's final objective values;
    * report: complete (down to ``summary.md``, written last), ``trials.csv`` lists every trial
      that ran with its state, ``pareto.csv`` is the storage's Pareto front.
    """
    import pandas as pd

    trials = load_trials(study_dir)
    ran = [t for t in trials if t.state.name != "WAITING"]
    states = {t.number: t.state.name for t in ran}
    complete = [t for t in ran if t.state.name == "COMPLETE"]
    assert len(complete) == n_trials, states
    assert "RUNNING" not in states.values(), states
    for t in ran:
        if t.state.name == "FAIL":
            assert t.user_attrs.get("fail_reason"), f"trial {t.number} failed without a reason"
    retried = [t.user_attrs["retry_of"] for t in trials if "retry_of" in t.user_attrs]
    assert len(retried) == len(set(retried)), f"a trial was rerun twice: {retried}"
    for number in retried:
        assert states.get(number) == "FAIL", f"trial {number} ({states.get(number)}) was rerun"

    parents, runs = mlflow_runs(study_dir)
    assert [p.info.status for p in parents] == ["FINISHED"], [p.info.status for p in parents]
    by_number: dict[int, list[Any]] = {}
    for run in runs:
        assert run.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id
        by_number.setdefault(int(run.data.tags["svite.trial"]), []).append(run)
    assert sorted(by_number) == sorted(states), (sorted(by_number), states)
    for number, found in by_number.items():
        assert len(found) == 1, f"trial {number} has {len(found)} MLflow runs"
        run, state = found[0], states[number]
        assert run.info.status == RUN_STATUS[state], (number, state, run.info.status, run.data.tags)
        assert run.data.tags.get("svite.state") == state, (number, state, run.data.tags)
        if state == "FAIL":
            assert run.data.tags.get("svite.error"), f"failed trial {number} has no svite.error tag"
    for t in complete:
        metrics = by_number[t.number][0].data.metrics
        assert [metrics.get("top1"), metrics.get("gmacs")] == pytest_approx(t.values), (t.number, metrics)

    report = study_dir / "report"
    assert (report / "summary.md").read_text().strip(), "the report has no summary"
    table = pd.read_csv(report / "trials.csv")
    assert dict(zip(table["number"], table["state"])) == states
    front = pd.read_csv(report / "pareto.csv")
    best = sorted(t.number for t in best_trials(study_dir))
    assert sorted(front["number"]) == best
    return trials


def best_trials(study_dir: Path) -> list[Any]:
    import optuna

    url = f"sqlite:///{study_dir / 'optuna.db'}"
    return optuna.load_study(study_name=optuna.get_all_study_names(storage=url)[0], storage=url).best_trials


def pytest_approx(values: Any) -> Any:
    import pytest

    return pytest.approx(list(values), rel=1e-9, abs=1e-12)


def result_of(trial: Any) -> dict[str, Any]:
    """The parts of a trial that must not depend on when or how often its process was killed."""
    return {"params": dict(trial.params), "values": list(trial.values or []),
            **{k: trial_attrs(trial).get(k) for k in RESULT_ATTRS}}
