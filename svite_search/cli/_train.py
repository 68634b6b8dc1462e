"""``svite-search train CONFIG.yaml``: one training run."""
from __future__ import annotations

import argparse
import glob
import os
import sys
from pathlib import Path

from .._study_dir import RUN_CHECKPOINT, RUN_CONFIG, RUN_RESULT

#: The files a training run writes into its directory: all that ``--fresh`` ever removes.
RUN_FILES = (RUN_CHECKPOINT, RUN_CONFIG, RUN_RESULT)


def add_parser(sub: argparse._SubParsersAction, name: str, help_text: str) -> None:
    p = sub.add_parser(
        name,
        help=help_text,
        description="Train one ViT (dense, SViTE, S²ViTE, optionally with SViTE+ tokens) from a YAML "
        "config. Reruns with the same --out resume from its last checkpoint.",
        epilog="example: svite-search train studies/digits.yaml --set method=svite --set sparsity.density=0.5",
    )
    p.add_argument("config", help="run config (YAML); see studies/digits.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE",
                   help="override a config value (repeatable), e.g. train.epochs=5")
    p.add_argument("--out", type=Path, default=None, help="run directory (default: runs/train/<name>)")
    p.add_argument("--fresh", action="store_true",
                   help="start over: remove the run files in --out (last.pt, config.yaml, result.json), nothing else")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..errors import UserInputError

    cfg = load_config(args.config, args.overrides)
    out = args.out or Path("runs") / "train" / cfg.name
    if out.exists() and not out.is_dir():
        raise UserInputError(f"{out}: exists and is not a directory")
    check_not_in_study(out)
    check_writable_dir(out)
    if args.fresh:
        remove_run_files(out)
    from ..train import run_training
    from ..tracking.runs import maybe_track_training

    with maybe_track_training(cfg, out) as tracker:
        result = run_training(cfg, out, progress=False if args.no_progress else None, on_epoch=tracker.on_epoch)
        tracker.finish(result)
    result["out_dir"] = str(out)
    if args.json:
        from . import print_json

        print_json({k: v for k, v in result.items() if k != "history"})
    else:
        _print_human(result)
    return 0


def check_not_in_study(out: Path) -> None:
    """Refuse a run directory that is a study directory or lies inside one (a trial's
    directory): a study's files are written by ``svite-search search`` alone."""
    from .._study_dir import enclosing_study
    from ..errors import UserInputError

    home = enclosing_study(out)
    if home is not None:
        where = "is a study directory" if home == Path(os.path.realpath(out)) else f"is inside the study {home}"
        raise UserInputError(f"--out {out}: {where}; train writes only its own run directories (choose another --out)")


def remove_run_files(out: Path) -> None:
    """``--fresh``: remove what an earlier training run wrote into ``out`` (and temporary files
    a killed write left), never anything else and never a directory."""
    for name in RUN_FILES:
        (out / name).unlink(missing_ok=True)
        for stale in out.glob(f".{glob.escape(name)}.*.tmp"):
            if stale.is_file():
                stale.unlink(missing_ok=True)


def check_writable_dir(out: Path) -> None:
    """Refuse an output directory that could not be created or written, before anything trains
    (an OSError at the first checkpoint would be a runtime failure, not the user's typo). Looks
    at the nearest existing ancestor, so nothing is created here."""
    from ..errors import UserInputError

    probe = out
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        raise UserInputError(f"{out}: cannot be created ({probe} is not a directory)")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise UserInputError(f"{out}: cannot be written ({probe} is not writable)")


def format_macs(gmacs: float, model_gmacs: float) -> str:
    """MACs in the unit that suits the model's size (GMACs for DeiT, MMACs for the digits
    presets), chosen from ``model_gmacs`` so that every figure of one model shares a unit."""
    if model_gmacs >= 0.1:
        return f"{gmacs:.4g} GMACs"
    if model_gmacs >= 1e-4:
        return f"{gmacs * 1e3:.4g} MMACs"
    return f"{gmacs * 1e6:.4g} kMACs"


def _print_human(result: dict) -> None:
    lines = [
        f"run        {result['name']} ({result['method']}), {result['epochs']} epochs, {result['wall_s']:.1f} s",
        f"top-1      final {result['top1']:.2f} %   best {result['top1_best']:.2f} % (epoch {result['best_epoch']})",
        f"compute    {format_macs(result['gmacs'], result['dense_gmacs'])} per image; saving "
        f"{100 * result['flops_savings']:.2f} % vs the dense model "
        f"({format_macs(result['dense_gmacs'], result['dense_gmacs'])}: every weight, head and token)",
        f"weights    density {result['density']:.3f}, {result['params_nonzero']:,} of {result['params_total']:,} nonzero",
        f"saved in   {result['out_dir']}",
    ]
    print("\n".join(lines), file=sys.stdout)
