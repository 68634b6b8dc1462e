"""StudyTracker against a real sqlite MLflow store: layout, states, resume, stale runs."""
from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import torch

from _support.mlflow_runs import runs_frame
from svite_search.config import RunConfig
from svite_search.tracking._client import is_transient, retry
from svite_search.tracking._density import density_summary
from svite_search.train.summary import weight_densities
from svite_search.tracking.study import NullStudyTracker, StudyTracker, make_study_tracker

SPEC = {
    "name": "tiny-study",
    "method": {"choices": ["dense", "svite"]},
    "sparsity": {"density": {"low": 0.3, "high": 0.9}},
    "objectives": [{"metric": "top1", "direction": "maximize"}, {"metric": "gmacs", "direction": "minimize"}],
    "search": {"sampler": "tpe", "n_trials": 3, "seed": 0},
}


def _result(top1: float, gmacs: float, epochs: int = 2) -> dict:
    history = [{"epoch": e, "top1": top1 - (epochs - e), "train_loss": 1.0 / e} for e in range(1, epochs + 1)]
    return {"top1": top1, "gmacs": gmacs, "dense_gmacs": 0.002, "density": 0.5, "epochs": epochs,
            "heads_per_block": [2, 2], "history": history}


def _run_trial(tracker: StudyTracker, number: int, state: str, error: str | None = None) -> None:
    cfg = RunConfig(method="svite")
    tracker.trial_started(number, {"method": "svite", "sparsity.density": 0.5}, cfg)
    for epoch in (1, 2):
        tracker.trial_epoch(number, {"epoch": epoch, "top1": 80.0 + epoch, "train_loss": 1.0 / epoch})
    result = _result(82.0, 0.001) if state != "FAIL" else None
    tracker.trial_finished(number, state, result, error)


def _runs(tracker: StudyTracker):
    return runs_frame(tracker.tracking_uri, tracker.experiment_name)


def test_study_has_one_parent_and_a_nested_run_per_trial(study_dir: Path) -> None:
    tracker = StudyTracker(study_dir, "tiny-study", SPEC)
    tracker.start()
    _run_trial(tracker, 0, "COMPLETE")
    _run_trial(tracker, 1, "COMPLETE")
    _run_trial(tracker, 2, "FAIL", error="RuntimeError: out of memory")
    tracker.end([{"number": 0, "values": {"top1": 82.0, "gmacs": 0.001}}])

    assert tracker.tracking_uri == f"sqlite:///{study_dir.resolve() / 'mlflow.db'}"
    runs = _runs(tracker)
    parents = runs[runs["tags.svite.kind"] == "study"]
    children = runs[runs["tags.svite.kind"] == "trial"]
    assert len(parents) == 1 and len(children) == 3
    assert set(children["tags.mlflow.parentRunId"]) == {parents["run_id"].iloc[0]}
    assert parents["status"].iloc[0] == "FINISHED"
    assert sorted(children["tags.svite.trial"].astype(int)) == [0, 1, 2]
    done = children[children["tags.svite.trial"] != "2"]
    assert (done["status"] == "FINISHED").all()
    assert done["metrics.top1"].notna().all() and done["metrics.gmacs"].notna().all()
    assert (done["params.method"] == "svite").all() and (done["tags.svite.method"] == "svite").all()
    failed = children[children["tags.svite.trial"] == "2"].iloc[0]
    assert failed["status"] == "FAILED"
    assert "out of memory" in failed["tags.svite.error"]

    client = tracker.client
    run_id = tracker.trial_runs[0]
    history = client.get_metric_history(run_id, "top1")
    assert sorted((m.step, m.value) for m in history) == [(1, 81.0), (2, 82.0)]  # no second point at step 2
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"config.yaml", "result.json", "density.json"} <= artifacts
    (study_dir / "dl").mkdir()
    config_text = Path(client.download_artifacts(run_id, "config.yaml", str(study_dir / "dl"))).read_text()
    assert "method: svite" in config_text
    parent_artifacts = {a.path for a in client.list_artifacts(tracker.parent_run_id)}
    assert {"spec.yaml", "pareto.json"} <= parent_artifacts
    assert Path(study_dir / "mlartifacts").is_dir()  # artifacts beside the store


def test_pruned_trial_is_killed_and_says_so(study_dir: Path) -> None:
    tracker = StudyTracker(study_dir, "tiny-study", SPEC)
    tracker.start()
    _run_trial(tracker, 0, "PRUNED", error="stopped by ASHA at epoch 2")
    run = tracker.client.get_run(tracker.trial_runs[0])
    assert run.info.status == "KILLED"
    assert run.data.tags["svite.state"] == "PRUNED"
    assert "ASHA" in run.data.tags["svite.pruned"]


