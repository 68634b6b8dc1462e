"""The table's rows: each setting of the paper's grid, its MACs, the paper's figures and ours.

For every setting the MACs saving is computed analytically
(:func:`svite_search.report.macs.macs_for`, what the ``flops`` command counts), beside the
paper's top-1 where it reports one and the mean ± sd top-1 of our finished runs with that setting,
one row per recipe.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Sequence

from ..macs import macs_for
from .grid import model_args, paper_results, paper_settings, reported_for
from .runs import RunRecord, find_runs, matches, recipe_names

COLUMNS = (
    "model", "label", "setting", "method", "density", "head_density", "mlp_density", "tokens_kept", "tokens_total",
    "dense_gmacs", "gmacs", "macs_saving_pct", "paper_top1", "paper_flops_saving_pct", "paper_time_saving_pct",
    "paper_source", "paper_note", "our_top1", "our_top1_sd", "our_runs", "our_recipe", "our_run_dirs",
    "our_macs_saving_pct", "sparsity",
)


def _mean(values: list[float]) -> float | None:
    values = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return sum(values) / len(values) if values else None


def _sd(values: list[float]) -> float | None:
    """Sample standard deviation (n - 1), ``None`` below two values."""
    values = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if len(values) < 2:
        return None
    mean = sum(values) / len(values)
    return math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def paper_rows(models: Sequence[str] | None = None, runs: Sequence[str | Path] = (),
               num_classes: int | None = None, records: Sequence[RunRecord] | None = None) -> list[dict[str, Any]]:
    """One dict per setting (per setting and recipe where runs of several recipes match) with
    the columns of :data:`COLUMNS`; ``records`` saves a second scan of ``runs``."""
    records = list(records) if records is not None else (find_runs(runs) if runs else [])
    settings = paper_settings(models, num_classes)
    names = recipe_names([r for r in records if any(matches(s, r) for s in settings)])
    roots = [Path(r) for r in runs]
    labels = {name: info["label"] for name, info in paper_results()["models"].items()}
    rows = []
    for setting in settings:
        report = macs_for(setting.model, density=setting.density, head_density=setting.head_density,
                          mlp_density=setting.mlp_density, keep_tokens=setting.tokens_kept, **model_args(num_classes))
        reported = reported_for(setting) or {}
        mine = [r for r in records if matches(setting, r)]
        base = {
            "model": setting.model,
            "label": labels.get(setting.model, setting.model),
            "setting": setting.describe(),
            "method": setting.method,
            "density": setting.density,
            "sparsity": None if setting.density is None else 1.0 - setting.density,
            "head_density": setting.head_density,
            "mlp_density": setting.mlp_density,
            "tokens_kept": setting.tokens_kept,
            "tokens_total": setting.tokens_total,
            "dense_gmacs": report.dense_gmacs,
            "gmacs": report.gmacs,
            "macs_saving_pct": 100.0 * report.savings,
            "paper_top1": reported.get("top1"),
            "paper_flops_saving_pct": reported.get("flops_savings_pct"),
            "paper_time_saving_pct": reported.get("time_savings_pct"),
            "paper_source": reported.get("source"),
            "paper_note": reported.get("note"),
        }
        groups: dict[str, list[RunRecord]] = {}
        for r in mine:  # one cell per recipe: runs that differ in more than the seed never pool
            groups.setdefault(r.recipe, []).append(r)
        if not groups:
            rows.append({**base, "our_top1": None, "our_top1_sd": None, "our_runs": 0, "our_recipe": None,
                         "our_run_dirs": [], "our_macs_saving_pct": None})
        for recipe in sorted(groups, key=lambda k: names[k]):
            part = groups[recipe]
            saving = _mean([r.flops_savings for r in part])
            rows.append({
                **base,
                "our_top1": _mean([r.top1 for r in part]),
                "our_top1_sd": _sd([r.top1 for r in part]),
                "our_runs": len(part),
                "our_recipe": names[recipe],
                "our_recipe_values": json.loads(recipe),
                "our_run_dirs": sorted((_shown_path(r.path, roots) for r in part), key=_natural),
                "our_macs_saving_pct": None if saving is None else 100.0 * saving,
            })
    return rows


def _natural(text: str) -> list[Any]:
    """Sort key that puts ``trials/2`` before ``trials/15``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def _shown_path(path: str, roots: Sequence[Path]) -> str:
    """A run directory as the user named it: under the ``--runs`` folder it was found in."""
    for root in roots:
        try:
            return str(root / Path(path).relative_to(root))
        except ValueError:
            continue
    return path
