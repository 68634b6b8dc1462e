"""Early stopping's rules and rung engine: decisions against a brute-force non-dominated sort,
rung records in a real Optuna storage, arrivals out of order, and the replaced keys' exit 2."""
from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any, Sequence

import optuna
import pytest

from svite_search.errors import ConfigError
from svite_search.search import spec_from_dict
from svite_search.search.early_stopping import nondominated_fronts, rung_epochs, should_continue
from svite_search.search.early_stopping.engine import RungEngine, replay, rung_objectives

MAXMIN = ["maximize", "minimize"]


# ----------------------------------------------------------------------------- brute force


def _better_or_equal(a: Sequence[float], b: Sequence[float], directions: Sequence[str]) -> list[bool]:
    return [(x >= y) if d == "maximize" else (x <= y) for x, y, d in zip(a, b, directions)]


def _dominates(a: Sequence[float], b: Sequence[float], directions: Sequence[str]) -> bool:
    return all(_better_or_equal(a, b, directions)) and list(a) != list(b)


def _fronts(points: list[Sequence[float]], directions: Sequence[str]) -> list[list[int]]:
    """Peel the non-dominated set off again and again."""
    left, fronts = list(range(len(points))), []
    while left:
        front = [i for i in left if not any(_dominates(points[j], points[i], directions) for j in left)]
        fronts.append(front)
        left = [i for i in left if i not in front]
    return fronts


def _crowding(points: list[Sequence[float]], directions: Sequence[str]) -> list[float]:
    n = len(points)
    if n <= 2:
        return [math.inf] * n
    out = [0.0] * n
    for m, direction in enumerate(directions):
        sign = 1.0 if direction == "maximize" else -1.0
        order = sorted(range(n), key=lambda i: (sign * points[i][m], i))
        span = sign * points[order[-1]][m] - sign * points[order[0]][m]
        out[order[0]] = out[order[-1]] = math.inf
        if span > 0:
            for k in range(1, n - 1):
                out[order[k]] += (sign * points[order[k + 1]][m] - sign * points[order[k - 1]][m]) / span
    return out


