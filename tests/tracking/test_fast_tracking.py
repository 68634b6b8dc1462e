"""Tracking off the driver's critical path: new sqlite stores copied from a migrated template,
and per-trial writes made on a background thread, in order, all of them before end() returns."""
from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from mlflow import MlflowClient

from svite_search._cache import CACHE_ENV
from svite_search.tracking._client import make_client
from svite_search.tracking.background import BackgroundTracker
from svite_search.tracking.study import StudyTracker, make_study_tracker


def test_new_stores_are_copies_of_one_template_and_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    make_client(f"sqlite:///{tmp_path / 'a' / 'mlflow.db'}")
    templates = list((tmp_path / "cache").glob("mlflow-*-empty.db"))
    assert len(templates) == 1
    client = make_client(f"sqlite:///{tmp_path / 'b' / 'mlflow.db'}")  # from the template
    assert list((tmp_path / "cache").glob("mlflow-*-empty.db")) == templates
    default = client.get_experiment("0")
    assert default.name == "Default" and default.artifact_location == str(tmp_path / "mlruns" / "0")
    run = client.create_run(client.create_experiment("x"), tags={"k": "v"})
    client.log_metric(run.info.run_id, "m", 1.0)
    assert MlflowClient(f"sqlite:///{tmp_path / 'b' / 'mlflow.db'}").get_run(run.info.run_id).data.metrics == {"m": 1.0}
    with sqlite3.connect(tmp_path / "a" / "mlflow.db") as a, sqlite3.connect(tmp_path / "b" / "mlflow.db") as b:
        version = "SELECT version_num FROM alembic_version"
        assert a.execute(version).fetchall() == b.execute(version).fetchall()


def test_background_writes_are_all_made_in_order_before_end_returns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    spec = {"name": "bg", "objectives": [{"metric": "top1", "direction": "maximize"}]}
    tracker = make_study_tracker(tmp_path, "bg", spec)
    assert isinstance(tracker, BackgroundTracker)
    tracker.start()
    for number in range(3):
        tracker.trial_started(number, {"method": "svite"}, None)
        for epoch in (1, 2, 3):
            tracker.trial_epoch(number, {"epoch": epoch, "top1": 10.0 * number + epoch})
        tracker.trial_finished(number, "COMPLETE" if number else "FAIL",
                               {"top1": 10.0 * number + 3, "epochs": 3,
                                "history": [{"epoch": e, "top1": 10.0 * number + e} for e in (1, 2, 3)]},
                               None if number else "boom")
    tracker.end([{"number": 1, "values": [13.0]}])
    client = MlflowClient(tracker.tracking_uri)
    runs = {int(r.data.tags["svite.trial"]): r for r in client.search_runs([tracker.experiment_id])
            if "svite.trial" in r.data.tags}
    assert sorted(runs) == [0, 1, 2]
    assert [runs[n].info.status for n in (0, 1, 2)] == ["FAILED", "FINISHED", "FINISHED"]
    assert runs[0].data.tags["svite.error"] == "boom" and runs[2].data.tags["svite.state"] == "COMPLETE"
    history = client.get_metric_history(runs[2].info.run_id, "top1")
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [(1, 21.0), (2, 22.0), (3, 23.0)]
    assert client.get_run(tracker.parent_run_id).info.status == "FINISHED"