def test_resume_reuses_parent_and_trial_runs(study_dir: Path) -> None:
    first = StudyTracker(study_dir, "tiny-study", SPEC)
    first.start()
    _run_trial(first, 0, "COMPLETE")
    first.trial_started(1, {"method": "svite", "sparsity.density": 0.4}, RunConfig(method="svite"))
    first.trial_epoch(1, {"epoch": 1, "top1": 70.0})
    # the driver dies here: trial 1's run stays RUNNING

    second = StudyTracker(study_dir, "tiny-study", {**SPEC, "search": {**SPEC["search"], "n_trials": 5}})
    second.start()
    assert second.parent_run_id == first.parent_run_id
    assert second.trial_runs == first.trial_runs
    assert second.close_stale([1]) == [1]
    stale = second.client.get_run(first.trial_runs[1])
    assert stale.info.status == "FAILED" and "ended before" in stale.data.tags["svite.error"]

    # the harness re-runs trial 1 under the same number and then runs trial 2
    second.trial_started(1, {"method": "svite", "sparsity.density": 0.4}, RunConfig(method="svite"))
    second.trial_finished(1, "COMPLETE", _result(79.0, 0.0012, epochs=2))
    _run_trial(second, 2, "COMPLETE")
    second.end([])

    runs = _runs(second)
    assert (runs["tags.svite.kind"] == "study").sum() == 1
    children = runs[runs["tags.svite.kind"] == "trial"]
    assert sorted(children["tags.svite.trial"].astype(int)) == [0, 1, 2]
    rerun = second.client.get_run(first.trial_runs[1])
    assert rerun.info.status == "FINISHED"
    # epoch 1 was logged before the crash; the final flush adds epoch 2 only
    assert sorted(m.step for m in second.client.get_metric_history(rerun.info.run_id, "top1")) == [1, 2]
    assert second.client.get_run(second.parent_run_id).data.tags["svite.resumes"] == "1"


def test_tracking_uri_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert StudyTracker(tmp_path, "s", {}).tracking_uri.endswith(f"{tmp_path.resolve()}/mlflow.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5000")
    assert StudyTracker(tmp_path, "s", {}).tracking_uri == "http://tracking.example:5000"
    spec = {"tracking": {"uri": "sqlite:///elsewhere.db", "experiment": "shared"}}
    tracker = StudyTracker(tmp_path, "s", spec)
    assert tracker.tracking_uri == "sqlite:///elsewhere.db" and tracker.experiment_name == "shared"


def test_disabled_tracking_is_a_null_tracker(tmp_path: Path) -> None:
    tracker = make_study_tracker(tmp_path, "s", {"tracking": {"enabled": False}})
    assert isinstance(tracker, NullStudyTracker)
    tracker.start()
    tracker.trial_started(0, {}, None)
    tracker.trial_finished(0, "COMPLETE", {"top1": 1.0})
    tracker.end([])
    assert not (tmp_path / "mlflow.db").exists()


def test_retry_rides_out_a_locked_database() -> None:
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise sqlite3.OperationalError("database is locked")
        return "written"

    assert retry(flaky, first_pause=0.01) == "written" and len(calls) == 3
    assert is_transient(RuntimeError("(sqlite3.OperationalError) database is locked"))
    assert not is_transient(ValueError("Changing param values is not allowed"))
    with pytest.raises(ValueError):
        retry(lambda: (_ for _ in ()).throw(ValueError("bad key")), first_pause=0.01)


def test_density_summary_reads_the_final_weights(tmp_path: Path) -> None:
    """The trial measures its final weights into its result (``weight_density``); the driver
    reads the result, and never the checkpoint: a checkpoint with other weights beside it is
    not looked at."""
    layer = torch.nn.Linear(4, 10)
    with torch.no_grad():
        layer.weight[:5] = 0.0  # half the rows pruned
    state = {"model": {"blocks.0.mlp.fc1.weight": layer.weight.detach(), "blocks.0.mlp.fc1.bias": layer.bias.detach(),
                       "pos_embed": torch.zeros(1, 3, 4)}}
    torch.save({"model": {"blocks.0.mlp.fc1.weight": torch.zeros(10, 4)}}, tmp_path / "last.pt")  # not read
    result = {"density": 0.5, "heads_per_block": [1, 2], "weight_density": weight_densities(state["model"])}
    summary = density_summary(result)
    assert summary["layers"] == {"blocks.0.mlp.fc1.weight": 0.5}
    assert summary["global_density"] == 0.5 and summary["heads_per_block"] == [1, 2]
    assert weight_densities({"x.weight": torch.ones(2, 2), "x.bias": torch.zeros(2)}) == {"x.weight": 1.0}
    assert density_summary({"layer_density": {"head.weight": 0.25}})["min_layer"] == 0.25


def test_a_raw_trial_config_is_logged_resolved(study_dir: Path) -> None:
    tracker = StudyTracker(study_dir, "tiny-study", SPEC)
    tracker.start()
    tracker.trial_started(0, {"method": "svite"}, {"method": "svite", "train": {"epochs": 3}})
    params = tracker.client.get_run(tracker.trial_runs[0]).data.params
    assert params["train.epochs"] == "3" and params["train.opt"] == "adamw"  # a default, filled in
    assert params["sparsity.distribution"] == "erk"
