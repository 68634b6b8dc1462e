"""The promotion form of early stopping (``search.early_stopping.promote``): the rule, the pick
of the next waiting trial from the rung records, and real studies on both executors where a
waiting trial resumes from its checkpoint."""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from svite_search.config import ConfigError
from svite_search.search import load_study, spec_from_dict
from svite_search.search.early_stopping import nondominated_fronts, promotions, rung_order, should_continue
from svite_search.search.early_stopping.engine import RungEngine, replay
from svite_search.search.early_stopping.promotion import PROMOTED_ATTR, next_promotion, queue_promotion
from svite_search.search.early_stopping.rules import crowding_distances
from svite_search.search.study import RepeatGuard, retries_first, twin_of

MAXMIN = ["maximize", "minimize"]


def _vector(rng: random.Random) -> list[float]:
    return [round(rng.uniform(0, 100), 3), round(rng.uniform(0.1, 5.0), 3)]


def _brute_order(points: list[list[float]]) -> list[int]:
    """Fronts by peeling (a point is in the current front when nothing left dominates it), then
    crowding distance, larger first; ties to the earlier point."""
    def dominates(a: list[float], b: list[float]) -> bool:
        return a[0] >= b[0] and a[1] <= b[1] and (a[0] > b[0] or a[1] < b[1])

    left, order = list(range(len(points))), []
    while left:
        front = [i for i in left if not any(dominates(points[j], points[i]) for j in left if j != i)]
        crowd = crowding_distances([points[i] for i in front], MAXMIN)
        order += [i for _, i in sorted(zip(crowd, front), key=lambda ci: (-ci[0], ci[1]))]
        left = [i for i in left if i not in front]
    return order


