"""The parts of a validated study spec: distributions, objectives, constraints, settings.

Plain frozen dataclasses that the parsers (:mod:`._load`) build and everything else reads.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

from ...config import EPOCHS_MAX, SEED_MAX, setting
from ...errors import ConfigError

#: Run-config sections whose scalar values may be distributions.
RUN_SECTIONS = ("data", "model", "train", "sparsity", "tokens")
#: Top-level run-config scalars that may be distributions.
RUN_SCALARS = ("method", "preset")
STUDY_KEYS = ("name", "objectives", "constraints", "search", "executor", "tracking")

SAMPLERS = ("tpe", "nsga2", "nsga3", "gp", "random", "grid")
EXECUTORS = ("local", "ray")
EARLY_STOPPING = ("none", "asha", "pareto")
#: what a trial asked for a setting the study has trained already does (``search.repeats``)
REPEATS = ("train", "skip")
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
    sorting of every objective; see :mod:`svite_search.search.early_stopping`). Every
    ``full_run_every``-th trial runs to the end unjudged (:func:`~svite_search.search.early_stopping.runs_unjudged`)."""

    kind: str = setting("none", choices=EARLY_STOPPING, help="asha: rank a rung by top-1; pareto: by every "
                        "objective (non-dominated sorting, crowding distance inside a front)")
    min_epochs: int | None = setting(None, ge=1, le=EPOCHS_MAX, help="the first rung: epochs before a trial may be "
                                     "stopped (null: the first epoch after train.warmup_epochs)")
    reduction_factor: int = setting(3, ge=2, le=1000, help="rungs at min_epochs * reduction_factor**k; the top "
                                    "1/reduction_factor of a rung go on")
    full_run_every: int = setting(4, ge=0, le=MAX_TRIALS, help="every k-th trial runs to the end unjudged (its rung "
                                  "values still recorded): a noisy early top-1 cannot lose a setting for good; "
                                  "0: judge every trial")
    promote: bool = setting(False, help="ASHA's promotion form: a trial outside its rung's top 1/reduction_factor "
                            "waits there (PRUNED, checkpoint kept) and resumes from its checkpoint as a new trial "
                            "(promoted_from) once it ranks in the top; the sampler is asked for a new setting only "
                            "when no waiting trial does; once the sampler is spent (search.repeats: skip), the waiting "
                            "trials go on past the top, best first. Needs train.checkpoint")


@dataclass(frozen=True)
class SearchSettings:
    sampler: str = setting("tpe", choices=SAMPLERS)
    n_trials: int | None = setting(None, ge=1, le=MAX_TRIALS, help="trials to finish (default 16; grid: the grid's size)")
    seed: int = setting(0, ge=0, le=SEED_MAX)
    n_startup_trials: int | None = setting(None, ge=0, le=MAX_TRIALS, help="tpe/gp: random trials before the model")
    population_size: int | None = setting(None, ge=2, le=MAX_TRIALS, help="nsga2/nsga3: default min(50, n_trials)")
    enqueue: list = setting(default_factory=list, help="parameter sets to run first")
    enqueue_cheapest: bool = setting(False, help="run first, after search.enqueue, the cheapest setting of each "
                                     "method: every density and token keep ratio it searches at its low end (the "
                                     "fewest MACs, known before training; the cheapest setting is always on the "
                                     "accuracy-MACs front); the values that do not change MACs are sampled")
    points: list = setting(default_factory=list, help="grid: exactly these parameter sets (e.g. a paper's runs) "
                          "instead of every combination of the searched values")
    storage: str | None = setting(None, help="database URL of the Optuna storage (default: sqlite in the study dir)")
    early_stopping: EarlyStoppingSettings = setting(default_factory=EarlyStoppingSettings)
    max_failures: int | None = setting(None, ge=1, le=MAX_TRIALS, help="stop after this many failed trials in one run (default n_trials)")
    repeats: str = setting("train", choices=REPEATS, help="a trial the sampler asks for a setting the study has "
                           "trained to the end, or is training now: train (it trains again) or skip (recorded "
                           "PRUNED untrained with repeat_of, not counted towards n_trials, and the sampler is "
                           "asked again)")
    max_repeats_in_a_row: int = setting(100, ge=1, le=MAX_TRIALS, help="repeats: skip: the run stops after this "
                                        "many skipped repeats in a row (the sampler asks only for spent settings)")
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
        (``search.n_trials``, ``search.max_failures``, ``search.storage``, ``search.repeats``,
        ``search.max_repeats_in_a_row``, ``executor``, ``tracking``), which may change between
        resumptions: a skipped repeat is marked on the trial itself, so counting does not read
        the setting."""
        identity = copy.deepcopy(self.raw)
        for key in ("executor", "tracking"):
            identity.pop(key, None)
        for key in ("n_trials", "max_failures", "storage", "repeats", "max_repeats_in_a_row"):
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
