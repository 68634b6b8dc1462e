"""Our finished runs on disk, and which of them pool into one cell of the paper's table.

A run is any ``result.json`` with its ``config.yaml`` under the directories searched: ``train``
runs and study trials alike (the copies a tracked run keeps as MLflow artifacts are skipped).
Runs pool into one cell only when they share a recipe (:func:`recipe_of`: everything but the
setting and the seed); a setting run with two recipes gets a row for each.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import yaml

from ..._mapping import flatten
from ..._study_dir import RUN_CONFIG, RUN_RESULT
from ...errors import UserInputError
from .grid import Setting, same_value

#: Folders under a study directory that hold copies of runs, not runs.
_SKIP_DIRS = {"mlartifacts", "mlruns", "ray_results"}


@dataclass(frozen=True)
class RunRecord:
    """A finished run found on disk: what it trained and what it measured."""

    path: str
    model: str
    method: str
    density: float | None
    head_density: float | None
    mlp_density: float | None
    patches_kept: int | None
    top1: float | None
    flops_savings: float | None
    recipe: str = ""  # everything it was trained with except the setting and the seed, as JSON


#: Config keys that are not part of a run's recipe: its name, where it logs, how many threads,
#: whether it checkpoints, and the seeds (runs that differ only there are repeats).
_NOT_RECIPE = {"name", "tracking", "train.seed", "data.seed", "train.threads", "train.checkpoint", "train.device",
               "data.num_workers", "data.root", "data.eval_batch_size"}
#: Config keys that make the setting (a row of the table), also not part of the recipe.
_SETTING_KEYS = {"method", "sparsity.density", "sparsity.head_density", "sparsity.mlp_density", "tokens.keep_ratio",
                 "tokens.keep_tokens"}


def recipe_of(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The recipe of a run config: every resolved value except the setting, the seeds and the
    bookkeeping (:data:`_NOT_RECIPE`), and except the knobs its method does not use (a dense
    run's sparsity schedule, S²ViTE's head density in an SViTE run, the token temperature when
    no token is dropped). Two runs pool into one cell only when their recipes are equal."""
    flat = flatten(cfg)
    method = str(cfg.get("method", "dense"))
    tokens = cfg.get("tokens") or {}
    selecting = tokens.get("keep_tokens") is not None or float(tokens.get("keep_ratio", 1.0) or 1.0) < 1.0
    recipe = {}
    for key, value in flat.items():
        if key in _NOT_RECIPE or key.split(".")[0] in _NOT_RECIPE or key in _SETTING_KEYS:
            continue
        if key.startswith("sparsity.") and method == "dense":
            continue
        if key.startswith("tokens.") and not selecting:
            continue
        recipe[key] = value
    return recipe


def _patches_kept(cfg: Mapping[str, Any], result: Mapping[str, Any]) -> int | None:
    if result.get("keep_tokens") is not None:
        return int(result["keep_tokens"])
    tokens = cfg.get("tokens") or {}
    if tokens.get("keep_tokens") is not None:
        return int(tokens["keep_tokens"])
    return None if float(tokens.get("keep_ratio", 1.0)) >= 1.0 else -1  # selector on, count unknown


def find_runs(directories: Iterable[str | Path]) -> list[RunRecord]:
    """Every finished run (``result.json`` beside its ``config.yaml``) under ``directories``."""
    records = []
    for directory in directories:
        root = Path(directory)
        if not root.exists():
            raise UserInputError(f"--runs: {root}: no such directory")
        for result_path in sorted(root.rglob(RUN_RESULT)):
            if _SKIP_DIRS & set(result_path.relative_to(root).parts):
                continue  # the copies a tracked run keeps as MLflow artifacts
            config_path = result_path.with_name(RUN_CONFIG)
            if not config_path.is_file():
                continue
            try:
                result = json.loads(result_path.read_text())
                cfg = yaml.safe_load(config_path.read_text()) or {}
            except (OSError, ValueError, yaml.YAMLError):
                continue
            sparsity = cfg.get("sparsity") or {}
            method = str(cfg.get("method", "dense"))
            records.append(RunRecord(
                path=str(result_path.parent),
                model=str((cfg.get("model") or {}).get("name", "")),
                method=method,
                density=float(sparsity["density"]) if method == "svite" and "density" in sparsity else None,
                head_density=float(sparsity["head_density"]) if method == "s2vite" else None,
                mlp_density=float(sparsity["mlp_density"]) if method == "s2vite" else None,
                patches_kept=_patches_kept(cfg, result),
                top1=result.get("top1"),
                flops_savings=result.get("flops_savings"),
                recipe=json.dumps(recipe_of(cfg), sort_keys=True, default=str),
            ))
    return records


def matches(setting: Setting, run: RunRecord) -> bool:
    """Whether ``run`` trained the configuration of ``setting``."""
    if run.model != setting.model or run.method != setting.method or run.patches_kept != setting.patches_kept:
        return False
    if setting.method == "svite":
        return same_value(run.density, setting.density)
    if setting.method == "s2vite":
        return same_value(run.head_density, setting.head_density) and same_value(run.mlp_density, setting.mlp_density)
    return True


def recipe_names(records: Sequence[RunRecord]) -> dict[str, str]:
    """A short name per distinct recipe (``R1``, ``R2``, ... by how many runs use it)."""
    counts: dict[str, int] = {}
    for r in records:
        counts[r.recipe] = counts.get(r.recipe, 0) + 1
    ordered = sorted(counts, key=lambda k: (-counts[k], k))
    return {recipe: f"R{i}" for i, recipe in enumerate(ordered, 1)}


def recipe_differences(recipes: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """Per recipe name, the values where it differs from the other recipes that have that key
    (``train.epochs=20``); keys one method does not use (a dense run's schedule) are not differences."""
    shown: dict[str, str] = {}
    for name, recipe in recipes.items():
        parts = []
        for key, value in sorted(recipe.items()):
            values = {json.dumps(r[key], default=str) for r in recipes.values() if key in r}
            if len(values) > 1:
                parts.append(f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}")
        shown[name] = ", ".join(parts)
    return shown
