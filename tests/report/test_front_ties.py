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