def _brute_pareto(candidate: list[float], recorded: list[list[float]], directions: list[str], eta: int) -> bool:
    """The documented rule, from scratch: nobody stopped before eta recorded; else the whole
    rung sorted by (front, crowding distance within the front, the candidate first on a tie),
    and the candidate goes on if it is in the first max(1, n // eta) places."""
    if len(recorded) < eta:
        return True
    pool = [*recorded, candidate]
    me = len(pool) - 1
    key = {}
    for level, front in enumerate(_fronts(pool, directions)):
        for i, distance in zip(front, _crowding([pool[i] for i in front], directions)):
            key[i] = (level, -distance, i != me)
    order = sorted(range(len(pool)), key=lambda i: key[i])
    return order.index(me) < max(1, len(pool) // eta)


def _brute_rungs(min_epochs: int, eta: int, max_epochs: int) -> list[int]:
    """Every min_epochs * eta**k below the run, then: the first always, a later one only if eta
    times it still fits in the run."""
    ladder = [min_epochs * eta**k for k in range(40) if min_epochs * eta**k < max_epochs]
    return [r for k, r in enumerate(ladder) if k == 0 or r * eta <= max_epochs]


def _brute_asha(candidate: list[float], recorded: list[list[float]], directions: list[str], eta: int) -> bool:
    if len(recorded) < eta:
        return True
    sign = 1.0 if directions[0] == "maximize" else -1.0
    ranked = sorted([sign * r[0] for r in recorded] + [sign * candidate[0]], reverse=True)
    keep = max(1, (len(recorded) + 1) // eta)
    return sign * candidate[0] >= ranked[keep - 1]


def _vector(rng: random.Random, k: int) -> list[float]:
    return [rng.choice([0.1, 0.2, 0.3, 0.4, 0.5, rng.random()]) for _ in range(k)]  # ties on purpose


def test_rung_epochs_are_min_epochs_times_powers_of_eta_with_a_full_step_after_each() -> None:
    assert rung_epochs(1, 3, 30) == [1, 3, 9]  # no rung at 27: its step (to 81) is past the run
    assert rung_epochs(2, 3, 20) == [2, 6]  # no rung at 18 of 20: a stop there would save 2 epochs
    assert rung_epochs(2, 2, 16) == [2, 4, 8]
    assert rung_epochs(1, 3, 27) == [1, 3, 9]  # a trial that reaches 27 is complete: no rung there
    assert rung_epochs(4, 3, 9) == [4]  # the first rung is kept while it lies below the run
    assert rung_epochs(5, 2, 5) == []
    for min_epochs in range(1, 12):
        for eta in range(2, 6):
            for max_epochs in range(1, 200, 7):
                assert rung_epochs(min_epochs, eta, max_epochs) == _brute_rungs(min_epochs, eta, max_epochs)
    with pytest.raises(ValueError):
        rung_epochs(1, 1, 10)


def test_fronts_match_a_brute_force_peel() -> None:
    rng = random.Random(0)
    for _ in range(60):
        directions = rng.choice([MAXMIN, ["maximize", "minimize", "minimize"], ["minimize"]])
        points = [_vector(rng, len(directions)) for _ in range(rng.randint(1, 25))]
        assert nondominated_fronts(points, directions) == _fronts(points, directions)


@pytest.mark.parametrize("eta", [2, 3, 4])
def test_promotion_decisions_match_a_brute_force_non_dominated_sort(eta: int) -> None:
    rng = random.Random(eta)
    seen = {True: 0, False: 0}
    for _ in range(400):
        directions = rng.choice([MAXMIN, ["maximize", "minimize", "minimize"]])
        recorded = [_vector(rng, len(directions)) for _ in range(rng.randint(0, 14))]
        candidate = _vector(rng, len(directions))
        go_on, reason = should_continue("pareto", candidate, recorded, directions, eta)
        assert go_on == _brute_pareto(candidate, recorded, directions, eta), (candidate, recorded, reason)
        assert reason.startswith("pareto: ")
        seen[go_on] += 1
        go_on, reason = should_continue("asha", candidate, recorded, directions, eta)
        assert go_on == _brute_asha(candidate, recorded, directions, eta), (candidate, recorded, reason)
    assert min(seen.values()) > 40  # both verdicts were exercised


def test_one_early_leader_does_not_stop_what_it_dominates_before_the_warm_up() -> None:
    # bigger and less accurate than the one trial that reached the rung before it: too little to
    # judge on (an early top-1 is noisy), so it goes on, under either rule
    go_on, reason = should_continue("pareto", [0.5, 2.0], [[0.6, 1.0]], MAXMIN, 3)
    assert go_on and "ranks none before 3" in reason
    assert should_continue("asha", [0.5, 2.0], [[0.6, 1.0]], MAXMIN, 3)[0]
    # a smaller model is on the front whatever its top-1: pareto keeps it, asha does not
    recorded = [[0.9, 2.0], [0.8, 2.0], [0.7, 2.0]]
    assert should_continue("pareto", [0.1, 0.5], recorded, MAXMIN, 3)[0]
    assert not should_continue("asha", [0.1, 0.5], recorded, MAXMIN, 3)[0]
    assert should_continue("none", [0.0, 9.0], recorded, MAXMIN, 3) == (True, "none: no early stopping")
    assert not should_continue("pareto", [math.nan, 0.5], recorded, MAXMIN, 3)[0]


def test_a_dominated_trial_stops_once_the_trials_ahead_of_it_fill_the_quota() -> None:
    # 5 recorded, quota of 6 // 2 = 3. Dominated by one trial only, on a thin first front:
    # two trials ahead of it, so it goes on
    recorded = [[0.9, 1.0], [0.2, 3.0], [0.1, 3.5], [0.15, 4.0], [0.05, 5.0]]
    go_on, reason = should_continue("pareto", [0.8, 1.5], recorded, MAXMIN, 2)
    assert go_on and reason.startswith("pareto: front 2 (1 trial on the fronts before it), place 2 of 6")
    # dominated by three: three ahead, the quota is full
    recorded = [[0.9, 1.0], [0.85, 1.2], [0.82, 1.4], [0.1, 3.5], [0.05, 5.0]]
    go_on, reason = should_continue("pareto", [0.8, 1.5], recorded, MAXMIN, 2)
    assert not go_on and "place 4 of 6" in reason
    # the number of dominating trials bounds the place from below: dominated by d >= quota always stops
    rng = random.Random(7)
    for _ in range(300):
        recorded = [_vector(rng, 2) for _ in range(rng.randint(3, 14))]
        candidate = _vector(rng, 2)
        d = sum(_dominates(r, candidate, MAXMIN) for r in recorded)
        if d >= max(1, (len(recorded) + 1) // 3):
            assert not should_continue("pareto", candidate, recorded, MAXMIN, 3)[0]


# ----------------------------------------------------------------------------- the engine


def _spec(kind: str = "pareto", eta: int = 2, epochs: int = 9, objectives: Any = None, full_run_every: int = 0) -> Any:
    """A study whose every trial the rule judges (``full_run_every`` 0) unless told otherwise."""
    data = {
        "name": "rungs", "method": "svite", "data": {"dataset": "digits"}, "model": {"name": "vit_digits"},
        "train": {"epochs": epochs}, "sparsity": {"density": {"low": 0.2, "high": 0.9}},
        "search": {"sampler": "random", "early_stopping": {"kind": kind, "min_epochs": 1, "reduction_factor": eta,
                                                           "full_run_every": full_run_every}},
        "tracking": {"enabled": False},
    }
    if objectives is not None:
        data["objectives"] = objectives
    return spec_from_dict(data)


def test_rung_objectives_put_top1_first_and_leave_out_what_a_rung_cannot_know() -> None:
    spec = _spec(objectives=[{"metric": "gmacs"}, {"metric": "latency_ms"}, {"metric": "top1_best"}])
    assert rung_objectives(spec) == (["top1_best", "gmacs"], ["maximize", "minimize"])


def test_arrivals_out_of_order_are_judged_against_whoever_reached_the_rung_first(tmp_path: Path) -> None:
    spec = _spec(eta=2, epochs=9)  # rungs 1, 2, 4 (8 has no step after it)
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'optuna.db'}")
    study = optuna.create_study(study_name=spec.name, storage=storage, directions=spec.directions)
    trials = [study.ask() for _ in range(6)]
    engine = RungEngine.for_study(spec, storage)
    # (trial, epoch reported, top-1 at it, MACs): trial 5 races ahead; trial 4's results come
    # buffered (its first report is epoch 4: judged at rungs 1, 2 and 4 at once)
    arrivals = [(5, 1, 30.0, 1.0), (5, 2, 40.0, 1.0), (0, 1, 20.0, 1.5), (5, 4, 50.0, 1.0), (1, 1, 25.0, 0.8),
                (2, 1, 10.0, 2.0), (0, 2, 35.0, 1.5), (3, 1, 28.0, 0.9), (4, 4, 45.0, 0.7), (1, 2, 30.0, 0.8),
                (3, 2, 41.0, 0.9)]
    stopped: set[int] = set()
    expected: dict[tuple[int, int], bool] = {}
    for number, epoch, top1, gmacs in arrivals:
        if number in stopped:
            continue
        frozen = {t.number: t for t in study.get_trials(deepcopy=False)}
        verdict = engine.judge(number, trials[number]._trial_id, epoch, {}, {"top1": top1, "gmacs": gmacs}, [top1])
        go_on = True
        for rung in (r for r in (1, 2, 4) if r <= epoch):
            recorded = [frozen[n].user_attrs[f"rung_{rung}"] for n in sorted(frozen)
                        if f"rung_{rung}" in frozen[n].user_attrs and n != number]
            if f"rung_{rung}" in frozen[number].user_attrs:
                continue
            go_on = _brute_pareto([top1, gmacs], [r["values"] for r in recorded], MAXMIN, 2)
            expected[(number, rung)] = go_on
            if not go_on:
                break
        assert verdict.go_on == go_on, (number, epoch, verdict)
        if not verdict.go_on:
            stopped.add(number)
            assert verdict.reason.startswith(f"stopped at rung {verdict.epoch} ")
    done = {t.number: t for t in study.get_trials(deepcopy=False)}
    records = {(n, int(k.split("_")[1])): v for n, t in done.items() for k, v in t.user_attrs.items()}
    assert {key: r["go_on"] for key, r in records.items()} == expected
    assert records[(4, 1)]["against"] == [0, 1, 2, 3, 5] and records[(4, 4)]["against"] == [5]
    assert records[(4, 1)]["reported_epoch"] == 4
    assert stopped and len(stopped) < 6  # some went on, some did not
    for item in replay(spec, study.get_trials(deepcopy=False)):
        assert item["recorded"] == item["replayed"], item


def test_a_rerun_adopts_its_first_attempts_record_and_is_not_compared_with_it(tmp_path: Path) -> None:
    spec = _spec(eta=2, epochs=9)
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'optuna.db'}")
    study = optuna.create_study(study_name=spec.name, storage=storage, directions=spec.directions)
    engine = RungEngine.for_study(spec, storage)
    first = [study.ask() for _ in range(3)]
    for trial, top1 in zip(first, (30.0, 20.0, 25.0)):
        engine.judge(trial.number, trial._trial_id, 1, {}, {"top1": top1, "gmacs": 1.0}, [top1])
    study.tell(first[0], state=optuna.trial.TrialState.FAIL)  # trial 0 crashed after rung 1
    study.enqueue_trial({}, user_attrs={"retry_of": 0})
    rerun = study.ask()
    # resumed from its checkpoint: it reports epoch 2 first, with a top-1 that rung 1 would stop
    verdict = engine.judge(rerun.number, rerun._trial_id, 2, {}, {"top1": 1.0, "gmacs": 1.0}, [1.0])
    records = study.get_trials(deepcopy=False)[rerun.number].user_attrs
    assert records["rung_1"]["adopted_from"] == 0 and records["rung_1"]["go_on"]
    assert records["rung_1"]["values"] == [30.0, 1.0]  # the first attempt's values, not judged again
    assert records["rung_2"]["against"] == [] and records["rung_2"]["lineage"] == 0
    assert verdict.go_on


def test_every_kth_trial_runs_to_the_end_unjudged_and_later_arrivals_are_judged_against_it(tmp_path: Path) -> None:
    spec = _spec(eta=2, epochs=9, full_run_every=3)  # trials 2, 5, 8, ... unjudged
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'optuna.db'}")
    study = optuna.create_study(study_name=spec.name, storage=storage, directions=spec.directions)
    engine = RungEngine.for_study(spec, storage)
    trials = [study.ask() for _ in range(5)]
    # at rung 1, (top-1, MACs): 0 and 1 lead; 2 is dominated by both, so the rule would stop it
    rung_1 = [(40.0, 1.0), (35.0, 0.9), (10.0, 2.0), (12.0, 2.1), (20.0, 0.95)]
    verdicts = {}
    for trial, (top1, gmacs) in zip(trials, rung_1):
        verdicts[trial.number] = engine.judge(trial.number, trial._trial_id, 1, {}, {"top1": top1, "gmacs": gmacs}, [top1])
    assert not should_continue("pareto", [10.0, 2.0], [[40.0, 1.0], [35.0, 0.9]], MAXMIN, 2)[0]
    assert verdicts[2].go_on and "unjudged: one trial in every 3" in verdicts[2].reason
    records = {t.number: t.user_attrs["rung_1"] for t in study.get_trials(deepcopy=False)}
    assert records[2]["values"] == [10.0, 2.0] and records[2]["go_on"] and records[2]["against"] == [0, 1]
    # trial 3 is judged by the rule, against trial 2's values too: dominated by all three, it stops
    assert records[3]["against"] == [0, 1, 2] and not verdicts[3].go_on
    assert verdicts[3].go_on == _brute_pareto([12.0, 2.1], [[40.0, 1.0], [35.0, 0.9], [10.0, 2.0]], MAXMIN, 2)
    assert verdicts[4].go_on == _brute_pareto([20.0, 0.95], [list(v) for v in rung_1[:4]], MAXMIN, 2)
    # a rerun of trial 2 that crashed before its rung is the same lineage: unjudged again
    study.tell(trials[2], state=optuna.trial.TrialState.FAIL)
    study.ask()  # trial 5
    study.enqueue_trial({}, user_attrs={"retry_of": 2})
    rerun = study.ask()
    assert rerun.number == 6  # its own number would be judged
    again = engine.judge(rerun.number, rerun._trial_id, 2, {}, {"top1": 1.0, "gmacs": 3.0}, [1.0])
    assert again.go_on and "unjudged" in again.reason
    # and the other way round: a rerun whose own number is an unjudged slot, of a judged trial, is judged
    crashed = study.ask()  # trial 7: judged
    study.tell(crashed, state=optuna.trial.TrialState.FAIL)
    study.enqueue_trial({}, user_attrs={"retry_of": crashed.number})
    rerun_of_judged = study.ask()
    assert rerun_of_judged.number == 8 and rerun_of_judged.number % 3 == 2
    judged = engine.judge(8, rerun_of_judged._trial_id, 1, {}, {"top1": 5.0, "gmacs": 3.0}, [5.0])
    assert not judged.go_on and "unjudged" not in judged.reason
    done = study.get_trials(deepcopy=False)
    assert all(t.user_attrs["rung_1"]["full_run_every"] == 3 for t in done if "rung_1" in t.user_attrs)
    for item in replay(spec, done):
        assert item["recorded"] == item["replayed"], item


