"""Early stopping in real studies: the local executor with MLflow, Ray Tune with trials running
at once, and a driver killed mid-rung that resumes with its rung records."""
from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from optuna.trial import TrialState

from _support.kill import kill_when
from svite_search.harness import run_search
from svite_search.search import load_spec, load_study, spec_from_dict
from svite_search.search.early_stopping import nondominated_fronts, runs_unjudged, should_continue
from svite_search.search.early_stopping.engine import replay, rung_objectives
from svite_search.search.study import trial_attrs

#: 3 epochs of 2 steps: one rung, at epoch 1 (reduction factor 2: a rung at 2 would have no step after it)
TRAIN = {"epochs": 3, "max_steps_per_epoch": 2, "warmup_epochs": 0, "checkpoint": False}
PARETO = {"kind": "pareto", "min_epochs": 1, "reduction_factor": 2}


def _records(trials: list[Any]) -> dict[tuple[int, int], dict[str, Any]]:
    return {(t.number, int(k.split("_")[1])): v for t in trials for k, v in t.user_attrs.items()
            if k.startswith("rung_")}


def _check_decisions(spec: Any, trials: list[Any]) -> None:
    """Every record decided again from the records it names; a trial judged before the warm-up
    went on, and one that went on had fewer trials dominating it than the rung's quota (brute
    force: each of them is ahead of it in the rung's order)."""
    for item in replay(spec, trials):
        assert item["recorded"] == item["replayed"], item
    _, directions = rung_objectives(spec)
    records = _records(trials)
    every = spec.search.early_stopping.full_run_every
    for (number, rung), record in records.items():
        if "adopted_from" in record:
            continue
        # one trial in every `full_run_every` (by lineage) goes on unjudged; the rule judges the rest
        assert record["reason"].startswith("unjudged: ") == runs_unjudged(record["lineage"], every), record
        if runs_unjudged(record["lineage"], every):
            assert record["go_on"]
            continue
        before = [records[(n, rung)]["values"] for n in record["against"]]
        assert set(record["against"]) < {n for n, r in records if r == rung} and number not in record["against"]
        eta = spec.search.early_stopping.reduction_factor
        if len(before) < eta:
            assert record["go_on"]
        elif record["go_on"]:
            dominating = [b for b in before if nondominated_fronts([b, record["values"]], directions) == [[0], [1]]]
            assert len(dominating) < max(1, (len(before) + 1) // eta)


def _check_stopped(trials: list[Any]) -> list[Any]:
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    for t in pruned:
        rung = max(r for n, r in _records([t]))
        assert t.user_attrs["pruned_reason"].startswith(f"stopped at rung {rung} (epoch {rung}): pareto: ")
        attrs = trial_attrs(t)  # the result metrics unpacked: one view, as the report reads them
        assert attrs["epochs"] == rung and len(attrs["top1_history"]) == rung
        assert attrs["top1"] == pytest.approx(attrs[f"rung_{rung}"]["values"][0])  # its last values
        assert attrs["gmacs"] == pytest.approx(attrs[f"rung_{rung}"]["values"][1])
    return pruned


@pytest.mark.slow
def test_local_pareto_study_stops_dominated_trials_as_pruned_and_killed(tmp_path: Path, tiny_spec: Any) -> None:
    from mlflow.tracking import MlflowClient

    spec = spec_from_dict(tiny_spec(
        method="svite", tokens=None, train=TRAIN, sparsity={"density": {"low": 0.2, "high": 0.9}},
        search={"sampler": "random", "n_trials": 6, "seed": 3, "early_stopping": PARETO},
        tracking={"enabled": True},
    ))
    summary = run_search(spec, tmp_path / "study", live=False)
    assert summary["trials_complete"] + summary["trials_pruned"] == 6 and summary["trials_failed"] == 0
    trials = load_study(tmp_path / "study").trials
    pruned = _check_stopped(trials)
    assert pruned and any(t.state == TrialState.COMPLETE for t in trials)
    assert {(t.number, 1) for t in trials} <= set(_records(trials))  # every trial recorded at rung 1
    _check_decisions(spec, trials)
    assert spec.search.early_stopping.full_run_every == 4  # the default: trial 3 runs to the end unjudged
    assert trials[3].state == TrialState.COMPLETE and _records(trials)[(3, 1)]["reason"].startswith("unjudged: ")

    client = MlflowClient(summary["tracking_uri"])
    experiment = client.get_experiment_by_name("tiny")
    runs = {int(r.data.tags["svite.trial"]): r
            for r in client.search_runs([experiment.experiment_id], "tags.`svite.kind` = 'trial'")}
    for t in pruned:
        assert runs[t.number].info.status == "KILLED"
        assert runs[t.number].data.tags["svite.pruned"] == t.user_attrs["pruned_reason"]


@pytest.mark.slow
def test_ray_pareto_study_with_trials_at_once(ray_session: None, tmp_path: Path, tiny_spec: Any) -> None:
    spec = spec_from_dict(tiny_spec(  # 2 epochs: one rung, at epoch 1
        method="svite", tokens=None, train={**TRAIN, "epochs": 2}, sparsity={"density": {"low": 0.2, "high": 0.9}},
        search={"sampler": "random", "n_trials": 6, "seed": 3, "early_stopping": PARETO},
        executor={"kind": "ray", "max_concurrent": 2},
    ))
    summary = run_search(spec, tmp_path / "study", live=False)
    assert summary["trials_complete"] + summary["trials_pruned"] == 6 and summary["trials_failed"] == 0
    trials = load_study(tmp_path / "study").trials
    assert _check_stopped(trials)
    _check_decisions(spec, trials)


def _scheduler_on_a_study(tmp_path: Path, tiny_spec: Any, *, full_run_every: int, trials: int) -> tuple[Any, Any, dict]:
    """The rung engine's Tune scheduler on a fresh sqlite study (9 epochs, rungs at 1 and 2, the
    given ``full_run_every``) holding ``trials`` asked trials, and a stub Tune trial for each."""
    import optuna
    from ray.tune.experiment import Trial

    from svite_search.search.early_stopping._ray import RungScheduler

    spec = spec_from_dict(tiny_spec(train={"epochs": 9}, search={
        "sampler": "random", "early_stopping": {**PARETO, "full_run_every": full_run_every}}))
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'optuna.db'}")
    study = optuna.create_study(study_name=spec.name, storage=storage, directions=spec.directions)
    numbers = [study.ask().number for _ in range(trials)]
    scheduler = RungScheduler(spec, storage, trial_key="t", final_key="final")
    return study, scheduler, {n: Trial("trainable", config={"t": {"number": n, "params": {}}}, stub=True) for n in numbers}


