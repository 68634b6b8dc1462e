"""Study specs: distributions, validation that names the field, conditional space, grid, hash."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest

from svite_search.cli import main
from svite_search.errors import ConfigError
from svite_search.search import grid_points, spec_from_dict, suggest_params, trial_config
from svite_search.search.space import applies, initial_queue


def test_distributions_follow_the_config_field_types(tiny_spec: Any) -> None:
    spec = spec_from_dict(tiny_spec(train={"epochs": 2, "lr": {"low": 1e-4, "high": 1e-2, "log": True}}))
    kinds = {d.key: d.kind for d in spec.distributions}
    assert kinds == {
        "method": "categorical",
        "sparsity.density": "float",
        "sparsity.head_density": "categorical",
        "sparsity.update_interval": "int",
        "tokens.keep_ratio": "float",
        "train.lr": "float",
    }
    assert spec.searched["train.lr"].log
    assert [o.metric for o in spec.objectives] == ["top1", "gmacs"]
    assert spec.directions == ["maximize", "minimize"]
    assert spec.base["method"] == "svite" and spec.base["sparsity"]["density"] == 0.2


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"sparsity": {"density": {"low": 0.9, "high": 0.2}}}, "sparsity.density.low"),
        ({"sparsity": {"density": {"low": 0.2, "high": 1.5}}}, "sparsity.density.high"),
        ({"sparsity": {"densty": 0.5}}, "sparsity.densty"),
        ({"sparsity": {"density": {"low": 0.1, "hi": 0.5}}}, "sparsity.density"),
        ({"sparsity": {"update_interval": {"low": 1, "high": 10, "step": 1.5}}}, "sparsity.update_interval.step"),
        ({"sparsity": {"decay": {"low": 0, "high": 1}}}, "sparsity.decay"),
        ({"method": {"choices": ["svite", "sparse"]}}, "method.choices[1]"),
        ({"train": {"epochs": {"low": 0, "high": 3}}}, "train.epochs.low"),
        ({"objectives": [{"metric": "accuracy"}]}, "objectives[0].metric"),
        ({"constraints": ["gmacs < 1"]}, "constraints[0]"),
        ({"search": {"sampler": "cmaes"}}, "search.sampler"),
        ({"search": {"enqueue": [{"train": {"lr": 0.1}}]}}, "search.enqueue[0].train.lr"),
        ({"search": {"enqueue": [{"sparsity": {"density": 0.95}}]}}, "search.enqueue[0].sparsity.density"),
        ({"executor": {"cpus_per_trial": 0}}, "executor.cpus_per_trial"),
        ({"executor": {"gpus": 1}}, "executor.gpus"),
        ({"search": {"pruner": "median"}}, "search.pruner"),
        ({"search": {"sampler": "grid"}}, "sparsity.density"),
        ({"learning_rate": 0.1}, "learning_rate"),
    ],
)
def test_spec_errors_name_the_field(change: dict, field: str, tiny_spec: Any) -> None:
    with pytest.raises(ConfigError) as info:
        spec_from_dict(tiny_spec(**change))
    assert info.value.field == field


def test_cli_spec_error_exits_2_naming_the_field(tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_spec: Any, write_spec: Any) -> None:
    path = write_spec(tmp_path, tiny_spec(sparsity={"density": {"low": 0.2, "high": 1.5}}))
    assert main(["search", str(path), "--out", str(tmp_path / "study"), "--json"]) == 2
    captured = capsys.readouterr()
    assert "sparsity.density.high" in captured.err
    assert captured.out == ""
    assert not (tmp_path / "study").exists()  # nothing ran
    assert main(["search", str(tmp_path / "missing.yaml")]) == 2


def test_conditional_parameters_are_sampled_only_where_they_matter(tiny_spec: Any) -> None:
    spec = spec_from_dict(tiny_spec(method={"choices": ["dense", "svite", "s2vite"]},
                                    tokens={"keep_ratio": {"low": 0.5, "high": 1.0}, "tau_start": {"low": 5, "high": 10}}))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen = set()
    for _ in range(30):
        trial = study.ask()
        params = suggest_params(trial, spec)
        method = params["method"]
        seen.add(method)
        assert ("sparsity.density" in params) == (method == "svite")
        assert ("sparsity.head_density" in params) == (method == "s2vite")
        assert ("sparsity.update_interval" in params) == (method != "dense")
        assert ("tokens.tau_start" in params) == (params["tokens.keep_ratio"] < 1.0)
        cfg = trial_config(spec, params, name="t")
        assert cfg.method == method and not cfg.tracking.enabled
        study.tell(trial, 0.0)
    assert seen == {"dense", "svite", "s2vite"}
    assert not applies(spec, "sparsity.mlp_density", {"method": "svite"})


def test_grid_enumerates_each_configuration_once(tiny_spec: Any) -> None:
    spec = spec_from_dict(tiny_spec(
        sparsity={"density": {"choices": [0.3, 0.6]}, "head_density": {"choices": [0.5, 1.0]},
                  "update_interval": {"low": 2, "high": 4, "step": 2}},
        tokens={"keep_ratio": 1.0},
        search={"sampler": "grid", "enqueue": [{"method": "svite", "sparsity": {"density": 0.6, "update_interval": 2}}]},
    ))
    points = grid_points(spec)
    # svite: 2 densities x 2 intervals; s2vite: 2 head densities x 2 intervals; no dense duplicates
    assert len(points) == 8
    assert len({tuple(sorted(p.items())) for p in points}) == 8
    assert all(("sparsity.density" in p) == (p["method"] == "svite") for p in points)
    queue = initial_queue(spec)
    assert len(queue) == 8 and queue[0] == {"method": "svite", "sparsity.density": 0.6, "sparsity.update_interval": 2}
    assert spec.n_trials == 8  # the grid's size by default
    with pytest.raises(ConfigError, match="exceeds the grid"):
        spec_from_dict({**spec.raw, "search": {"sampler": "grid", "n_trials": 9}})


def test_constraints_and_single_objective(tiny_spec: Any) -> None:
    spec = spec_from_dict(tiny_spec(objectives=["top1"], constraints=["gmacs <= 0.001", {"metric": "density", "min": 0.3}]))
    assert spec.directions == ["maximize"]
    gmacs, density = spec.constraints
    assert gmacs.violation(0.0008) < 0 < gmacs.violation(0.002)
    assert density.violation(0.5) < 0 < density.violation(0.2)


def test_spec_hash_ignores_how_long_and_where_a_study_runs(tiny_spec: Any) -> None:
    base = spec_from_dict(tiny_spec())
    assert base.with_settings(n_trials=10, executor="ray").spec_hash == base.spec_hash
    assert spec_from_dict(tiny_spec(executor={"kind": "ray", "max_concurrent": 2})).spec_hash == base.spec_hash
    changed = spec_from_dict(tiny_spec(sparsity={"density": {"low": 0.3, "high": 0.8}}))
    assert changed.spec_hash != base.spec_hash


def test_quickstart_spec_is_valid() -> None:
    from svite_search.search import load_spec

    spec = load_spec(Path(__file__).resolve().parents[2] / "studies" / "quickstart.yaml")
    assert spec.executor.kind == "ray" and spec.executor.max_concurrent == 2
    assert {"method", "tokens.keep_ratio", "sparsity.density", "sparsity.head_density"} <= set(spec.searched)
    assert set(spec.searched["method"].choices) >= {"svite", "s2vite"}


def test_models_and_data_paths_are_checked_before_anything_runs(tmp_path: Path, tiny_spec: Any) -> None:
    from svite_search.errors import DataPathError

    with pytest.raises(ConfigError) as info:
        spec_from_dict(tiny_spec(model={"name": "vit_no_such_model"}))
    assert info.value.field == "model.name"
    with pytest.raises(ConfigError) as info:
        spec_from_dict(tiny_spec(model={"name": {"choices": ["vit_digits", "vit_no_such_model"]}}))
    assert info.value.field == "model.name.choices[1]"
    missing = tmp_path / "no-data"
    with pytest.raises(DataPathError, match=str(missing)):
        spec_from_dict(tiny_spec(data={"dataset": "imagefolder", "root": str(missing)}))
    (tmp_path / "empty" / "train").mkdir(parents=True)
    with pytest.raises(DataPathError, match="no class folders"):
        spec_from_dict(tiny_spec(data={"dataset": "imagefolder", "root": str(tmp_path / "empty")}))


def test_an_unusable_study_directory_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], tiny_spec: Any,
                                             write_spec: Any) -> None:
    path = write_spec(tmp_path, tiny_spec())
    a_file = tmp_path / "a-file"
    a_file.write_text("not a directory\n")
    assert main(["search", str(path), "--out", str(a_file / "study"), "--executor", "local"]) == 2
    assert str(a_file) in capsys.readouterr().err


@pytest.mark.parametrize("sampler", ["tpe", "nsga2", "nsga3", "gp", "random"])
def test_every_sampler_drives_the_conditional_two_objective_space(sampler: str, tiny_spec: Any) -> None:
    import warnings

    from svite_search.search.study import make_sampler

    spec = spec_from_dict(tiny_spec(search={"sampler": sampler, "n_trials": 8, "seed": 0, "n_startup_trials": 3,
                                            "population_size": 4}))
    study = optuna.create_study(directions=spec.directions, sampler=make_sampler(spec, parallel=True))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i in range(8):
            trial = study.ask()
            params = suggest_params(trial, spec)
            trial_config(spec, params)  # every sampled set is a valid run config
            study.tell(trial, [float(i % 3), 1.0 / (i + 1)])
    assert len(study.best_trials) >= 1


def test_grid_points_are_exactly_the_listed_runs() -> None:
    from svite_search.search.space import initial_queue
    from svite_search.search.spec import spec_from_dict

    raw = {
        "name": "points",
        "method": {"choices": ["dense", "svite"]},
        "sparsity": {"density": {"choices": [0.3, 0.5, 0.7]}},
        "tokens": {"keep_ratio": {"choices": [1.0, 0.5]}},
        "search": {"sampler": "grid", "points": [
            {"method": "dense", "tokens.keep_ratio": 1.0},
            {"method": "svite", "sparsity": {"density": 0.5}, "tokens": {"keep_ratio": 0.5}},
        ]},
    }
    spec = spec_from_dict(raw)
    assert spec.n_trials == 2
    assert initial_queue(spec) == [
        {"method": "dense", "tokens.keep_ratio": 1.0},
        {"method": "svite", "sparsity.density": 0.5, "tokens.keep_ratio": 0.5},
    ]


@pytest.mark.parametrize(
    ("search", "field"),
    [
        ({"sampler": "grid", "points": [{"method": "svite", "tokens.keep_ratio": 1.0}]}, "search.points[0]"),
        ({"sampler": "tpe", "points": [{"method": "dense", "tokens.keep_ratio": 1.0}]}, "search.points"),
        ({"sampler": "grid", "points": [{"method": "dense", "tokens.keep_ratio": 0.9}]}, "search.points[0].tokens.keep_ratio"),
    ],
)
def test_grid_points_errors_name_the_point(search: dict, field: str) -> None:
    from svite_search.errors import ConfigError
    from svite_search.search.spec import spec_from_dict

    raw = {
        "name": "points",
        "method": {"choices": ["dense", "svite"]},
        "sparsity": {"density": {"choices": [0.3, 0.5]}},
        "tokens": {"keep_ratio": {"choices": [1.0, 0.5]}},
        "search": search,
    }
    with pytest.raises(ConfigError) as info:
        spec_from_dict(raw)
    assert info.value.field == field


@pytest.mark.parametrize("sampler", ["tpe", "nsga2", "random"])
def test_each_trial_draws_from_a_seed_of_its_own(sampler: str, tiny_spec: Any) -> None:
    """The same study seed and trial number draw the same values in any process (a resumed study,
    a second driver); the trial numbers of one study draw different values. Built through the
    samplers' public ``seed=`` alone: no private random state is touched."""
    import warnings

    from svite_search.search.study import make_sampler

    spec = spec_from_dict(tiny_spec(search={"sampler": sampler, "n_trials": 6, "seed": 7, "population_size": 4}))

    def draws(skip: int = 0) -> list[dict[str, Any]]:
        study = optuna.create_study(directions=spec.directions, sampler=make_sampler(spec))
        out = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for i in range(skip + 3):
                trial = study.ask()
                if i >= skip:
                    out.append(suggest_params(trial, spec))
                study.tell(trial, [float(i % 3), 1.0 / (i + 1)])
        return out

    first, again = draws(), draws()
    assert first == again  # a resumed study (a new sampler) draws what the first one did
    assert len({str(sorted(p.items())) for p in first}) == 3  # every trial its own draw
    assert draws(skip=1)[0] != first[0]  # trial 1 does not repeat trial 0's values


