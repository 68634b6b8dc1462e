"""A tracked ``svite-search train`` run: one MLflow run in the run directory's own store, and
nothing left behind in the process (a study started after it, in the same Python process,
records into its own store, not into the training run's)."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from mlflow import MlflowClient

from svite_search.cli import main
from svite_search.harness import run_search
from svite_search.search import spec_from_dict

pytestmark = pytest.mark.slow

_SHORT = ["--set", "train.epochs=2", "--set", "train.max_steps_per_epoch=2", "--set", "train.warmup_epochs=0",
          "--set", "train.checkpoint=false", "--set", "method=svite", "--set", "tracking.enabled=true"]


def _runs(db: Path, experiment: str) -> list:
    client = MlflowClient(f"sqlite:///{db}")
    found = client.get_experiment_by_name(experiment)
    return [] if found is None else client.search_runs([found.experiment_id])


def test_a_tracked_train_run_then_a_study_in_one_process_each_record_into_their_own_store(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    run_dir = tmp_path / "run"
    assert main(["train", "studies/digits.yaml", "--out", str(run_dir), "--no-progress", *_SHORT]) == 0
    capsys.readouterr()

    assert "MLFLOW_TRACKING_URI" not in os.environ  # the run's store is not the process's default
    [run] = _runs(run_dir / "mlflow.db", "svite-search-train")
    assert run.info.status == "FINISHED"
    assert run.data.tags["svite.kind"] == "train" and run.data.tags["svite.method"] == "svite"
    assert run.data.params["train.epochs"] == "2"
    assert "final.top1" in run.data.metrics and "top1" in run.data.metrics
    history = MlflowClient(f"sqlite:///{run_dir / 'mlflow.db'}").get_metric_history(run.info.run_id, "top1")
    assert sorted(m.step for m in history) == [1, 2]

    spec = spec_from_dict({
        "name": "after-train", "model": {"name": "vit_digits"}, "data": {"dataset": "digits"},
        "train": {"epochs": 1, "max_steps_per_epoch": 2, "warmup_epochs": 0, "checkpoint": False},
        "method": "dense", "search": {"sampler": "random", "n_trials": 1, "seed": 0},
        "tracking": {"enabled": True},
    })
    summary = run_search(spec, tmp_path / "study", live=False)
    assert summary["tracking_uri"] == f"sqlite:///{(tmp_path / 'study' / 'mlflow.db').resolve()}"
    assert _runs(run_dir / "mlflow.db", "after-train") == []  # nothing of the study in the run's store
    assert len(_runs(tmp_path / "study" / "mlflow.db", "after-train")) == 2  # the study's run and its trial


def test_a_train_run_that_fails_is_recorded_failed_with_its_error(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    run_dir = tmp_path / "run"
    code = main(["train", "studies/digits.yaml", "--out", str(run_dir), "--no-progress", *_SHORT,
                 "--set", "train.lr=1.0e3", "--set", "train.weight_decay=1.0e3"])
    assert code != 0
    [run] = _runs(run_dir / "mlflow.db", "svite-search-train")
    assert run.info.status == "FAILED" and run.data.tags["svite.error"].startswith("NonFiniteLossError")
    assert "MLFLOW_TRACKING_URI" not in os.environ