def test_ray_scheduler_judges_several_trials_arriving_out_of_order(tmp_path: Path, tiny_spec: Any) -> None:
    """The Tune scheduler itself, fed results of real Tune trials in an order no single trial
    would produce: each verdict is the rule's on the records present at that moment."""
    from ray.tune.schedulers import TrialScheduler

    study, scheduler, tune_trials = _scheduler_on_a_study(tmp_path, tiny_spec, full_run_every=0, trials=4)
    arrivals = [(2, 1, 40.0, 1.0), (0, 1, 30.0, 2.0), (2, 2, 60.0, 1.0), (1, 1, 35.0, 1.5), (3, 1, 20.0, 3.0),
                (0, 2, 50.0, 2.0), (1, 2, 45.0, 1.5)]
    decided: dict[int, str] = {}
    for number, epoch, top1, gmacs in arrivals:
        if decided.get(number) == TrialScheduler.STOP:
            continue
        recorded = [t.user_attrs[f"rung_{epoch}"]["values"] for t in study.get_trials(deepcopy=False)
                    if f"rung_{epoch}" in t.user_attrs]
        expected = should_continue("pareto", [top1, gmacs], recorded, ["maximize", "minimize"], 2)[0]
        result = {"epoch": epoch, "top1": top1, "gmacs": gmacs, "training_iteration": epoch}
        decided[number] = scheduler.on_trial_result(None, tune_trials[number], result)
        assert decided[number] == (TrialScheduler.CONTINUE if expected else TrialScheduler.STOP), (number, epoch)
    assert decided[3] == TrialScheduler.STOP  # worse and bigger than everyone at rung 1
    outcome = scheduler.stopped_outcome(3, None)
    assert outcome.state == "PRUNED" and outcome.error.startswith("stopped at rung 1 (epoch 1): pareto: front 4 ")
    assert outcome.attrs["top1"] == 20.0 and outcome.attrs["gmacs"] == 3.0 and outcome.attrs["epochs"] == 1
    assert "training_iteration" not in outcome.attrs
    assert scheduler.stopped_outcome(2, None) is None  # not stopped by the scheduler


