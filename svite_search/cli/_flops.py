"""``svite-search flops``: analytic MACs of a dense or sparse ViT, and the saving.

Counts multiply-accumulates (MACs, the paper's and DeiT's "FLOPs") of one image on a model built
on the ``meta`` device, so any size is instant and allocates nothing. Every option is applied:
SViTE weight density (``--density``, ``--distribution``), S²ViTE heads and neurons
(``--head-density``, ``--mlp-density``) and SViTE+ tokens (``--keep-tokens`` or ``--keep-ratio``).

Example::

    svite-search flops --model deit_small_patch16_224 --density 0.5 --keep-tokens 187 --json
"""
from __future__ import annotations

import argparse
from typing import Any

from ..config import DISTRIBUTIONS
from ..errors import ConfigError, UserInputError

EPILOG = (
    "MACs are multiply-accumulates, counted analytically (the paper's 'FLOPs'; DeiT-Small: "
    "4.60 GMACs at 224 px). --keep-tokens counts ALL tokens per block including the class "
    "token, as in the paper (197 = 196 patches + cls; --keep-tokens 187 keeps 186 patches); "
    "--keep-ratio is the share of patch tokens kept."
)


def add_parser(subparsers: Any, name: str, help: str) -> argparse.ArgumentParser:
    p = subparsers.add_parser(name, help=help, description=help, epilog=EPILOG)
    p.add_argument("--model", required=True, metavar="NAME", help="a timm ViT name or a model preset (vit_digits)")
    p.add_argument("--img-size", type=int, default=None, metavar="S", help="input resolution (default: the model's)")
    p.add_argument("--num-classes", type=int, default=None, metavar="C", help="classes of the head (default: the model's)")
    p.add_argument("--density", type=float, default=None, metavar="D", help="SViTE global weight density in (0, 1]")
    p.add_argument(
        "--distribution", choices=DISTRIBUTIONS, default=None, help="per-layer spread of --density (default erk)"
    )
    p.add_argument("--head-density", type=float, default=None, metavar="A", help="S²ViTE share of heads kept per block")
    p.add_argument("--mlp-density", type=float, default=None, metavar="M", help="S²ViTE share of MLP neurons kept")
    tokens = p.add_mutually_exclusive_group()
    tokens.add_argument(
        "--keep-tokens", type=int, default=None, metavar="K", help="SViTE+ tokens kept per block, cls included (187 of 197)"
    )
    tokens.add_argument("--keep-ratio", type=float, default=None, metavar="R", help="SViTE+ share of patch tokens kept")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=run)
    return p


def model_options(*, img_size: int | None = None, num_classes: int | None = None) -> dict[str, Any]:
    """``timm.create_model`` arguments of ``--img-size`` and ``--num-classes`` (unset: the
    model's own); a value below 1 exits 2 before anything heavy is imported."""
    kwargs: dict[str, Any] = {}
    for flag, value in (("img-size", img_size), ("num-classes", num_classes)):
        if value is not None:
            if value < 1:
                raise UserInputError(f"--{flag}: {value} must be >= 1")
            kwargs[flag.replace("-", "_")] = value
    return kwargs


def as_option_error(err: ConfigError) -> UserInputError:
    """Name the command-line option (``--keep-tokens``) instead of the keyword (``keep_tokens``)."""
    message = str(err)[len(err.field) + 2 :] if err.field else str(err)
    return UserInputError(f"--{err.field.replace('_', '-')}: {message}")


def run(args: argparse.Namespace) -> int:
    from ..report.macs import macs_for
    from . import print_json

    if args.distribution is not None and args.density is None:
        raise UserInputError("--distribution: needs --density")
    distribution = args.distribution or "erk"
    kwargs = model_options(img_size=args.img_size, num_classes=args.num_classes)
    try:
        report = macs_for(
            args.model,
            density=args.density,
            distribution=distribution,
            head_density=args.head_density,
            mlp_density=args.mlp_density,
            keep_tokens=args.keep_tokens,
            keep_ratio=args.keep_ratio,
            **kwargs,
        )
    except ConfigError as err:
        raise as_option_error(err) from None
    result = {
        "model": args.model,
        "img_size": list(report.img_size) if report.img_size else None,
        "num_classes": report.num_classes,
        "density": args.density,
        "distribution": distribution if args.density is not None else None,
        "head_density": args.head_density,
        "mlp_density": args.mlp_density,
        "keep_tokens": args.keep_tokens,
        "keep_ratio": args.keep_ratio,
        "tokens": report.tokens,
        "dense_tokens": report.dense_tokens,
        "unit": "GMACs (1e9 multiply-accumulates per image)",
        "dense_gmacs": report.dense_gmacs,
        "gmacs": report.gmacs,
        "flops_savings": report.savings,
        "breakdown_gmacs": {k: v / 1e9 for k, v in report.by_kind().items()},
        "dense_breakdown_gmacs": {k: v / 1e9 for k, v in report.by_kind(dense=True).items()},
    }
    if args.json:
        print_json(result)
        return 0
    settings = [f"{k}={result[k]}" for k in ("density", "distribution", "head_density", "mlp_density", "keep_tokens", "keep_ratio") if result[k] is not None]
    print(f"{args.model}: {report.dense_tokens} tokens dense, {report.tokens} kept" + (f"  ({', '.join(settings)})" if settings else ""))
    unit, scale = ("GMACs", 1e9) if report.dense_total >= 1e8 else ("MMACs", 1e6)
    print(f"{'part':<16}{'dense ' + unit:>14}{unit:>12}")
    sparse_kinds, dense_kinds = report.by_kind(), report.by_kind(dense=True)
    for kind, value in sparse_kinds.items():
        if value or dense_kinds[kind]:
            print(f"{kind:<16}{dense_kinds[kind] / scale:>14.4f}{value / scale:>12.4f}")
    print(f"{'total':<16}{report.dense_total / scale:>14.4f}{report.total / scale:>12.4f}")
    print(f"FLOPs (MACs) saving: {100 * report.savings:.2f} %")
    return 0
