"""SViTE: unstructured dynamic sparse training, and the schedule shared with S²ViTE.

The method, and where it departs from the authors' code: ``docs/METHOD.md``, sections 1, 2 and 4.

Public API:

* :class:`SViTE`, :class:`SViTEConfig`: the sparsifier (a :class:`~svite_search.engine.Sparsifier`).
  Construct with ``(model, optimizer, config)``, call ``step()`` after every
  ``optimizer.step()``; ``state_dict()`` / ``load_state_dict()``; read-outs ``stats()``,
  ``layer_densities()``, ``masks``; ``apply_masks(module)`` for an EMA copy.
* :func:`masked_parameters`: which weights are masked (every Linear/Conv2d weight outside the
  token selector), keyed by the unwrapped model's parameter names.
* :func:`layer_densities`, :func:`layer_counts`: ERK / ER / uniform per-layer densities and
  exact active counts (``svite-search masks`` prints them).
* :class:`DynamicSparsityConfig`: the settings SViTE and S²ViTE share (schedule,
  ``optimizer_state``, ``seed``); both engines' configs extend it.
* The schedule, for any dynamic-sparsity engine (S²ViTE imports it from here):
  :class:`PruneSchedule` (``is_update_step(t)`` after optimizer step ``t`` counted from 1:
  ``t % ΔT == 0 and t < t_end · T``; ``prune_rate(t)``: cosine, linear or constant decay from
  ``dr0`` to ``dr_min`` over all ``T`` steps; ``num_updates``), :func:`prune_rate` (the same as a
  function), and :func:`resolve_update_interval` (``ΔT`` from ``update_interval`` or
  ``updates_per_run``).

Example (a plain PyTorch loop)::

    sparsifier = SViTE(model, optimizer, SViTEConfig(density=0.5, total_steps=epochs * len(loader)))
    for epoch in range(epochs):
        for images, targets in loader:
            loss = criterion(model(images), targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            sparsifier.step()  # mask the weights; prune and grow on update iterations

S²ViTE reuses the schedule like this (its config extends :class:`DynamicSparsityConfig`)::

    T = 10_000  # optimizer steps in the run
    schedule = DynamicSparsityConfig(total_steps=T, updates_per_run=80).schedule()
    assert schedule.update_interval == resolve_update_interval(T, 0.8, updates_per_run=80) == 99
    assert schedule.num_updates == 80
    n_active = 6  # units active in a block
    n_prune = math.ceil(schedule.prune_rate(schedule.update_interval) * n_active)  # 3 at the first update
"""
from __future__ import annotations

from ._config import (
    DEFAULT_OPTIMIZER_STATE,
    OPTIMIZER_STATE_POLICIES,
    RESETTING_POLICIES,
    DynamicSparsityConfig,
    reads_own_state_only,
)
from ._distributions import DISTRIBUTIONS, check_density, check_distribution, layer_counts, layer_densities
from ._schedule import DECAYS, PAPER_UPDATES_PER_RUN, PruneSchedule, count_updates, prune_rate, resolve_update_interval
from ._targets import DENSE_MODULE_NAMES, masked_parameters, tied_weight_names, unwrap
from ._unstructured import SViTE, SViTEConfig, calibrate_second_moment

__all__ = [
    "DECAYS",
    "DEFAULT_OPTIMIZER_STATE",
    "DENSE_MODULE_NAMES",
    "DISTRIBUTIONS",
    "DynamicSparsityConfig",
    "OPTIMIZER_STATE_POLICIES",
    "PAPER_UPDATES_PER_RUN",
    "PruneSchedule",
    "RESETTING_POLICIES",
    "reads_own_state_only",
    "SViTE",
    "SViTEConfig",
    "calibrate_second_moment",
    "check_density",
    "check_distribution",
    "count_updates",
    "layer_counts",
    "layer_densities",
    "masked_parameters",
    "prune_rate",
    "resolve_update_interval",
    "tied_weight_names",
    "unwrap",
]
