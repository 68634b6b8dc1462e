"""Per-layer density of a finished trial, for its MLflow run.

Read from what the trial wrote, in the driver, without loading a tensor: its result's
``layer_density`` (SViTE: the engine's per-layer densities) or else its ``weight_density`` (the
share of non-zero entries of each weight matrix, measured by the trial on its final weights,
whatever the method; see :mod:`svite_search.train.summary`).
"""
from __future__ import annotations

from typing import Any, Mapping


def density_summary(result: Mapping[str, Any] | None) -> dict[str, Any]:
    """``{"global_density", "layers", "min_layer", "max_layer", "heads_per_block",
    "neurons_per_block", "keep_tokens"}``, with what is known (empty dict if nothing is)."""
    result = result or {}
    layers = result.get("layer_density") or result.get("layer_densities") or result.get("weight_density")
    summary: dict[str, Any] = {}
    if result.get("density") is not None:
        summary["global_density"] = float(result["density"])
    if isinstance(layers, Mapping) and layers:
        summary["layers"] = {str(k): float(v) for k, v in layers.items()}
        summary["min_layer"] = min(summary["layers"].values())
        summary["max_layer"] = max(summary["layers"].values())
    for key in ("heads_per_block", "neurons_per_block", "keep_tokens"):
        if result.get(key) is not None:
            summary[key] = result[key]
    return summary