def test_promotions_pick_the_waiting_trials_in_a_brute_force_top_n_over_eta() -> None:
    rng = random.Random(11)
    for _ in range(300):
        n, eta = rng.randint(1, 14), rng.choice([2, 3, 4])
        points = [_vector(rng) for _ in range(n)]
        waiting = [rng.random() < 0.5 for _ in range(n)]
        order = _brute_order(points)
        assert rung_order("pareto", points, MAXMIN) == order
        assert promotions("pareto", points, waiting, MAXMIN, eta) == [i for i in order[: n // eta] if waiting[i]]
        by_top1 = sorted(range(n), key=lambda i: (-points[i][0], i))
        assert promotions("asha", points, waiting, MAXMIN, eta) == [i for i in by_top1[: n // eta] if waiting[i]]
        # past the quota (the sampler is spent): every waiting trial, best first
        assert promotions("pareto", points, waiting, MAXMIN, eta, past_quota=True) == [i for i in order if waiting[i]]
        assert promotions("asha", points, waiting, MAXMIN, eta, past_quota=True) == [i for i in by_top1 if waiting[i]]


def test_the_promotion_verdict_is_a_place_in_the_top_n_over_eta_with_no_warm_up() -> None:
    rng = random.Random(5)
    for _ in range(300):
        recorded = [_vector(rng) for _ in range(rng.randint(0, 12))]
        candidate, eta = _vector(rng), rng.choice([2, 3])
        n = len(recorded) + 1
        place = _brute_order([*recorded, candidate]).index(n - 1)
        go_on, reason = should_continue("pareto", candidate, recorded, MAXMIN, eta, promote=True)
        assert go_on == (place < n // eta), (recorded, candidate)
        assert go_on or reason.endswith("it waits at the rung, to resume if it ranks among them later")
    # the first arrivals wait: no rung promotes anyone before it holds eta trials
    assert not should_continue("pareto", [99.0, 0.1], [], MAXMIN, 2, promote=True)[0]
    assert should_continue("pareto", [99.0, 0.1], [], MAXMIN, 2)[0]  # the stopping form's warm-up lets it on
    assert should_continue("pareto", [99.0, 0.1], [[1.0, 4.0]], MAXMIN, 2, promote=True)[0]


# ----------------------------------------------------------------------------- the engine


def _spec(eta: int = 2, epochs: int = 9, **search: Any) -> Any:
    return spec_from_dict({
        "name": "promote", "method": "svite", "data": {"dataset": "digits"}, "model": {"name": "vit_digits"},
        "train": {"epochs": epochs}, "sparsity": {"density": {"low": 0.2, "high": 0.9}},
        "search": {"sampler": "random", **search, "early_stopping": {
            "kind": "pareto", "min_epochs": 1, "reduction_factor": eta, "full_run_every": 0, "promote": True}},
        "tracking": {"enabled": False},
    })


def _study(tmp_path: Path, spec: Any) -> tuple[optuna.Study, Any, RungEngine]:
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'optuna.db'}")
    study = optuna.create_study(study_name=spec.name, storage=storage, directions=spec.directions)
    return retries_first(study, storage), storage, RungEngine.for_study(spec, storage)


def _arrive(study: optuna.Study, engine: RungEngine, top1: float, gmacs: float) -> Any:
    """A new trial reaches rung 1 with these values; told PRUNED (waiting) when it does not go on."""
    trial = study.ask()
    trial.suggest_float("sparsity.density", 0.2, 0.9)
    verdict = engine.judge(trial.number, trial._trial_id, 1, {}, {"top1": top1, "gmacs": gmacs}, [top1])
    if not verdict.go_on:
        trial.set_user_attr("pruned_reason", verdict.reason)
        study.tell(trial, state=TrialState.PRUNED)
    return trial, verdict


def test_a_waiting_trial_is_promoted_once_it_ranks_in_the_top_and_resumes_past_its_rung(tmp_path: Path) -> None:
    spec = _spec(eta=2, epochs=9)  # rungs 1, 2, 4
    study, storage, engine = _study(tmp_path, spec)
    first, verdict = _arrive(study, engine, 30.0, 1.0)
    assert not verdict.go_on  # alone at the rung: it waits
    assert next_promotion(engine, study.get_trials(deepcopy=False)) is None  # 1 trial: the top 0 go on
    second, verdict = _arrive(study, engine, 40.0, 0.9)  # dominates the first: the top 1 of 2
    assert verdict.go_on
    assert next_promotion(engine, study.get_trials(deepcopy=False)) is None  # the first is 2nd of 2
    third, verdict = _arrive(study, engine, 10.0, 3.0)
    assert not verdict.go_on
    fourth, verdict = _arrive(study, engine, 20.0, 2.0)
    assert not verdict.go_on  # 3rd of 4; the top 2 are the second and the first (waiting)
    promotion = queue_promotion(study, engine)
    assert promotion is not None and promotion.number == first.number and promotion.rung == 1
    assert promotion.reason == "promoted at rung 1: now place 2 of 4, in the top 2"
    assert queue_promotion(study, engine) is None  # queued already: not picked twice
    resumed = study.ask()  # the queued promotion comes first
    assert resumed.user_attrs[PROMOTED_ATTR] == first.number and resumed.user_attrs["retry_of"] == first.number
    assert resumed.suggest_float("sparsity.density", 0.2, 0.9) == first.params["sparsity.density"]
    assert twin_of(study, resumed) is None  # it continues the waiting trial: not a repeat of it
    assert queue_promotion(study, engine) is None  # running now: not picked again
    # it reports epoch 2 first (resumed from the rung-1 checkpoint): past rung 1, judged at rung 2
    verdict = engine.judge(resumed.number, resumed._trial_id, 2, {}, {"top1": 35.0, "gmacs": 1.0}, [35.0])
    records = storage.get_trial(resumed._trial_id).user_attrs
    assert records["rung_1"]["promoted_from"] == first.number and records["rung_1"]["go_on"]
    assert records["rung_2"]["lineage"] == first.number and not verdict.go_on  # alone at rung 2: it waits
    # the rung-1 records keep one entry per lineage: the promotion replaced the waiting one
    assert sorted(engine.records(1)) == [first.number, second.number, third.number, fourth.number]
    # every decision replays from the records (promotions are not re-decided)
    for item in replay(spec, study.get_trials(deepcopy=False)):
        assert item["recorded"] == item["replayed"]


def test_the_highest_rung_promotes_first(tmp_path: Path) -> None:
    spec = _spec(eta=2, epochs=9)
    study, storage, engine = _study(tmp_path, spec)
    a, _ = _arrive(study, engine, 50.0, 1.0)  # waits at rung 1 (alone)
    b, verdict = _arrive(study, engine, 40.0, 1.0)
    assert not verdict.go_on  # dominated by a: 2nd of 2
    # a is promoted past rung 1, reaches rung 2 and waits there (alone)
    queue_promotion(study, engine)
    resumed = study.ask()
    assert engine.judge(resumed.number, resumed._trial_id, 2, {}, {"top1": 60.0, "gmacs": 1.0}, [60.0]).go_on is False
    resumed.set_user_attr("pruned_reason", "waits")
    study.tell(resumed, state=TrialState.PRUNED)
    c, _ = _arrive(study, engine, 45.0, 0.5)  # rung 1 now: a, b, c; top 1: c (it went on? 1 of 3)
    d, _ = _arrive(study, engine, 30.0, 4.0)
    trials = study.get_trials(deepcopy=False)
    at_two = engine.records(2, trials)
    assert list(at_two) == [a.number]  # one trial at rung 2: the top 0 go on, nobody promoted there
    promotion = next_promotion(engine, trials)
    assert promotion is not None and promotion.rung == 1


def test_once_the_sampler_is_spent_the_best_waiting_trial_goes_on_past_the_quota(tmp_path: Path) -> None:
    spec = _spec(eta=2, epochs=9)
    study, storage, engine = _study(tmp_path, spec)
    best, _ = _arrive(study, engine, 50.0, 1.0)  # waits (alone at the rung)
    _arrive(study, engine, 10.0, 3.0)  # dominated: 2nd of 2, waits; the top 1 is the first: promoted
    promotion = queue_promotion(study, engine)
    assert promotion is not None and promotion.number == best.number
    study.tell(study.ask(), state=TrialState.FAIL)  # (the promotion's run: it failed; its lineage left the rung)
    middle, _ = _arrive(study, engine, 30.0, 2.0)  # 2nd of 3: outside the top 1, waits
    worst = [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("rung_1", {}).get("values") == [10.0, 3.0]][0]
    trials = study.get_trials(deepcopy=False)
    assert next_promotion(engine, trials) is None  # nobody waiting ranks in the top 1 of 3
    promotion = next_promotion(engine, trials, past_quota=True)
    assert promotion is not None and promotion.number == middle.number and promotion.place == 1
    assert promotion.reason == ("promoted at rung 1: place 2 of 3, past the top 1: the sampler is spent, the best "
                                "waiting trial goes on")
    assert queue_promotion(study, engine, past_quota=True).number == middle.number
    assert queue_promotion(study, engine, past_quota=True).number == worst.number  # then the next best
    assert queue_promotion(study, engine, past_quota=True) is None  # nobody waits any more


def test_a_setting_waiting_at_a_rung_is_a_twin_for_repeats_skip(tmp_path: Path) -> None:
    spec = _spec(repeats="skip")
    study, storage, engine = _study(tmp_path, spec)
    waiting, verdict = _arrive(study, engine, 30.0, 1.0)
    assert not verdict.go_on
    again = study.ask()
    again.suggest_float("sparsity.density", 0.2, 0.9)  # random: another value; make it the same setting
    study.tell(again, state=TrialState.FAIL)
    study.enqueue_trial(dict(waiting.params))
    same = study.ask()
    same.suggest_float("sparsity.density", 0.2, 0.9)
    assert twin_of(study, same) == waiting.number
    assert RepeatGuard(spec.search).skipped(study, same)


@pytest.mark.parametrize(("settings", "train", "field"), [
    ({"kind": "none", "promote": True}, {"epochs": 9}, "search.early_stopping.promote"),
    ({"kind": "pareto", "promote": True}, {"epochs": 9, "checkpoint": False}, "train.checkpoint"),
])
def test_promote_needs_a_rule_and_checkpoints(settings: dict, train: dict, field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        spec_from_dict({"name": "bad", "model": {"name": "vit_digits"}, "train": train,
                        "search": {"early_stopping": settings}})
    assert caught.value.field == field


def test_a_resumed_trial_counts_only_the_epochs_it_trained() -> None:
    from svite_search.report.compute import trial_epochs

    assert trial_epochs({"epochs": 9, "resumed_at": 3}) == 6
    assert trial_epochs({"epochs": 9}) == 9


# ----------------------------------------------------------------------------- real studies

#: 3 epochs of 2 steps: one rung, at epoch 1 (reduction factor 2)
TRAIN = {"epochs": 3, "max_steps_per_epoch": 2, "warmup_epochs": 0, "checkpoint": True}
PROMOTE = {"kind": "pareto", "min_epochs": 1, "reduction_factor": 2, "full_run_every": 0, "promote": True}


def _check_promotions(spec: Any, study_dir: Path) -> list[Any]:
    """Every promotion continued its waiting trial from the rung checkpoint: it trained only
    the epochs after the rung, its history starts there, and its end is exactly the end the
    setting reaches trained in one go (the checkpoint resumes bit for bit)."""
    from svite_search.report.compute import trial_epochs
    from svite_search.search.space import trial_config
    from svite_search.search.study import trial_attrs
    from svite_search.train import run_training

    trials = load_study(study_dir).trials
    by_number = {t.number: t for t in trials}
    promoted = [t for t in trials if PROMOTED_ATTR in t.user_attrs]
    for trial in promoted:
        waiting = by_number[trial.user_attrs[PROMOTED_ATTR]]
        assert waiting.state == TrialState.PRUNED and waiting.user_attrs["rung_1"]["waits"]
        assert trial.params == waiting.params
        attrs = trial_attrs(trial)
        assert attrs["resumed_at"] == 1 and attrs["rung_1"]["promoted_from"] == waiting.number
        if trial.state == TrialState.COMPLETE:
            assert trial_epochs({"epochs": attrs["epochs"], "resumed_at": attrs["resumed_at"]}) == 2
            cfg = trial_config(spec, trial.params, name="direct")
            direct = run_training(cfg, study_dir.parent / f"direct-{trial.number}")
            for key in ("top1", "val_loss", "train_loss"):
                assert attrs[key] == direct[key], key
    for item in replay(spec, trials):
        assert item["recorded"] == item["replayed"]
    return promoted


@pytest.mark.slow
def test_local_study_promotes_a_waiting_trial_from_its_checkpoint(tmp_path: Path, tiny_spec: Any) -> None:
    from svite_search.harness import run_search

    spec = spec_from_dict(tiny_spec(
        method="svite", tokens=None, train=TRAIN, sparsity={"density": {"low": 0.2, "high": 0.9}},
        search={"sampler": "random", "n_trials": 8, "seed": 3, "early_stopping": PROMOTE},
    ))
    summary = run_search(spec, tmp_path / "study", live=False)
    assert summary["trials_failed"] == 0
    promoted = _check_promotions(spec, tmp_path / "study")
    assert promoted and any(t.state == TrialState.COMPLETE for t in promoted)


@pytest.mark.slow
@pytest.mark.parametrize("executor", ["local", "ray"])
def test_a_spent_sampler_promotes_every_waiting_trial_before_the_study_ends(request: pytest.FixtureRequest,
                                                                           tmp_path: Path, tiny_spec: Any,
                                                                           executor: str) -> None:
    """Three settings, skipped when asked again: the sampler is soon spent, and the trials
    waiting at the rung go on past its quota (each from its checkpoint) instead of the study
    ending with them waiting. Whatever order the trials reach the rung in (Ray runs two at
    once), at least one waits (the first arrival always does) and two of the three lineages
    are outside the rung's top 1 at the end, so a promotion past the quota must come; 30
    repeats in a row before the third setting is asked has odds of (2/3)**30."""
    from svite_search.harness import run_search

    if executor == "ray":
        request.getfixturevalue("ray_session")
    spec = spec_from_dict(tiny_spec(
        method="svite", tokens=None, train=TRAIN, sparsity={"density": {"choices": [0.2, 0.5, 0.9]}},
        search={"sampler": "random", "n_trials": 12, "seed": 3, "repeats": "skip", "max_repeats_in_a_row": 30,
                "early_stopping": PROMOTE},
        executor={"kind": executor, **({"max_concurrent": 2} if executor == "ray" else {})},
    ))
    summary = run_search(spec, tmp_path / "study", live=False)
    assert summary["trials_failed"] == 0
    promoted = _check_promotions(spec, tmp_path / "study")
    trials = load_study(tmp_path / "study").trials
    continued = {t.user_attrs[PROMOTED_ATTR] for t in promoted}
    waiting = [t.number for t in trials if t.user_attrs.get("rung_1", {}).get("waits")]
    assert waiting and set(waiting) <= continued  # every trial that waited went on
    assert any("past the top" in t.user_attrs["rung_1"]["reason"] for t in promoted)
    settings = {t.params["sparsity.density"] for t in trials if t.state == TrialState.COMPLETE}
    assert settings == {0.2, 0.5, 0.9}  # each setting trained to the end, once
