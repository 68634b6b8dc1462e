"""``spec_from_dict`` and ``load_spec``: a raw spec mapping or file -> a validated :class:`.StudySpec`."""
from __future__ import annotations

import copy
import dataclasses
import re
from pathlib import Path
from typing import Any

from ...config import apply_overrides, from_dict, read_yaml
from ...errors import ConfigError
from ._conditions import SHRINKING, applies, initial_queue
from ._distributions import _split
from ._objectives import _parse_constraints, _parse_objectives
from ._points import _parse_enqueue
from ._types import (MAX_GRID_POINTS, REPLACED_KEYS, RUNG_PROGRESS_METRICS, RUN_SCALARS, RUN_SECTIONS, STUDY_KEYS,
                     Distribution, EarlyStoppingSettings, ExecutorSettings, Objective, SearchSettings, StudySpec,
                     TrackingSettings)
from ._validate import _validate_values


def _check_early_stopping(settings: EarlyStoppingSettings, objectives: tuple[Objective, ...],
                          base: dict[str, Any], dists: list[Distribution]) -> None:
    """Early stopping needs an objective known after every epoch, and a rung below the
    longest trial's ``train.epochs``."""
    if settings.full_run_every == 1:
        raise ConfigError("search.early_stopping.full_run_every", "1 runs every trial unjudged: set kind: none, "
                          "or 0 to judge every trial")
    if settings.kind == "none":
        if settings.promote:
            raise ConfigError("search.early_stopping.promote", "needs kind asha or pareto (kind none judges no rung)")
        return
    if settings.promote and (base.get("train") or {}).get("checkpoint") is False:
        raise ConfigError("train.checkpoint", "search.early_stopping.promote resumes a waiting trial from its "
                          "checkpoint: set train.checkpoint true")
    if not any(o.metric in RUNG_PROGRESS_METRICS for o in objectives):
        raise ConfigError("search.early_stopping.kind", f"{settings.kind} needs an objective known after every "
                          f"epoch ({', '.join(RUNG_PROGRESS_METRICS)})")
    from ...config import TrainConfig
    from ..early_stopping.rules import default_min_epochs

    searched = {d.key: d for d in dists}
    epochs = searched["train.epochs"].high if "train.epochs" in searched else (base.get("train") or {}).get("epochs")
    if settings.min_epochs is not None:
        first, what = settings.min_epochs, str(settings.min_epochs)
    else:
        if "train.warmup_epochs" in searched:  # the shortest warm-up searched: the earliest rung any trial has
            d = searched["train.warmup_epochs"]
            warmup = d.low if d.low is not None else min(d.choices)
        else:
            warmup = (base.get("train") or {}).get("warmup_epochs", TrainConfig.__dataclass_fields__["warmup_epochs"].default)
        first = default_min_epochs(int(warmup))
        what = f"the default {first} (the first epoch after train.warmup_epochs {int(warmup)})"
    if epochs is not None and first >= int(epochs):
        raise ConfigError("search.early_stopping.min_epochs", f"{what} leaves no rung below "
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
                              "{kind: none | asha | pareto, min_epochs, reduction_factor, full_run_every, promote}, for both executors)")
    search = from_dict(SearchSettings, data.get("search"), "search")
    executor = from_dict(ExecutorSettings, data.get("executor"), "executor")
    tracking = from_dict(TrackingSettings, data.get("tracking"), "tracking")
    objectives = _parse_objectives(data.get("objectives"))
    constraints = _parse_constraints(data.get("constraints"))
    enqueue = _parse_enqueue(search.enqueue, base, dists)
    points = _parse_enqueue(search.points, base, dists, "search.points")
    if search.enqueue_cheapest:
        _check_enqueue_cheapest(search, dists)
    if points and search.sampler != "grid":
        raise ConfigError("search.points", "only with sampler grid (other samplers take search.enqueue)")

    _check_early_stopping(search.early_stopping, objectives, base, dists)
    if search.sampler == "grid":
        for dist in dists if not points else ():
            size = dist.grid_size()
            if size is None:
                raise ConfigError(dist.key, "sampler grid needs choices or a step (this range is continuous)")
            if size > MAX_GRID_POINTS:
                raise ConfigError(f"{dist.key}.step" if dist.kind != "categorical" else f"{dist.key}.choices",
                                  f"makes a grid of {size:.3g} values (at most {MAX_GRID_POINTS})")
        partial = StudySpec(name, base, tuple(dists), objectives, constraints, search, executor, tracking, enqueue, {},
                            points)
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


def _check_enqueue_cheapest(search: SearchSettings, dists: list[Distribution]) -> None:
    """``search.enqueue_cheapest`` needs a sampler that asks (a grid runs every point already),
    a searched value that shrinks the model, and a model and input that are not searched (the
    cheapest setting would depend on them)."""
    if search.sampler == "grid":
        raise ConfigError("search.enqueue_cheapest", "sampler grid runs every point already")
    shaping = next((d.key for d in dists if d.key.startswith(("model.", "data."))), None)
    if shaping is not None:
        raise ConfigError("search.enqueue_cheapest", f"{shaping} is searched: the cheapest setting depends on the "
                          "model and its input; enqueue it with search.enqueue")
    if not any(d.key in SHRINKING for d in dists):
        raise ConfigError("search.enqueue_cheapest", f"searches none of {', '.join(SHRINKING)}: no setting is cheaper "
                          "than another")


def load_spec(path: str | Path, overrides: list[str] | None = None) -> StudySpec:
    """Read, override (``key.path=value``) and validate a study spec file."""
    data = read_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError("spec", f"{path}: the top level must be a mapping")
    return spec_from_dict(apply_overrides(data, overrides), source=str(path))
