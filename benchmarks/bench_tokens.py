"""SViTE+ benchmark: does dropping tokens save as much time as it saves multiply-accumulates?

DeiT-Small at 224 px (196 patches + the class token = 197 tokens). For the paper's grid of
187, 177, 138 and 99 kept tokens (of 197, the class token included, so 186, 176, 137 and 98
patches), a token selector gathers the kept tokens and every block runs on the shorter
sequence. Inference throughput is measured against the dense model, A/B interleaved after a
warm-up (each round runs every model once, in a rotating order, so background load hits all
of them alike), and the time saving is set against the analytic MACs saving. Goal: time
saving >= 80 % of the MACs saving. The authors' zero-mask mode (fixed length) is measured too,
to show that it saves nothing.

Usage::

    python benchmarks/bench_tokens.py                 # writes reports/benchmarks/tokens.json
    python benchmarks/bench_tokens.py --tiny --out /tmp/tokens.json   # seconds-long smoke test
    python benchmarks/bench_tokens.py --device cuda   # on a GPU
"""
from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import svite_search  # noqa: F401  (torchvision import guard before timm)
import timm
import torch
from torch import nn

from svite_search.engine.tokens import find_token_selector, install_token_selector, kept_patch_tokens

PAPER_TOKENS = (187, 177, 138, 99)  # of 197, class token included
GOAL = 0.8  # time saving / MACs saving
REPORT = Path(__file__).resolve().parents[1] / "reports" / "benchmarks" / "tokens.json"


def analytic_macs(model: nn.Module, patch_tokens: int | None) -> int:
    """MACs of one image: patch embedding, blocks on ``patch_tokens + prefix`` tokens, head.

    Uses :func:`svite_search.metrics.flops.vit_macs` when present; the fallback is the same
    formula for a dense model: per block ``N (3 D a + a D + 2 D m) + 2 N^2 a`` plus the patch
    embedding and the classifier.
    """
    try:
        from svite_search.metrics.flops import vit_macs
    except ImportError:
        vit_macs = None
    if vit_macs is not None:
        result = vit_macs(model, tokens=patch_tokens)
        return int(getattr(result, "total", result))
    patches = int(model.patch_embed.num_patches)
    tokens = (patch_tokens if patch_tokens is not None else patches) + int(model.num_prefix_tokens)
    conv = model.patch_embed.proj
    macs = patches * conv.weight.numel()
    for block in model.blocks:
        dim = block.attn.qkv.in_features
        attn = block.attn.qkv.out_features // 3
        hidden = block.mlp.fc1.out_features
        macs += tokens * (3 * dim * attn + attn * dim + 2 * dim * hidden) + 2 * tokens * tokens * attn
    if isinstance(model.head, nn.Linear):
        macs += model.head.weight.numel()
    return int(macs)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved_times(
    runners: dict[str, Callable[[], Any]], *, warmup: int, rounds: int, device: torch.device
) -> dict[str, list[float]]:
    """Seconds per call of every runner, one call of each per round in a rotating order."""
    names = list(runners)
    for _ in range(warmup):
        for name in names:
            runners[name]()
    _sync(device)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        order = names[r % len(names):] + names[: r % len(names)]
        for name in order:
            _sync(device)
            start = time.perf_counter()
            runners[name]()
            _sync(device)
            times[name].append(time.perf_counter() - start)
    return times


