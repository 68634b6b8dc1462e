"""The Ray executor on a real 2-CPU Ray instance: the study's searcher on the persistent study."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from optuna.trial import TrialState

from svite_search.harness import run_search
from svite_search.search import load_study, spec_from_dict
from svite_search.search.study import trial_attrs

pytestmark = pytest.mark.slow
pytest.importorskip("ray")


def test_ray_two_objective_study_then_resume(ray_session: None, tmp_path: Path, tiny_spec: Any) -> None:
    spec = spec_from_dict(tiny_spec(
        executor={"kind": "ray", "cpus_per_trial": 1, "max_concurrent": 2},
        tracking={"enabled": True},
    ))
    out = tmp_path / "study"
    summary = run_search(spec, out, live=False)
    assert summary["executor"] == "ray"
    assert summary["trials_complete"] == 4 and summary["trials_failed"] == 0
    trials = load_study(out).trials
    assert len(trials) == 4 and all(t.state == TrialState.COMPLETE and len(t.values) == 2 for t in trials)
    for t in trials:
        assert trial_attrs(t)["world_size"] == 1
        assert trial_attrs(t)["top1"] == t.values[0] and trial_attrs(t)["gmacs"] == t.values[1]
        assert t.user_attrs["driver"]  # recorded at ask time, for resume
    assert any((out / "ray").iterdir())  # Tune's results live in the study directory

    # the tracker ran on the driver: one parent run, one finished nested run per trial
    from mlflow.tracking import MlflowClient

    client = MlflowClient(summary["tracking_uri"])
    experiment = client.get_experiment_by_name("tiny")
    runs = client.search_runs([experiment.experiment_id], "tags.`svite.kind` = 'trial'")
    assert sorted(int(r.data.tags["svite.trial"]) for r in runs) == [0, 1, 2, 3]
    assert {r.info.status for r in runs} == {"FINISHED"}

    again = run_search(spec, out, live=False)
    assert again["trials_run_now"] == 0 and again["trials_complete"] == 4
    assert len(load_study(out).trials) == 4


def test_ray_failing_trials_are_recorded_and_the_study_goes_on(ray_session: None, tmp_path: Path,
                                                                tiny_spec: Any) -> None:
    spec = spec_from_dict(tiny_spec(
        method="dense", sparsity=None, tokens=None,
        model={"name": "vit_digits", "num_heads": {"choices": [3, 4]}},
        train={"epochs": 1, "max_steps_per_epoch": 3, "warmup_epochs": 0, "checkpoint": False,
               "lr": {"choices": [1.0e3, 2.0e-3]}, "weight_decay": 1.0e3},
        search={"sampler": "grid"},
        executor={"kind": "ray", "max_concurrent": 2},
    ))
    summary = run_search(spec, tmp_path / "study", live=False)
    assert summary["trials_complete"] == 1 and summary["trials_failed"] == 3
    trials = load_study(tmp_path / "study").trials
    reasons = {tuple(t.params.values()): t.user_attrs.get("fail_reason") for t in trials}
    assert "divisible" in reasons[(3, 1.0e3)] and "divisible" in reasons[(3, 2.0e-3)]
    assert reasons[(4, 1.0e3)].startswith("non-finite loss")
    assert reasons[(4, 2.0e-3)] is None


def test_ray_asha_stops_or_completes_every_trial(ray_session: None, tmp_path: Path, tiny_spec: Any) -> None:
    spec = spec_from_dict(tiny_spec(
        train={"epochs": 3, "max_steps_per_epoch": 2, "warmup_epochs": 0, "checkpoint": False},
        search={"sampler": "random", "n_trials": 3, "seed": 0,
                "early_stopping": {"kind": "asha", "min_epochs": 1, "reduction_factor": 2}},
        executor={"kind": "ray", "max_concurrent": 2},
    ))
    summary = run_search(spec, tmp_path / "study", live=False)
    assert summary["trials_complete"] + summary["trials_pruned"] == 3 and summary["trials_failed"] == 0
    for t in load_study(tmp_path / "study").trials:
        assert t.state in (TrialState.COMPLETE, TrialState.PRUNED)
        if t.state == TrialState.PRUNED:
            assert t.user_attrs["pruned_reason"].startswith("stopped at rung ")
