"""write_report on a real Optuna sqlite study shaped like the harness's: files, front, summary."""
from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
import yaml

from svite_search.cli import main
from svite_search.errors import UserInputError
from svite_search.report import load_study_dir, non_dominated, write_report, write_report_for_study
from svite_search.report.pareto import hypervolume_history

optuna.logging.set_verbosity(optuna.logging.WARNING)

SPEC = {
    "name": "toy-study",
    "data": {"dataset": "digits", "val_fraction": 0.2},
    "model": {"name": "vit_digits"},
    "train": {"epochs": 3},
    "method": {"choices": ["dense", "svite", "s2vite"]},
    "sparsity": {"density": {"low": 0.3, "high": 0.9}},
    "objectives": [{"metric": "top1", "direction": "maximize"}, {"metric": "gmacs", "direction": "minimize"}],
    "search": {"sampler": "random", "n_trials": 14, "seed": 0},
}
DENSE_GMACS = 0.0024


def _make_study(directory: Path, n: int = 14) -> optuna.Study:
    """A study as the harness leaves it: values (top1, gmacs), result metrics as user attrs, a
    dense baseline trial first, one failed trial with its reason, one tie on the front."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "spec.yaml").write_text(yaml.safe_dump({"spec_hash": "abc", "spec": SPEC}))
    study = optuna.create_study(study_name=SPEC["name"], storage=f"sqlite:///{directory / 'optuna.db'}",
                                directions=["maximize", "minimize"])
    with pytest.warns(optuna.exceptions.ExperimentalWarning):
        study.set_metric_names(["top1", "gmacs"])
    rng = random.Random(3)
    study.enqueue_trial({"method": "dense"})
    for number in range(n):
        trial = study.ask()
        method = trial.suggest_categorical("method", ["dense", "svite", "s2vite"])
        density = trial.suggest_float("sparsity.density", 0.3, 0.9) if method != "dense" else 1.0
        if number == 4:
            trial.set_user_attr("fail_reason", "RuntimeError: loss is nan")
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            continue
        gmacs = DENSE_GMACS * (0.25 + 0.75 * density)
        top1 = round(96.0 - 12.0 * (1.0 - density) ** 2 + rng.uniform(-1.5, 1.5), 2)
        if number == 9:  # an exact copy of trial 0's values: both or neither on the front
            top1, gmacs = study.trials[0].values
        attrs = {"run_dir": str(directory.resolve() / "trials" / str(number)), "top1": top1, "gmacs": gmacs, "dense_gmacs": DENSE_GMACS, "density": density,
                 "flops_savings": 1 - gmacs / DENSE_GMACS, "method": method, "wall_s": 2.5, "heads_per_block": [2, 2]}
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        study.tell(trial, [top1, gmacs])
    return study


def _brute_force_front(points: dict[int, tuple[float, float]]) -> set[int]:
    """Trials no other trial beats: top1 >= and gmacs <=, one of them strictly."""
    front = set()
    for i, (a1, a2) in points.items():
        dominated = any(b1 >= a1 and b2 <= a2 and (b1 > a1 or b2 < a2) for j, (b1, b2) in points.items() if j != i)
        if not dominated:
            front.add(i)
    return front


def test_report_files_and_exact_front(tmp_path: Path) -> None:
    study = _make_study(tmp_path / "study")
    info = write_report(tmp_path / "study")
    report = tmp_path / "study" / "report"
    for name in ("trials.csv", "pareto.csv", "pareto.png", "pareto.html", "hypervolume.csv", "hypervolume.png",
                 "importances.csv", "summary.md"):
        assert (report / name).is_file() and (report / name).stat().st_size > 0, name
    assert (report / "pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    trials = pd.read_csv(report / "trials.csv")
    assert len(trials) == 14 and (trials["state"] == "FAIL").sum() == 1
    assert trials.loc[trials["state"] == "FAIL", "error"].iloc[0] == "RuntimeError: loss is nan"
    assert {"top1", "gmacs", "duration_s", "params.method", "params.sparsity.density", "variant"} <= set(trials.columns)
    assert trials.loc[trials["number"] == 3, "run_dir"].iloc[0] == "trials/3"  # inside the study, not the machine

    points = {t.number: tuple(t.values) for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE}
    expected = _brute_force_front(points)
    pareto = pd.read_csv(report / "pareto.csv")
    assert set(pareto["number"]) == expected
    assert {0, 9} <= expected or not ({0, 9} & expected)  # ties travel together
    assert {p["number"] for p in info["pareto"]} == expected == {t.number for t in study.best_trials}
    assert info["complete"] == 13 and info["failed"] == 1

    history = pd.read_csv(report / "hypervolume.csv")
    assert len(history) == 13
    assert np.all(np.diff(history["hypervolume"]) >= -1e-12) and 0 < history["hypervolume"].iloc[-1] <= 1

    html = (report / "pareto.html").read_text()
    assert "trial #" in html and "density=" in html  # hover text carries the parameters

    summary = (report / "summary.md").read_text()
    for heading in ("## Study settings", "## Pareto front", "## Best accuracy within a compute budget",
                    "## Savings vs the dense baseline", "## Hypervolume", "## Parameter importances",
                    "## What this toy scale shows, and what it does not"):
        assert heading in summary, heading
    assert "Dense baseline: top1" in summary and "trial #4 failed: RuntimeError: loss is nan" in summary
    importances = pd.read_csv(report / "importances.csv")
    assert set(importances["objective"]) <= {"top1", "gmacs"}


def test_report_of_a_study_in_hand_and_empty_study(tmp_path: Path) -> None:
    study = optuna.create_study(directions=["maximize", "minimize"])
    info = write_report_for_study(study, tmp_path / "empty", SPEC)
    assert info["trials"] == 0 and info["pareto"] == []
    assert "_No completed trial yet._" in (tmp_path / "empty" / "summary.md").read_text()
    assert not (tmp_path / "empty" / "pareto.png").exists()


def test_non_dominated_rules() -> None:
    values = np.array([[90, 1.0], [80, 0.5], [85, 0.8], [70, 0.9], [90, 1.0], [np.nan, 0.1]])
    assert non_dominated(values, [True, False]).tolist() == [True, True, True, False, True, False]
    assert non_dominated(values[:4], [False, True]).tolist() == [True, False, False, True]  # directions flip
    assert non_dominated(np.array([[1.0, 2.0, 3.0], [1.0, 2.0, 4.0]]), [False] * 3).tolist() == [True, False]


def test_hypervolume_of_a_known_front() -> None:
    frame = pd.DataFrame({"number": [0, 1, 2], "state": ["COMPLETE"] * 3, "top1": [90.0, 80.0, 85.0],
                          "gmacs": [1.0, 0.5, 0.8]})
    from svite_search.report import Objective

    history = hypervolume_history(frame, [Objective("top1", "maximize"), Objective("gmacs", "minimize")])
    # normalised box: top1 from 79 (80 minus 10 % of its range) up to 90, gmacs from 1.05
    # (1.0 plus 10 % of its range) down to 0.5; the area the three points dominate, by hand:
    x = lambda top1: (90 - top1) / 11  # noqa: E731
    y = lambda g: (g - 0.5) / 0.55  # noqa: E731
    pts = sorted([(x(90), y(1.0)), (x(85), y(0.8)), (x(80), y(0.5))])
    area = sum((pts[i + 1][0] - pts[i][0]) * (1 - pts[i][1]) for i in range(2)) + (1 - pts[2][0]) * (1 - pts[2][1])
    assert history["hypervolume"].iloc[-1] == pytest.approx(area)
    assert history["front_size"].tolist() == [1, 2, 3]


def test_study_dir_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(UserInputError, match="no such directory"):
        load_study_dir(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserInputError, match="not a study directory"):
        load_study_dir(tmp_path / "empty")
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert "not a study directory" in capsys.readouterr().err


def test_report_command_json(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _make_study(tmp_path / "study", n=5)
    assert main(["report", str(tmp_path / "study"), "--out", str(tmp_path / "out"), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["report_dir"] == str(tmp_path / "out") and "summary.md" in data["files"]
    with open(tmp_path / "out" / "pareto.csv") as handle:
        assert {int(r["number"]) for r in csv.DictReader(handle)} == {p["number"] for p in data["pareto"]}


def test_summary_averages_settings_over_seeds(tmp_path: Path) -> None:
    study = optuna.create_study(directions=["maximize", "minimize"])
    for seed, (dense_top1, sparse_top1) in enumerate([(95.0, 93.0), (97.0, 94.0)]):
        for method, top1, gmacs in (("dense", dense_top1, 2.0), ("svite", sparse_top1, 1.0)):
            study.enqueue_trial({"method": method, "train.seed": seed})
            trial = study.ask()
            trial.suggest_categorical("method", ["dense", "svite"])
            trial.suggest_categorical("train.seed", [0, 1])
            study.tell(trial, [top1, gmacs])
    write_report_for_study(study, tmp_path / "r", {"name": "seeds"})
    summary = (tmp_path / "r" / "summary.md").read_text()
    section = summary.split("## Mean over seeds", 1)[1].split("\n## ", 1)[0]
    assert "| SViTE | — | 2 | 93.50 ± 0.71 |" in section
    assert "| dense | — | 2 | 96.00 ± 1.41 |" in section
    assert "50.0 %" in section and "−2.50" in section  # vs the dense mean 96.00
