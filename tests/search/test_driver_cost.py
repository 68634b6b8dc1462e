"""The driver's per-trial bookkeeping stays cheap as a study grows: the front kept incrementally
and the hypervolume history in one sweep agree with the brute-force definitions, and a trial's
result attributes reach the storage in one commit."""
from __future__ import annotations

import random

import numpy as np
import optuna
import pandas as pd
import pytest
import sqlalchemy

from svite_search.metrics.pareto import IncrementalFront, brute_force_front, hypervolume_sweep
from svite_search.report._frame import Objective
from svite_search.report.pareto import _as_losses, hypervolume, hypervolume_history, normalisation
from svite_search.search.study import RESULT_ATTR, set_result_attrs, trial_attrs


def _random_points(rng: random.Random, n: int, d: int, *, ties: bool) -> list[tuple[float, ...]]:
    if ties:  # few distinct values: equal points and equal coordinates are common
        return [tuple(float(rng.randint(0, 6)) for _ in range(d)) for _ in range(n)]
    return [tuple(rng.random() for _ in range(d)) for _ in range(n)]


@pytest.mark.parametrize("d", [1, 2, 3])
@pytest.mark.parametrize("ties", [False, True])
def test_incremental_front_matches_brute_force_after_every_point(d: int, ties: bool) -> None:
    rng = random.Random(d * 10 + ties)
    for _ in range(20):
        points = _random_points(rng, rng.randint(1, 40), d, ties=ties)
        front = IncrementalFront(d)
        for k, point in enumerate(points):
            front.add(point, k)
            assert sorted(front.ids) == brute_force_front(points[: k + 1])


def _brute_area(points: list[tuple[float, float]]) -> float:
    """Area of [0, 1]^2 the points dominate: their front, clipped, as a staircase."""
    front = sorted({(min(points[i][0], 1.0), min(points[i][1], 1.0)) for i in brute_force_front(points)})
    area = 0.0
    for k, (x, y) in enumerate(front):
        right = front[k + 1][0] if k + 1 < len(front) else 1.0
        area += (right - x) * (1.0 - y)
    return area


@pytest.mark.parametrize("ties", [False, True])
def test_hypervolume_sweep_matches_brute_force_on_every_prefix(ties: bool) -> None:
    rng = random.Random(7 + ties)
    for _ in range(30):
        n = rng.randint(1, 50)
        if ties:
            points = [(rng.randint(0, 8) / 7.0, rng.randint(0, 8) / 7.0) for _ in range(n)]  # some beyond 1
        else:
            points = [(rng.uniform(-0.05, 1.2), rng.uniform(-0.05, 1.2)) for _ in range(n)]
        history = hypervolume_sweep(points)
        for k in range(n):
            prefix = points[: k + 1]
            inside = [p for p in prefix if p[0] < 1 and p[1] < 1]
            assert history[k][0] == pytest.approx(_brute_area(inside) if inside else 0.0, abs=1e-12)
            assert history[k][1] == len(brute_force_front(prefix))


def _brute_history(frame: pd.DataFrame, objectives: list[Objective]) -> list[tuple[int, float, int]]:
    """The per-prefix definition: front and exact (WFG) hypervolume recomputed for every prefix."""
    complete = frame[frame["state"] == "COMPLETE"].sort_values("number")
    maximize = [o.maximize for o in objectives]
    values = complete[[o.metric for o in objectives]].to_numpy(dtype=float)
    reference, ideal = normalisation(values, maximize)
    out = []
    for k in range(1, len(values) + 1):
        losses = _as_losses(values[:k], maximize).tolist()
        out.append((int(complete["number"].iloc[k - 1]), hypervolume(values[:k], maximize, reference, ideal),
                    len(brute_force_front(losses))))
    return out


@pytest.mark.parametrize("n_objectives", [2, 3])
def test_report_hypervolume_history_matches_the_per_prefix_definition(n_objectives: int) -> None:
    rng = np.random.default_rng(n_objectives)
    n = 60
    frame = pd.DataFrame({
        "number": rng.permutation(n),
        "state": rng.choice(["COMPLETE", "COMPLETE", "COMPLETE", "FAIL"], size=n),
        "top1": rng.integers(50, 100, size=n).astype(float),
        "gmacs": rng.random(n),
        "latency_ms": rng.random(n),
    })
    objectives = [Objective("top1", "maximize"), Objective("gmacs", "minimize"), Objective("latency_ms", "minimize")]
    objectives = objectives[:n_objectives]
    history = hypervolume_history(frame, objectives)
    expected = _brute_history(frame, objectives)
    assert history["number"].tolist() == [e[0] for e in expected]
    assert history["hypervolume"].tolist() == pytest.approx([e[1] for e in expected], abs=1e-9)
    assert history["front_size"].tolist() == [e[2] for e in expected]
    assert history["hypervolume"].is_monotonic_increasing


