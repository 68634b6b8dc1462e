"""Smoke test of the search-efficiency benchmark: the committed table replays for every method
at a tiny size and the report renders; the recorder writes a table point with the project's
trainer. Nothing is timed, and the tiny figures prove nothing about the methods."""
from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def modules():
    return importlib.import_module("benchmarks.bench_search"), importlib.import_module("benchmarks.search_table")


def test_replay_every_method_tiny(modules, tmp_path: Path) -> None:
    bench, _ = modules
    out = tmp_path / "out"
    assert bench.main(["--tiny", "--out-dir", str(out), "--out", str(tmp_path / "record.json")]) == 0
    result = json.loads((out / "results.json").read_text())
    expected = {"tpe", "random", "nsga2", "moasha", "moasha_ranks"}
    if bench.load_rules() is not None:
        expected |= {"asha", "pareto", "pareto_promote"}
    assert set(result["runs"]) == expected
    budget = result["config"]["budget"]
    for method, runs in result["runs"].items():
        assert len(runs) == 2
        for run in runs:
            assert run["spent"] == sorted(run["spent"]) and run["spent"][-1] <= budget
            assert run["hypervolume"] == sorted(run["hypervolume"])  # a front only grows
            assert all(0.0 <= h <= result["summary"]["table_front_hypervolume"] + 1e-9 for h in run["hypervolume"])
            if method in ("tpe", "random", "nsga2"):  # full length: every trial to the end, the budget exactly
                assert run["stopped"] == 0 and run["complete"] == result["config"]["budget_trials"]
                assert run["spent"][-1] == budget
    text = (out / "README.md").read_text()
    assert "## Goals" in text and "![hypervolume against trial-epochs](hypervolume.png)" in text
    assert (out / "hypervolume.png").stat().st_size > 0


def test_the_recommended_arm_starts_cheapest_and_once_spent_promotes_every_waiting_trial(modules) -> None:
    """``pareto_promote``: each method's cheapest setting trains first; with budget to spare, a
    spent sampler leaves no trial waiting: every setting of the table runs to the end, once."""
    bench, _ = modules
    table, rules = bench.Table(bench.TABLE), bench.load_rules()
    if rules is None:
        pytest.skip("no rule module")
    cheapest = bench.product_cheapest()
    run = bench.simulate(table, bench.PROMOTE_ARM, 0, workers=4, budget=2 * len(table.points) * table.epochs,
                         population=10, rules=rules, enqueue=cheapest, **bench.PROMOTE_SETTINGS)
    assert run.trained[: len(cheapest)] == [table._key(table.lookup(p).params) for p in cheapest]
    assert run.complete == len(table.points) and run.hypervolume[-1] == pytest.approx(table.front_hypervolume())


def test_table_covers_the_grid(modules) -> None:
    bench, table_module = modules
    table = bench.Table(bench.TABLE)
    for params in table_module.grid():
        point = table.lookup(params)
        assert len(point.top1) == table.epochs and 0 < point.gmacs <= table.dense_gmacs * (1 + 1e-9)


def test_recorder_writes_a_point(modules, tmp_path: Path) -> None:
    _, table_module = modules
    out = tmp_path / "table.json"
    assert table_module.main(["--out", str(out), "--epochs", "2", "--limit", "1"]) == 0
    table = json.loads(out.read_text())
    (point,) = table["points"]
    assert point["params"] == {"method": "dense", "tokens.keep_ratio": 1.0}
    assert len(point["top1"]) == 2 and point["gmacs"] == pytest.approx(point["dense_gmacs"])


