"""Search efficiency: the hypervolume each search method buys per trial-epoch, on a fixed problem.

The problem is the quickstart study (dense, SViTE and S²ViTE on the embedded 8×8 digits, top-1
up, MACs down) in tabulated form (``benchmarks/search_table.py``): every point of a grid over
the method, the weight, head and neuron densities and the token keep ratio was trained once
with the project's trainer, and its per-epoch top-1 and its MACs were kept. Methods "train" a
point by replaying its curve, as HPO benchmarks do: a trial that runs ``k`` epochs spends ``k``
trial-epochs and sees the top-1 after each. Time runs on a simulated clock: each epoch of a
point lasts what it lasted when it was recorded, and ``--workers`` trials run at once,
asynchronously (a freed worker starts the next trial at once, so trials reach a rung out of
order).

Methods, each with the same budget of trial-epochs (``--budget-trials`` full-length trials'
worth) and the same workers:

* ``tpe``: the project's default sampler (``search.sampler: tpe``, multivariate TPE with the
  constant liar), every trial to the end;
* ``random`` and ``nsga2`` (NSGA-II, population ``--population``), every trial to the end;
* ``asha``: TPE, with asynchronous successive halving on top-1 (``search.early_stopping.kind:
  asha``);
* ``pareto``: TPE, with the Pareto promotion rule (``kind: pareto``) on top-1 and MACs, at the
  product's defaults;
* ``pareto_promote``: the same rule with the settings the README recommends for a space of
  choices (:data:`PROMOTE_SETTINGS`: the promotion form, one rung at epoch 1, repeats skipped,
  each method's cheapest setting first);
* ``moasha``: Syne Tune's MOASHA scheduler (random configurations, non-dominated sorting with
  an epsilon-net at each rung), driven through its scheduler API (``suggest``,
  ``on_trial_add``, ``on_trial_result``) on the same table, with the same ``min_epochs`` (its
  ``grace_period``) and ``reduction_factor`` (its rung levels are its own: Syne Tune keeps a rung
  at every ``grace_period * η**k`` below ``max_t``, so at 18 of 20 epochs too);
* ``moasha_ranks``: the same scheduler given, through its ``multiobjective_priority``
  parameter, a priority that is each trial's *place* in that non-dominated order. Why: in
  Syne Tune 0.16 the default ``NonDominatedPriority`` returns the order itself (the indices of
  the trials, best first), while the rung reads the value at the arriving trial's position as
  that trial's priority, so it judges the arriving trial by whichever trial the order puts last
  (``[[.1, .9], [.5, .5], [.9, .1], [.95, .95], [.05, .05]]`` gives ``[4, 0, 2, 1, 3]``: the
  arriving trial, which dominates every other, reads priority 3 of 5 and is stopped). The
  comparison is made with both.

The early-stopping arms call the project's rule module
(``svite_search.search.early_stopping.rules``: ``should_continue`` at each rung of
``rung_epochs``, and ``runs_unjudged`` for the one trial in every ``full_run_every`` that runs to
the end unjudged) exactly as the engine does; a stopped trial is told PRUNED to Optuna.

The hypervolume is on the fixed scale of the report (top-1 from 0 % to 100 %, MACs from the
dense model's to none), over the trials that ran to the end, after every finished trial.

Goals: ``pareto`` reaches full-length TPE's final hypervolume (median over seeds) with at most
40 % of TPE's trial-epochs (median over seeds), and at equal budgets its median hypervolume is
at least MOASHA's. Both are judged for ``pareto`` and for ``pareto_promote``.

Usage (``make bench-search``)::

    python -m benchmarks.bench_search                     # writes reports/benchmarks/search/
    python -m benchmarks.bench_search --tiny --out-dir /tmp/bench-search   # seconds: a smoke run
"""
from __future__ import annotations

import argparse
import datetime as _dt
import heapq
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from svite_search.search.spec import SearchSettings

REPO = Path(__file__).resolve().parents[1]
TABLE = Path(__file__).resolve().parent / "data" / "search_table.json"
OUT_DIR = REPO / "reports" / "benchmarks" / "search"
SPEC = REPO / "studies" / "quickstart.yaml"
METHODS = ("tpe", "random", "nsga2", "asha", "pareto", "pareto_promote", "moasha", "moasha_ranks")
EARLY_STOPPING = {"asha", "pareto", "pareto_promote", "moasha", "moasha_ranks"}
#: ``pareto_promote``: ``pareto`` with the settings the README recommends for a space of choices
#: (the quickstart's grid is one): the promotion form, one rung at epoch 1 whose top tenth goes
#: on at once, no unjudged trials, repeats skipped (so the sampler is spent once every setting
#: has had its epoch, and the waiting trials go on in the rung's order), and each method's
#: cheapest setting first (``search.enqueue_cheapest``)
PROMOTE_ARM = "pareto_promote"
PROMOTE_SETTINGS: dict[str, Any] = {"min_epochs": 1, "reduction_factor": 10, "full_run_every": 0, "promote": True,
                                    "repeats": "skip"}
#: the rule each early-stopping arm of the project's runs
ARM_KIND = {"asha": "asha", "pareto": "pareto", PROMOTE_ARM: "pareto"}
#: the arms judged against the goals: the product's defaults, and the recommended settings
GOAL_ARMS = ("pareto", PROMOTE_ARM)
PEERS = ("moasha", "moasha_ranks")
DIRECTIONS = ("maximize", "minimize")
#: the goals: pareto's share of TPE's trial-epochs to reach TPE's final hypervolume
SHARE_GOAL = 0.40
#: budgets (shares of the whole) at which the arms' hypervolumes are compared
CHECKPOINTS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0)


# ----------------------------------------------------------------------------- the table


@dataclass(frozen=True)
class Point:
    params: dict[str, Any]
    top1: tuple[float, ...]
    gmacs: float
    epoch_s: float  # one epoch's duration when recorded (the median over its epochs after the first)


class Table:
    """The recorded grid: look a configuration up (values snapped to the grid's levels)."""

    def __init__(self, path: Path) -> None:
        data = json.loads(Path(path).read_text())
        self.epochs = int(data["epochs"])
        self.points: dict[str, Point] = {}
        self.dense_gmacs = float(np.median([p["dense_gmacs"] for p in data["points"]]))
        for raw in data["points"]:
            steps = raw["epoch_s"][1:] or raw["epoch_s"]
            point = Point(raw["params"], tuple(raw["top1"]), float(raw["gmacs"]), float(statistics.median(steps)))
            self.points[self._key(point.params)] = point
        self.levels: dict[str, list[float]] = {}
        for point in self.points.values():
            for name, value in point.params.items():
                if name != "method":
                    self.levels.setdefault(name, [])
                    if value not in self.levels[name]:
                        self.levels[name].append(value)
        for values in self.levels.values():
            values.sort()
        self.methods = sorted({p.params["method"] for p in self.points.values()}, key=["dense", "svite", "s2vite"].index)

    @staticmethod
    def _key(params: dict[str, Any]) -> str:
        return json.dumps(params, sort_keys=True)

    def snap(self, name: str, value: float) -> float:
        return min(self.levels[name], key=lambda level: abs(level - float(value)))

    def lookup(self, params: dict[str, Any]) -> Point:
        method = params["method"]
        used = {"dense": ("tokens.keep_ratio",), "svite": ("sparsity.density", "tokens.keep_ratio"),
                "s2vite": ("sparsity.head_density", "sparsity.mlp_density", "tokens.keep_ratio")}[method]
        key = {"method": method, **{name: self.snap(name, params[name]) for name in used}}
        return self.points[self._key(key)]

    def front_keys(self) -> set[str]:
        """The settings on the whole table's front (final top-1 against MACs)."""
        from svite_search.metrics.pareto import non_dominated

        points = list(self.points.values())
        mask = non_dominated(np.array([(p.top1[-1], p.gmacs) for p in points]), [True, False])
        return {self._key(p.params) for p, on in zip(points, mask) if on}

    def rung_correlation(self, rungs: Sequence[int]) -> dict[str, float]:
        """Spearman correlation, over the table's settings, of the top-1 at each rung with
        the final top-1: how much a rung can know."""
        from scipy.stats import spearmanr

        final = [p.top1[-1] for p in self.points.values()]
        return {str(r): float(spearmanr([p.top1[r - 1] for p in self.points.values()], final).correlation)
                for r in rungs}

    def front_dominated_at(self, rungs: Sequence[int]) -> dict[str, int]:
        """Per rung, how many settings of the table's front are dominated at that rung (top-1 so
        far and MACs) by another setting: the ones a rule that stops every dominated arrival can
        lose, depending on who reaches the rung first."""
        front = self.front_keys()
        points = list(self.points.values())
        out = {}
        for r in rungs:
            out[str(r)] = sum(
                1 for p in points if self._key(p.params) in front
                and any(q.top1[r - 1] >= p.top1[r - 1] and q.gmacs <= p.gmacs
                        and (q.top1[r - 1] > p.top1[r - 1] or q.gmacs < p.gmacs) for q in points if q is not p))
        return out

    def front_hypervolume(self) -> float:
        """The hypervolume of the whole table's front: what a method that tried every point reaches."""
        return hypervolume_of([(p.top1[-1], p.gmacs) for p in self.points.values()], self.dense_gmacs)


