"""End to end: a real search (local executor) tracked in a real sqlite MLflow store, then resumed."""
from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from _support.mlflow_runs import runs_frame
from svite_search.harness import run_search
from svite_search.search import load_study, spec_from_dict

pytestmark = pytest.mark.slow

SPEC = {
    "name": "tracked",
    "method": {"choices": ["dense", "svite"]},
    "data": {"dataset": {"choices": ["digits", "imagefolder"]}, "batch_size": 64},  # root: a folder without images
    "model": {"name": "vit_digits"},
    "train": {"epochs": 2, "max_steps_per_epoch": 2, "warmup_epochs": 0, "threads": 1},
    "sparsity": {"density": {"choices": [0.3, 0.5]}},
    "search": {
        "sampler": "random", "n_trials": 3, "seed": 0, "max_failures": 1,
        "enqueue": [
            {"method": "dense", "data.dataset": "digits"},
            {"method": "svite", "sparsity.density": 0.5, "data.dataset": "digits"},
            {"method": "svite", "sparsity.density": 0.3, "data.dataset": "digits"},
            {"method": "dense", "data.dataset": "imagefolder"},  # class folders without images: this trial fails
        ],
    },
}


def _runs(study_dir: Path) -> pd.DataFrame:
    return runs_frame(f"sqlite:///{study_dir.resolve() / 'mlflow.db'}", "tracked")


def test_three_trial_study_is_tracked_and_resumes_without_duplicates(study_dir: Path, tmp_path: Path) -> None:
    for split in ("train", "val"):
        (tmp_path / "empty-imagenet" / split / "n01440764").mkdir(parents=True)
    spec = spec_from_dict({**SPEC, "data": {**SPEC["data"], "root": str(tmp_path / "empty-imagenet")}})
    summary = run_search(spec, study_dir, live=False)
    assert summary["trials_complete"] == 3 and summary["tracking_uri"].endswith("mlflow.db")

    runs = _runs(study_dir)
    parent = runs[runs["tags.svite.kind"] == "study"]
    children = runs[runs["tags.svite.kind"] == "trial"]
    assert len(parent) == 1 and len(children) == 3
    assert (children["tags.mlflow.parentRunId"] == parent["run_id"].iloc[0]).all()
    assert (children["status"] == "FINISHED").all()
    assert children["metrics.top1"].notna().all() and children["metrics.gmacs"].notna().all()
    assert sorted(children["tags.svite.method"]) == ["dense", "svite", "svite"]
    assert set(children["params.sparsity.density"].dropna()) >= {"0.3", "0.5"}

    client = mlflow.MlflowClient(f"sqlite:///{study_dir.resolve() / 'mlflow.db'}")
    parent_id = parent["run_id"].iloc[0]
    assert client.get_run(parent_id).info.status == "FINISHED"
    assert "report/summary.md" in {a.path for a in client.list_artifacts(parent_id, "report")}
    for run_id in children["run_id"]:  # every method's per-layer densities, from the trial's own result
        folder = tmp_path / "density" / run_id
        folder.mkdir(parents=True)
        density = json.loads(Path(client.download_artifacts(run_id, "density.json", str(folder))).read_text())
        assert density["layers"] and 0 < density["min_layer"] <= density["max_layer"] <= 1
    one = children["run_id"].iloc[0]
    assert sorted(m.step for m in client.get_metric_history(one, "train_loss")) == [1, 2]

    # the report beside the study holds exactly Optuna's front
    study = load_study(study_dir)
    front = pd.read_csv(study_dir / "report" / "pareto.csv")
    assert set(front["number"]) == {t.number for t in study.best_trials}

    # resume with one more trial: the queued failing point runs, fails, and the search stops there
    again = run_search(spec.with_settings(n_trials=4), study_dir, live=False)
    assert again["resumed"] and again["trials_failed"] == 1
    runs = _runs(study_dir)
    assert (runs["tags.svite.kind"] == "study").sum() == 1
    children = runs[runs["tags.svite.kind"] == "trial"]
    assert sorted(children["tags.svite.trial"].astype(int)) == [0, 1, 2, 3]  # no duplicates
    failed = children[children["tags.svite.trial"] == "3"].iloc[0]
    assert failed["status"] == "FAILED" and "DataPathError" in failed["tags.svite.error"]
    assert client.get_run(parent_id).data.tags["svite.resumes"] == "1"