def test_repeats_are_counted_and_when_answered_or_skipped_cost_nothing(modules) -> None:
    """A trial on a setting already run to the end is a repeat. Counted in the plain replay, it
    spends its epochs; answered from its twin or skipped, it spends none and a full-length arm
    still trains its full number of trials; skipped, no two trained trials share a setting."""
    bench, _ = modules
    table = bench.Table(bench.TABLE)
    budget = 16 * table.epochs
    kwargs = dict(workers=2, budget=budget, min_epochs=3, reduction_factor=3, population=4, rules=bench.load_rules())
    plain = bench.simulate(table, "tpe", 0, **kwargs)
    assert plain.repeats > 0  # 16 TPE trials on this grid repeat a setting at this seed
    assert plain.complete == 16 and plain.spent[-1] == budget
    assert plain.repeat_epochs == plain.repeats * table.epochs  # every repeat trained to the end again
    assert len(set(plain.trained)) < len(plain.trained) == 16
    answered = bench.simulate(table, "tpe", 0, repeats="answer", **kwargs)
    assert answered.repeats > 0 and answered.repeat_epochs == 0 and answered.spent[-1] == budget
    assert answered.complete == 16 and answered.trials == 16 + answered.repeats  # 16 trained, the repeats free
    assert answered.skipped == answered.repeats
    for method, seed in (("tpe", 0), ("random", 1)):  # random, seed 1: twins asked for while one trains
        skipped = bench.simulate(table, method, seed, repeats="skip", **{**kwargs, "workers": 4})
        assert skipped.repeats > 0 and skipped.repeat_epochs == 0 and skipped.spent[-1] == budget
        assert skipped.complete == 16 and skipped.trials == 16 + skipped.skipped
        assert len(set(skipped.trained)) == 16  # nothing trained twice: neither finished nor running twins
    pareto = bench.simulate(table, "pareto", 0, repeats="skip", full_run_every=4, **kwargs)
    assert pareto.repeat_epochs == 0 and pareto.skipped > 0
    for mode in ("answer", "skip"):
        with pytest.raises(ValueError, match="Optuna arm"):
            bench.simulate(table, "moasha", 0, repeats=mode, **kwargs)
    with pytest.raises(ValueError, match="repeats"):
        bench.simulate(table, "tpe", 0, repeats="drop", **kwargs)


def test_a_skipped_repeat_is_told_pruned_with_no_values(modules) -> None:
    """What steers TPE away from spent settings: the skipped trial is PRUNED, untrained."""
    import optuna

    bench, _ = modules
    table = bench.Table(bench.TABLE)
    searcher = bench.OptunaMethod(table, optuna.samplers.RandomSampler(seed=0))
    searcher.ask(0)
    searcher.skip(0)
    (trial,) = searcher.study.get_trials()
    assert trial.state == optuna.trial.TrialState.PRUNED and trial.values is None
    assert trial.user_attrs == {"repeat": True} and not searcher.trials


def test_the_replays_rule_lets_one_trial_in_every_full_run_every_through_as_the_engine_does(modules) -> None:
    bench, _ = modules
    rules = bench.load_rules()
    stopper = bench.RuleStopper(rules, "pareto", 1, 2, 9, full_run_every=3)  # trials 2, 5, ... unjudged
    assert stopper.go_on(0, 1, [40.0, 1.0]) and stopper.go_on(1, 1, [35.0, 0.9])
    worst = [10.0, 2.0]  # dominated by both: the rule stops it
    assert not rules.should_continue("pareto", worst, stopper.recorded[1], list(bench.DIRECTIONS), 2)[0]
    assert stopper.go_on(2, 1, worst)  # unjudged
    assert not stopper.go_on(3, 1, worst)  # judged, against trial 2's values too
    assert stopper.recorded[1][2] == worst and len(stopper.recorded[1]) == 4
    assert bench.product_full_run_every() == 4


def test_sensitivity_entries_and_full_run_every_are_checked(modules) -> None:
    bench, _ = modules
    assert bench._sensitivity_entry("3x3/0", 4) == (3, 3, 0) and bench._sensitivity_entry("2x3", 4) == (2, 3, 4)
    for bad in ("3x3/", "3x3/1", "3x1", "3", "ax3", "3x3/-2"):
        assert bench._sensitivity_entry(bad, 4) is None, bad
    for argv in (["--sensitivity", "3x3/1"], ["--full-run-every", "1"]):
        with pytest.raises(SystemExit) as caught:
            bench.main(["--tiny", *argv])
        assert caught.value.code == 2
