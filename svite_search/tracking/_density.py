"""Per-layer density of a finished trial, for its MLflow run.

Why measured from the weights: the run's own final weights are the ground truth of what sparsity
it ended with, whatever the method (SViTE masks, S²ViTE's zeroed heads, the reference preset's
Bernoulli counts). The trial's result may already carry ``layer_density`` (name -> density);
otherwise the checkpoint in the trial's run directory (``last.pt``) is read on the CPU.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping

log = logging.getLogger(__name__)

#: Parameters that are dense by design and would only blur the summary.
_NEVER_MASKED = ("pos_embed", "cls_token", "reg_token", "dist_token")


def weight_densities(state_dict: Mapping[str, Any]) -> dict[str, float]:
    """Share of non-zero entries of every weight matrix or kernel (2-D or more) by name."""
    import torch

    out: dict[str, float] = {}
    for name, tensor in state_dict.items():
        if not isinstance(tensor, torch.Tensor) or tensor.dim() < 2 or not name.endswith("weight"):
            continue
        if any(part in name for part in _NEVER_MASKED) or tensor.numel() == 0:
            continue
        out[name] = float(torch.count_nonzero(tensor).item()) / tensor.numel()
    return out


def _from_checkpoint(path: Path) -> dict[str, float] | None:
    try:
        import torch

        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a missing or unreadable checkpoint only costs the summary
        log.debug("no layer densities from %s: %s", path, err)
        return None
    model = state.get("model") if isinstance(state, dict) else None
    return weight_densities(model) if isinstance(model, Mapping) else None


def density_summary(result: Mapping[str, Any] | None, run_dir: str | Path | None = None) -> dict[str, Any]:
    """``{"global_density", "layers", "min_layer", "max_layer", "heads_per_block",
    "neurons_per_block", "keep_tokens"}``, with what is known (empty dict if nothing is)."""
    result = result or {}
    layers = result.get("layer_density") or result.get("layer_densities")
    if not isinstance(layers, Mapping) and run_dir is not None:
        checkpoint = Path(run_dir) / "last.pt"
        layers = _from_checkpoint(checkpoint) if checkpoint.is_file() else None
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