def scaled(top1: float, gmacs: float, dense_gmacs: float) -> tuple[float, float]:
    """The fixed scale of the report: (1 - top-1 / 100, MACs / dense MACs), reference (1, 1)."""
    return (1.0 - top1 / 100.0, gmacs / dense_gmacs)


def hypervolume_of(points: Sequence[tuple[float, float]], dense_gmacs: float) -> float:
    from svite_search.metrics.pareto import hypervolume_exact

    return hypervolume_exact([scaled(t, g, dense_gmacs) for t, g in points], [1.0, 1.0])


# ----------------------------------------------------------------------------- the methods


def load_rules() -> Any | None:
    """The project's early-stopping rule module, or ``None`` where this checkout lacks it."""
    try:
        from svite_search.search.early_stopping import rules
    except ImportError:
        return None
    return rules


def _unjudged_text(every: int) -> str:
    return f"one trial in every {every} runs to the end unjudged" if every else "every trial is judged"


def product_full_run_every() -> int:
    """``search.early_stopping.full_run_every`` as the product sets it when a spec leaves it out."""
    from svite_search.search.spec import EarlyStoppingSettings

    return int(EarlyStoppingSettings().full_run_every)


def product_min_epochs() -> int:
    """``search.early_stopping.min_epochs`` as the product sets it for the quickstart spec when
    the spec leaves it out (the rung engine's own default)."""
    from svite_search.search.early_stopping.engine import trial_min_epochs
    from svite_search.search.spec import load_spec

    return trial_min_epochs(load_spec(SPEC, ["search.early_stopping.kind=pareto"]), {})


def product_cheapest() -> list[dict[str, Any]]:
    """The sets ``search.enqueue_cheapest: true`` runs first in the quickstart spec (each
    method's cheapest setting), without the spec's own ``search.enqueue``: the arms here start
    from the sampler alone."""
    from svite_search.search.spec import cheapest_points, load_spec

    return cheapest_points(load_spec(SPEC, ["search.enqueue_cheapest=true"]))


def make_sampler(kind: str, seed: int, n_trials: int, population: int) -> Any:
    """The project's own sampler for ``search.sampler: kind`` (as a search builds it)."""
    from svite_search.search.spec import load_spec
    from svite_search.search.study import make_sampler as project_sampler

    overrides = [f"search.sampler={kind}", f"search.seed={seed}", f"search.n_trials={n_trials}"]
    if kind == "nsga2":
        overrides.append(f"search.population_size={population}")
    return project_sampler(load_spec(SPEC, overrides), parallel=True)


class OptunaMethod:
    """An Optuna sampler asking for configurations over the table's grid (define-by-run: the
    densities a method does not use are not sampled), told each trial's end."""

    def __init__(self, table: Table, sampler: Any, enqueue: Sequence[dict[str, Any]] = ()) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.ERROR)
        self.optuna = optuna
        self.table = table
        self.study = optuna.create_study(directions=list(DIRECTIONS), sampler=sampler)
        for params in enqueue:  # run first, as a study runs search.enqueue (and enqueue_cheapest)
            self.study.enqueue_trial({k: table.snap(k, v) if k != "method" else v for k, v in params.items()})
        self.trials: dict[int, Any] = {}
        self.stopped: dict[int, tuple[dict[str, Any], dict[str, Any]]] = {}  # number -> params, distributions
        self.resumed: set[int] = set()  # stopped trials promoted since (their replay number is kept)

    def ask(self, number: int) -> dict[str, Any]:
        levels = self.table.levels
        trial = self.study.ask()
        self.trials[number] = trial
        method = trial.suggest_categorical("method", self.table.methods)
        params: dict[str, Any] = {"method": method}
        if method == "svite":
            params["sparsity.density"] = trial.suggest_categorical("sparsity.density", levels["sparsity.density"])
        if method == "s2vite":
            for name in ("sparsity.head_density", "sparsity.mlp_density"):
                params[name] = trial.suggest_categorical(name, levels[name])
        params["tokens.keep_ratio"] = trial.suggest_categorical("tokens.keep_ratio", levels["tokens.keep_ratio"])
        return params

    def complete(self, number: int, values: tuple[float, float]) -> None:
        if number in self.resumed:
            self._add(number, self.optuna.trial.TrialState.COMPLETE, values)
            return
        self.study.tell(self.trials.pop(number), list(values))

    def skip(self, number: int) -> None:
        """A repeat left untrained: told PRUNED with no values (see ``simulate``'s ``repeats``)."""
        trial = self.trials.pop(number)
        trial.set_user_attr("repeat", True)
        self.study.tell(trial, state=self.optuna.trial.TrialState.PRUNED)

    def prune(self, number: int, epoch: int, values: tuple[float, float]) -> None:
        if number in self.resumed:  # a promotion stopped again: a trial of its own, as the study records it
            self._add(number, self.optuna.trial.TrialState.PRUNED, None)
            return
        trial = self.trials.pop(number)
        trial.set_user_attr("epoch", epoch)
        trial.set_user_attr("top1", values[0])
        self.stopped[number] = (dict(trial.params), dict(trial.distributions))
        self.study.tell(trial, state=self.optuna.trial.TrialState.PRUNED)

    def resume(self, number: int) -> None:
        """Trial ``number``, stopped waiting at a rung, is promoted (``promote: true``): the
        study records it as a new trial on the same setting, told when it ends."""
        self.resumed.add(number)

    def _add(self, number: int, state: Any, values: tuple[float, float] | None) -> None:
        params, distributions = self.stopped[number]
        self.study.add_trial(self.optuna.trial.create_trial(
            params=params, distributions=distributions, state=state, values=list(values) if values else None))


