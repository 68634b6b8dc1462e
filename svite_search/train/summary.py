"""The result of a run: accuracy (best and final, labelled), compute (MACs), sparsity, time.

These keys are the contract of ``svite-search train --json`` and of a search trial's user
attributes: ``top1`` (final epoch), ``top1_best``, ``top1_final``, ``best_epoch``, ``top5``,
``gmacs``, ``dense_gmacs``, ``flops_savings``, ``density``, ``params_nonzero``,
``params_total``, ``epochs``, ``steps``, ``wall_s``, ``train_wall_s`` and, for S²ViTE,
``heads_per_block`` / ``neurons_per_block``; for SViTE, ``layer_density`` (weight name ->
density); for SViTE+, ``keep_tokens``. Every run also has ``weight_density``: the share of
non-zero entries of each weight matrix, measured on its final weights (what the run really
ended with, whatever the method), so no reader has to load its checkpoint to know it.

Why the functions take the parts of a run rather than the trainer: the summary reads the model,
the engine components and the loop's record, nothing else, and says so in its signature.
"""
from __future__ import annotations

from typing import Any, Mapping, Protocol, Sequence

import torch

from ..config import RunConfig
from ..engine.base import Sparsifier

#: Parameters that are dense by design and would only blur a per-layer summary.
_NEVER_MASKED = ("pos_embed", "cls_token", "reg_token", "dist_token")


class RunRecord(Protocol):
    """What the training loop has done (the trainer's ``RunState`` is one)."""

    epoch: int
    step: int
    history: Sequence[Mapping[str, Any]]
    best_top1: float
    best_epoch: int
    train_seconds: float


def _count_params(model: torch.nn.Module) -> tuple[int, int]:
    total = nonzero = 0
    for param in model.parameters():
        total += param.numel()
        nonzero += int(torch.count_nonzero(param).item())
    return nonzero, total


def weight_densities(state_dict: Mapping[str, Any]) -> dict[str, float]:
    """Share of non-zero entries of every weight matrix or kernel (2-D or more) by name."""
    out: dict[str, float] = {}
    for name, tensor in state_dict.items():
        if not isinstance(tensor, torch.Tensor) or tensor.dim() < 2 or not name.endswith("weight"):
            continue
        if any(part in name for part in _NEVER_MASKED) or tensor.numel() == 0:
            continue
        out[name] = float(torch.count_nonzero(tensor).item()) / tensor.numel()
    return out


def compute_summary(model: torch.nn.Module, components: Mapping[str, Sparsifier], *,
                    selects_tokens: bool = False) -> dict[str, Any]:
    """MACs, density and structure of ``model`` as it stands now, as its engine ``components``
    see it; ``selects_tokens``: an SViTE+ token selector is installed."""
    from ..metrics.flops import vit_macs

    layer_density = None
    structure = None
    for comp in components.values():
        if (densities := comp.layer_densities()) is not None:
            layer_density = densities
        if (kept := comp.structure()) is not None:
            structure = kept
    tokens = None
    if selects_tokens:
        from ..engine.tokens import kept_patch_tokens

        tokens = kept_patch_tokens(model)
    report = vit_macs(model, layer_density=layer_density, tokens=tokens, structure=structure)
    nonzero, total = _count_params(model)
    out: dict[str, Any] = {
        "gmacs": report.gmacs,
        "dense_gmacs": report.dense_gmacs,
        "flops_savings": 1.0 - report.total / report.dense_total,
        "params_nonzero": nonzero,
        "params_total": total,
    }
    # The engine knows which weights are active; a structured mask may leave inactive units'
    # weights nonzero (they keep training to earn their growth signal), so prefer its count.
    density = None
    for comp in components.values():
        stats = comp.stats()
        if "density" in stats:
            density = float(stats["density"])
        if "params_nonzero" in stats and "params_total" in stats:
            out["params_nonzero"] = int(stats["params_nonzero"])  # counted over the whole model
    out["density"] = density if density is not None else 1.0
    if layer_density is not None:
        out["layer_density"] = {name: float(d) for name, d in layer_density.items()}
    with torch.no_grad():
        out["weight_density"] = weight_densities(model.state_dict())
    if structure is not None:
        out["heads_per_block"] = [int(h) for h, _ in structure]
        out["neurons_per_block"] = [int(m) for _, m in structure]
    if tokens is not None:
        out["keep_tokens"] = int(tokens)
    return out


def final_metrics(cfg: RunConfig, record: RunRecord, model: torch.nn.Module,
                  components: Mapping[str, Sparsifier], *, device: Any, selects_tokens: bool,
                  engine_stats: Mapping[str, Any], wall_seconds: float) -> dict[str, Any]:
    """The run's result (see the module docstring): ``record`` is the loop's, ``engine_stats``
    the components' statistics by ``<component>.<name>``."""
    history = list(record.history)
    last = history[-1] if history else {}
    result: dict[str, Any] = {
        "name": cfg.name,
        "method": cfg.method,
        "top1": last.get("top1"),
        "top1_final": last.get("top1"),
        "top1_best": record.best_top1 if history else None,
        "best_epoch": record.best_epoch if history else None,
        "top5": last.get("top5"),
        "val_loss": last.get("val_loss"),
        "train_loss": last.get("train_loss"),
        "epochs": record.epoch,
        "epochs_planned": cfg.train.epochs,
        "steps": record.step,
        "wall_s": wall_seconds,
        "train_wall_s": record.train_seconds,
        "device": str(device),
    }
    result.update(compute_summary(model, components, selects_tokens=selects_tokens))
    result.update({k: v for k, v in engine_stats.items() if isinstance(v, (int, float))})
    result["history"] = record.history
    return result
