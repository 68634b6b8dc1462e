"""The local executor end to end: real training, real Optuna storage, resume, failures, grid."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from svite_search.cli import main
from svite_search.harness import run_search
from svite_search.search import load_spec, load_study, spec_from_dict
from svite_search.search.study import trial_attrs

pytestmark = pytest.mark.slow


def _search(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    code = main(["search", *args, "--json", "--no-progress"])
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1, out  # exactly one JSON object on stdout
    return code, json.loads(out[0])


def test_two_objective_study_then_resume_and_extend(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                     tiny_spec: Any, write_spec: Any) -> None:
    path = write_spec(tmp_path, tiny_spec())
    out = tmp_path / "study"
    code, summary = _search(capsys, str(path), "--executor", "local", "--out", str(out))
    assert code == 0
    assert summary["study"] == "tiny" and summary["trials_complete"] == 4 and summary["trials_failed"] == 0
    assert summary["pareto"] and all(len(p["values"]) == 2 and "number" in p and p["params"] for p in summary["pareto"])

    study = load_study(out)
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(trials) == 4
    for t in trials:
        assert len(t.values) == 2
        top1, gmacs = t.values
        assert 0.0 <= top1 <= 100.0 and gmacs > 0
        attrs = trial_attrs(t)
        assert attrs["top1"] == top1 and attrs["gmacs"] == gmacs
        for key in ("top1_best", "top1_final", "dense_gmacs", "density", "params_nonzero", "wall_s", "epochs"):
            assert key in attrs, key
        assert attrs["epochs"] == 2 and len(attrs["top1_history"]) == 2
        if t.params["method"] == "s2vite":
            assert len(attrs["heads_per_block"]) == 4
        assert (out / "trials" / str(t.number) / "result.json").is_file()
    assert (out / "spec.yaml").is_file() and (out / "optuna.db").is_file()
    assert study.metric_names == ["top1", "gmacs"]

    # the same command again: the study is complete, nothing runs, nothing is counted twice
    code, again = _search(capsys, str(path), "--executor", "local", "--out", str(out))
    assert code == 0 and again["resumed"] and again["trials_run_now"] == 0 and again["trials_complete"] == 4
    assert len(load_study(out).trials) == 4

    # a larger budget continues the same study
    code, more = _search(capsys, str(path), "--executor", "local", "--out", str(out), "--trials", "5")
    assert code == 0 and more["trials_complete"] == 5 and more["trials_run_now"] == 1

    # a different spec is refused (exit 2), unless forced
    changed = write_spec(tmp_path, tiny_spec(sparsity={"density": {"low": 0.3, "high": 0.8}}), "changed.yaml")
    assert main(["search", str(changed), "--executor", "local", "--out", str(out), "--json"]) == 2
    assert "different spec" in capsys.readouterr().err
    code, forced = _search(capsys, str(changed), "--executor", "local", "--out", str(out), "--trials", "5", "--force")
    assert code == 0 and forced["trials_run_now"] == 0


def test_failing_trials_are_recorded_and_the_study_goes_on(tmp_path: Path, tiny_spec: Any) -> None:
    # grid order: (3 heads, lr 1e3), (3 heads, lr 2e-3): the model cannot be built (width 64);
    # (4 heads, lr 1e3): the loss turns NaN; (4 heads, lr 2e-3) trains.
    spec = spec_from_dict(tiny_spec(
        method="dense", sparsity=None, tokens=None,
        model={"name": "vit_digits", "num_heads": {"choices": [3, 4]}},
        train={"epochs": 1, "max_steps_per_epoch": 3, "warmup_epochs": 0, "checkpoint": False,
               "lr": {"choices": [1.0e3, 2.0e-3]}, "weight_decay": 1.0e3},
        search={"sampler": "grid"},
    ))
    summary = run_search(spec, tmp_path / "study", live=False)
    assert summary["trials_complete"] == 1 and summary["trials_failed"] == 3
    trials = load_study(tmp_path / "study").trials
    assert [t.state for t in trials] == [TrialState.FAIL] * 3 + [TrialState.COMPLETE]
    reasons = [t.user_attrs["fail_reason"] for t in trials[:3]]
    assert "divisible" in reasons[0] and "divisible" in reasons[1]
    assert reasons[2].startswith("non-finite loss")
    assert trials[3].params == {"model.num_heads": 4, "train.lr": 2.0e-3}


def test_every_trial_failing_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_spec: Any,
                                     write_spec: Any) -> None:
    path = write_spec(tmp_path, tiny_spec(
        method="dense", sparsity=None, tokens=None, model={"name": "vit_digits", "num_heads": {"choices": [3]}},
        search={"sampler": "grid"},
    ))
    code, summary = _search(capsys, str(path), "--executor", "local", "--out", str(tmp_path / "study"))
    assert code == 1
    assert summary["trials_complete"] == 0 and summary["trials_failed"] == 1 and "every trial failed" in summary["error"]


def test_grid_runs_exactly_the_grid(tmp_path: Path, tiny_spec: Any) -> None:
    spec = spec_from_dict(tiny_spec(
        train={"epochs": 1, "max_steps_per_epoch": 2, "warmup_epochs": 0, "checkpoint": False},
        sparsity={"density": {"choices": [0.3, 0.6]}, "head_density": {"choices": [0.5, 1.0]}},
        tokens={"keep_ratio": 1.0},
        search={"sampler": "grid"},
    ))
    summary = run_search(spec, tmp_path / "study", live=False)
    assert summary["trials_complete"] == 4 and summary["n_trials"] == 4
    params = sorted(json.dumps(t.params, sort_keys=True) for t in load_study(tmp_path / "study").trials)
    expected = sorted(json.dumps(p, sort_keys=True) for p in [
        {"method": "svite", "sparsity.density": 0.3}, {"method": "svite", "sparsity.density": 0.6},
        {"method": "s2vite", "sparsity.head_density": 0.5}, {"method": "s2vite", "sparsity.head_density": 1.0},
    ])
    assert params == expected


def test_single_objective_with_early_stopping_and_constraint(tmp_path: Path, tiny_spec: Any) -> None:
    spec = spec_from_dict(tiny_spec(
        objectives=[{"metric": "top1"}], constraints=["gmacs <= 0.0015"],
        search={"sampler": "random", "n_trials": 3, "seed": 1,
                "early_stopping": {"kind": "asha", "min_epochs": 1, "reduction_factor": 2}},
    ))
    summary = run_search(spec, tmp_path / "study", live=False)
    assert summary["trials_complete"] + summary["trials_pruned"] == 3
    study = load_study(tmp_path / "study")
    for t in study.get_trials(states=(TrialState.COMPLETE,)):
        assert t.user_attrs["rung_1"]["go_on"]  # judged at its rung (epoch 1 of 2) and let go on
        assert t.constraints == {"gmacs <= 0.0015": pytest.approx(trial_attrs(t)["gmacs"] - 0.0015)}
    feasible = [t.number for t in study.get_trials(states=(TrialState.COMPLETE,)) if trial_attrs(t)["gmacs"] <= 0.0015]
    assert {p["number"] for p in summary["pareto"]} <= set(feasible)


def test_storage_url_from_the_environment(tmp_path: Path, tiny_spec: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    shared = tmp_path / "shared" / "optuna.db"
    shared.parent.mkdir()
    monkeypatch.setenv("SVITE_STORAGE_URL", f"sqlite:///{shared}")
    spec = spec_from_dict(tiny_spec(search={"sampler": "random", "n_trials": 1}, tokens=None))
    summary = run_search(spec, tmp_path / "study", live=False)
    assert summary["trials_complete"] == 1 and summary["storage"] == "database"
    assert shared.is_file() and not (tmp_path / "study" / "optuna.db").exists()
    assert len(load_study(tmp_path / "study").trials) == 1  # found again through the environment
    assert len(optuna.load_study(study_name="tiny", storage=f"sqlite:///{shared}").trials) == 1


def test_demo_command_runs_a_spec_and_says_where_things_are(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                           tiny_spec: Any, write_spec: Any) -> None:
    path = write_spec(tmp_path, tiny_spec(tokens=None))
    code = main(["demo", "--spec", str(path), "--executor", "local", "--trials", "1", "--out", str(tmp_path / "d"),
                 "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0
    assert "demo finished" in out and "Optuna study:" in out and str(tmp_path / "d") in out
    assert load_spec(path).name == "tiny"


def test_latency_objective_is_measured_on_the_slim_model(tmp_path: Path, tiny_spec: Any) -> None:
    spec = spec_from_dict(tiny_spec(
        method="s2vite", tokens=None,
        objectives=["top1", "latency_ms"],
        sparsity={"head_density": {"choices": [0.5]}, "mlp_density": 0.5},
        search={"sampler": "random", "n_trials": 1, "latency": {"repeats": 3, "warmup": 1}},
    ))
    assert spec.needs_latency and spec.directions == ["maximize", "minimize"]
    run_search(spec, tmp_path / "study", live=False)
    trial = load_study(tmp_path / "study").trials[0]
    assert trial.state == TrialState.COMPLETE
    assert trial.values[1] == trial_attrs(trial)["latency_ms"] > 0
    assert trial_attrs(trial)["heads_per_block"] == [2, 2, 2, 2]


def test_resume_closes_tracking_runs_a_killed_driver_left_open(tmp_path: Path, tiny_spec: Any) -> None:
    from mlflow.tracking import MlflowClient

    spec = spec_from_dict(tiny_spec(search={"sampler": "random", "n_trials": 1}, tokens=None,
                                    tracking={"enabled": True}))
    first = run_search(spec, tmp_path / "study", live=False)
    client = MlflowClient(first["tracking_uri"])
    experiment = client.get_experiment_by_name("tiny")
    (run,) = client.search_runs([experiment.experiment_id], "tags.`svite.kind` = 'trial'")
    assert run.info.status == "FINISHED"
    # a driver killed between telling Optuna and closing the run leaves it like this
    client.update_run(run.info.run_id, status="RUNNING")
    again = run_search(spec, tmp_path / "study", live=False)
    assert again["trials_run_now"] == 0
    closed = client.get_run(run.info.run_id)
    assert closed.info.status == "FINISHED" and closed.data.tags["svite.state"] == "COMPLETE"
    assert closed.data.metrics["top1"] == pytest.approx(load_study(tmp_path / "study").trials[0].values[0])