def test_ray_scheduler_lets_the_unjudged_trials_through(tmp_path: Path, tiny_spec: Any) -> None:
    """The Tune scheduler applies full_run_every as the local executor does: trial 3 of a
    full_run_every 2 study goes on although the rule would stop it; trial 4 is judged."""
    from ray.tune.schedulers import TrialScheduler

    study, scheduler, tune_trials = _scheduler_on_a_study(tmp_path, tiny_spec, full_run_every=2, trials=5)
    decided = {}
    for number, top1, gmacs in [(0, 40.0, 1.0), (1, 38.0, 0.9), (2, 35.0, 0.8), (3, 10.0, 2.0), (4, 10.0, 2.0)]:
        result = {"epoch": 1, "top1": top1, "gmacs": gmacs, "training_iteration": 1}
        decided[number] = scheduler.on_trial_result(None, tune_trials[number], result)
    assert not should_continue("pareto", [10.0, 2.0], [[40.0, 1.0], [38.0, 0.9], [35.0, 0.8]], ["maximize", "minimize"], 2)[0]
    assert decided[3] == TrialScheduler.CONTINUE and decided[4] == TrialScheduler.STOP
    records = {t.number: t.user_attrs["rung_1"] for t in study.get_trials(deepcopy=False)}
    assert records[3]["reason"].startswith("unjudged: ") and records[4]["against"] == [0, 1, 2, 3]


def _running_with_a_rung(db: Path) -> int | None:
    """A trial still RUNNING that has passed rung 1 (its record says go on)."""
    if not db.exists():
        return None
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            rows = conn.execute(
                "SELECT t.number FROM trials t JOIN trial_user_attributes a ON a.trial_id = t.trial_id "
                "WHERE t.state = 'RUNNING' AND a.key = 'rung_1' AND a.value_json LIKE '%\"go_on\": true%'"
            ).fetchall()
    except sqlite3.OperationalError:  # tables not created yet, or locked for a moment
        return None
    return rows[0][0] if rows else None


@pytest.mark.slow
def test_a_driver_killed_mid_rung_resumes_with_its_rung_records(tmp_path: Path, tiny_spec: Any,
                                                                write_spec: Any) -> None:
    spec_path = write_spec(tmp_path, tiny_spec(
        method="svite", tokens=None, sparsity={"density": {"low": 0.2, "high": 0.9}},
        train={**TRAIN, "checkpoint": True},
        search={"sampler": "random", "n_trials": 2, "seed": 3, "early_stopping": PARETO},
    ))
    out = tmp_path / "study"
    env = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "svite_search", "search", str(spec_path), "--executor", "local", "--out", str(out),
         "--no-progress"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )
    # killed once a trial was judged at rung 1, told to go on, and is still training
    killed = kill_when(proc, lambda: _running_with_a_rung(out / "optuna.db"))
    assert killed is not None, "the search finished or stalled before a trial passed a rung"
    before = {key: record for key, record in _records(load_study(out).trials).items()}

    spec = load_spec(spec_path)
    summary = run_search(spec, out, live=False)
    assert summary["recovered"] == [killed]
    trials = load_study(out).trials
    after = _records(trials)
    assert all(after[key] == record for key, record in before.items())  # the records survived, unchanged
    (rerun,) = [t for t in trials if t.user_attrs.get("retry_of") == killed]
    adopted = rerun.user_attrs["rung_1"]
    assert adopted["adopted_from"] == killed and adopted["go_on"] and adopted["values"] == before[(killed, 1)]["values"]
    assert all(r["lineage"] == killed for (n, _), r in after.items() if n == rerun.number)
    assert summary["trials_complete"] + summary["trials_pruned"] == 2
    _check_decisions(spec, trials)
