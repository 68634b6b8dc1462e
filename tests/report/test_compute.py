"""The report's compute accounting and its fixed hypervolume scale, on real Optuna studies; the
project's exact hypervolume against a brute-force count."""
from __future__ import annotations

import datetime as dt
import itertools
import json
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest

from svite_search.metrics.pareto import hypervolume_brute_force, hypervolume_exact
from svite_search.report import trials_frame, write_report_for_study
from svite_search.report._frame import Objective
from svite_search.report.compare import compare_studies
from svite_search.report.compute import compute_history, compute_spent, trial_epochs
from svite_search.report.pareto import fixed_bounds, hypervolume

optuna.logging.set_verbosity(optuna.logging.WARNING)
OBJECTIVES = [Objective("top1", "maximize"), Objective("gmacs", "minimize")]
DENSE = 0.0024
T0 = dt.datetime(2026, 1, 1, 12, 0, 0)


@pytest.mark.parametrize("dims", [1, 2, 3, 4])
def test_exact_hypervolume_matches_brute_force(dims: int) -> None:
    rng = np.random.default_rng(dims)
    for n in (1, 2, 5, 9):
        points = rng.integers(0, 5, size=(n, dims)).astype(float) / 4  # ties and shared coordinates
        points[0] = points[-1]  # a duplicate
        if n > 2:
            points[1, 0] = 1.5  # beyond the reference in one objective: adds nothing
        ref = [1.0] * dims
        assert hypervolume_exact(points.tolist(), ref) == pytest.approx(hypervolume_brute_force(points.tolist(), ref))
    assert hypervolume_exact([], [1.0] * dims) == 0.0


def test_exact_hypervolume_known_values() -> None:
    assert hypervolume_exact([[0.5, 0.5]], [1, 1]) == pytest.approx(0.25)
    assert hypervolume_exact([[0.0, 0.5], [0.5, 0.0]], [1, 1]) == pytest.approx(0.75)
    assert hypervolume_exact([[0.0, 0.0, 0.5], [0.5, 0.5, 0.0]], [1, 1, 1]) == pytest.approx(0.5 + 0.25 * 0.5)


def test_report_hypervolume_uses_no_private_optuna_module() -> None:
    import svite_search.report.pareto as pareto

    assert "optuna._hypervolume" not in Path(pareto.__file__).read_text()


def _study(trials: list[dict]) -> optuna.Study:
    """An in-memory study as the harness leaves it: COMPLETE trials with their result attributes,
    PRUNED ones with the progress the driver recorded while they ran (epoch, top1_history)."""
    study = optuna.create_study(directions=["maximize", "minimize"])
    for spec in trials:
        start = T0 + dt.timedelta(minutes=spec["start"])
        end = T0 + dt.timedelta(minutes=spec["end"])
        attrs = {"method": spec.get("method", "svite"), "dense_gmacs": DENSE, "top1": spec["top1"], "gmacs": spec["gmacs"]}
        if spec["state"] == "COMPLETE":
            attrs.update(epochs=spec["epochs"], wall_s=60.0 * (spec["end"] - spec["start"]))
            state, values = optuna.trial.TrialState.COMPLETE, [spec["top1"], spec["gmacs"]]
        else:
            attrs.update(epoch=spec["epochs"], top1_history=[spec["top1"]] * spec["epochs"])
            state, values = optuna.trial.TrialState.PRUNED, None
        trial = optuna.trial.create_trial(state=state, values=values, params={}, distributions={}, user_attrs=attrs)
        trial.datetime_start, trial.datetime_complete = start, end  # the times a run would have had
        study.add_trial(trial)
    return study


TRIALS = [  # minutes from T0; trial 2 ends after trial 3, trial 1 is stopped at epoch 2
    {"state": "COMPLETE", "method": "dense", "top1": 90.0, "gmacs": DENSE, "epochs": 10, "start": 0, "end": 10},
    {"state": "PRUNED", "top1": 40.0, "gmacs": 0.5 * DENSE, "epochs": 2, "start": 0, "end": 2},
    {"state": "COMPLETE", "top1": 85.0, "gmacs": 0.5 * DENSE, "epochs": 10, "start": 2, "end": 30},
    {"state": "COMPLETE", "top1": 80.0, "gmacs": 0.25 * DENSE, "epochs": 10, "start": 10, "end": 20},
]


def _frame(trials=TRIALS) -> pd.DataFrame:
    return trials_frame(_study(trials).get_trials(deepcopy=False), OBJECTIVES)


def test_compute_spent_complete_vs_stopped() -> None:
    spent = compute_spent(_frame())
    assert spent["trial_epochs"] == 32
    assert spent["by_state"]["COMPLETE"] == {"trials": 3, "trial_epochs": 30.0, "trial_hours": pytest.approx(48 / 60)}
    assert spent["by_state"]["PRUNED"] == {"trials": 1, "trial_epochs": 2.0, "trial_hours": pytest.approx(2 / 60)}
    assert spent["trial_hours"] == pytest.approx(50 / 60)


def test_trial_epochs_falls_back_along_what_the_trial_recorded() -> None:
    assert trial_epochs({"state": "COMPLETE", "epochs": 7, "epoch": 3}) == 7
    assert trial_epochs({"state": "PRUNED", "epoch": 3}) == 3
    assert trial_epochs({"state": "PRUNED", "top1_history": json.dumps([1.0, 2.0])}) == 2
    assert trial_epochs({"state": "COMPLETE"}, {"train": {"epochs": 20}}) == 20
    assert trial_epochs({"state": "COMPLETE", "params.train.epochs": 5}, {"train": {"epochs": 20}}) == 5
    assert trial_epochs({"state": "FAIL"}) == 0


