"""``svite-search export-slim``: physically slim an S²ViTE training checkpoint.

Reads the run's ``last.pt`` (its config, masked model weights and the S²ViTE unit sets), rebuilds
the model, removes the inactive heads and neurons (see
:mod:`svite_search.engine.structured.surgery`) and writes a self-describing file that
:func:`svite_search.engine.structured.load_slim` loads without the training config. The slim
model is checked to reproduce the masked model's outputs before anything is written.

Example::

    svite-search export-slim runs/s2vite/last.pt --out s2vite_slim.pt --json
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from ..errors import UserInputError, first_line


def add_parser(subparsers: Any, name: str, help: str) -> argparse.ArgumentParser:
    p = subparsers.add_parser(name, help=help, description=help)
    p.add_argument("checkpoint", metavar="CHECKPOINT", help="a training checkpoint (last.pt) of a method: s2vite run")
    p.add_argument("--out", required=True, metavar="FILE", help="where to write the slim model")
    p.add_argument("--ema", action="store_true", help="slim the EMA weights instead of the model's")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=run)
    return p


def slim_from_checkpoint(path: str | Path, *, ema: bool = False) -> tuple[Any, dict[str, Any]]:
    """The slim model of an S²ViTE checkpoint and a summary of what was removed.

    The model is rebuilt from the checkpoint's run config (the model factory, plus the SViTE+
    token selector when the run used one), with the number of classes and input channels read
    from the saved weights so no dataset is needed. A missing, unreadable or non-S²ViTE
    checkpoint is a :class:`UserInputError` naming the path.
    """
    import torch

    from ..config import config_from_dict
    from ..engine.structured import BlockMask, slim_model
    from ..models import build_model
    from ..train.checkpoint import load_checkpoint
    from ..train.components import install_model_modules

    path = Path(path)
    state = load_checkpoint(path)
    if "config" not in state:
        raise UserInputError(f"{path}: checkpoint has no run config")
    cfg = config_from_dict(state["config"])
    if cfg.method != "s2vite":
        raise UserInputError(f"{path}: a method: {cfg.method} run; export-slim needs method: s2vite")
    units = (state.get("engine") or {}).get("s2vite")
    if not units or "heads" not in units or "neurons" not in units:
        raise UserInputError(f"{path}: checkpoint holds no S²ViTE unit sets (engine.s2vite)")
    weights = state.get("ema") if ema else state["model"]
    if ema:
        if not weights:
            raise UserInputError(f"{path}: checkpoint holds no EMA weights (train.ema was off)")
        weights = weights.get("state_dict", weights) if isinstance(weights, dict) else weights
        weights = {k.removeprefix("module."): v for k, v in weights.items()}
    try:
        num_classes = int(weights["head.weight"].shape[0]) if "head.weight" in weights else None
        in_chans = int(weights["patch_embed.proj.weight"].shape[1])
    except (KeyError, AttributeError, IndexError):
        raise UserInputError(f"{path}: model weights are not a ViT's (no patch_embed.proj.weight)") from None
    with torch.device("cpu"):
        model = build_model(cfg.model, num_classes=num_classes, in_chans=in_chans)
    install_model_modules(model, cfg)
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:
        raise UserInputError(f"{path}: weights do not fit the config's model ({first_line(err)})") from None
    masks = [
        BlockMask(torch.as_tensor(h).bool(), torch.as_tensor(n).bool())
        for h, n in zip(units["heads"], units["neurons"])
    ]
    slim = slim_model(model.eval(), masks)
    info = {
        "checkpoint": str(path),
        "model": cfg.model.name,
        "heads_per_block": [int(m.heads.sum()) for m in masks],
        "neurons_per_block": [int(m.neurons.sum()) for m in masks],
        "heads_total": [int(m.heads.numel()) for m in masks],
        "neurons_total": [int(m.neurons.numel()) for m in masks],
        "params_dense": sum(p.numel() for p in model.parameters()),
        "params_slim": sum(p.numel() for p in slim.parameters()),
    }
    try:
        from ..engine.tokens import kept_patch_tokens
        from ..metrics.flops import vit_macs

        tokens = kept_patch_tokens(model)
        dense, thin = vit_macs(model, tokens=tokens), vit_macs(slim, tokens=tokens)
        info.update(
            dense_gmacs=dense.total / 1e9,
            gmacs=thin.total / 1e9,
            flops_savings=1.0 - thin.total / dense.total,  # vs the same model before slimming
            plain_dense_gmacs=dense.dense_total / 1e9,
            flops_savings_vs_dense=1.0 - thin.total / dense.dense_total,  # vs every head, neuron and token
            tokens=int(dense.tokens),
            dense_tokens=int(dense.dense_tokens),
        )
    except ImportError:  # pragma: no cover - the FLOPs module is part of the package
        pass
    return slim, info


#: The format string :func:`save_slim` writes first into a slim file's pickle.
SLIM_MARK = b"svite-search/slim-vit"


def is_slim_file(path: Path) -> bool:
    """Whether ``path`` is a slim model this command wrote (looked at without loading it)."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as archive:
            member = next((n for n in archive.namelist() if n.endswith("/data.pkl")), None)
            if member is None:
                return False
            with archive.open(member) as handle:
                return SLIM_MARK in handle.read(256)
    except (OSError, zipfile.BadZipFile, ValueError, EOFError):
        return False


def check_slim_out(checkpoint: Path, out: Path) -> Path:
    """Refuse an ``--out`` that would overwrite something other than an earlier slim model: the
    checkpoint itself, any other existing file (a checkpoint, a study's store), or a place that
    cannot be written. Nothing is created; runs before anything is loaded."""
    from .._study_dir import check_output_path

    check_output_path("--out", out, directory=False)
    if not out.exists():
        return out
    if checkpoint.exists() and os.path.samefile(checkpoint, out):
        raise UserInputError(f"--out {out}: is the checkpoint being slimmed; choose another file")
    if not is_slim_file(out):
        raise UserInputError(f"--out {out}: exists and is not a slim model (export-slim overwrites only its own "
                             "files); choose another file")
    return out


def run(args: argparse.Namespace) -> int:
    from ..engine.structured import save_slim
    from . import print_json

    out = check_slim_out(Path(args.checkpoint), Path(args.out))
    slim, info = slim_from_checkpoint(args.checkpoint, ema=args.ema)
    save_slim(slim, out)
    info["out"] = str(out)
    if args.json:
        print_json(info)
        return 0
    heads = ", ".join(f"{h}/{t}" for h, t in zip(info["heads_per_block"], info["heads_total"]))
    print(f"wrote {out}: heads per block {heads}")
    print(f"parameters {info['params_dense']:,} -> {info['params_slim']:,}")
    if "gmacs" in info:
        from ._train import format_macs

        size = info["plain_dense_gmacs"]
        print(f"MACs {format_macs(info['dense_gmacs'], size)} -> {format_macs(info['gmacs'], size)} per image: "
              f"saving {100 * info['flops_savings']:.2f} % vs the unslimmed model (same {info['tokens']} of {info['dense_tokens']} tokens), "
              f"{100 * info['flops_savings_vs_dense']:.2f} % vs the dense model "
              f"({format_macs(size, size)}: every head, neuron and token, the baseline `train` reports)")
    return 0
