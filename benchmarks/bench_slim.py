"""S²ViTE benchmark: does a physically slimmed ViT save as much time as it saves MACs?

DeiT-Small at 224 px keeps, per block, ``int(6 · head_density)`` heads and
``int(1536 · mlp_density)`` MLP neurons at (0.7, 0.6) and (0.5, 0.5). The unit sets are drawn
at random (which units are kept does not change the speed), the model is masked as S²ViTE
masks it, and :func:`svite_search.engine.structured.slim_model` turns it into a genuinely
smaller timm ViT; the slim outputs are checked against the masked model's. The slim model is
then timed against the dense one with :func:`svite_search.metrics.latency.compare_latency`
(A/B interleaved after a warm-up, so load from other processes hits both alike) at batch 1 and
batch 32. The time saving is the median of the per-pair time ratios; it is set against the
analytic MACs saving of :func:`svite_search.metrics.flops.vit_macs` read from the slim
architecture. Goal: time saving >= 80 % of the MACs saving (the paper: 24.7 % time for 33 %
FLOPs at (0.7, 0.6) on a GPU).

CPU runs use one intra-op thread by default: on a small shared machine a busy sibling core
stalls multi-threaded kernels at every barrier, which would bury the effect being measured.

Usage::

    python benchmarks/bench_slim.py                  # writes reports/benchmarks/slim.json
    python benchmarks/bench_slim.py --tiny --out slim_smoke.json   # seconds-long smoke test
    python benchmarks/bench_slim.py --device cuda --threads 0
"""
from __future__ import annotations

import argparse
import copy
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any

import svite_search  # noqa: F401  (torchvision import guard before timm)
import timm
import torch
from torch import nn

from svite_search.engine.structured import BlockMask, check_same_outputs, random_block_masks, slim_model
from svite_search.metrics.flops import vit_macs
from svite_search.metrics.latency import compare_latency

CONFIGS = ((0.7, 0.6), (0.5, 0.5))  # (head_density, mlp_density)
BATCHES = (1, 32)
GOAL = 0.8  # time saving / MACs saving
REPORT = Path(__file__).resolve().parents[1] / "reports" / "benchmarks" / "slim.json"


@torch.no_grad()
def masked_copy(dense: nn.Module, masks: list[BlockMask]) -> nn.Module:
    """``dense`` with inactive q/k/v rows and fc2 columns zeroed, as S²ViTE leaves a model."""
    model = copy.deepcopy(dense)
    for block, mask in zip(model.blocks, masks):
        attn = block.attn
        attn.qkv.weight.view(3, attn.num_heads, attn.head_dim, -1)[:, ~mask.heads] = 0
        block.mlp.fc2.weight[:, ~mask.neurons] = 0
    return model.eval()


def timing_plan(args: argparse.Namespace, batch: int) -> tuple[int, int]:
    """(warm-up pairs, timed pairs): more pairs for the cheap batch-1 passes."""
    if args.tiny:
        return 1, 3
    if batch == 1:
        return args.warmup * 2, args.repeats * 3
    return args.warmup, args.repeats


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device)
    if args.threads is None:
        threads = 1 if device.type == "cpu" else None
    else:
        threads = args.threads or None  # 0: leave torch's thread count alone
    torch.manual_seed(0)
    if args.tiny:
        model_name = "vit_tiny_patch16_224"
        model_kwargs: dict[str, Any] = dict(img_size=32, patch_size=4, depth=2, num_classes=10)
        img_size, batches = 32, (1, 2)
    else:
        model_name, model_kwargs, img_size, batches = "deit_small_patch16_224", {}, 224, BATCHES
    dense = timm.create_model(model_name, pretrained=False, **model_kwargs).eval()
    dense_macs = vit_macs(dense).total
    dense_params = sum(p.numel() for p in dense.parameters())
    started = time.perf_counter()
    rows = []
    for head_density, mlp_density in CONFIGS:
        masks = random_block_masks(dense, head_density, mlp_density, seed=0)
        masked = masked_copy(dense, masks)
        slim = slim_model(masked, masks).eval()
        max_diff = check_same_outputs(masked, slim)
        macs = vit_macs(slim).total
        macs_saving = 1.0 - macs / dense_macs
        del masked
        for batch in batches:
            warmup, repeats = timing_plan(args, batch)
            comparison = compare_latency(
                dense.to(device), slim.to(device), (3, img_size, img_size),
                batch_size=batch, warmup=warmup, repeats=repeats, threads=threads,
            )
            row: dict[str, Any] = {
                "head_density": head_density,
                "mlp_density": mlp_density,
                "batch_size": batch,
                "heads_per_block": masks[0].kept[0],
                "neurons_per_block": masks[0].kept[1],
                "heads_total": int(masks[0].heads.numel()),
                "neurons_total": int(masks[0].neurons.numel()),
                "params_dense": dense_params,
                "params_slim": sum(p.numel() for p in slim.parameters()),
                "slim_vs_masked_max_abs_diff": max_diff,
                "gmacs_per_image": macs / 1e9,
                "macs_saving": macs_saving,
                "time_saving": comparison.time_saving,
                "time_saving_iqr": [1.0 - comparison.ratio_q75, 1.0 - comparison.ratio_q25],
                "time_saving_best": 1.0 - comparison.b.min_s / comparison.a.min_s,
                "time_over_macs_saving": comparison.time_saving / macs_saving if macs_saving > 0 else None,
                "meets_goal": comparison.time_saving >= GOAL * macs_saving,
                "dense_images_per_s": comparison.a.throughput,
                "images_per_s": comparison.b.throughput,
                "speedup": comparison.speedup,
                "latency": comparison.to_dict(),
            }
            rows.append(row)
            print(
                f"({head_density}, {mlp_density}) batch {batch:>2}: {row['images_per_s']:7.2f} img/s "
                f"(dense {row['dense_images_per_s']:6.2f}), MACs -{macs_saving:6.1%}, "
                f"time -{row['time_saving']:6.1%} (best-of -{row['time_saving_best']:6.1%}), "
                f"ratio {row['time_over_macs_saving']:.2f}",
                file=sys.stderr,
            )
    return {
        "benchmark": "slim",
        "what": "inference time of physically slimmed S²ViTE models vs the dense model; MACs are analytic",
        "model": model_name + (" (tiny smoke configuration)" if args.tiny else ""),
        "img_size": img_size,
        "dense_gmacs_per_image": dense_macs / 1e9,
        "dense_params": dense_params,
        "statistic": "time_saving = 1 - median of per-pair time ratios (slim / dense), interleaved "
        "after warm-up; time_saving_best from the fastest pass of each",
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "threads": rows[0]["latency"]["threads"],
        "torch": torch.__version__,
        "timm": timm.__version__,
        "platform": platform.platform(),
        "wall_s": time.perf_counter() - started,
        "goal": f"time saving >= {GOAL:.0%} of the MACs saving",
        "paper": "24.7 % time saving for 33 % FLOPs saving, DeiT-Small at (0.7, 0.6)",
        "all_meet_goal": all(r["meets_goal"] for r in rows),
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny model, a few passes (smoke test)")
    parser.add_argument(
        "--out", type=Path, default=None,
        help="JSON file (default: reports/benchmarks/slim.json; --tiny writes only with --out)",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--warmup", type=int, default=2, help="untimed pairs per comparison at batch 32")
    parser.add_argument("--repeats", type=int, default=7, help="timed pairs at batch 32 (3x at batch 1)")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch intra-op threads (CPU default: 1; 0 = torch's default)"
    )
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