def test_a_study_keeps_the_full_run_every_of_its_first_rung_record(tmp_path: Path) -> None:
    """A study whose rungs were judged before full_run_every existed (records without it: every
    trial judged) keeps judging every trial when a spec with the default 4 resumes it."""
    spec = _spec(eta=2, epochs=9, full_run_every=4)
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'optuna.db'}")
    study = optuna.create_study(study_name=spec.name, storage=storage, directions=spec.directions)
    trials = [study.ask() for _ in range(4)]
    for trial, values in zip(trials[:3], ([40.0, 1.0], [35.0, 0.9], [30.0, 0.8])):  # written by an older release
        storage.set_trial_user_attr(trial._trial_id, "rung_1", {
            "epoch": 1, "reported_epoch": 1, "values": values, "metrics": ["top1", "gmacs"], "go_on": True,
            "reason": "pareto: ...", "against": [], "lineage": trial.number})
    engine = RungEngine.for_study(spec, storage)
    verdict = engine.judge(3, trials[3]._trial_id, 1, {}, {"top1": 10.0, "gmacs": 2.0}, [10.0])
    assert not verdict.go_on  # judged (under the spec's 4, trial 3 would have run on unjudged)
    record = study.get_trials(deepcopy=False)[3].user_attrs["rung_1"]
    assert record["full_run_every"] == 0 and "unjudged" not in record["reason"]
    assert replay(spec, study.get_trials(deepcopy=False))[-1]["replayed"] == (record["go_on"], record["reason"])


