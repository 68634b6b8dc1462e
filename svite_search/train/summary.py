"""The result of a run: accuracy (best and final, labelled), compute (MACs), sparsity, time.

These keys are the contract of ``svite-search train --json`` and of a search trial's user
attributes: ``top1`` (final epoch), ``top1_best``, ``top1_final``, ``best_epoch``, ``top5``,
``gmacs``, ``dense_gmacs``, ``flops_savings``, ``density``, ``params_nonzero``,
``params_total``, ``epochs``, ``steps``, ``wall_s``, ``train_wall_s`` and, for S²ViTE,
``heads_per_block`` / ``neurons_per_block``; for SViTE, ``layer_density`` (weight name ->
density); for SViTE+, ``keep_tokens``.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from .trainer import Trainer


def _count_params(model: torch.nn.Module) -> tuple[int, int]:
    total = nonzero = 0
    for param in model.parameters():
        total += param.numel()
        nonzero += int(torch.count_nonzero(param).item())
    return nonzero, total


def compute_summary(trainer: "Trainer") -> dict[str, Any]:
    """MACs, density and structure of the model as it stands now."""
    from ..metrics.flops import vit_macs

    model = trainer.model
    layer_density = None
    structure = None
    for comp in trainer.components.values():
        if (densities := comp.layer_densities()) is not None:
            layer_density = densities
        if (kept := comp.structure()) is not None:
            structure = kept
    tokens = None
    if trainer.selector is not None:
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
    for comp in trainer.components.values():
        stats = comp.stats()
        if "density" in stats:
            density = float(stats["density"])
        if "params_nonzero" in stats and "params_total" in stats:
            out["params_nonzero"] = int(stats["params_nonzero"])  # counted over the whole model
    out["density"] = density if density is not None else 1.0
    if layer_density is not None:
        out["layer_density"] = {name: float(d) for name, d in layer_density.items()}
    if structure is not None:
        out["heads_per_block"] = [int(h) for h, _ in structure]
        out["neurons_per_block"] = [int(m) for _, m in structure]
    if tokens is not None:
        out["keep_tokens"] = int(tokens)
    return out


def final_metrics(trainer: "Trainer", *, wall_seconds: float) -> dict[str, Any]:
    history = trainer.state.history
    last = history[-1] if history else {}
    result: dict[str, Any] = {
        "name": trainer.cfg.name,
        "method": trainer.cfg.method,
        "top1": last.get("top1"),
        "top1_final": last.get("top1"),
        "top1_best": trainer.state.best_top1 if history else None,
        "best_epoch": trainer.state.best_epoch if history else None,
        "top5": last.get("top5"),
        "val_loss": last.get("val_loss"),
        "train_loss": last.get("train_loss"),
        "epochs": trainer.state.epoch,
        "epochs_planned": trainer.cfg.train.epochs,
        "steps": trainer.state.step,
        "wall_s": wall_seconds,
        "train_wall_s": trainer.state.train_seconds,
        "device": str(trainer.device),
    }
    result.update(compute_summary(trainer))
    result.update({k: v for k, v in trainer.engine_stats().items() if isinstance(v, (int, float))})
    result["history"] = history
    return result
