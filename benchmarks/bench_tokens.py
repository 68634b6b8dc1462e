"""SViTE+ benchmark: does dropping tokens save as much time as it saves multiply-accumulates?

DeiT-Small at 224 px (196 patches + the class token = 197 tokens). For the paper's grid of
187, 177, 138 and 99 kept tokens (of 197, the class token included, so 186, 176, 137 and 98
patches), a token selector gathers the kept tokens and every block runs on the shorter
sequence. Each selector model is timed against the dense model with
:func:`svite_search.metrics.latency.compare_latency` (A/B interleaved after a warm-up, so load
from other processes hits both alike); the time saving is the median of the per-pair ratios,
set against the analytic MACs saving of :func:`svite_search.metrics.flops.vit_macs`. Goal:
time saving >= 80 % of the MACs saving. The authors' zero-mask mode (fixed length) is
measured too, to show that it saves nothing.

CPU runs use one intra-op thread by default: on a small shared machine a busy sibling core
stalls multi-threaded kernels at every barrier (measured here: a tiny ViT took 190 ms per
batch with 2 threads against 3.5 ms with 1), which would bury the effect being measured.

Usage::

    python benchmarks/bench_tokens.py                 # writes reports/benchmarks/tokens.json
    python benchmarks/bench_tokens.py --tiny --out /tmp/tokens.json   # seconds-long smoke test
    python benchmarks/bench_tokens.py --device cuda --batch-size 64
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import svite_search  # noqa: F401  (torchvision import guard before timm)
import timm
import torch
from torch import nn

from svite_search.engine.tokens import find_token_selector, install_token_selector, kept_patch_tokens
from svite_search.metrics.flops import vit_macs
from svite_search.metrics.latency import compare_latency

PAPER_TOKENS = (187, 177, 138, 99)  # of 197, class token included
GOAL = 0.8  # time saving / MACs saving
REPORT = Path(__file__).resolve().parents[1] / "reports" / "benchmarks" / "tokens.json"


def selector_models(dense: nn.Module, kept_tokens: list[int]) -> dict[str, nn.Module]:
    """Copies of ``dense`` with a gathering selector per kept-token count (prefix included),
    and one zero-mode copy at the smallest count (the authors' fixed-length masking)."""
    prefix = int(dense.num_prefix_tokens)
    models: dict[str, nn.Module] = {}
    for total in kept_tokens:
        model = copy.deepcopy(dense)
        install_token_selector(model, keep_tokens=total - prefix, mode="gather")
        models[f"gather_{total}"] = model.eval()
    zero = copy.deepcopy(dense)
    install_token_selector(zero, keep_tokens=min(kept_tokens) - prefix, mode="zero")
    models[f"zero_{min(kept_tokens)}"] = zero.eval()
    return models


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device)
    threads = args.threads or (1 if device.type == "cpu" else None)
    torch.manual_seed(0)
    if args.tiny:
        model_name = "vit_tiny_patch16_224"
        model_kwargs: dict[str, Any] = dict(img_size=32, patch_size=4, depth=2, num_classes=10)
        img_size, kept = 32, [61, 49, 33]  # of 65 tokens
        batch, warmup, repeats = 2, 1, 3
    else:
        model_name, model_kwargs, img_size = "deit_small_patch16_224", {}, 224
        kept = list(PAPER_TOKENS)
        batch, warmup, repeats = args.batch_size, args.warmup, args.repeats
    dense = timm.create_model(model_name, **model_kwargs).eval().to(device)
    prefix = int(dense.num_prefix_tokens)
    total_tokens = int(dense.patch_embed.num_patches) + prefix
    dense_macs = vit_macs(dense).total
    load_before = os.getloadavg()
    started = time.perf_counter()
    rows = []
    for name, model in selector_models(dense, kept).items():
        selector = find_token_selector(model)
        patches = kept_patch_tokens(model)  # what the blocks process (all patches in zero mode)
        macs = vit_macs(model, tokens=patches).total
        comparison = compare_latency(
            dense, model.to(device), (3, img_size, img_size),
            batch_size=batch, warmup=warmup, repeats=repeats, threads=threads,
        )
        macs_saving = 1.0 - macs / dense_macs
        row: dict[str, Any] = {
            "model": name,
            "mode": selector.mode,
            "kept_tokens": selector.keep_tokens + prefix,
            "blocks_see_tokens": patches + prefix,
            "gmacs_per_image": macs / 1e9,
            "macs_saving": macs_saving,
            "time_saving": comparison.time_saving,
            "time_saving_iqr": [1.0 - comparison.ratio_q75, 1.0 - comparison.ratio_q25],
            "time_saving_best": 1.0 - comparison.b.min_s / comparison.a.min_s,
            "dense_images_per_s": comparison.a.throughput,
            "images_per_s": comparison.b.throughput,
            "latency": comparison.to_dict(),
        }
        if selector.mode == "gather":
            row["time_over_macs_saving"] = comparison.time_saving / macs_saving if macs_saving > 0 else None
            row["meets_goal"] = comparison.time_saving >= GOAL * macs_saving
        rows.append(row)
        print(
            f"{name:>11}: {row['blocks_see_tokens']:>3} tokens in blocks, {row['images_per_s']:7.2f} img/s "
            f"(dense {row['dense_images_per_s']:6.2f}), MACs -{macs_saving:6.1%}, "
            f"time -{row['time_saving']:6.1%} (best-of -{row['time_saving_best']:6.1%})",
            file=sys.stderr,
        )
    gathered = [r for r in rows if r["mode"] == "gather"]
    return {
        "benchmark": "tokens",
        "what": "inference time of gathered SViTE+ tokens vs the dense model; MACs are analytic",
        "model": model_name + (" (tiny smoke configuration)" if args.tiny else ""),
        "img_size": img_size,
        "total_tokens": total_tokens,
        "dense_gmacs_per_image": dense_macs / 1e9,
        "batch_size": batch,
        "warmup_pairs": warmup,
        "timed_pairs": repeats,
        "statistic": "time_saving = 1 - median of per-pair time ratios (selector / dense), "
        "interleaved; time_saving_best from the fastest pass of each",
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "threads": rows[0]["latency"]["threads"],
        "torch": torch.__version__,
        "timm": timm.__version__,
        "platform": platform.platform(),
        "wall_s": time.perf_counter() - started,
        "load_average_1min": {"before": load_before[0], "after": os.getloadavg()[0], "cpus": os.cpu_count()},
        "goal": f"time saving >= {GOAL:.0%} of the MACs saving",
        "all_meet_goal": all(r["meets_goal"] for r in gathered),
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny model, a few passes (smoke test)")
    parser.add_argument(
        "--out", type=Path, default=None,
        help="JSON file (default: reports/benchmarks/tokens.json; --tiny writes only with --out)",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=2, help="untimed pairs per comparison")
    parser.add_argument("--repeats", type=int, default=12, help="timed pairs per comparison")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (CPU default: 1)")
    args = parser.parse_args(argv)
    result = run(args)
    out = args.out if args.out is not None else (None if args.tiny else REPORT)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "rows"} | {"out": str(out) if out else None}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
