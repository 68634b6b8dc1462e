"""Bad trials: a trial that raises, one whose loss turns NaN, one that runs out of GPU memory and
one that runs out of host memory are each recorded as failed with the reason (Optuna and
MLflow), release what they held, and the study goes on to its target; a study where every
trial fails ends with exit code 1 and a one-line summary, not a traceback.

The faults come from models registered with timm (:mod:`fault_models`); the NaN from a
learning rate and weight decay of 1e3 (weights grow a millionfold a step). Real ``svite-search search`` processes, real stores.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from reliability_support import assert_study_consistent, load_trials, mlflow_runs, run_cli, write_yaml

#: One enqueued trial per fault, and two good ones between them (the target is 2 complete).
FAULTS_SPEC = {
    "name": "faults",
    "method": "svite",
    "data": {"dataset": "digits", "batch_size": 64},
    "model": {"name": {"choices": ["rel_vit_ok", "rel_vit_raise", "rel_vit_oom", "rel_vit_memory"]}},
    "train": {"epochs": 1, "max_steps_per_epoch": 3, "warmup_epochs": 0, "threads": 1,
              "lr": {"choices": [1.0e-3, 2.0e-3, 1.0e3]},
              "weight_decay": {"choices": [0.05, 1.0e3]}},
    "sparsity": {"density": 0.5, "update_interval": 2},
    "search": {
        "sampler": "tpe", "n_trials": 2, "seed": 0, "max_failures": 8,
        "enqueue": [
            {"model": {"name": "rel_vit_raise"}, "train": {"lr": 1.0e-3, "weight_decay": 0.05}},
            {"model": {"name": "rel_vit_oom"}, "train": {"lr": 1.0e-3, "weight_decay": 0.05}},
            {"model": {"name": "rel_vit_ok"}, "train": {"lr": 1.0e-3, "weight_decay": 0.05}},
            {"model": {"name": "rel_vit_memory"}, "train": {"lr": 1.0e-3, "weight_decay": 0.05}},
            {"model": {"name": "rel_vit_ok"}, "train": {"lr": 1.0e3, "weight_decay": 1.0e3}},
            {"model": {"name": "rel_vit_ok"}, "train": {"lr": 2.0e-3, "weight_decay": 0.05}},
        ],
    },
    "executor": {"kind": "local"},
}
#: Trial number -> words its failure reason must contain.
EXPECTED_FAILURES = {
    0: ("RuntimeError", "injected fault"),
    1: ("OutOfMemoryError", "out of memory"),
    3: ("MemoryError", "host memory"),
    4: ("non-finite loss", "nan"),
}


@pytest.mark.slow
def test_each_bad_trial_fails_with_its_reason_and_the_study_goes_on(tmp_path: Path, new_study_dir) -> None:
    study = new_study_dir("study")
    spec = write_yaml(tmp_path / "faults.yaml", FAULTS_SPEC)
    builds = tmp_path / "builds.jsonl"
    done = run_cli("search", spec, "--out", study, "--no-progress", "--json", cwd=tmp_path, faults=True,
                   REL_FAULT_LOG=str(builds))
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert (summary["trials_complete"], summary["trials_failed"]) == (2, 4)

    trials = {t.number: t for t in assert_study_consistent(study, 2)}
    assert {n for n, t in trials.items() if t.state.name == "COMPLETE"} == {2, 5}
    _, runs = mlflow_runs(study)
    run_of = {int(r.data.tags["svite.trial"]): r for r in runs}
    for number, words in EXPECTED_FAILURES.items():
        reason = trials[number].user_attrs["fail_reason"]
        assert trials[number].state.name == "FAIL"
        assert all(w in reason for w in words), reason
        assert run_of[number].info.status == "FAILED"
        assert all(w in run_of[number].data.tags["svite.error"] for w in words)

    # every model whose fault fired was gone (garbage) by the time the next trial built its own
    records = [json.loads(line) for line in builds.read_text().splitlines()]
    assert len(records) == 6
    assert [r["leaked"] for r in records] == [0] * 6


@pytest.mark.slow
def test_a_study_where_every_trial_fails_exits_1_with_a_summary(tmp_path: Path, new_study_dir) -> None:
    study = new_study_dir("study")
    spec = dict(FAULTS_SPEC, name="all-fail", model={"name": "rel_vit_raise"},
                train={**FAULTS_SPEC["train"], "lr": 1.0e-3},
                search={"sampler": "random", "n_trials": 2, "seed": 0})
    done = run_cli("search", write_yaml(tmp_path / "all-fail.yaml", spec), "--out", study, "--no-progress",
                   cwd=tmp_path, faults=True)
    assert done.returncode == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("svite-search") and "every trial failed" in last, last
    assert "injected fault" in done.stdout  # the summary table says why
    trials = load_trials(study)
    assert trials and all(t.state.name == "FAIL" for t in trials)
    assert len(trials) == 2  # max_failures (default n_trials) stops it; it does not loop forever
    parents, runs = mlflow_runs(study)
    assert [p.info.status for p in parents] == ["FINISHED"]
    assert sorted(r.info.status for r in runs) == ["FAILED", "FAILED"]