def _gmacs(params: dict[str, Any]) -> float:
    """The analytic MACs count of a quickstart setting (``vit_digits``), as the flops command has it."""
    from svite_search.report.macs import macs_for

    method = params.get("method", "dense")
    keep = params.get("tokens.keep_ratio", 1.0)
    return macs_for("vit_digits", density=params["sparsity.density"] if method == "svite" else None,
                    head_density=params.get("sparsity.head_density") if method == "s2vite" else None,
                    mlp_density=params.get("sparsity.mlp_density") if method == "s2vite" else None,
                    keep_ratio=keep if keep < 1.0 else None).gmacs


def test_enqueue_cheapest_runs_each_methods_fewest_macs_setting_first() -> None:
    """``search.enqueue_cheapest`` on the quickstart space: after the spec's own sets, one set
    per method, and none of 300 settings sampled from the space has fewer MACs than its
    method's (by the analytic count, not the rule that chose them)."""
    from svite_search.search import load_spec

    spec = load_spec(Path(__file__).resolve().parents[2] / "studies" / "quickstart.yaml",
                     ["search.enqueue_cheapest=true"])
    queue = initial_queue(spec)
    assert queue[: len(spec.enqueue)] == [dict(p) for p in spec.enqueue]
    cheapest = {p["method"]: p for p in queue[len(spec.enqueue):]}
    assert sorted(cheapest) == ["dense", "s2vite", "svite"]
    assert cheapest["svite"] == {"method": "svite", "sparsity.density": 0.2, "tokens.keep_ratio": 0.5}
    floor = {method: _gmacs(p) for method, p in cheapest.items()}
    study = optuna.create_study(directions=spec.directions, sampler=optuna.samplers.RandomSampler(seed=0))
    sampled = []
    for _ in range(300):
        trial = study.ask()
        params = suggest_params(trial, spec)
        sampled.append(_gmacs(params))
        assert sampled[-1] >= floor[params["method"]] - 1e-12, params
        study.tell(trial, [0.0, 0.0])
    assert min(sampled) > min(floor.values())  # the cheapest of the space is one of them
    assert not [p for p in initial_queue(load_spec(Path(__file__).resolve().parents[2] / "studies" / "quickstart.yaml"))
                if p in cheapest.values()]  # off by default


@pytest.mark.parametrize(("change", "field"), [
    ({"search": {"sampler": "grid", "enqueue_cheapest": True}}, "search.enqueue_cheapest"),
    ({"model": {"name": {"choices": ["vit_digits", "deit_tiny_patch16_224"]}}, "search": {"enqueue_cheapest": True}},
     "search.enqueue_cheapest"),
    ({"method": "dense", "sparsity": None, "tokens": None, "train": {"epochs": 2, "lr": {"low": 1e-4, "high": 1e-2}},
      "search": {"enqueue_cheapest": True}}, "search.enqueue_cheapest"),
])
def test_enqueue_cheapest_needs_a_sampler_and_a_value_that_shrinks_the_model(change: dict, field: str,
                                                                            tiny_spec: Any) -> None:
    with pytest.raises(ConfigError) as info:
        spec_from_dict(tiny_spec(**change))
    assert info.value.field == field
