"""The study's sampler and pruner, built from the spec.

Every trial draws from a seed of its own (:class:`TrialSeededSampler`), through Optuna's public
API only: the sampler is built afresh for each trial with that seed (``seed=`` of its
constructor), never re-seeded through its private random state.
"""
from __future__ import annotations

import threading
import warnings
from typing import Any, Callable

import optuna

from ..spec import StudySpec

#: A sampler factory: ``seed`` -> a new sampler drawing from that seed (None: unseeded).
SamplerFactory = Callable[[int | None], optuna.samplers.BaseSampler]


def trial_seed(seed: int, number: int) -> int:
    """The seed trial ``number`` draws from in a study seeded with ``seed``."""
    return (int(seed) * 1_000_003 + int(number)) % 2**32


class TrialSeededSampler(optuna.samplers.BaseSampler):
    """A sampler that gives every trial a seed of its own: the study seed and the trial number.

    Why: a sampler seeded once draws the same sequence in every process that builds it. A resumed
    study would draw its first parameter sets again, and two drivers working on one study (a
    shared database, or two ``search`` commands on one directory) would draw the same values at
    the same time. Seeding by trial number keeps a single driver exactly reproducible and gives
    concurrent drivers, whose trials have different numbers, different draws.

    How: ``make(seed)`` builds the spec's sampler (TPE, NSGA-II, ...) with the trial's seed when
    the trial starts (:meth:`before_trial`); that sampler serves every call about the trial until
    :meth:`after_trial`. Optuna's samplers read the study's history from the storage on each
    call, so a fresh one per trial decides as a long-lived one would. With ``seed`` None, one
    unseeded sampler serves every trial.
    """

    def __init__(self, make: SamplerFactory, seed: int | None) -> None:
        self.make = make
        self.seed = seed
        self._shared = make(None) if seed is None else None
        self._per_trial: dict[int, optuna.samplers.BaseSampler] = {}
        self._lock = threading.Lock()

    def sampler_for(self, trial: Any) -> optuna.samplers.BaseSampler:
        """The sampler that draws trial ``trial``'s values (built on first use)."""
        if self._shared is not None:
            return self._shared
        number = int(trial.number)
        with self._lock:
            sampler = self._per_trial.get(number)
            if sampler is None:
                sampler = self._per_trial[number] = self.make(trial_seed(int(self.seed), number))
            return sampler

    def before_trial(self, study: optuna.Study, trial: Any) -> None:
        self.sampler_for(trial).before_trial(study, trial)

    def infer_relative_search_space(self, study: optuna.Study, trial: Any) -> dict[str, Any]:
        return self.sampler_for(trial).infer_relative_search_space(study, trial)

    def sample_relative(self, study: optuna.Study, trial: Any, search_space: dict[str, Any]) -> dict[str, Any]:
        return self.sampler_for(trial).sample_relative(study, trial, search_space)

    def sample_independent(self, study: optuna.Study, trial: Any, param_name: str, param_distribution: Any) -> Any:
        return self.sampler_for(trial).sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: optuna.Study, trial: Any, state: Any, values: Any) -> None:
        try:
            self.sampler_for(trial).after_trial(study, trial, state, values)
        finally:
            if self._shared is None:
                with self._lock:
                    self._per_trial.pop(int(trial.number), None)

    def reseed_rng(self) -> None:
        """Optuna's own call (``study.optimize(n_jobs > 1)``): unseed the samplers in use."""
        with self._lock:
            samplers = [self._shared] if self._shared is not None else list(self._per_trial.values())
        for sampler in samplers:
            sampler.reseed_rng()


def make_sampler(spec: StudySpec, *, parallel: bool = False) -> optuna.samplers.BaseSampler:
    """The spec's sampler, seeded per trial (see :class:`TrialSeededSampler`). ``grid`` runs the
    enqueued grid (see :func:`svite_search.search.space.grid_points`); its sampler only fills in
    values a grid point leaves open, which there are none of."""
    search = spec.search
    return TrialSeededSampler(sampler_factory(spec, parallel=parallel),
                              None if search.seed is None else int(search.seed))


def sampler_factory(spec: StudySpec, *, parallel: bool) -> SamplerFactory:
    """``seed`` -> the spec's Optuna sampler (``search.sampler`` and its settings) drawing from ``seed``."""
    search = spec.search
    n = spec.n_trials
    startup = search.n_startup_trials if search.n_startup_trials is not None else min(10, max(2, n // 3))
    population = search.population_size or max(2, min(50, n))

    def make(seed: int | None) -> optuna.samplers.BaseSampler:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            warnings.simplefilter("ignore", FutureWarning)
            if search.sampler == "tpe":
                return optuna.samplers.TPESampler(
                    seed=seed, n_startup_trials=startup, multivariate=True, group=True, constant_liar=parallel
                )
            if search.sampler == "nsga2":
                return optuna.samplers.NSGAIISampler(seed=seed, population_size=population)
            if search.sampler == "nsga3":
                return optuna.samplers.NSGAIIISampler(seed=seed, population_size=population)
            if search.sampler == "gp":
                return optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup)
            return optuna.samplers.RandomSampler(seed=seed)

    return make


def make_pruner(spec: StudySpec) -> optuna.pruners.BasePruner:
    """No Optuna pruner: early stopping (``search.early_stopping``) is decided by the driver's
    rung engine for both executors (Optuna's pruners cannot judge a multi-objective study)."""
    return optuna.pruners.NopPruner()