def test_fixed_bounds_are_top1_0_to_100_and_the_dense_macs() -> None:
    bounds = fixed_bounds(OBJECTIVES, _frame())
    assert bounds.all_fixed
    assert bounds.points(OBJECTIVES) == {"reference": {"top1": 0.0, "gmacs": DENSE}, "ideal": {"top1": 100.0, "gmacs": 0.0}}
    # one trial at 90 % and half the dense MACs dominates 0.9 x 0.5 of the box, whatever else the study holds
    assert hypervolume(np.array([[90.0, 0.5 * DENSE]]), [True, False], bounds.reference, bounds.ideal) == pytest.approx(0.45)


def test_compute_history_in_end_order_with_both_scales() -> None:
    history = compute_history(_frame(), OBJECTIVES)
    assert history["number"].tolist() == [1, 0, 3, 2]  # the order the trials ended
    assert history["trial_epochs"].tolist() == [2, 12, 22, 32]
    assert history["trial_hours"].iloc[-1] == pytest.approx(50 / 60)
    fixed = history["hypervolume_fixed"].tolist()
    # the stopped trial buys nothing; the dense one lies on the reference's MACs (no area);
    # trial 3: 0.8 x 0.75; trial 2 adds (0.85 - 0.8) x 0.5
    assert fixed == pytest.approx([0.0, 0.0, 0.6, 0.6 + 0.05 * 0.5])
    assert history["hypervolume"].is_monotonic_increasing


def test_report_says_compute_and_plots_against_it(tmp_path: Path) -> None:
    study = _study(TRIALS)
    info = write_report_for_study(study, tmp_path / "report", {"name": "toy", "train": {"epochs": 10}})
    assert {"compute.csv", "hypervolume.png", "hypervolume.csv"} <= set(info["files"])
    assert info["compute"]["by_state"]["PRUNED"]["trial_epochs"] == 2
    assert info["reference_point"] == {"top1": 0.0, "gmacs": DENSE}
    assert info["hypervolume_fixed"] == pytest.approx(0.6 + 0.05 * 0.5)
    text = (tmp_path / "report" / "summary.md").read_text()
    assert "## Compute spent" in text and "stopped early (pruned)" in text and "32 trial-epochs" in text
    assert "On the fixed scale" in text
    hv = pd.read_csv(tmp_path / "report" / "hypervolume.csv")
    assert "hypervolume_fixed" in hv.columns
    compute = pd.read_csv(tmp_path / "report" / "compute.csv")
    assert compute["number"].tolist() == [1, 0, 3, 2] and compute["trial_epochs"].iloc[-1] == 32


def _sqlite_study(directory: Path, name: str, points: list[tuple[float, float]]) -> None:
    directory.mkdir(parents=True)
    study = optuna.create_study(study_name=name, storage=f"sqlite:///{directory / 'optuna.db'}",
                                directions=["maximize", "minimize"])
    for number, values in enumerate(points):
        trial = study.ask()
        trial.set_user_attr("method", "dense" if number == 0 else "svite")
        trial.set_user_attr("dense_gmacs", DENSE)
        trial.set_user_attr("epochs", 10)
        study.tell(trial, list(values))


def test_compare_fixed_hypervolume_does_not_depend_on_the_company(tmp_path: Path) -> None:
    a = [(90.0, DENSE), (85.0, 0.5 * DENSE)]
    b = [(95.0, DENSE), (92.0, 0.3 * DENSE)]
    c = [(60.0, DENSE), (50.0, 0.9 * DENSE)]
    for name, points in (("a", a), ("b", b), ("c", c)):
        _sqlite_study(tmp_path / name, name, points)
    with_b = compare_studies([tmp_path / "a", tmp_path / "b"], tmp_path / "ab")
    with_c = compare_studies([tmp_path / "a", tmp_path / "c"], tmp_path / "ac")
    fixed_ab, fixed_ac = with_b["studies"][0]["hypervolume_fixed"], with_c["studies"][0]["hypervolume_fixed"]
    assert fixed_ab == fixed_ac == pytest.approx(0.85 * 0.5)
    assert with_b["studies"][0]["hypervolume"] != pytest.approx(with_c["studies"][0]["hypervolume"])  # pooled scale moves
    assert with_b["fixed_reference_point"] == {"top1": 0.0, "gmacs": DENSE}
    assert with_b["studies"][0]["trial_epochs"] == 20
    text = (tmp_path / "ab" / "compare.md").read_text()
    assert "hypervolume (fixed)" in text and "trial-epochs" in text


def test_fixed_bounds_of_an_objective_without_a_natural_bound() -> None:
    objectives = OBJECTIVES + [Objective("latency_ms", "minimize")]
    frame = pd.DataFrame({"state": ["COMPLETE"] * 3, "variant": ["dense", "SViTE", "SViTE"], "top1": [90.0, 85.0, 80.0],
                          "gmacs": [DENSE, 0.5 * DENSE, 0.3 * DENSE], "dense_gmacs": [DENSE] * 3,
                          "latency_ms": [4.0, 3.0, 5.0]})
    bounds = fixed_bounds(objectives, frame)
    assert bounds.fixed == (True, True, False)
    assert bounds.points(objectives)["reference"] == {"top1": 0.0, "gmacs": DENSE, "latency_ms": 4.0}  # dense latency
    # three objectives go through the exact sliced hypervolume; the trial slower than dense adds nothing
    values = frame[["top1", "gmacs", "latency_ms"]].to_numpy()
    expected = 0.85 * 0.5 * 0.25  # trial 1 alone: trial 0 sits on two references, trial 2 beyond one
    assert hypervolume(values, [True, False, False], bounds.reference, bounds.ideal) == pytest.approx(expected)