class RuleStopper:
    """The engine's decision at a rung: the arriving trial's vector against the vectors already
    recorded at that rung, by the project's rule module (one trial in every ``full_run_every``
    goes on unjudged, as in the engine); every arrival is recorded."""

    def __init__(self, rules: Any, kind: str, min_epochs: int, reduction_factor: int, max_epochs: int,
                 full_run_every: int = 0, promote: bool = False) -> None:
        self.rules, self.kind, self.rf, self.full_run_every = rules, kind, reduction_factor, int(full_run_every)
        self.promote = bool(promote)
        self.rungs = set(int(r) for r in rules.rung_epochs(min_epochs, reduction_factor, max_epochs))
        self.recorded: dict[int, list[list[float]]] = {r: [] for r in self.rungs}
        self.numbers: dict[int, list[int]] = {r: [] for r in self.rungs}  # who each recorded vector is
        self.waiting: dict[int, int] = {}  # trial number -> the rung it waits at (promote)
        self.reasons: list[str] = []

    def go_on(self, number: int, epoch: int, vector: list[float]) -> bool:
        if epoch not in self.rungs:
            return True
        # the engine's own decision (a trial's replay number is its lineage: a promotion keeps it)
        kwargs = {"promote": True} if self.promote else {}
        go, reason = self.rules.rung_verdict(self.kind, number, vector, list(self.recorded[epoch]), list(DIRECTIONS),
                                             self.rf, self.full_run_every, **kwargs)
        self.recorded[epoch].append(list(vector))
        self.numbers[epoch].append(number)
        if not go:
            self.reasons.append(reason)
            if self.promote:
                self.waiting[number] = epoch
        return bool(go)

    def next_promotion(self, past_quota: bool = False) -> tuple[int, int] | None:
        """``promote``: the waiting trial to resume and its rung (the engine's pick: the highest
        rung first, the best waiting trial in its top ``n // η``; with ``past_quota``, the sampler
        being spent, the best waiting trial wherever it ranks when none is in a top), None when
        there is none."""
        if not self.promote:
            return None
        rungs = [(rung, self.recorded[rung], [self.waiting.get(n) == rung for n in self.numbers[rung]])
                 for rung in sorted(self.rungs, reverse=True)]
        pick = self.rules.pick_promotion(self.kind, rungs, list(DIRECTIONS), self.rf, past_quota=past_quota)
        if pick is None:
            return None
        rung, index, _ = pick
        number = self.numbers[rung][index]
        del self.waiting[number]
        return number, rung


class MoashaMethod:
    """Syne Tune's MOASHA through its public scheduler API: it suggests the configurations
    (random, from its config space) and says CONTINUE or STOP on every epoch's result."""

    def __init__(self, table: Table, seed: int, min_epochs: int, reduction_factor: int, ranks: bool = False) -> None:
        from syne_tune.config_space import choice
        from syne_tune.optimizer.schedulers.multiobjective.moasha import MOASHA

        np.random.seed(seed)  # its config space samples from numpy's global generator
        levels = table.levels
        space = {"method": choice(table.methods), **{name: choice(values) for name, values in levels.items()}}
        self.scheduler = MOASHA(config_space=space, metrics=["error", "gmacs"], do_minimize=True,
                                time_attr="epoch", max_t=table.epochs, grace_period=min_epochs,
                                reduction_factor=reduction_factor, random_seed=seed,
                                multiobjective_priority=_ranked_priority() if ranks else None)
        self.trials: dict[int, Any] = {}

    def ask(self, number: int) -> dict[str, Any]:
        from syne_tune.backend.trial_status import Trial

        config = dict(self.scheduler.suggest().config)
        trial = Trial(trial_id=number, config=config, creation_time=_dt.datetime.now())
        self.scheduler.on_trial_add(trial)
        self.trials[number] = trial
        return config

    def go_on(self, number: int, epoch: int, vector: list[float]) -> bool:
        from syne_tune.optimizer.scheduler import SchedulerDecision

        result = {"epoch": epoch, "error": 100.0 - vector[0], "gmacs": vector[1]}
        return self.scheduler.on_trial_result(self.trials[number], result) != SchedulerDecision.STOP

    def complete(self, number: int, values: tuple[float, float]) -> None:
        trial = self.trials.pop(number)
        self.scheduler.on_trial_complete(trial, {"epoch": self.scheduler.max_t, "error": 100.0 - values[0],
                                                 "gmacs": values[1]})

    def prune(self, number: int, epoch: int, values: tuple[float, float]) -> None:
        self.trials.pop(number)


def _ranked_priority() -> Any:
    """Syne Tune's non-dominated sort (epsilon-net within each front) as a per-trial priority:
    each trial's place in the order, which is what MOASHA's rung compares."""
    from syne_tune.optimizer.schedulers.multiobjective.multiobjective_priority import NonDominatedPriority

    class PlaceInNonDominatedOrder(NonDominatedPriority):
        def priority_unsafe(self, objectives: np.ndarray) -> np.ndarray:
            order = np.asarray(super().priority_unsafe(objectives))
            places = np.empty(len(order), dtype=float)
            places[order] = np.arange(len(order))
            return places

    return PlaceInNonDominatedOrder()


# ----------------------------------------------------------------------------- the simulation


@dataclass
class Run:
    """One arm with one seed: the hypervolume after each finished trial, against epochs spent."""

    method: str
    seed: int
    spent: list[float] = field(default_factory=list)
    hypervolume: list[float] = field(default_factory=list)
    trials: int = 0
    complete: int = 0
    stopped: int = 0
    stopped_at: dict[int, int] = field(default_factory=dict)
    stopped_front: int = 0  # stops of a setting on the whole table's front (a loss the rule made)
    repeats: int = 0  # trials started on a setting an earlier trial had already run to the end
    repeat_epochs: int = 0  # the trial-epochs those repeats spent (none when they are answered or skipped)
    trained: list[str] = field(default_factory=list)  # the settings of the trials that trained, in start order

    @property
    def skipped(self) -> int:
        """Trials left untrained: repeats answered or skipped (counted in ``trials``)."""
        return self.trials - len(self.trained)

    def at(self, budget: float) -> float:
        """The hypervolume once ``budget`` trial-epochs were spent (a step function)."""
        k = int(np.searchsorted(self.spent, budget, side="right"))
        return self.hypervolume[k - 1] if k else 0.0

    def epochs_to_reach(self, target: float) -> float:
        for spent, hv in zip(self.spent, self.hypervolume):
            if hv >= target - 1e-12:
                return spent
        return math.inf


#: what an arm does with a repeat (a setting an earlier trial ran to the end): "train" it again
#: (a study's default), "answer" it from its twin (told the twin's values), or "skip" it (told
#: PRUNED untrained, and the sampler asked again: ``search.repeats: skip``)
REPEAT_MODES = ("train", "answer", "skip")
_REPEATS_DONE = {"answer": "answered", "skip": "skipped"}
#: with repeats answered or skipped, how many repeats in a row the sampler may ask before the arm
#: stops starting trials (it keeps proposing settings it has finished: the space is worn out for
#: it): the product's default ``search.max_repeats_in_a_row``
MAX_REPEATS_IN_A_ROW = SearchSettings().max_repeats_in_a_row