def test_runs_unjudged_picks_every_kth_first_attempt() -> None:
    from svite_search.search.early_stopping import runs_unjudged

    assert [n for n in range(12) if runs_unjudged(n, 4)] == [3, 7, 11]
    assert not any(runs_unjudged(n, 0) for n in range(12))
    with pytest.raises(ValueError):
        runs_unjudged(3, 1)


@pytest.mark.parametrize(("section", "key", "new"), [
    ("search", {"pruner": "median"}, "search.early_stopping.kind"),
    ("executor", {"scheduler": "asha"}, "search.early_stopping.kind"),
    ("executor", {"grace_period": 2}, "search.early_stopping.min_epochs"),
    ("executor", {"reduction_factor": 3}, "search.early_stopping.reduction_factor"),
])
def test_replaced_keys_name_the_new_one(section: str, key: dict, new: str) -> None:
    data = {"name": "old", "model": {"name": "vit_digits"}, section: key}
    with pytest.raises(ConfigError) as caught:
        spec_from_dict(data)
    assert caught.value.field == f"{section}.{next(iter(key))}" and new in str(caught.value)


@pytest.mark.parametrize(("settings", "field"), [
    ({"kind": "pareto", "min_epochs": 9}, "search.early_stopping.min_epochs"),
    ({"kind": "sha"}, "search.early_stopping.kind"),
    ({"kind": "asha", "reduction_factor": 1}, "search.early_stopping.reduction_factor"),
    ({"kind": "pareto", "full_run_every": 1}, "search.early_stopping.full_run_every"),
    ({"kind": "asha", "full_run_every": -2}, "search.early_stopping.full_run_every"),
    ({"kind": "none", "full_run_every": 1}, "search.early_stopping.full_run_every"),
])
def test_early_stopping_settings_are_checked(settings: dict, field: str) -> None:
    data = {"name": "bad", "model": {"name": "vit_digits"}, "train": {"epochs": 9},
            "search": {"early_stopping": settings}}
    with pytest.raises(ConfigError) as caught:
        spec_from_dict(data)
    assert caught.value.field == field