def test_a_trials_result_is_written_in_one_commit_and_read_back_whole(tmp_path) -> None:
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'optuna.db'}")
    study = optuna.create_study(storage=storage, study_name="attrs")
    trial = study.ask()
    trial.set_user_attr("epoch", 1)  # progress a running trial reports, stored on its own
    attrs = {f"metric_{i}": i * 0.5 for i in range(30)} | {"top1_history": [1.0, None, 3.0], "method": "svite", "epoch": 2}
    commits = []
    sqlalchemy.event.listen(storage.engine, "commit", lambda conn: commits.append(1))
    set_result_attrs(trial, attrs)
    assert len(commits) == 1
    study.tell(trial, 1.0)
    stored = optuna.load_study(study_name="attrs", storage=f"sqlite:///{tmp_path / 'optuna.db'}").trials[0]
    assert stored.user_attrs == {"epoch": 1, RESULT_ATTR: attrs}
    assert trial_attrs(stored) == attrs  # the result wins over the progress attribute
    flat = optuna.trial.create_trial(value=1.0, user_attrs={"top1": 70.0})  # a study written attribute by attribute
    assert trial_attrs(flat) == {"top1": 70.0}
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        set_result_attrs(trial, {"late": 1})  # a finished trial refuses, as set_user_attr does

def test_a_model_built_again_from_the_same_seed_is_a_bit_identical_copy() -> None:
    import torch

    import svite_search.models as models
    from svite_search.config import ModelConfig

    cfg = ModelConfig(name="vit_micro")
    models._TEMPLATES.clear()
    torch.manual_seed(3)
    fresh = models.build_model(cfg, num_classes=10)
    after_fresh = torch.rand(4)
    torch.manual_seed(3)
    again = models.build_model(cfg, num_classes=10)  # from the template
    after_again = torch.rand(4)
    assert len(models._TEMPLATES) == 1
    assert again is not fresh and all(a is not b for a, b in zip(again.parameters(), fresh.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), again.state_dict().values()))
    assert torch.equal(after_fresh, after_again)  # the random stream continues as after a fresh build
    torch.manual_seed(4)
    other = models.build_model(cfg, num_classes=10)  # another seed: new weights, not the template
    assert not torch.equal(other.state_dict()["head.weight"], fresh.state_dict()["head.weight"])
    with torch.no_grad():
        again.head.weight.add_(1.0)  # training a copy leaves the template alone
    torch.manual_seed(3)
    assert torch.equal(models.build_model(cfg, num_classes=10).head.weight, fresh.head.weight)


def test_the_digits_split_is_the_same_every_time_and_callers_get_their_own_copy() -> None:
    from svite_search.data._digits import digits_split

    train, val = digits_split(0.2, 0)
    train[:] = -1
    again_train, again_val = digits_split(0.2, 0)
    assert (again_train >= 0).all() and len(again_train) + len(again_val) == 1797


@pytest.mark.parametrize("constrained", [False, True])
def test_the_monitors_front_is_the_studys_best_trials_after_every_trial(tmp_path, constrained: bool) -> None:
    import io

    from svite_search.search import spec_from_dict
    from svite_search.search.objective import COMPLETE, FAIL, TrialOutcome
    from svite_search.search.monitor import SearchMonitor
    from svite_search.search.study import pareto_front, record_outcome
    from svite_search.tracking.study import NullStudyTracker

    raw = {
        "name": "front", "method": "svite", "data": {"dataset": "synthetic"}, "model": {"name": "vit_micro"},
        "train": {"epochs": 1, "warmup_epochs": 0}, "sparsity": {"density": {"low": 0.1, "high": 0.9}},
        "objectives": [{"metric": "top1", "direction": "maximize"}, {"metric": "gmacs", "direction": "minimize"}],
        "search": {"n_trials": 40, "sampler": "random", "seed": 0}, "executor": {"kind": "local"},
    }
    if constrained:
        raw["constraints"] = ["gmacs <= 0.5"]
    spec = spec_from_dict(raw)
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'optuna.db'}", directions=spec.directions)
    rng = random.Random(1)
    for number in range(5):  # trials already in the study when the monitor starts (a resume)
        trial = study.ask()
        values = [float(rng.randint(0, 9)), rng.randint(0, 9) / 10]
        record_outcome(study, trial, TrialOutcome(trial.number, COMPLETE, values=values,
                                                  attrs={"top1": values[0], "gmacs": values[1]}), spec)
    monitor = SearchMonitor(spec, study, NullStudyTracker(), live=False, stream=io.StringIO())
    assert monitor.pareto_size == len(pareto_front(study))
    for _ in range(35):
        trial = study.ask()
        values = [float(rng.randint(0, 9)), rng.randint(0, 9) / 10]  # ties and equal points are common
        state = FAIL if rng.random() < 0.1 else COMPLETE
        outcome = TrialOutcome(trial.number, state, values=values if state == COMPLETE else None,
                               attrs={"top1": values[0], "gmacs": values[1]}, error=None if state == COMPLETE else "x")
        record_outcome(study, trial, outcome, spec)
        monitor.finished(outcome)
        assert monitor.pareto_size == len(pareto_front(study))