def simulate(table: Table, method: str, seed: int, *, workers: int, budget: int, min_epochs: int,
             reduction_factor: int, population: int, rules: Any, repeats: str = "train",
             full_run_every: int = 0, promote: bool = False, enqueue: Sequence[dict[str, Any]] = ()) -> Run:
    """Replay one search: ``workers`` trials at once on the simulated clock, until ``budget``
    trial-epochs are spent. A full-length arm runs ``budget / epochs`` trials, each to the end
    (its last workers fall idle, as a study of that many trials does); an early-stopping arm
    starts trials until the budget is spent, and those still running then are cut (their epochs
    are spent, their fronts not counted), as a study stopped at that budget would be.

    A trial on a setting an earlier trial ran to the end is a repeat: training is seeded by the
    spec, so it trains the same curve again. It is counted (``Run.repeats``). Two what-ifs
    (Optuna arms only) spend no trial-epochs on a repeat, and do not count it towards a
    full-length arm's trials:

    * ``repeats="answer"``: the repeat is told its twin's values at once (a duplicate COMPLETE
      trial for the sampler);
    * ``repeats="skip"``: the repeat, and a trial on a setting another trial is training at the
      moment, is told PRUNED untrained and the sampler is asked again. Optuna's TPE counts a
      pruned trial of a multi-objective study among its worse group, so the skip also steers
      it away from the settings it has spent. A setting stopped at a rung and asked for again
      trains again (the trial may land on an unjudged slot, as in the engine).

    ``full_run_every`` is the project's arms' ``search.early_stopping.full_run_every`` (trial
    numbers are the replay's own, from 0, as a study's are).

    ``promote`` is ``search.early_stopping.promote``: a trial the rule does not let on waits at
    its rung (told PRUNED), and before the sampler is asked, the engine's pick of a waiting trial
    now in its rung's top resumes from the rung (a new trial on the same setting for the
    sampler; only the epochs after the rung are spent). Under ``repeats="skip"`` a waiting
    setting is skipped too, as the product does; once the sampler is spent, the best waiting
    trial goes on past its rung's quota, as in the product.

    ``enqueue``: settings the sampler's study runs first (``search.enqueue``, and
    ``search.enqueue_cheapest``'s sets), snapped to the table's levels."""
    n_trials = budget  # an upper bound on the trials any arm can start
    full_length = budget // table.epochs if method not in EARLY_STOPPING else None
    if repeats not in REPEAT_MODES:
        raise ValueError(f"repeats: {repeats!r} is not one of {', '.join(REPEAT_MODES)}")
    if repeats != "train" and method in PEERS:
        raise ValueError(f"{method}: repeats={repeats!r} needs an Optuna arm (MOASHA's scheduler is told by its own API)")
    if method in PEERS:
        searcher: Any = MoashaMethod(table, seed, min_epochs, reduction_factor, ranks=method == "moasha_ranks")
        stopper: Any = searcher
    else:
        sampler = make_sampler("tpe" if method in ARM_KIND else method, seed,
                               n_trials if method in EARLY_STOPPING else budget // table.epochs, population)
        searcher = OptunaMethod(table, sampler, enqueue)
        stopper = (RuleStopper(rules, ARM_KIND[method], min_epochs, reduction_factor, table.epochs, full_run_every, promote)
                   if method in EARLY_STOPPING else None)
    run = Run(method, seed)
    front: list[tuple[float, float]] = []
    table_front = table.front_keys()
    hv = 0.0
    spent = 0
    clock: list[tuple[float, int, int]] = []  # (time an epoch ends, trial number, epoch)
    running: dict[int, tuple[Point, list[float]]] = {}
    next_number = 0

    finished: dict[str, tuple[float, float]] = {}  # setting -> its values, once a trial ran it to the end
    repeat_of: dict[int, bool] = {}
    paid = 0  # trials that train (all of them unless repeats are answered or skipped)

    waiting_points: dict[int, tuple[Point, list[float]]] = {}  # promote: trials waiting at a rung

    sampler_spent = False  # promote: the sampler asked only for spent settings; promotions only
    idle = 0  # promote: workers with nothing to run, offered each promotion that appears

    def promote_one(now: float) -> bool:
        pick = stopper.next_promotion(past_quota=sampler_spent) if isinstance(stopper, RuleStopper) else None
        if pick is None:
            return False
        number, rung = pick
        searcher.resume(number)
        running[number] = waiting_points.pop(number)
        run.trained.append(table._key(running[number][0].params))
        heapq.heappush(clock, (now + running[number][0].epoch_s, number, rung + 1))
        return True

    def start(now: float) -> None:
        nonlocal next_number, paid, sampler_spent, idle
        if promote_one(now):
            return
        if sampler_spent:
            idle += 1
            return
        for _ in range(MAX_REPEATS_IN_A_ROW):
            if full_length is not None and paid >= full_length:
                return
            number = next_number
            next_number += 1
            point = table.lookup(searcher.ask(number))
            key = table._key(point.params)
            run.trials += 1
            repeat_of[number] = key in finished
            run.repeats += repeat_of[number]
            if repeats == "answer" and key in finished:
                searcher.complete(number, finished[key])
                continue
            in_training = any(table._key(other.params) == key
                              for other, _ in [*running.values(), *waiting_points.values()])
            if repeats == "skip" and (key in finished or in_training):
                searcher.skip(number)
                continue
            paid += 1
            run.trained.append(key)
            running[number] = (point, [])
            heapq.heappush(clock, (now + point.epoch_s, number, 1))
            return
        if promote:  # the waiting trials go on past their quota, then the search waits (as the product does)
            sampler_spent = True
            if not promote_one(now):
                idle += 1

    for _ in range(workers):
        start(0.0)
    while clock and spent < budget:
        now, number, epoch = heapq.heappop(clock)
        point, seen = running[number]
        spent += 1
        run.repeat_epochs += repeat_of[number]
        top1 = point.top1[epoch - 1]
        seen.append(top1)
        vector = [top1, point.gmacs]  # the rung epoch's top-1 (what the engine passes for a top1 objective), the MACs
        if epoch >= table.epochs:
            values = (point.top1[-1], point.gmacs)
            searcher.complete(number, values)
            finished.setdefault(table._key(point.params), values)
            run.complete += 1
            front.append(values)
            hv = hypervolume_of(front, table.dense_gmacs)
            front = [front[i] for i in _front_indices(front)]
        elif stopper is not None and not stopper.go_on(number, epoch, vector):
            searcher.prune(number, epoch, (top1, point.gmacs))
            run.stopped += 1
            run.stopped_at[epoch] = run.stopped_at.get(epoch, 0) + 1
            run.stopped_front += table._key(point.params) in table_front
            if isinstance(stopper, RuleStopper) and stopper.waiting.get(number) == epoch:
                waiting_points[number] = running[number]
        else:
            heapq.heappush(clock, (now + point.epoch_s, number, epoch + 1))
            continue
        del running[number]
        run.spent.append(float(spent))
        run.hypervolume.append(hv)
        start(now)
        while idle and promote_one(now):
            idle -= 1
    return run


def _front_indices(points: list[tuple[float, float]]) -> list[int]:
    from svite_search.metrics.pareto import non_dominated

    return list(np.flatnonzero(non_dominated(np.array(points), [True, False])))


# ----------------------------------------------------------------------------- the report


def _quantile(values: Sequence[float], q: float) -> float:
    """Linear-interpolation quantile that keeps ``inf`` (a seed that never got there) as ``inf``."""
    ordered = sorted(values)
    pos = q * (len(ordered) - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    if math.isinf(ordered[lo]) or math.isinf(ordered[hi]):
        return math.inf
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def spread(values: Sequence[float]) -> dict[str, float]:
    """Median, quartiles, min and max over seeds."""
    if not len(values):
        return {k: math.nan for k in ("median", "q1", "q3", "min", "max")}
    return {"median": _quantile(values, 0.5), "q1": _quantile(values, 0.25), "q3": _quantile(values, 0.75),
            "min": float(min(values)), "max": float(max(values))}


def summarise(runs: dict[str, list[Run]], budget: int, table: Table) -> dict[str, Any]:
    arms: dict[str, Any] = {}
    for method, per_seed in runs.items():
        arms[method] = {
            "hypervolume_at": {f"{share:g}": spread([r.at(share * budget) for r in per_seed]) for share in CHECKPOINTS},
            "trials": spread([r.trials for r in per_seed]),
            "complete": spread([r.complete for r in per_seed]),
            "stopped": spread([r.stopped for r in per_seed]),
            "stopped_at_epoch": _sum_dicts([r.stopped_at for r in per_seed]),
            "stopped_front_settings": int(sum(r.stopped_front for r in per_seed)),
            "repeats": spread([r.repeats for r in per_seed]),
            "repeat_epoch_share": spread([r.repeat_epochs / budget for r in per_seed]),
        }
    goals: dict[str, Any] = {}
    if "tpe" in runs:
        target = statistics.median(r.at(budget) for r in runs["tpe"])
        goals["tpe_final_hypervolume"] = target
        for method in runs:
            needed = [r.epochs_to_reach(target) / budget for r in runs[method]]
            arms[method]["share_of_tpe_epochs_to_reach_tpe_final"] = spread(needed)
        for arm in (a for a in GOAL_ARMS if a in runs):
            share = arms[arm]["share_of_tpe_epochs_to_reach_tpe_final"]["median"]
            goals[f"{arm}_share"] = {"value": share, "goal": SHARE_GOAL, "met": bool(share <= SHARE_GOAL)}
    for arm in (a for a in GOAL_ARMS if a in runs):
        for peer in (p for p in PEERS if p in runs):
            rows = {}
            for share in CHECKPOINTS:
                p = arms[arm]["hypervolume_at"][f"{share:g}"]["median"]
                m = arms[peer]["hypervolume_at"][f"{share:g}"]["median"]
                rows[f"{share:g}"] = {arm: p, peer: m, "met": bool(p >= m - 1e-12)}
            goals[f"{arm}_vs_{peer}"] = {"at": rows, "met": all(r["met"] for r in rows.values())}
    return {"arms": arms, "goals": goals, "table_front_hypervolume": table.front_hypervolume(),
            "table_front_settings": len(table.front_keys())}


def _sum_dicts(dicts: Sequence[dict[int, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for d in dicts:
        for k, v in d.items():
            out[str(k)] = out.get(str(k), 0) + v
    return dict(sorted(out.items(), key=lambda kv: int(kv[0])))


def plot(runs: dict[str, list[Run]], budget: int, path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    colours = {"tpe": "#1f77b4", "random": "#7f7f7f", "nsga2": "#9467bd", "asha": "#ff7f0e", "pareto": "#2ca02c",
               PROMOTE_ARM: "#17becf",
               "moasha": "#d62728", "moasha_ranks": "#8c564b"}
    grid = np.linspace(0, budget, 201)
    fig, ax = plt.subplots(figsize=(8.0, 5.0), dpi=150)
    for method, per_seed in runs.items():
        curves = np.array([[r.at(b) for b in grid] for r in per_seed])
        med = np.median(curves, axis=0)
        lo, hi = np.quantile(curves, 0.25, axis=0), np.quantile(curves, 0.75, axis=0)
        ax.plot(grid, med, color=colours.get(method), lw=1.8, label=f"{method} (median of {len(per_seed)} seeds)")
        ax.fill_between(grid, lo, hi, color=colours.get(method), alpha=0.15, lw=0)
    if "tpe" in runs:
        target = statistics.median(r.at(budget) for r in runs["tpe"])
        ax.axhline(target, color="#1f77b4", ls=":", lw=0.9)
        ax.axvline(SHARE_GOAL * budget, color="#2ca02c", ls=":", lw=0.9)
        ax.annotate("TPE's final (median)", (budget, target), xytext=(-4, 4), textcoords="offset points",
                    ha="right", fontsize=7, color="#1f77b4")
        ax.annotate(f"goal: {SHARE_GOAL:.0%} of the budget", (SHARE_GOAL * budget, ax.get_ylim()[0]), xytext=(4, 4),
                    textcoords="offset points", fontsize=7, color="#2ca02c")
    ax.set_xlabel("trial-epochs spent")
    ax.set_ylabel("hypervolume (fixed scale: top-1 0-100 %,\nMACs from the dense model's to none)")
    ax.grid(True, alpha=0.25)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.text(0.01, 0.01, "Bands: quartiles over seeds. Tabulated quickstart on digits, replayed.", fontsize=7,
             color="#555555")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path)
    plt.close(fig)
    return path


def _fmt(s: dict[str, float], digits: int = 4) -> str:
    if not math.isfinite(s["median"]):
        return f"never (median); quartiles {s['q1']:.{digits}g}-{s['q3']:.{digits}g}"
    return f"{s['median']:.{digits}f} [{s['q1']:.{digits}f}, {s['q3']:.{digits}f}]"


def _share(s: dict[str, float]) -> str:
    def one(v: float) -> str:
        return "never" if not math.isfinite(v) else f"{100 * v:.0f} %"
    return f"{one(s['median'])} [{one(s['q1'])}, {one(s['q3'])}]"


def _promote_settings_text() -> str:
    settings = PROMOTE_SETTINGS
    return (f"`min_epochs: {settings['min_epochs']}`, `reduction_factor: {settings['reduction_factor']}`, "
            f"`full_run_every: {settings['full_run_every']}`, `promote: true`, `search.repeats: {settings['repeats']}`, "
            "`search.enqueue_cheapest: true`")


def readme(result: dict[str, Any]) -> str:
    cfg, summary = result["config"], result["summary"]
    arms, goals = summary["arms"], summary["goals"]
    lines = ["# Search efficiency: hypervolume per trial-epoch", "",
             f"Written by `make bench-search` (`python -m benchmarks.bench_search`) on {result['date']}; "
             f"{result['machine']}. The machine was shared with other jobs: nothing here is a timing (trials run on a "
             "simulated clock, replayed from the table), so the load does not change the figures.", "",
             "![hypervolume against trial-epochs](hypervolume.png)", "",
             "## The problem", "",
             f"The quickstart study (`studies/quickstart.yaml`: dense, SViTE and S²ViTE on the embedded 8×8 digits, "
             f"`vit_digits`, {cfg['epochs']} epochs; top-1 up, MACs down) as a table of {cfg['points']} settings "
             f"(`benchmarks/data/search_table.json`, recorded once by `benchmarks/search_table.py` with the project's "
             f"trainer: {cfg['record_cpu_min']:.1f} CPU-minutes). Every setting's per-epoch top-1 and MACs are replayed: "
             "a trial that runs k epochs spends k trial-epochs and sees its top-1 after each; each epoch lasts on the "
             "simulated clock what it lasted when recorded, so cheaper settings finish sooner and trials reach a rung "
             "out of order.", "",
             f"Every method: {cfg['seeds']} seeds, {cfg['workers']} asynchronous workers, a budget of "
             f"{cfg['budget']} trial-epochs ({cfg['budget_trials']} full-length trials). Early stopping: rungs at epochs "
             f"{', '.join(map(str, cfg['rungs']))} (`min_epochs: {cfg['min_epochs']}`, `reduction_factor: "
             f"{cfg['reduction_factor']}`, `full_run_every: {cfg.get('full_run_every', 0)}`: "
             f"{_unjudged_text(cfg.get('full_run_every', 0))}); the vector at a rung is the top-1 after the rung's epoch (what the engine "
             "passes for a `top1` objective) and the "
             "MACs. Hypervolume: the report's fixed scale (reference top-1 0 % and the dense model's MACs, ideal 100 % "
             "and no MACs), over the trials run to the end. The whole table's front has hypervolume "
             f"{summary['table_front_hypervolume']:.4f}: no method can pass it.", ""]
    lines += ["## Goals", ""]
    described = {"pareto": "with the product's defaults (the rungs above, `promote: false`, repeats trained)",
                 PROMOTE_ARM: f"as `{PROMOTE_ARM}`, with the settings the README recommends for a space of choices "
                              f"({_promote_settings_text()})"}
    target = goals.get("tpe_final_hypervolume")
    for arm in GOAL_ARMS:
        share = goals.get(f"{arm}_share")
        if not share:
            continue
        lines.append(f"- `pareto` {described[arm]} reaches full-length TPE's final hypervolume ({target:.4f}, median "
                     f"over seeds) with at most {SHARE_GOAL:.0%} of TPE's trial-epochs: median "
                     f"{_share(arms[arm]['share_of_tpe_epochs_to_reach_tpe_final'])} (quartiles in brackets): "
                     f"**{'met' if share['met'] else 'not met'}**.")
        at_goal = arms[arm]["hypervolume_at"][f"{SHARE_GOAL:g}"]["median"]
        final = arms[arm]["hypervolume_at"]["1"]["median"]
        lines.append(f"  At {SHARE_GOAL:.0%} of the budget its median hypervolume is {at_goal:.4f}, "
                     f"{100 * at_goal / target:.1f} % of TPE's final {target:.4f} (TPE's own at {SHARE_GOAL:.0%}: "
                     f"{arms['tpe']['hypervolume_at'][f'{SHARE_GOAL:g}']['median']:.4f}); with the whole budget it "
                     f"reaches {final:.4f} ({100 * final / target:.1f} %).")
    tpe_cheapest = result.get("tpe_cheapest")  # (its share key as _outcome names it)
    if tpe_cheapest:
        lines.append(f"- For comparison, full-length TPE starting from the same cheapest settings "
                     f"(`search.enqueue_cheapest`), repeats skipped: {_fmt(tpe_cheapest['hypervolume_at_goal'], 3)} at "
                     f"{SHARE_GOAL:.0%} of the budget, {_share(tpe_cheapest['share_to_reach_tpe_final'])} of it to reach "
                     f"{target:.4f}.")
    names = {"moasha": "MOASHA's (as Syne Tune ships it)", "moasha_ranks": "MOASHA's (with per-trial ranks)"}
    for arm in GOAL_ARMS:
        for peer in PEERS:
            versus = goals.get(f"{arm}_vs_{peer}")
            if versus:
                missed = [k for k, r in versus["at"].items() if not r["met"]]
                lines.append(f"- at equal budgets `{arm}`'s median hypervolume is at least {names[peer]}: "
                             f"**{'met' if versus['met'] else 'not met'}**"
                             + (f" (behind at {', '.join(f'{float(k):.0%}' for k in missed)} of the budget)" if missed else
                                f" (at each of {', '.join(f'{float(k):.0%}' for k in versus['at'])} of the budget)") + ".")
    if not any(f"{arm}_share" in goals or f"{arm}_vs_{peer}" in goals for arm in GOAL_ARMS for peer in PEERS):
        lines.append("- not judged: the early-stopping arms did not run (see the notes).")
    lines += ["", "## Hypervolume at a share of the budget", "",
              "Median over seeds, quartiles in brackets.", ""]
    shares = [f"{s:g}" for s in CHECKPOINTS]
    header = "| method | " + " | ".join(f"{float(s):.0%} ({float(s) * cfg['budget']:.0f})" for s in shares) + " |"
    lines += [header, "|:---|" + "---:|" * len(shares)]
    for method, arm in arms.items():
        lines.append(f"| {method} | " + " | ".join(_fmt(arm["hypervolume_at"][s], 3) for s in shares) + " |")
    lines += ["", "## Trials and stopping", "",
              f"Medians over seeds; stops summed over all seeds, with how many of them stopped one of the "
              f"{summary['table_front_settings']} settings on the whole table's front (a stop the final front "
              "pays for).", "",
              "| method | trials started | run to the end | stopped early | stops by rung (all seeds) | "
              "stops of front settings | trial-epochs to reach TPE's final hypervolume (share of the budget) |",
              "|:---|---:|---:|---:|:---|---:|---:|"]
    for method, arm in arms.items():
        by_rung = ", ".join(f"epoch {k}: {v}" for k, v in arm["stopped_at_epoch"].items()) or "—"
        reach = _share(arm["share_of_tpe_epochs_to_reach_tpe_final"]) if "share_of_tpe_epochs_to_reach_tpe_final" in arm else "—"
        lines.append(f"| {method} | {arm['trials']['median']:.0f} | {arm['complete']['median']:.0f} | "
                     f"{arm['stopped']['median']:.0f} | {by_rung} | {arm['stopped_front_settings']} | {reach} |")
    correlation = result.get("rung_correlation")
    if correlation:
        lines += ["", "How much a rung can know: the Spearman correlation, over the table's settings, of the top-1 "
                  "at each rung with the final top-1: " + ", ".join(f"epoch {k}: {v:.2f}" for k, v in correlation.items())
                  + "."]
    dominated = result.get("front_dominated_at_rung")
    if dominated:
        lines += ["", f"Of the {summary['table_front_settings']} settings on the table's front, dominated at a rung (top-1 "
                  "and MACs) by another setting, so that a rule stopping every dominated arrival can lose them: "
                  + ", ".join(f"epoch {k}: {v}" for k, v in dominated.items()) + "."]
    lines += _repeats_section(result)
    lines += _promote_section(result)
    rows = result.get("sensitivity")
    if rows:
        lines += ["", "## Sensitivity of `pareto` to its rung settings", "",
                  f"The same {cfg['seeds']} seeds and budget, `pareto` with other `min_epochs`, `reduction_factor` and "
                  "`full_run_every` (0: the rule judges every trial; the first row is the run above). Median over "
                  "seeds, quartiles in brackets.", "",
                  f"| min_epochs | reduction_factor | full_run_every | rungs | hypervolume at {SHARE_GOAL:.0%} of the "
                  "budget | at the whole budget | share of the budget to reach TPE's final | stops of front settings |",
                  "|---:|---:|---:|:---|---:|---:|---:|---:|"]
        for row in rows:
            lines.append(f"| {row['min_epochs']} | {row['reduction_factor']} | {row.get('full_run_every', 0)} | "
                         f"{', '.join(map(str, row['rungs']))} | "
                         f"{_fmt(row['hypervolume_at_goal'], 3)} | {_fmt(row['hypervolume_final'], 3)} | "
                         f"{_share(row['share_to_reach_tpe_final'])} | {row['stopped_front_settings']} |")
    if result.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {n}" for n in result["notes"]]
    lines += ["", "Reproduce: `make bench-search`; the raw figures are in `results.json` (per method and seed, the "
              "hypervolume after each finished trial and the trial-epochs spent by then).", ""]
    return "\n".join(lines)


def _repeats_section(result: dict[str, Any]) -> list[str]:
    """How much of each arm's budget trains a setting again, and what answering repeats from
    their finished twin would buy (the what-if arms)."""
    arms = result["summary"]["arms"]
    if not all("repeats" in arm for arm in arms.values()):
        return []
    lines = ["", "## Repeated settings", "",
             "A repeat is a trial on a setting an earlier trial of the same run had already run to the end. Training "
             "is seeded by the spec, so a repeat trains the same curve again and adds nothing to the front. The "
             "samplers ask for settings from a grid of "
             f"{result['config']['points']} settings, so repeats are common. Medians over seeds, quartiles in brackets.", "",
             "| method | trials started | repeats | share of the budget the repeats spent |",
             "|:---|---:|---:|---:|"]
    for method, arm in arms.items():
        lines.append(f"| {method} | {arm['trials']['median']:.0f} | {_fmt(arm['repeats'], 0)} | "
                     f"{_share(arm['repeat_epoch_share'])} |")
    what_if = result.get("repeats_what_if")
    if what_if:
        target = result["summary"]["goals"].get("tpe_final_hypervolume")
        lines += ["", "What if a repeat did not train? Two ways, the same seeds and budget, for the arms below; a repeat "
                  "spends no trial-epochs and is not one of a full-length arm's trials:", "",
                  "- *answered*: told its twin's values at once (a duplicate finished trial for the sampler);",
                  "- *skipped*: what `search.repeats: skip` does: told PRUNED untrained, and the sampler asked "
                  f"again (the arm ends after {MAX_REPEATS_IN_A_ROW} in a row, the default `max_repeats_in_a_row`); "
                  "a setting another trial is "
                  "training at the moment is skipped too. Optuna's TPE puts a multi-objective study's pruned trials "
                  "in its worse group, so a skip also steers it away from settings it has spent. A setting stopped "
                  "at a rung and asked for again still trains (it may land on an unjudged slot).", "",
                  f"The last column uses the goal's target, TPE's final hypervolume with repeats trained ({target:.4f}).", "",
                  f"| method | repeats | min_epochs | trials asked | trained | hypervolume at {SHARE_GOAL:.0%} of the budget | "
                  "at the whole budget | share of the budget to reach the target |",
                  "|:---|:---|---:|---:|---:|---:|---:|---:|"]
        for row in what_if:
            epochs = "—" if row["min_epochs"] is None else str(row["min_epochs"])
            lines.append(f"| {row['method']} | {_REPEATS_DONE[row['repeats']]} | "
                         f"{epochs} | {_fmt(row['trials'], 0)} | {_fmt(row['trained'], 0)} | "
                         f"{_fmt(row['hypervolume_at_goal'], 3)} | {_fmt(row['hypervolume_final'], 3)} | "
                         f"{_share(row['share_to_reach_tpe_final'])} |")
    return lines


def _promote_section(result: dict[str, Any]) -> list[str]:
    """The promotion form (``promote: true``) beside the stopping form, repeats skipped."""
    rows = result.get("promote_what_if")
    if not rows:
        return []
    target = result["summary"]["goals"].get("tpe_final_hypervolume")
    lines = ["", "## Promotion instead of a final stop", "",
             "`search.early_stopping.promote: true` (ASHA's promotion form): a trial outside its rung's top "
             "`n // reduction_factor` waits there, and before the sampler is asked, the best waiting trial that "
             "now ranks in the top of its rung (the highest rung first) resumes from its checkpoint; only the "
             "epochs after the rung are spent. Both forms below with `search.repeats: skip` (a waiting setting "
             "is skipped too), the same seeds and budget. Once the sampler is spent (it asks only for settings "
             "trained, training or waiting), no new trial can fill a rung, and the waiting trials go on past their "
             "rung's quota, best first, until the budget is spent or none waits. None of these rows starts from "
             f"the cheapest settings; `{PROMOTE_ARM}` above is the last row's settings with "
             "`search.enqueue_cheapest: true`. Medians over seeds, quartiles in brackets; the last "
             f"column uses the goal's target ({target:.4f}).", "",
             f"| form | min_epochs | reduction_factor | full_run_every | trained | hypervolume at {SHARE_GOAL:.0%} of "
             "the budget | at the whole budget | share of the budget to reach the target |",
             "|:---|---:|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(f"| {'promote' if row['promote'] else 'stop'} | {row['min_epochs']} | {row['reduction_factor']} | "
                     f"{row['full_run_every']} | {_fmt(row['trained'], 0)} | {_fmt(row['hypervolume_at_goal'], 3)} | "
                     f"{_fmt(row['hypervolume_final'], 3)} | {_share(row['share_to_reach_tpe_final'])} |")
    return lines


def _sensitivity_entry(item: str, default_every: int) -> tuple[int, int, int] | None:
    """``MINxETA`` or ``MINxETA/K`` as (min_epochs, reduction_factor, full_run_every); None if malformed."""
    rung, slash, every = item.partition("/")
    try:
        values = [int(v) for v in rung.split("x")]
        k = int(every) if slash else default_every
    except ValueError:
        return None
    if len(values) != 2 or values[0] < 1 or values[1] < 2 or k < 0 or k == 1:
        return None
    return values[0], values[1], k


def _sensitivity_row(per_seed: list[Run], min_epochs: int, eta: int, budget: int, table: Table, target: float,
                     rules: Any, full_run_every: int) -> dict[str, Any]:
    return {"min_epochs": min_epochs, "reduction_factor": eta, "full_run_every": full_run_every,
            "rungs": [int(r) for r in rules.rung_epochs(min_epochs, eta, table.epochs)],
            **_outcome(per_seed, budget, target),
            "stopped_front_settings": int(sum(r.stopped_front for r in per_seed))}


def _outcome(per_seed: list[Run], budget: int, target: float) -> dict[str, Any]:
    """What a variant's seeds reached: hypervolume at the goal's share of the budget and at the
    whole budget, and the share of the budget it took to reach ``target``."""
    return {"hypervolume_at_goal": spread([r.at(SHARE_GOAL * budget) for r in per_seed]),
            "hypervolume_final": spread([r.at(budget) for r in per_seed]),
            "share_to_reach_tpe_final": spread([r.epochs_to_reach(target) / budget for r in per_seed])}


def machine() -> str:
    import torch

    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, " \
           f"torch {torch.__version__}"


def _write_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--table", type=Path, default=TABLE, help="the recorded table (search_table.py)")
    parser.add_argument("--out-dir", type=Path, default=OUT_DIR, help="where README.md, results.json, hypervolume.png go")
    parser.add_argument("--seeds", type=int, default=11, help="seeds per method (at least 5 for the goals; odd: the median is a seed)")
    parser.add_argument("--workers", type=int, default=4, help="trials at once (asynchronous)")
    parser.add_argument("--budget-trials", type=int, default=40, help="budget: this many full-length trials' epochs")
    parser.add_argument("--min-epochs", type=int, default=None,
                        help="early stopping: the first rung (default: the product's default for the quickstart "
                             "spec, the first epoch after its train.warmup_epochs)")
    parser.add_argument("--reduction-factor", type=int, default=3, help="early stopping: rung spacing and cut")
    parser.add_argument("--population", type=int, default=10, help="NSGA-II population")
    parser.add_argument("--full-run-every", type=int, default=None,
                        help="early stopping: one trial in every K runs to the end unjudged (default: the product's; 0: none)")
    parser.add_argument("--sensitivity", default="1x3,2x3,4x3,3x2,3x4,3x3/0,3x3/2,3x3/8",
                        help="other settings for the pareto arm, comma-separated ('' for none): MINxETA "
                             "(min_epochs and reduction_factor, with --full-run-every) or MINxETA/K (and "
                             "full_run_every K): how much the result depends on them")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, of {', '.join(METHODS)}")
    parser.add_argument("--tiny", action="store_true", help="a smoke run: 2 seeds, 6 trials' budget")
    parser.add_argument("--out", type=Path, default=None, help="also write the result record here (JSON)")
    args = parser.parse_args(argv)
    if args.tiny:
        args.seeds, args.budget_trials = 2, 6
    if args.full_run_every is None:
        args.full_run_every = product_full_run_every()
    if args.full_run_every < 0 or args.full_run_every == 1:
        parser.error(f"--full-run-every: {args.full_run_every} is not 0 or >= 2")
    alternatives = []
    for item in (i.strip() for i in args.sensitivity.split(",")):
        if item:
            parsed = _sensitivity_entry(item, args.full_run_every)
            if parsed is None:
                parser.error(f"--sensitivity: {item!r} is not MINxETA or MINxETA/K (min >= 1, eta >= 2, K 0 or >= 2)")
            alternatives.append(parsed)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        parser.error(f"--methods: {unknown[0]} is not one of {', '.join(METHODS)}")
    if not args.table.is_file():
        print(f"error: --table {args.table}: no such file (record it with benchmarks/search_table.py)", file=sys.stderr)
        return 2
    table = Table(args.table)
    budget = args.budget_trials * table.epochs
    notes: list[str] = []
    if args.min_epochs is None:
        args.min_epochs = product_min_epochs()
        notes.append(f"min_epochs {args.min_epochs} is the product's default for the quickstart spec (the first epoch "
                     "after its train.warmup_epochs); MOASHA gets the same as its grace_period.")
    rules = load_rules()
    if rules is None:
        skipped = [m for m in methods if m in ARM_KIND]
        methods = [m for m in methods if m not in ARM_KIND]
        if skipped:
            notes.append(f"{', '.join(skipped)} not run: this checkout has no svite_search.search.early_stopping.rules.")
    if any(m in PEERS for m in methods):
        try:
            import syne_tune  # noqa: F401
        except ImportError:
            methods = [m for m in methods if m not in PEERS]
            notes.append("moasha not run: syne-tune is not installed (pip install 'svite-search[bench]').")
    if "moasha_ranks" in methods:
        notes.append("moasha_ranks is MOASHA given a priority that is each trial's place in Syne Tune's non-dominated "
                     "order (through its multiobjective_priority parameter): in syne-tune 0.16 the default "
                     "NonDominatedPriority returns the order itself, and the rung reads the entry at the arriving "
                     "trial's position as its priority, so it judges the arriving trial by another trial's place.")
    if rules is not None and "pareto" in methods:
        notes.append("pareto's rule (svite_search.search.early_stopping.rules): a rung ranks nobody before it holds "
                     "reduction_factor recorded trials; then the arriving trial goes on if it is in the top "
                     "1/reduction_factor of the rung's order by non-dominated front, then crowding distance, so a "
                     "dominated trial stops only once the trials ahead of it fill that quota. Rungs stop at the last "
                     "one that reduction_factor times still fits in the run (no rung at 18 of 20 epochs). "
                     f"full_run_every {args.full_run_every}: {_unjudged_text(args.full_run_every)}, its rung values "
                     "recorded for the others; asha has the same.")
    rungs = [int(r) for r in rules.rung_epochs(args.min_epochs, args.reduction_factor, table.epochs)] if rules else []
    warnings.filterwarnings("ignore", category=UserWarning, module="optuna")
    runs: dict[str, list[Run]] = {}
    started = time.perf_counter()
    for method in methods:
        runs[method] = []
        arm: dict[str, Any] = {"min_epochs": args.min_epochs, "reduction_factor": args.reduction_factor,
                               "full_run_every": args.full_run_every}
        if method == PROMOTE_ARM:
            arm = {**PROMOTE_SETTINGS, "enqueue": product_cheapest()}
        for seed in range(args.seeds):
            runs[method].append(simulate(table, method, seed, workers=args.workers, budget=budget,
                                         population=args.population, rules=rules, **arm))
        print(f"{method}: median final hypervolume "
              f"{statistics.median(r.at(budget) for r in runs[method]):.4f}", file=sys.stderr, flush=True)
    sensitivity = []
    # the goal's target: full-length TPE's final hypervolume (median over seeds)
    target = statistics.median(r.at(budget) for r in runs["tpe"]) if "tpe" in runs else None
    if rules is not None and "pareto" in methods and target is not None:
        for min_epochs, eta, every in alternatives:
            per_seed = [simulate(table, "pareto", seed, workers=args.workers, budget=budget, min_epochs=min_epochs,
                                 reduction_factor=eta, population=args.population, rules=rules, full_run_every=every)
                        for seed in range(args.seeds)]
            sensitivity.append(_sensitivity_row(per_seed, min_epochs, eta, budget, table, target, rules, every))
            print(f"pareto min_epochs {min_epochs} reduction_factor {eta} full_run_every {every}: median hypervolume at "
                  f"{SHARE_GOAL:.0%} {sensitivity[-1]['hypervolume_at_goal']['median']:.4f}", file=sys.stderr, flush=True)
        if "pareto" in runs:
            sensitivity.insert(0, _sensitivity_row(runs["pareto"], args.min_epochs, args.reduction_factor, budget,
                                                   table, target, rules, args.full_run_every))
    what_if: list[dict[str, Any]] = []
    if target is not None:
        # (repeats, method, min_epochs): the default rungs, and for skipped repeats the first rung
        # at epoch 1 as well (the best of the rung settings tried with repeats skipped)
        variants = [("answer", "tpe", args.min_epochs), ("answer", "pareto", args.min_epochs),
                    ("skip", "tpe", args.min_epochs), ("skip", "pareto", args.min_epochs)]
        if args.min_epochs != 1:
            variants.append(("skip", "pareto", 1))
        for mode, method, min_epochs in [v for v in variants if v[1] in runs]:
            per_seed = [simulate(table, method, seed, workers=args.workers, budget=budget, min_epochs=min_epochs,
                                 reduction_factor=args.reduction_factor, population=args.population, rules=rules,
                                 repeats=mode, full_run_every=args.full_run_every)
                        for seed in range(args.seeds)]
            what_if.append({"repeats": mode, "method": method,
                            "min_epochs": min_epochs if method in EARLY_STOPPING else None,
                            "trials": spread([r.trials for r in per_seed]),
                            "trained": spread([len(r.trained) for r in per_seed]),
                            "repeats_asked": spread([r.repeats for r in per_seed]),
                            **_outcome(per_seed, budget, target)})
            print(f"{method}, repeats {_REPEATS_DONE[mode]}, min_epochs {min_epochs}: median "
                  f"hypervolume at {SHARE_GOAL:.0%} {what_if[-1]['hypervolume_at_goal']['median']:.4f}, final "
                  f"{what_if[-1]['hypervolume_final']['median']:.4f}", file=sys.stderr, flush=True)
    promote_what_if: list[dict[str, Any]] = []
    if target is not None and rules is not None and "pareto" in runs and hasattr(rules, "promotions"):
        # (min_epochs, reduction_factor, full_run_every, promote): the default rungs and the first
        # rung at epoch 1 in both forms, and one rung only (reduction_factor 5 at epoch 1)
        every = args.full_run_every
        for min_epochs, eta, unjudged, promote in [
                (args.min_epochs, args.reduction_factor, every, False), (args.min_epochs, args.reduction_factor, every, True),
                (1, args.reduction_factor, every, False), (1, args.reduction_factor, every, True),
                (1, 5, every, False), (1, 5, every, True), (1, 5, 0, True),
                (1, PROMOTE_SETTINGS["reduction_factor"], 0, True)]:
            per_seed = [simulate(table, "pareto", seed, workers=args.workers, budget=budget, min_epochs=min_epochs,
                                 reduction_factor=eta, population=args.population, rules=rules, repeats="skip",
                                 full_run_every=unjudged, promote=promote)
                        for seed in range(args.seeds)]
            promote_what_if.append({"promote": promote, "min_epochs": min_epochs, "reduction_factor": eta,
                                    "full_run_every": unjudged, "trained": spread([len(r.trained) for r in per_seed]),
                                    **_outcome(per_seed, budget, target)})
            print(f"pareto, repeats skipped, {'promote' if promote else 'stop'}, min_epochs {min_epochs}, reduction_factor "
                  f"{eta}, full_run_every {unjudged}: median hypervolume at {SHARE_GOAL:.0%} "
                  f"{promote_what_if[-1]['hypervolume_at_goal']['median']:.4f}", file=sys.stderr, flush=True)
    tpe_cheapest: dict[str, Any] | None = None
    if target is not None and PROMOTE_ARM in runs:
        cheapest = product_cheapest()
        per_seed = [simulate(table, "tpe", seed, workers=args.workers, budget=budget, min_epochs=args.min_epochs,
                             reduction_factor=args.reduction_factor, population=args.population, rules=rules,
                             repeats="skip", enqueue=cheapest)
                    for seed in range(args.seeds)]
        tpe_cheapest = _outcome(per_seed, budget, target)
        print(f"tpe, cheapest first, repeats skipped: median hypervolume at {SHARE_GOAL:.0%} "
              f"{tpe_cheapest['hypervolume_at_goal']['median']:.4f}", file=sys.stderr, flush=True)
    raw = json.loads(args.table.read_text())
    result = {
        "tpe_cheapest": tpe_cheapest,
        "benchmark": "search", "tiny": bool(args.tiny), "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(), "replay_s": round(time.perf_counter() - started, 1),
        "config": {"epochs": table.epochs, "points": len(table.points), "seeds": args.seeds, "workers": args.workers,
                   "budget_trials": args.budget_trials, "budget": budget, "min_epochs": args.min_epochs,
                   "reduction_factor": args.reduction_factor, "full_run_every": args.full_run_every, "rungs": rungs, "population": args.population,
                   "record_cpu_min": sum(p["cpu_s"] for p in raw["points"]) / 60, "methods": list(runs)},
        "summary": summarise(runs, budget, table),
        "rung_correlation": table.rung_correlation(rungs) if rungs else {},
        "front_dominated_at_rung": table.front_dominated_at(rungs) if rungs else {},
        "sensitivity": sensitivity,
        "repeats_what_if": what_if,
        "promote_what_if": promote_what_if,
        "runs": {m: [{"seed": r.seed, "spent": r.spent, "hypervolume": [round(h, 6) for h in r.hypervolume],
                      "trials": r.trials, "complete": r.complete, "stopped": r.stopped, "repeats": r.repeats,
                      "repeat_epochs": r.repeat_epochs} for r in rs]
                 for m, rs in runs.items()},
        "notes": notes,
    }
    args.out_dir.mkdir(parents=True, exist_ok=True)
    _write_atomic(args.out_dir / "results.json", json.dumps(result, indent=1) + "\n")
    plot(runs, budget, args.out_dir / "hypervolume.png",
         f"Hypervolume against trial-epochs: tabulated quickstart, {args.workers} workers")
    _write_atomic(args.out_dir / "README.md", readme(result))
    if args.out is not None:
        _write_atomic(args.out, json.dumps(result) + "\n")
    print(f"wrote {args.out_dir / 'README.md'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
