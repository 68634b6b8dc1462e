"""Accuracies equal in images correct are equal on the front, whatever float width stored them."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import pandas as pd

from svite_search.report import non_dominated, pareto_mask, write_report_for_study
from svite_search.report._frame import Objective
from svite_search.report.pareto import ACCURACY_RTOL, hypervolume_history

OBJECTIVES = [Objective("top1", "maximize"), Objective("gmacs", "minimize")]
SAME_64 = 100.0 * 325 / 360            # 90.2777...: top-1 as a float64
SAME_32 = float(np.float32(SAME_64))   # the same 325 of 360 correct, through a float32


def test_float32_and_float64_of_one_count_differ_by_less_than_the_tolerance() -> None:
    assert SAME_32 != SAME_64
    assert abs(SAME_32 - SAME_64) < ACCURACY_RTOL * SAME_64
    assert 100.0 / 50_000 > 10 * ACCURACY_RTOL * 100.0  # one ImageNet val image is far above it


def test_tie_in_accuracy_keeps_only_the_cheaper_trial() -> None:
    # trial 0: 325/360 at more MACs (float32 storage, a hair above); trial 1: same count, fewer MACs
    values = np.array([[SAME_32, 0.0020], [SAME_64, 0.0015], [80.0, 0.0010]])
    assert non_dominated(values, [True, False]).tolist() == [False, True, True]
    values = np.array([[SAME_64, 0.0020], [SAME_32, 0.0015], [80.0, 0.0010]])
    assert non_dominated(values, [True, False]).tolist() == [False, True, True]


def test_exact_duplicates_are_both_kept_and_real_differences_count() -> None:
    values = np.array([[SAME_64, 0.0015], [SAME_32, 0.0015], [SAME_64 + 100.0 / 360, 0.0016]])
    assert non_dominated(values, [True, False]).tolist() == [True, True, True]


def _study(directory: Path) -> optuna.Study:
    directory.mkdir(parents=True)
    study = optuna.create_study(study_name="ties", storage=f"sqlite:///{directory / 'optuna.db'}",
                                directions=["maximize", "minimize"])
    for number, (top1, gmacs) in enumerate([(96.0, 0.0024), (SAME_32, 0.0018), (SAME_64, 0.0012), (70.0, 0.0006)]):
        trial = study.ask()
        trial.set_user_attr("method", "dense" if number == 0 else "svite")
        study.tell(trial, [top1, gmacs])
    return study


def test_report_front_and_hypervolume_history_use_the_same_comparison(tmp_path: Path) -> None:
    study = _study(tmp_path / "study")
    info = write_report_for_study(study, tmp_path / "report")
    assert [p["number"] for p in info["pareto"]] == [0, 2, 3]
    frame = pd.read_csv(tmp_path / "report" / "trials.csv")
    assert frame.loc[frame["pareto"], "number"].tolist() == [0, 2, 3]
    assert pareto_mask(frame, OBJECTIVES).tolist() == [True, False, True, True]
    history = hypervolume_history(frame, OBJECTIVES)
    assert history["front_size"].tolist() == [1, 2, 2, 3]


def test_the_search_summary_front_agrees(tmp_path: Path) -> None:
    """The front the search prints and logs to MLflow is the report's."""
    from svite_search.search.study import pareto_front

    study = _study(tmp_path / "study")
    assert [p["number"] for p in pareto_front(study)] == [0, 2, 3]


def _pairwise_non_dominated(values: np.ndarray, maximize: list[bool]) -> list[bool]:
    """Every pair compared under the same tolerances: what the sort-based sweep must agree with."""
    from svite_search.metrics.pareto import as_losses, tolerances

    losses = as_losses(values, maximize)
    tol = tolerances(losses)
    out = []
    for p in losses:
        dominated = any(np.all(q <= p + tol) and np.any(q < p - tol) for q in losses)
        out.append(not dominated)
    return out


def test_the_two_objective_sweep_agrees_with_every_pair_compared() -> None:
    rng = np.random.default_rng(0)
    for trial in range(200):
        n = int(rng.integers(1, 40))
        counts = rng.integers(300, 330, size=n)  # few distinct accuracies: many ties
        top1 = 100.0 * counts / 360
        as32 = rng.random(n) < 0.5
        top1 = np.where(as32, top1.astype(np.float32).astype(float), top1)
        macs = rng.choice([0.001, 0.0015, 0.002, 0.0025], size=n) * (1 + 1e-9 * rng.integers(0, 2, size=n))
        values = np.column_stack([top1, macs])
        maximize = [True, False]
        assert non_dominated(values, maximize).tolist() == _pairwise_non_dominated(values, maximize), trial


def test_the_hypervolume_history_front_sizes_agree_with_the_report_front() -> None:
    rng = np.random.default_rng(1)
    for trial in range(50):
        n = int(rng.integers(1, 30))
        top1 = 100.0 * rng.integers(300, 310, size=n) / 360
        top1 = np.where(rng.random(n) < 0.5, top1.astype(np.float32).astype(float), top1)
        frame = pd.DataFrame({"number": range(n), "state": "COMPLETE", "top1": top1,
                              "gmacs": rng.choice([0.001, 0.0015, 0.002], size=n)})
        sizes = hypervolume_history(frame, OBJECTIVES)["front_size"].tolist()
        expected = [int(pareto_mask(frame.iloc[: k + 1], OBJECTIVES).sum()) for k in range(n)]
        assert sizes == expected, trial
