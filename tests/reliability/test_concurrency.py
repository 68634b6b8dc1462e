"""Concurrency: two ``svite-search search`` processes on one study directory, so two trials
train at once against the same sqlite stores (Optuna and MLflow) for the length of a small
study. No write may fail on a lock, and the two drivers must either cooperate (the study ends
with exactly ``n_trials`` complete trials, none run twice, none of the other driver's trials
failed as "interrupted") or the second must refuse at once with exit code 2 and one line.

The trials use ``rel_vit_slow`` (:mod:`fault_models`): each training step sleeps, so a trial
lasts seconds without using the CPU and the two drivers really overlap.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from reliability_support import (
    CRASH_SPEC,
    assert_study_consistent,
    load_trials,
    mlflow_runs,
    sigkill,
    spec_with,
    start_cli,
    wait_for,
    write_yaml,
)

N_TRIALS = 4
SPEC = spec_with(
    CRASH_SPEC, name="shared",
    model={"name": "rel_vit_slow"},
    train={**CRASH_SPEC["train"], "epochs": 2, "max_steps_per_epoch": 4},
    search={"sampler": "tpe", "n_trials": N_TRIALS, "seed": 0},
)
SLOW = {"REL_SLOW_S": "0.25"}
LOCK_ERRORS = ("database is locked", "OperationalError", "Traceback", "already exists")


def _finish(procs: list, logs: list[Path]) -> list[tuple[int, str]]:
    out = []
    for proc, log in zip(procs, logs):
        try:
            proc.wait(timeout=300)
        finally:
            if proc.poll() is None:
                sigkill(proc)
        out.append((proc.returncode, log.read_text()))
    return out


def _no_lock_errors(results: list[tuple[int, str]]) -> None:
    for _, text in results:
        found = [e for e in LOCK_ERRORS if e in text]
        assert not found, (found, text[-3000:])


def _cooperated_or_refused(study: Path, results: list[tuple[int, str]]) -> None:
    _no_lock_errors(results)
    codes = [code for code, _ in results]
    if 2 in codes:  # the second refused: one line naming the directory, the first finished
        refused = results[codes.index(2)][1]
        lines = [line for line in refused.splitlines() if line.startswith("svite-search")]
        assert len(lines) == 1 and str(study) in lines[0], refused[-2000:]
        assert sorted(codes) == [0, 2]
    else:
        assert codes == [0, 0], [text[-2000:] for _, text in results]
    trials = assert_study_consistent(study, N_TRIALS)
    assert all(t.state.name == "COMPLETE" for t in trials), "a live driver's trial was failed as interrupted"
    params = [tuple(sorted(t.params.items())) for t in trials]
    assert len(set(params)) == len(params), "the two drivers ran the same parameters"


@pytest.fixture(scope="module")
def joined(tmp_path_factory: pytest.TempPathFactory, mlflow_template: Path) -> tuple[Path, list[tuple[int, str]]]:
    """A study whose first driver has opened it when a second one starts on it."""
    root = tmp_path_factory.mktemp("joined")
    study = root / "study"
    study.mkdir()
    shutil.copy(mlflow_template, study / "mlflow.db")
    spec = write_yaml(root / "shared.yaml", SPEC)
    args = ("search", spec, "--out", study, "--no-progress")
    logs = [root / "first.log", root / "second.log"]
    first = start_cli(*args, cwd=root, log=logs[0], faults=True, **SLOW)
    try:
        wait_for(lambda: (study / "study.json").is_file(), first)  # the first has opened the study
    except BaseException:
        sigkill(first)
        raise
    second = start_cli(*args, cwd=root, log=logs[1], faults=True, **SLOW)
    return study, _finish([first, second], logs)


@pytest.mark.slow
def test_two_drivers_share_the_stores_without_lock_errors(joined) -> None:
    study, results = joined
    _no_lock_errors(results)
    assert [code for code, _ in results] in ([0, 0], [0, 2]), [text[-2000:] for _, text in results]
    trials = load_trials(study)
    assert len([t for t in trials if t.state.name == "COMPLETE"]) >= N_TRIALS
    assert all(t.state.name == "COMPLETE" for t in trials), "a live driver's trial was failed"
    params = [tuple(sorted(t.params.items())) for t in trials]
    assert len(set(params)) == len(params), "the two drivers ran the same parameters"
    parents, runs = mlflow_runs(study)
    assert [p.info.status for p in parents] == ["FINISHED"]
    assert sorted(int(r.data.tags["svite.trial"]) for r in runs) == [t.number for t in trials]
    assert {r.info.status for r in runs} == {"FINISHED"}
    if [code for code, _ in results] == [0, 0]:  # they cooperated: both really trained, at once
        assert len({t.user_attrs.get("driver") for t in trials}) == 2


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="search: run_local asks for a trial while finished < n_trials without "
                   "counting the other driver's running trials, so two drivers overshoot n_trials")
def test_two_drivers_stop_at_n_trials(joined) -> None:
    study, results = joined
    _cooperated_or_refused(study, results)


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="search/tracking: two searches started together on a new study directory "
                   "race on the MLflow store's migrations (exit 1) or, with the store in place, sample the same "
                   "parameters (the sampler seed is the spec seed plus the trials already there: 0 for both)")
def test_two_searches_started_together(tmp_path: Path) -> None:
    study = tmp_path / "study"
    spec = write_yaml(tmp_path / "shared.yaml", SPEC)
    args = ("search", spec, "--out", study, "--no-progress")
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    procs = [start_cli(*args, cwd=tmp_path, log=log, faults=True, **SLOW) for log in logs]
    _cooperated_or_refused(study, _finish(procs, logs))
