"""``svite-search masks``: per-layer densities of a sparse weight distribution.

Shows what SViTE's masks will hold for a model and a global density: which weights are masked,
each one's density (from exact active counts, as the engine draws them), and which layers the
distribution makes fully dense. The model is built on the ``meta`` device (shapes only).

Example::

    svite-search masks --model deit_small_patch16_224 --density 0.5 --distribution erk
    # blocks.*.attn.qkv ≈ 0.504, blocks.*.attn.proj ≈ 0.756; at --density 0.7 every proj is dense
"""
from __future__ import annotations

import argparse
import math
from typing import Any

from ..config import DISTRIBUTIONS
from ..errors import ConfigError


def add_parser(subparsers: Any, name: str, help: str) -> argparse.ArgumentParser:
    p = subparsers.add_parser(name, help=help, description=help)
    p.add_argument("--model", required=True, metavar="NAME", help="a timm ViT name or a model preset (vit_digits)")
    p.add_argument("--density", type=float, required=True, metavar="D", help="global density of the masked weights")
    p.add_argument("--distribution", choices=DISTRIBUTIONS, default="erk", help="per-layer spread (default erk)")
    p.add_argument("--num-classes", type=int, default=None, metavar="C", help="classes of the head (default: the model's)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(run=run)
    return p


def run(args: argparse.Namespace) -> int:
    from . import print_json
    from ._flops import as_option_error, model_options

    kwargs = model_options(num_classes=args.num_classes)  # refused before torch is imported
    from ..engine.sparse import layer_counts, layer_densities, masked_parameters
    from ..report.macs import shape_model

    try:
        model = shape_model(args.model, **kwargs)
    except ConfigError as err:
        raise as_option_error(err) from None
    shapes = {name: tuple(p.shape) for name, p in masked_parameters(model).items()}
    try:
        densities = layer_densities(shapes, args.density, args.distribution)
    except ConfigError as err:
        raise as_option_error(err) from None
    counts = layer_counts(shapes, densities)
    sizes = {name: math.prod(shape) for name, shape in shapes.items()}
    total, active = sum(sizes.values()), sum(counts.values())
    result = {
        "model": args.model,
        "density": args.density,
        "distribution": args.distribution,
        "global_density": active / total,
        "params_masked": total,
        "params_active": active,
        "dense_layers": [name for name in shapes if counts[name] == sizes[name]],
        "layers": {name: counts[name] / sizes[name] for name in shapes},
        "shapes": {name: list(shape) for name, shape in shapes.items()},
    }
    if args.json:
        print_json(result)
        return 0
    width = max(len(name) for name in shapes)
    print(f"{args.model}: {args.distribution} at density {args.density} over {len(shapes)} weights")
    print(f"{'weight':<{width}}  {'shape':<18}{'active':>11}{'of':>11}{'density':>9}")
    for name, shape in shapes.items():
        shape_text = "x".join(map(str, shape))
        print(f"{name:<{width}}  {shape_text:<18}{counts[name]:>11}{sizes[name]:>11}{counts[name] / sizes[name]:>9.4f}")
    print(f"{'global':<{width}}  {'':<18}{active:>11}{total:>11}{active / total:>9.4f}")
    dense = result["dense_layers"]
    print(f"fully dense: {len(dense)} of {len(shapes)} weights" + (f" ({', '.join(dense[:4])}{', ...' if len(dense) > 4 else ''})" if dense else ""))
    return 0