def test_old_key_on_the_command_line_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from svite_search.cli import main

    spec = tmp_path / "old.yaml"
    spec.write_text("name: old\nmodel: {name: vit_digits}\nexecutor: {scheduler: asha}\n")
    code = main(["search", str(spec), "--out", str(tmp_path / "study")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "executor.scheduler" in err[0] and "search.early_stopping" in err[0]
    assert not (tmp_path / "study").exists()


def test_min_epochs_defaults_to_the_first_epoch_after_the_warm_up() -> None:
    from svite_search.search.early_stopping.engine import trial_min_epochs, trial_rungs
    from svite_search.search.early_stopping.rules import default_min_epochs

    assert [default_min_epochs(w) for w in (0, 1, 2, 5)] == [1, 2, 3, 6]

    def spec(train: dict, early_stopping: dict, **extra: Any) -> Any:
        return spec_from_dict({"name": "w", "model": {"name": "vit_digits"}, "train": train,
                               "search": {"sampler": "random", "early_stopping": early_stopping}, **extra})

    pareto = {"kind": "pareto", "reduction_factor": 3}
    assert trial_min_epochs(spec({"epochs": 20, "warmup_epochs": 2}, pareto)) == 3
    assert trial_rungs(spec({"epochs": 20, "warmup_epochs": 2}, pareto), 20) == [3]
    assert trial_min_epochs(spec({"epochs": 20}, pareto)) == 3  # the trainer's default warm-up: 2 epochs
    assert trial_rungs(spec({"epochs": 30, "warmup_epochs": 0}, pareto), 30) == [1, 3, 9]
    # given, it wins over the warm-up
    assert trial_min_epochs(spec({"epochs": 20, "warmup_epochs": 2}, {**pareto, "min_epochs": 1})) == 1
    # a searched warm-up: each trial's own
    searched = spec({"epochs": 20, "warmup_epochs": {"low": 0, "high": 4}}, pareto)
    assert trial_min_epochs(searched, {"train.warmup_epochs": 4}) == 5
    assert trial_rungs(searched, 20, {"train.warmup_epochs": 0}) == [1, 3]


def test_a_default_min_epochs_that_leaves_no_rung_names_the_field() -> None:
    data = {"name": "short", "model": {"name": "vit_digits"}, "train": {"epochs": 3, "warmup_epochs": 2},
            "search": {"early_stopping": {"kind": "pareto"}}}
    with pytest.raises(ConfigError) as caught:
        spec_from_dict(data)
    assert caught.value.field == "search.early_stopping.min_epochs"
    assert "first epoch after train.warmup_epochs 2" in str(caught.value)
    data["search"]["early_stopping"]["min_epochs"] = 1  # set, it is the user's: one rung, at epoch 1
    spec_from_dict(data)
