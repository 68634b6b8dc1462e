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

The package is laid out by role: :mod:`._types` (the parts of a spec), :mod:`._distributions`
(one searched value), :mod:`._objectives` (objectives and constraints), :mod:`._points`
(``search.enqueue`` / ``search.points``), :mod:`._conditions` (which values apply to a run, the
grid), :mod:`._validate` (every sampled run is runnable) and :mod:`._load` (the whole spec).
"""
from ..._mapping import set_dotted as set_key
from ._conditions import S2VITE_ONLY, SVITE_ONLY, TOKEN_SWITCHES, applies, cheapest_points, grid_points, initial_queue, ordered, tokens_on
from ._distributions import parse_distribution
from ._load import load_spec, spec_from_dict
from ._types import (DEFAULT_N_TRIALS, DEFAULT_OBJECTIVES, EARLY_STOPPING, EPOCH_METRICS, EXECUTORS, MAX_GRID_POINTS, REPEATS,
                     MAX_TRIALS, METRICS, REPLACED_KEYS, RUN_SCALARS, RUN_SECTIONS, RUNG_PROGRESS_METRICS,
                     RUNG_STRUCTURE_METRICS, SAMPLERS, STUDY_KEYS, Constraint, Distribution, EarlyStoppingSettings,
                     ExecutorSettings, LatencySettings, Objective, SearchSettings, StudySpec, TrackingSettings)

__all__ = [
    "DEFAULT_N_TRIALS", "DEFAULT_OBJECTIVES", "EARLY_STOPPING", "EPOCH_METRICS", "EXECUTORS", "MAX_GRID_POINTS", "REPEATS",
    "MAX_TRIALS", "METRICS", "REPLACED_KEYS", "RUNG_PROGRESS_METRICS", "RUNG_STRUCTURE_METRICS", "RUN_SCALARS",
    "RUN_SECTIONS", "S2VITE_ONLY", "SAMPLERS", "STUDY_KEYS", "SVITE_ONLY", "TOKEN_SWITCHES", "Constraint",
    "Distribution", "EarlyStoppingSettings", "ExecutorSettings", "LatencySettings", "Objective", "SearchSettings",
    "StudySpec", "TrackingSettings", "applies", "cheapest_points", "grid_points", "initial_queue", "load_spec", "ordered",
    "parse_distribution", "set_key", "spec_from_dict", "tokens_on",
]
