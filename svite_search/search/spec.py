"""The study spec: a run config whose values may be search distributions, plus the study's settings.

A spec file has the sections of a run config (``method``, ``preset``, ``data``, ``model``,
``train``, ``sparsity``, ``tokens``), where any scalar may instead be a distribution::

    sparsity:
      density:         {low: 0.2, high: 0.9}              # float, uniform
      update_interval: {low: 10, high: 200, log: true}    # int (the field is an int), log-uniform
      decay:           {choices: [cosine, linear]}        # categorical

and the study's own top-level keys: ``name``, ``objectives``, ``constraints``, ``search``,
``executor`` and ``tracking``. Everything is checked before anything runs: unknown keys,
malformed distributions and values that no sampled config could accept raise
:class:`~svite_search.errors.ConfigError` naming the key (``sparsity.density.low``).

Example::

    spec = load_spec("studies/quickstart.yaml", overrides=["search.n_trials=4"])
    spec.distributions[0].key, spec.objectives[0].metric, spec.spec_hash
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import re
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import (EPOCHS_MAX, SEED_MAX, RunConfig, apply_overrides, brief, config_from_dict, from_dict, read_yaml,
                      setting)
from ..errors import ConfigError, DataPathError

#: Run-config sections whose scalar values may be distributions.
RUN_SECTIONS = ("data", "model", "train", "sparsity", "tokens")
#: Top-level run-config scalars that may be distributions.
RUN_SCALARS = ("method", "preset")
STUDY_KEYS = ("name", "objectives", "constraints", "search", "executor", "tracking")

SAMPLERS = ("tpe", "nsga2", "nsga3", "gp", "random", "grid")
EXECUTORS = ("local", "ray")
EARLY_STOPPING = ("none", "asha", "pareto")
#: Keys of earlier releases, each with the setting that replaced it.
REPLACED_KEYS = {
    ("search", "pruner"): "search.early_stopping.kind",
    ("executor", "scheduler"): "search.early_stopping.kind",
    ("executor", "grace_period"): "search.early_stopping.min_epochs",
    ("executor", "reduction_factor"): "search.early_stopping.reduction_factor",
}

#: Metrics a trial can be scored on, with the direction that is better.
METRICS: dict[str, str] = {
    "top1": "maximize",
    "top1_final": "maximize",
    "top1_best": "maximize",
    "top5": "maximize",
    "val_loss": "minimize",
    "gmacs": "minimize",
    "flops_savings": "maximize",
    "params_nonzero": "minimize",
    "density": "minimize",
    "latency_ms": "minimize",
    "wall_s": "minimize",
}
#: Metrics known after every epoch (an early-stopping pruner or scheduler can act on them).
EPOCH_METRICS = ("top1", "top5", "val_loss")
#: Objectives early stopping can judge a trial on at a rung: per-epoch accuracy so far ...
RUNG_PROGRESS_METRICS = ("top1", "top1_final", "top1_best", "top5", "val_loss")
#: ... and what the model's structure fixes (the sparse model as it stands at the rung).
RUNG_STRUCTURE_METRICS = ("gmacs", "flops_savings", "params_nonzero", "density")
DEFAULT_OBJECTIVES = (("top1", "maximize"), ("gmacs", "minimize"))
DEFAULT_N_TRIALS = 16
#: Most points a grid may have (each is a trained model): a step of 1e-12 would ask for 10**12.
MAX_GRID_POINTS = 100_000
#: Most trials a study may ask for.
MAX_TRIALS = 1_000_000

_NUMERIC_KEYS = {"low", "high", "log", "step"}
_SCALAR = (str, int, float, bool, type(None))


# ----------------------------------------------------------------------------- parts of a spec


@dataclass(frozen=True)
class Distribution:
    """One searched value: a dotted run-config key and the values it may take.

    ``kind`` follows the config field: ``int`` and ``float`` fields take ``low``/``high``
    (optionally ``log`` or ``step``), any field takes ``choices``.
    """

    key: str
    kind: str  # "int" | "float" | "categorical"
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()

    def to_optuna(self) -> Any:
        """The matching ``optuna.distributions`` object."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.kind == "categorical":
            return CategoricalDistribution(list(self.choices))
        if self.kind == "int":
            return IntDistribution(int(self.low), int(self.high), log=self.log, step=int(self.step or 1))
        return FloatDistribution(float(self.low), float(self.high), log=self.log, step=self.step)

    def grid_size(self) -> int | None:
        """How many values :meth:`grid_values` has, without listing them; None if continuous."""
        if self.kind == "categorical":
            return len(self.choices)
        if self.kind == "int" and not self.log:
            return (int(self.high) - int(self.low)) // int(self.step or 1) + 1
        if self.step is not None and not self.log:
            return int(math.floor((self.high - self.low) / self.step + 1e-9)) + 1
        return None

    def grid_values(self) -> list[Any] | None:
        """Every value on the grid (``choices``, or ``low..high`` by ``step``); None if continuous."""
        if self.kind == "categorical":
            return list(self.choices)
        if self.kind == "int" and not self.log:
            return list(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        if self.step is not None and not self.log:
            count = int(math.floor((self.high - self.low) / self.step + 1e-9)) + 1
            return [round(self.low + i * self.step, 12) for i in range(count)]
        return None

    def extremes(self) -> list[tuple[str, Any]]:
        """Values to validate the config with, each with the spec key it came from."""
        if self.kind == "categorical":
            return [(f"{self.key}.choices[{i}]", value) for i, value in enumerate(self.choices)]
        cast = int if self.kind == "int" else float
        return [(f"{self.key}.low", cast(self.low)), (f"{self.key}.high", cast(self.high))]

    def first(self) -> Any:
        return self.choices[0] if self.kind == "categorical" else (int(self.low) if self.kind == "int" else float(self.low))


@dataclass(frozen=True)
class Objective:
    metric: str
    direction: str  # "maximize" | "minimize"

    def to_dict(self) -> dict[str, str]:
        return {"metric": self.metric, "direction": self.direction}


@dataclass(frozen=True)
class Constraint:
    """``metric <= bound`` or ``metric >= bound``; feasible when :meth:`violation` is <= 0."""

    metric: str
    op: str  # "<=" | ">="
    bound: float

    @property
    def name(self) -> str:
        return f"{self.metric} {self.op} {self.bound:g}"

    def violation(self, value: float) -> float:
        """Optuna's convention: positive when violated, zero or negative when satisfied."""
        return value - self.bound if self.op == "<=" else self.bound - value


@dataclass(frozen=True)
class LatencySettings:
    """How ``latency_ms`` is measured after training (only when an objective or constraint uses it)."""

    batch_size: int = setting(1, ge=1, le=1 << 20)
    warmup: int = setting(3, ge=0, le=100_000)
    repeats: int = setting(10, ge=1, le=100_000)
    threads: int | None = setting(1, ge=1, le=4096, help="intra-op threads while timing (null: torch's current)")


@dataclass(frozen=True)
class EarlyStoppingSettings:
    """Asynchronous successive halving for both executors: a trial is judged at the rungs
    ``min_epochs * reduction_factor**k`` below its ``train.epochs`` and goes on only in the
    top ``1/reduction_factor`` of its rung (``asha``: by top-1; ``pareto``: by non-dominated
    sorting of every objective; see :mod:`svite_search.search.early_stopping`)."""

    kind: str = setting("none", choices=EARLY_STOPPING, help="asha: rank a rung by top-1; pareto: by every "
                        "objective (non-dominated sorting, crowding distance inside a front)")
    min_epochs: int = setting(1, ge=1, le=EPOCHS_MAX, help="the first rung: epochs before a trial may be stopped")
    reduction_factor: int = setting(3, ge=2, le=1000, help="rungs at min_epochs * reduction_factor**k; the top "
                                    "1/reduction_factor of a rung go on")


@dataclass(frozen=True)
class SearchSettings:
    sampler: str = setting("tpe", choices=SAMPLERS)
    n_trials: int | None = setting(None, ge=1, le=MAX_TRIALS, help="trials to finish (default 16; grid: the grid's size)")
    seed: int = setting(0, ge=0, le=SEED_MAX)
    n_startup_trials: int | None = setting(None, ge=0, le=MAX_TRIALS, help="tpe/gp: random trials before the model")
    population_size: int | None = setting(None, ge=2, le=MAX_TRIALS, help="nsga2/nsga3: default min(50, n_trials)")
    enqueue: list = setting(default_factory=list, help="parameter sets to run first")
    points: list = setting(default_factory=list, help="grid: exactly these parameter sets (e.g. a paper's runs) "
                          "instead of every combination of the searched values")
    storage: str | None = setting(None, help="database URL of the Optuna storage (default: sqlite in the study dir)")
    early_stopping: EarlyStoppingSettings = setting(default_factory=EarlyStoppingSettings)
    max_failures: int | None = setting(None, ge=1, le=MAX_TRIALS, help="stop after this many failed trials in one run (default n_trials)")
    latency: LatencySettings = setting(default_factory=LatencySettings)


@dataclass(frozen=True)
class ExecutorSettings:
    kind: str = setting("local", choices=EXECUTORS)
    cpus_per_trial: float = setting(1.0, gt=0.0, le=100_000.0)
    gpus_per_trial: float = setting(0.0, ge=0.0, le=100_000.0)
    workers_per_trial: int = setting(1, ge=1, le=100_000, help="> 1: data-parallel training with Ray Train")
    max_concurrent: int | None = setting(None, ge=1, le=MAX_TRIALS, help="trials at once (default: as resources allow)")
    max_retries: int = setting(1, ge=0, le=1000, help="reruns of a trial lost to an infrastructure failure")
    address: str | None = setting(None, help="Ray cluster to join (default RAY_ADDRESS, else a local instance)")
    num_cpus: int | None = setting(None, ge=1, le=1 << 20, help="CPUs of a local Ray instance (default: all)")
    num_gpus: int | None = setting(None, ge=0, le=1 << 20, help="GPUs of a local Ray instance (default: all)")
    backend: str | None = setting(None, choices=("gloo", "nccl", None), help="workers_per_trial > 1 (default by device)")


@dataclass(frozen=True)
class TrackingSettings:
    enabled: bool = setting(True, help="log the study to MLflow (parent run + one nested run per trial)")
    uri: str | None = setting(None, help="tracking URI (default MLFLOW_TRACKING_URI, else sqlite in the study dir)")
    experiment: str | None = setting(None)


@dataclass(frozen=True)
class StudySpec:
    """A validated study spec. ``base`` is the run config with every distribution at its first
    value; a trial's config is ``base`` with the trial's parameters set."""

    name: str
    base: dict[str, Any]
    distributions: tuple[Distribution, ...]
    objectives: tuple[Objective, ...]
    constraints: tuple[Constraint, ...]
    search: SearchSettings
    executor: ExecutorSettings
    tracking: TrackingSettings
    enqueue: tuple[dict[str, Any], ...]
    raw: dict[str, Any]
    #: sampler ``grid`` with ``search.points``: the grid is exactly these parameter sets
    points: tuple[dict[str, Any], ...] = ()

    @property
    def directions(self) -> list[str]:
        return [o.direction for o in self.objectives]

    @property
    def metrics(self) -> list[str]:
        return [o.metric for o in self.objectives]

    @property
    def searched(self) -> dict[str, Distribution]:
        return {d.key: d for d in self.distributions}

    @property
    def n_trials(self) -> int:
        return int(self.search.n_trials or DEFAULT_N_TRIALS)

    @property
    def max_failures(self) -> int:
        return self.n_trials if self.search.max_failures is None else int(self.search.max_failures)

    @property
    def needs_latency(self) -> bool:
        return "latency_ms" in self.metrics or any(c.metric == "latency_ms" for c in self.constraints)

    @property
    def spec_hash(self) -> str:
        """Identifies the study a spec defines: everything but how and how long it runs
        (``search.n_trials``, ``search.max_failures``, ``search.storage``, ``executor``,
        ``tracking``), which may change between resumptions."""
        identity = copy.deepcopy(self.raw)
        for key in ("executor", "tracking"):
            identity.pop(key, None)
        for key in ("n_trials", "max_failures", "storage"):
            identity.get("search", {}).pop(key, None)
        text = json.dumps(identity, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def with_settings(self, *, n_trials: int | None = None, executor: str | None = None) -> "StudySpec":
        """The same study with another trial budget or executor (command-line options)."""
        spec = self
        if n_trials is not None:
            if n_trials < 1:
                raise ConfigError("search.n_trials", f"{n_trials} must be >= 1")
            spec = dataclasses.replace(spec, search=dataclasses.replace(spec.search, n_trials=n_trials))
        if executor is not None:
            if executor not in EXECUTORS:
                raise ConfigError("executor.kind", f"{executor!r} is not one of {', '.join(EXECUTORS)}")
            spec = dataclasses.replace(spec, executor=dataclasses.replace(spec.executor, kind=executor))
        raw = copy.deepcopy(spec.raw)
        raw.setdefault("search", {})["n_trials"] = spec.search.n_trials
        raw.setdefault("executor", {})["kind"] = spec.executor.kind
        return dataclasses.replace(spec, raw=raw)


# ----------------------------------------------------------------------------- parsing


def _section_types() -> dict[str, type]:
    hints = typing.get_type_hints(RunConfig)
    return {name: hints[name] for name in RUN_SECTIONS}


def _field_type(section: str | None, name: str) -> Any:
    """The declared type of a run-config field, without ``| None``."""
    owner = RunConfig if section is None else _section_types()[section]
    hints = typing.get_type_hints(owner)
    if name not in hints:
        return None
    args = [a for a in typing.get_args(hints[name]) if a is not type(None)]
    return args[0] if len(args) == 1 else hints[name]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _number(value: Any, key: str) -> float:
    if isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if not _is_number(value):
        raise ConfigError(key, f"expected a number, got {type(value).__name__} {brief(value)}")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise ConfigError(key, f"{brief(value)} is not a finite number")
    return number


def parse_distribution(key: str, raw: dict[str, Any], field_type: Any) -> Distribution:
    """A distribution from its spec mapping; ``field_type`` is the config field's type."""
    keys = set(raw)
    if keys == {"choices"}:
        choices = raw["choices"]
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{key}.choices", "expected a non-empty list")
        for i, value in enumerate(choices):
            if not isinstance(value, _SCALAR):
                raise ConfigError(f"{key}.choices[{i}]", f"expected a scalar, got {type(value).__name__}")
        if len({json.dumps(v) for v in choices}) != len(choices):
            raise ConfigError(f"{key}.choices", "has duplicates")
        return Distribution(key, "categorical", choices=tuple(choices))
    unknown = keys - _NUMERIC_KEYS
    if unknown or not {"low", "high"} <= keys:
        raise ConfigError(
            key,
            "a search distribution is {low, high[, log, step]} or {choices: [...]}"
            + (f" (unknown: {', '.join(sorted(map(str, unknown)))})" if unknown else ""),
        )
    if field_type not in (int, float):
        raise ConfigError(key, "is not numeric: search it with {choices: [...]}")
    low, high = _number(raw["low"], f"{key}.low"), _number(raw["high"], f"{key}.high")
    log = raw.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"{key}.log", f"expected true or false, got {log!r}")
    step = None if raw.get("step") is None else _number(raw["step"], f"{key}.step")
    if low > high:
        raise ConfigError(f"{key}.low", f"{low:g} is above high ({high:g})")
    if log and low <= 0:
        raise ConfigError(f"{key}.low", "must be > 0 with log: true")
    if step is not None:
        if step <= 0:
            raise ConfigError(f"{key}.step", "must be > 0")
        if log and not (field_type is int and step == 1):
            raise ConfigError(f"{key}.step", "cannot be combined with log: true")
    if field_type is int:
        for name, value in (("low", low), ("high", high), ("step", step)):
            if value is not None and not float(value).is_integer():
                raise ConfigError(f"{key}.{name}", f"{value:g} is not an integer (the field is an int)")
        return Distribution(key, "int", low=int(low), high=int(high), log=log, step=int(step) if step else None)
    return Distribution(key, "float", low=low, high=high, log=log, step=step)


def _is_distribution(value: Any) -> bool:
    return isinstance(value, dict)


def _split(data: dict[str, Any]) -> tuple[dict[str, Any], list[Distribution]]:
    """The run-config part of a spec with every distribution replaced by its first value."""
    base: dict[str, Any] = {}
    dists: list[Distribution] = []
    for key in RUN_SCALARS:
        if key not in data:
            continue
        value = data[key]
        if _is_distribution(value):
            dist = parse_distribution(key, value, _field_type(None, key))
            dists.append(dist)
            value = dist.first()
        base[key] = value
    types = _section_types()
    for section in RUN_SECTIONS:
        if section not in data or data[section] is None:
            continue
        raw = data[section]
        if not isinstance(raw, dict):
            raise ConfigError(section, f"expected a mapping, got {type(raw).__name__}")
        out = {}
        for name, value in raw.items():
            if _is_distribution(value):
                ftype = _field_type(section, name)
                if ftype is None:
                    known = ", ".join(f.name for f in dataclasses.fields(types[section]))
                    raise ConfigError(f"{section}.{name}", f"unknown key (allowed: {known})")
                dist = parse_distribution(f"{section}.{name}", value, ftype)
                dists.append(dist)
                value = dist.first()
            out[name] = value
        base[section] = out
    return base, dists


def set_key(config: dict[str, Any], key: str, value: Any) -> None:
    """Set a dotted key (``sparsity.density``) in a nested run-config mapping."""
    parts = key.split(".")
    node = config
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value


def _check_runnable(cfg: RunConfig) -> None:
    """What a trial would otherwise only find when it starts: an unknown model name, a missing
    or empty dataset directory. Nothing is loaded."""
    from ..data import dataset_classes_and_channels
    from ..models import is_known_model

    if not is_known_model(cfg.model.name):
        raise ConfigError("model.name", f"unknown model {cfg.model.name!r} (a preset such as vit_digits, or a timm ViT name)")
    if cfg.data.dataset in ("cifar10", "cifar100", "imagefolder"):
        root = Path(str(cfg.data.root))
        if not root.is_dir():
            raise DataPathError(str(root), "missing (data.root)")
        dataset_classes_and_channels(cfg.data)  # imagefolder: ROOT/train/<class>/ must exist


def _validate(data: dict[str, Any]) -> None:
    _check_runnable(config_from_dict(data))


def _validate_values(base: dict[str, Any], dists: list[Distribution]) -> None:
    """Every distribution's extremes (and every choice) must make a valid, runnable run config.

    The other distributions stay at their first values, so a field error names the distribution
    end that caused it (``sparsity.density.high``) rather than the config key alone.
    """
    try:
        _validate(copy.deepcopy(base))
    except ConfigError as err:
        culprit = next((d for d in dists if d.key == err.field), None)
        if culprit is None:
            raise
        raise ConfigError(culprit.extremes()[0][0], str(err).split(": ", 1)[-1]) from None
    for dist in dists:
        for spec_key, value in dist.extremes():
            trial = copy.deepcopy(base)
            set_key(trial, dist.key, value)
            try:
                _validate(trial)
            except ConfigError as err:
                field_name = spec_key if err.field == dist.key else err.field
                message = str(err).split(": ", 1)[-1]
                if err.field != dist.key:
                    message += f" (with {spec_key} = {brief(value)})"
                raise ConfigError(field_name, message) from None


def _parse_objectives(raw: Any) -> tuple[Objective, ...]:
    if raw is None:
        return tuple(Objective(m, d) for m, d in DEFAULT_OBJECTIVES)
    if not isinstance(raw, list) or not raw:
        raise ConfigError("objectives", "expected a non-empty list of {metric, direction}")
    out: list[Objective] = []
    for i, item in enumerate(raw):
        where = f"objectives[{i}]"
        if isinstance(item, str):
            item = {"metric": item}
        if not isinstance(item, dict):
            raise ConfigError(where, "expected a metric name or {metric, direction}")
        unknown = set(item) - {"metric", "direction"}
        if unknown:
            raise ConfigError(f"{where}.{sorted(unknown)[0]}", "unknown key (allowed: metric, direction)")
        metric = item.get("metric")
        if metric not in METRICS:
            raise ConfigError(f"{where}.metric", f"{brief(metric)} is not one of {', '.join(METRICS)}")
        direction = str(item.get("direction", METRICS[metric])).lower()
        direction = {"max": "maximize", "min": "minimize"}.get(direction, direction)
        if direction not in ("maximize", "minimize"):
            raise ConfigError(f"{where}.direction", f"{item.get('direction')!r} is not maximize or minimize")
        if any(o.metric == metric for o in out):
            raise ConfigError(f"{where}.metric", f"{metric} is already an objective")
        out.append(Objective(metric, direction))
    return tuple(out)


_CONSTRAINT = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(<=|>=)\s*([-+0-9.eE]+)\s*$")


def _parse_constraints(raw: Any) -> tuple[Constraint, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ConfigError("constraints", "expected a list such as ['gmacs <= 0.001']")
    out = []
    for i, item in enumerate(raw):
        where = f"constraints[{i}]"
        if isinstance(item, str):
            match = _CONSTRAINT.match(item)
            if not match:
                raise ConfigError(where, f"{brief(item)}: expected 'METRIC <= NUMBER' or 'METRIC >= NUMBER'")
            metric, op, bound = match.group(1), match.group(2), match.group(3)
        elif isinstance(item, dict) and set(item) in ({"metric", "max"}, {"metric", "min"}):
            metric = item["metric"]
            op, bound = ("<=", item["max"]) if "max" in item else (">=", item["min"])
        else:
            raise ConfigError(where, "expected 'METRIC <= NUMBER' or {metric, max} or {metric, min}")
        if metric not in METRICS:
            raise ConfigError(where, f"{brief(metric)} is not one of {', '.join(METRICS)}")
        out.append(Constraint(str(metric), op, _number(bound, where)))
    return tuple(out)


def _flatten_params(item: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in item.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict):
            flat.update(_flatten_params(value, dotted))
        else:
            flat[dotted] = value
    return flat


def _parse_enqueue(
    raw: list, base: dict[str, Any], dists: list[Distribution], field_name: str = "search.enqueue"
) -> tuple[dict[str, Any], ...]:
    """Parameter sets (``search.enqueue`` or ``search.points``): nested
    (``{sparsity: {density: 0.5}}``) or dotted keys, each naming searched parameters only, each
    value inside its distribution."""
    if not isinstance(raw, list):
        raise ConfigError(field_name, "expected a list of parameter sets")
    searched = {d.key: d for d in dists}
    out = []
    checked: dict[str, dict[str, Any]] = {}  # a repeated set (an alias used many times) is checked once
    for i, item in enumerate(raw):
        where = f"{field_name}[{i}]"
        if not isinstance(item, dict) or not item:
            raise ConfigError(where, "expected a mapping of searched parameters to values")
        identity = json.dumps(item, sort_keys=True, default=str)
        if identity in checked:
            out.append(dict(checked[identity]))
            continue
        params = _flatten_params(item)
        trial = copy.deepcopy(base)
        for key, value in params.items():
            dist = searched.get(key)
            if dist is None:
                raise ConfigError(f"{where}.{key}", "is not a searched parameter"
                                  + (f" (searched: {', '.join(searched)})" if searched else " (nothing is searched)"))
            if dist.kind == "categorical":
                if value not in dist.choices:
                    raise ConfigError(f"{where}.{key}", f"{brief(value)} is not one of the choices {brief(list(dist.choices))}")
            else:
                number = _number(value, f"{where}.{key}")
                if not dist.low <= number <= dist.high:
                    raise ConfigError(f"{where}.{key}", f"{number:g} is outside [{dist.low:g}, {dist.high:g}]")
                value = int(number) if dist.kind == "int" else number
                params[key] = value
            set_key(trial, key, value)
        try:
            config_from_dict(trial)
        except ConfigError as err:
            raise ConfigError(f"{where}.{err.field}", str(err).split(": ", 1)[-1]) from None
        checked[identity] = params
        out.append(params)
    return tuple(out)


def _check_early_stopping(settings: EarlyStoppingSettings, objectives: tuple[Objective, ...],
                          base: dict[str, Any], dists: list[Distribution]) -> None:
    """Early stopping needs an objective known after every epoch, and a rung below the
    longest trial's ``train.epochs``."""
    if settings.kind == "none":
        return
    if not any(o.metric in RUNG_PROGRESS_METRICS for o in objectives):
        raise ConfigError("search.early_stopping.kind", f"{settings.kind} needs an objective known after every "
                          f"epoch ({', '.join(RUNG_PROGRESS_METRICS)})")
    searched = {d.key: d for d in dists}
    epochs = searched["train.epochs"].high if "train.epochs" in searched else (base.get("train") or {}).get("epochs")
    if epochs is not None and settings.min_epochs >= int(epochs):
        raise ConfigError("search.early_stopping.min_epochs", f"{settings.min_epochs} leaves no rung below "
                          f"train.epochs {int(epochs)} (a trial is judged after min_epochs epochs)")


def spec_from_dict(data: Any, *, source: str = "spec") -> StudySpec:
    """Validate a raw spec mapping into a :class:`StudySpec`."""
    if not isinstance(data, dict):
        raise ConfigError("spec", f"{source}: the top level must be a mapping")
    allowed = set(RUN_SCALARS) | set(RUN_SECTIONS) | set(STUDY_KEYS)
    for key in data:
        if key not in allowed:
            raise ConfigError(str(key), f"unknown key (allowed: {', '.join(sorted(allowed))})")
    name = data.get("name")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name or ""):
        raise ConfigError("name", "required: letters, digits, '.', '_' or '-' (it names the study and its directory)")
    base, dists = _split(data)
    _validate_values(base, dists)

    for (section, key), new in REPLACED_KEYS.items():
        if isinstance(data.get(section), dict) and key in data[section]:
            raise ConfigError(f"{section}.{key}", f"replaced by {new} (search.early_stopping: "
                              "{kind: none | asha | pareto, min_epochs, reduction_factor}, for both executors)")
    search = from_dict(SearchSettings, data.get("search"), "search")
    executor = from_dict(ExecutorSettings, data.get("executor"), "executor")
    tracking = from_dict(TrackingSettings, data.get("tracking"), "tracking")
    objectives = _parse_objectives(data.get("objectives"))
    constraints = _parse_constraints(data.get("constraints"))
    enqueue = _parse_enqueue(search.enqueue, base, dists)
    points = _parse_enqueue(search.points, base, dists, "search.points")
    if points and search.sampler != "grid":
        raise ConfigError("search.points", "only with sampler grid (other samplers take search.enqueue)")

    _check_early_stopping(search.early_stopping, objectives, base, dists)
    if search.sampler == "grid":
        from .space import initial_queue

        for dist in dists if not points else ():
            size = dist.grid_size()
            if size is None:
                raise ConfigError(dist.key, "sampler grid needs choices or a step (this range is continuous)")
            if size > MAX_GRID_POINTS:
                raise ConfigError(f"{dist.key}.step" if dist.kind != "categorical" else f"{dist.key}.choices",
                                  f"makes a grid of {size:.3g} values (at most {MAX_GRID_POINTS})")
        partial = StudySpec(name, base, tuple(dists), objectives, constraints, search, executor, tracking, enqueue, {},
                            points)
        from .space import applies

        for i, point in enumerate(points):  # an open value would be sampled: not a grid any more
            for dist in partial.distributions:
                if dist.key not in point and applies(partial, dist.key, point):
                    raise ConfigError(f"search.points[{i}]", f"leaves {dist.key} open: a grid point sets every "
                                      "searched value that applies to it")
        try:
            size = len(initial_queue(partial, limit=MAX_GRID_POINTS))
        except OverflowError:
            raise ConfigError("search.sampler", f"the grid has more than {MAX_GRID_POINTS} points (every "
                              "combination of the searched values); search fewer values or use search.points") from None
        if search.n_trials is not None and search.n_trials > size:
            raise ConfigError("search.n_trials", f"{search.n_trials} exceeds the grid's {size} points")
        if search.n_trials is None:
            search = dataclasses.replace(search, n_trials=size)

    raw = copy.deepcopy(data)
    raw["objectives"] = [o.to_dict() for o in objectives]
    raw["constraints"] = [c.name for c in constraints]
    raw["search"] = {**(raw.get("search") or {}), "sampler": search.sampler, "n_trials": search.n_trials,
                     "seed": search.seed}
    return StudySpec(
        name=name,
        base=base,
        distributions=tuple(dists),
        objectives=objectives,
        constraints=constraints,
        search=search,
        executor=executor,
        tracking=tracking,
        enqueue=enqueue,
        points=points,
        raw=raw,
    )


def load_spec(path: str | Path, overrides: list[str] | None = None) -> StudySpec:
    """Read, override (``key.path=value``) and validate a study spec file."""
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError("spec", f"{path}: the top level must be a mapping")
    return spec_from_dict(apply_overrides(data, overrides), source=str(path))
