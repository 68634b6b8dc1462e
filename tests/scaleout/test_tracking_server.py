"""A study tracked by a real ``mlflow server`` over HTTP (sqlite backend, proxied artifacts),
the server killed mid-study, and the back-fill of MLflow from the Optuna study.

Tracking must never take a study down: with the server gone, trials go on completing in
Optuna, the driver warns that tracking is behind, and the next search of the study writes the
missing runs. The same back-fill repairs a study whose own ``mlflow.db`` was deleted.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from reliability_support import CRASH_SPEC, load_trials, run_cli, sigkill, spec_with, start_cli, wait_for, write_yaml
from _support.waiting import HANG_S

pytestmark = [pytest.mark.slow, pytest.mark.scaleout]

N_TRIALS = 2


def _spec(name: str, **tracking: Any) -> dict[str, Any]:
    return spec_with(
        CRASH_SPEC, name=name, model={"name": "rel_vit_slow"},
        train={**CRASH_SPEC["train"], "epochs": 2, "max_steps_per_epoch": 2},
        search={"sampler": "tpe", "n_trials": N_TRIALS, "seed": 0},
        tracking={"enabled": True, **tracking},
    )


def _runs(uri: str, experiment: str) -> tuple[list[Any], list[Any]]:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        return [], []
    runs = client.search_runs([found.experiment_id], max_results=1000)
    return ([r for r in runs if r.data.tags.get("svite.kind") == "study"],
            [r for r in runs if r.data.tags.get("svite.kind") == "trial"])


def _assert_mirrors_the_study(uri: str, study_dir: Path, experiment: str) -> None:
    """One study run; exactly one FINISHED trial run per complete Optuna trial, nested under it,
    holding the trial's final top-1 and its per-epoch curve."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    parents, runs = _runs(uri, experiment)
    assert len(parents) == 1, [p.info.run_id for p in parents]
    trials = load_trials(study_dir)
    assert sorted(int(r.data.tags["svite.trial"]) for r in runs) == [t.number for t in trials]
    by_number = {int(r.data.tags["svite.trial"]): r for r in runs}
    for t in trials:
        run = by_number[t.number]
        assert run.info.status == "FINISHED" and t.state.name == "COMPLETE"
        assert run.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert run.data.metrics["top1"] == pytest.approx(t.values[0])
        assert [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")] == [1, 2]


def test_a_study_logs_over_http_to_a_tracking_server(tmp_path: Path, mlflow_server: Any) -> None:
    spec = write_yaml(tmp_path / "spec.yaml", _spec("over-http", uri=mlflow_server.uri))  # tracking.uri
    study = tmp_path / "study"
    done = run_cli("search", spec, "--out", study, "--no-progress", "--json", cwd=tmp_path, faults=True,
                   REL_SLOW_S="0")
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout)["tracking_uri"] == mlflow_server.uri
    assert not (study / "mlflow.db").exists()  # nothing tracked locally
    _assert_mirrors_the_study(mlflow_server.uri, study, "over-http")
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=mlflow_server.uri)
    parent = _runs(mlflow_server.uri, "over-http")[0][0]
    assert parent.info.status == "FINISHED"
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"spec.yaml", "pareto.json", "report"} <= artifacts, artifacts
    report = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert "report/summary.md" in report and "report/trials.csv" in report, report
    # proxied artifacts: they live on the server's side, not in the study directory
    assert any((mlflow_server.root / "artifacts").rglob("summary.md"))


def test_the_server_killed_mid_study_then_the_next_search_back_fills(tmp_path: Path, mlflow_server: Any) -> None:
    spec = write_yaml(tmp_path / "spec.yaml", _spec("outage"))
    study, gate = tmp_path / "study", tmp_path / "gate"
    env = {"MLFLOW_TRACKING_URI": mlflow_server.uri, "REL_SLOW_S": "0", "REL_GATE": str(gate)}
    log = tmp_path / "search.log"
    proc = start_cli("search", spec, "--out", study, "--no-progress", cwd=tmp_path, log=log, faults=True, **env)
    try:
        # trial 0 waits at its gate; kill the server once its run is visible there
        wait_for(lambda: len(_runs(mlflow_server.uri, "outage")[1]) >= 1, proc)
        mlflow_server.kill()
        gate.touch()
        proc.wait(timeout=HANG_S)
    finally:
        gate.touch()
        if proc.poll() is None:
            sigkill(proc)
    text = log.read_text()
    assert proc.returncode == 0, text[-3000:]
    assert "tracking is behind" in text, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    trials = load_trials(study)
    assert [t.state.name for t in trials] == ["COMPLETE"] * N_TRIALS  # the study did not wait for MLflow

    mlflow_server.start()  # the same server (port, stores) is back
    _, before = _runs(mlflow_server.uri, "outage")
    assert len(before) == 1 and before[0].info.status == "RUNNING"  # what the outage left behind
    again = run_cli("search", spec, "--out", study, "--no-progress", "--json", cwd=tmp_path, faults=True,
                    MLFLOW_TRACKING_URI=mlflow_server.uri)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads(again.stdout)["trials_run_now"] == 0
    assert "back-filled" in again.stderr, again.stderr[-2000:]
    _assert_mirrors_the_study(mlflow_server.uri, study, "outage")


def test_a_deleted_local_mlflow_store_is_rebuilt_from_the_study(tmp_path: Path) -> None:
    spec = write_yaml(tmp_path / "spec.yaml", _spec("deleted-store"))
    study = tmp_path / "study"
    first = run_cli("search", spec, "--out", study, "--no-progress", "--json", cwd=tmp_path, faults=True,
                    REL_SLOW_S="0")
    assert first.returncode == 0, first.stderr[-3000:]
    (study / "mlflow.db").unlink()
    shutil.rmtree(study / "mlartifacts", ignore_errors=True)

    again = run_cli("search", spec, "--out", study, "--no-progress", "--json", cwd=tmp_path, faults=True)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads(again.stdout)["trials_run_now"] == 0
    uri = f"sqlite:///{study / 'mlflow.db'}"  # read here for the first time: no cached connection to the old file
    _assert_mirrors_the_study(uri, study, "deleted-store")
    _, runs = _runs(uri, "deleted-store")
    assert all(r.data.tags.get("svite.backfilled") == "true" for r in runs)
