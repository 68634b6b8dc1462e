"""Crash and resume: ``svite-search search`` SIGKILLed at several points, then the same command
run again, must end exactly like a run that was never interrupted.

The kill points are found by watching the study directory from outside (the Optuna sqlite
file, the trial checkpoints, the report folder), as an operator or a scheduler would see it:

* ``during_trial``: trial 1 has written its first epoch checkpoint and is still training;
* ``after_trial_complete``: the moment Optuna records trial 0 COMPLETE, while the driver is
  still closing its MLflow run and starting trial 1;
* ``during_report``: every trial is done and the report is half written (its tables are there,
  its plots and summary not yet);
* ``during_trial_overnight``: as ``during_trial``, and the rerun comes more than the heartbeat
  grace period later ("it crashed overnight, rerun in the morning"): the killed trial's
  heartbeat in the Optuna storage is aged by a day, as the night would have aged it.

Nothing may be lost or counted twice: the completed trials keep their results, the interrupted
one is FAIL with a reason in Optuna and MLflow and is rerun from its checkpoint (so its rerun
scores exactly what the uninterrupted reference run scored), and the final stores and report
agree (:func:`reliability_support.assert_study_consistent`).
"""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from reliability_support import (
    CRASH_SPEC,
    assert_study_consistent,
    load_trials,
    mlflow_runs,
    result_of,
    run_cli,
    sigkill,
    start_cli,
    trial_states,
    wait_for,
)

N_TRIALS = CRASH_SPEC["search"]["n_trials"]


def _age_heartbeats(study: Path) -> None:
    """What a night does to the heartbeats of trials a killed driver left RUNNING: each one's
    last beat (the driver beats every 30 s) is a day old."""
    with sqlite3.connect(study / "optuna.db") as db:
        for (trial_id,) in db.execute("SELECT trial_id FROM trials WHERE state = 'RUNNING'").fetchall():
            db.execute("DELETE FROM trial_heartbeats WHERE trial_id = ?", (trial_id,))
            db.execute("INSERT INTO trial_heartbeats (trial_id, heartbeat) VALUES (?, datetime('now', '-1 day'))",
                       (trial_id,))


def _kill_point(name: str, study: Path):
    if name in ("during_trial", "during_trial_overnight"):
        return lambda: trial_states(study).get(1) == "RUNNING" and (study / "trials" / "1" / "last.pt").is_file()
    if name == "after_trial_complete":
        return lambda: trial_states(study).get(0) == "COMPLETE"
    if name == "during_report":  # its tables written, plots and summary not yet
        return lambda: any((study / "report").glob("*/trials.csv")) or (study / "report" / "trials.csv").is_file()
    raise ValueError(name)


@pytest.mark.slow
@pytest.mark.parametrize("point", ["during_trial", "after_trial_complete", "during_report", "during_trial_overnight"])
def test_sigkill_then_rerun_loses_nothing(point: str, tmp_path: Path, new_study_dir, crash_spec_file: Path,
                                         reference_study: Path) -> None:
    study = new_study_dir("study")
    args = ("search", crash_spec_file, "--out", study, "--no-progress")
    proc = start_cli(*args, cwd=tmp_path, log=tmp_path / "killed.log")
    wait_for(_kill_point(point, study), proc)
    sigkill(proc)

    before = {t.number: t for t in load_trials(study)}
    done_before = {n: result_of(t) for n, t in before.items() if t.state.name == "COMPLETE"}
    running_before = sorted(n for n, t in before.items() if t.state.name == "RUNNING")
    if point.startswith("during_trial"):
        assert running_before == [1]
        assert done_before.keys() == {0}
    if point == "during_trial_overnight":
        _age_heartbeats(study)
    if point == "during_report":
        assert len(done_before) == N_TRIALS
        assert not (study / "report" / "summary.md").exists()

    rerun = run_cli(*args, "--json", cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "Traceback" not in rerun.stderr
    summary = json.loads(rerun.stdout)
    finished_at_kill = sum(1 for t in before.values() if t.state.name in ("COMPLETE", "FAIL", "PRUNED"))

    trials = assert_study_consistent(study, N_TRIALS)
    after = {t.number: t for t in trials}
    # trials_run_now: the trials this run finished; the recovered ones it only marked failed
    finished_now = sum(1 for t in trials if t.state.name in ("COMPLETE", "FAIL", "PRUNED")) - finished_at_kill
    assert summary["recovered"] == running_before
    assert summary["trials_run_now"] == finished_now - len(running_before), summary
    if point == "during_report":  # nothing the killed write left behind remains
        assert not [p.name for p in (study / "report").iterdir() if p.name.endswith(".tmp")]
    reference = {t.number: result_of(t) for t in load_trials(reference_study)}
    # nothing completed is lost or changed, and up to the kill the study was the reference run
    for number, result in done_before.items():
        assert result == reference[number]
        assert after[number].state.name == "COMPLETE"
        assert result_of(after[number]) == result
    # a trial the kill interrupted is failed with the reason, in Optuna and in MLflow, and rerun
    # once from its last checkpoint: it scores exactly what it scored in the uninterrupted run
    _, runs = mlflow_runs(study)
    run_of = {int(r.data.tags["svite.trial"]): r for r in runs}
    for number in running_before:
        assert after[number].state.name == "FAIL"
        assert after[number].user_attrs["fail_reason"].startswith("interrupted")
        assert run_of[number].info.status == "FAILED"
        assert "no reason" not in run_of[number].data.tags.get("svite.error", "no reason")
        reruns = [t for t in trials if t.user_attrs.get("retry_of") == number]
        assert len(reruns) == 1 and reruns[0].state.name == "COMPLETE"
        assert result_of(reruns[0]) == reference[number]