def build_models(model_name: str, model_kwargs: dict[str, Any], kept_tokens: list[int], device: torch.device):
    """The dense model and, per kept-token count, a copy with a gathering selector; plus one
    zero-mode copy at the smallest count (the authors' fixed-length masking)."""
    dense = timm.create_model(model_name, **model_kwargs).eval()
    prefix = int(dense.num_prefix_tokens)
    models: dict[str, nn.Module] = {"dense": dense}
    for total in kept_tokens:
        model = copy.deepcopy(dense)
        install_token_selector(model, keep_tokens=total - prefix, mode="gather")
        models[f"gather_{total}"] = model.eval()
    zero = copy.deepcopy(dense)
    install_token_selector(zero, keep_tokens=min(kept_tokens) - prefix, mode="zero")
    models[f"zero_{min(kept_tokens)}"] = zero.eval()
    return {name: m.to(device) for name, m in models.items()}


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device)
    threads = args.threads or (1 if device.type == "cpu" else None)
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    if args.tiny:
        model_name = "vit_tiny_patch16_224"
        model_kwargs = dict(img_size=32, patch_size=4, depth=2, num_classes=10)
        img_size, kept = 32, [61, 49, 33]  # of 65 tokens
        batch, warmup, rounds = 2, 1, 3
    else:
        model_name, model_kwargs, img_size = "deit_small_patch16_224", {}, 224
        kept = list(PAPER_TOKENS)
        batch, warmup, rounds = args.batch_size, args.warmup, args.rounds
    models = build_models(model_name, model_kwargs, kept, device)
    dense = models["dense"]
    x = torch.randn(batch, 3, img_size, img_size, device=device)
    dtype = torch.float16 if device.type == "cuda" and args.half else None

    def runner(model: nn.Module) -> Callable[[], Any]:
        def call() -> Any:
            with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                return model(x)

        return call

    times = interleaved_times(
        {name: runner(m) for name, m in models.items()}, warmup=warmup, rounds=rounds, device=device
    )
    total_tokens = int(dense.patch_embed.num_patches) + int(dense.num_prefix_tokens)
    dense_macs = analytic_macs(dense, None)
    dense_s = statistics.median(times["dense"])
    prefix = int(dense.num_prefix_tokens)
    rows = []
    for name, model in models.items():
        seconds = statistics.median(times[name])
        selector = find_token_selector(model)
        patches = kept_patch_tokens(model)  # what the blocks process (all of them in zero mode)
        macs = analytic_macs(dense, patches)
        macs_saving = 1.0 - macs / dense_macs
        time_saving = 1.0 - seconds / dense_s
        row = {
            "model": name,
            "mode": "dense" if selector is None else selector.mode,
            "kept_tokens": total_tokens if selector is None else selector.keep_tokens + prefix,
            "blocks_see_tokens": total_tokens if patches is None else patches + prefix,
            "gmacs_per_image": macs / 1e9,
            "macs_saving": macs_saving,
            "median_s_per_batch": seconds,
            "images_per_s": batch / seconds,
            "time_saving": time_saving,
            "times_s": times[name],
        }
        if name.startswith("gather"):
            row["time_over_macs_saving"] = time_saving / macs_saving if macs_saving > 0 else None
            row["meets_goal"] = time_saving >= GOAL * macs_saving
        rows.append(row)
    gathered = [r for r in rows if r["mode"] == "gather"]
    return {
        "benchmark": "tokens",
        "what": "inference throughput of gathered SViTE+ tokens vs the dense model; MACs are analytic",
        "model": model_name + (" (tiny smoke configuration)" if args.tiny else ""),
        "img_size": img_size,
        "total_tokens": total_tokens,
        "batch_size": batch,
        "warmup_rounds": warmup,
        "timed_rounds": rounds,
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "dtype": "float16 autocast" if dtype is not None else "float32",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "platform": platform.platform(),
        "goal": f"time saving >= {GOAL:.0%} of the MACs saving",
        "all_meet_goal": all(r["meets_goal"] for r in gathered),
        "rows": rows,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny model, a few rounds (smoke test)")
    parser.add_argument(
        "--out", type=Path, default=None,
        help="JSON file (default: reports/benchmarks/tokens.json; --tiny writes only with --out)",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds")
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds (median is reported)")
    parser.add_argument(
        "--threads", type=int, default=None,
        help="torch intra-op threads (default on CPU: 1; on a shared machine a busy sibling core "
        "stalls multi-threaded kernels at every barrier and buries the signal)",
    )
    parser.add_argument("--half", action="store_true", help="float16 autocast on CUDA")
    args = parser.parse_args(argv)
    result = run(args)
    out = args.out if args.out is not None else (None if args.tiny else REPORT)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
    for row in result["rows"]:
        print(
            f"{row['model']:>11}: {row['blocks_see_tokens']:>3} tokens in blocks, "
            f"{row['images_per_s']:8.2f} img/s, MACs -{row['macs_saving']:6.1%}, time -{row['time_saving']:6.1%}",
            file=sys.stderr,
        )
    print(json.dumps({k: v for k, v in result.items() if k != "rows"} | {"out": str(out) if out else None}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
