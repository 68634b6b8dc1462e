"""Engine overhead: a training step with the SViTE sparsifier against one without, same model.

SViTE keeps the dense compute (masks zero weights, they do not shrink the matmuls), so every
extra second is the engine's: masking the weights after every optimizer step (under AdamW, an
element-wise optimizer, the inactive weights' Adam moments are zeroed at updates only), plus one
topology update every ``ΔT`` steps.

Two trainers of one model (the same initial weights, each with its own AdamW) run their own
``Trainer.train_step`` interleaved after a warm-up: A dense, B dense + SViTE at 50 % ERK
density with no update due. ``sparsifier.step()`` is timed
on its own inside B, and a topology update at the first update's prune rate (dr0 = 0.5, the most
expensive) is timed with the gradients of B's last step. Two ratios per round, both amortising
the update over the update interval ΔT:

    end-to-end ratio   = (t_B + t_update / ΔT) / t_A
    engine-timed ratio = (t_A + t_engine + t_update / ΔT) / t_A

The end-to-end ratio sees everything, including any indirect cost of the engine, but two model
copies differ by several percent from round to round on a shared machine (a dense copy against
a dense copy measured IQR 0.99-1.15 here), so it cannot settle a 5 % goal in a few rounds of
seconds-long DeiT-Tiny steps. The engine-timed ratio times exactly the work the engine adds and
is free of that noise. The goal (at most 1.05) counts as met when the engine-timed median is
within it and the end-to-end ratio does not contradict it (its lower quartile within it too).

ΔT is the paper's cadence: about 80 updates per run (one per ~6 epochs, as DeiT-Tiny/Small's
ΔT = 15000-20000 at batch 512 over 600 epochs), expressed for the run length of each
configuration. For the digits preset (30 epochs of 23 steps) that is ΔT = 7, a far denser
cadence than the paper's in wall-clock terms; the shipped digits study's ΔT = 50 is shown too.

Configurations: the digits preset (``vit_digits``, 8x8 inputs, batch 64) and DeiT-Tiny at 224 px
with batch 32.

Run alone::

    python -m benchmarks.bench_engine_overhead --out engine.json
    python -m benchmarks.run_all --only engine_overhead        # updates the suite's report
    python -m benchmarks.bench_engine_overhead --tiny          # smoke size, record to stdout
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Any

from . import benchkit as bk  # first: it runs the torchvision import guard before timm

from svite_search.engine.sparse import resolve_update_interval

GOAL = 1.05
UPDATES_PER_RUN = 80
UPDATE_RATE = 0.5  # dr0: the first (and costliest) update

#: name -> (timm model, create kwargs, batch, channels, pixels, steps in a run, study ΔT or None)
CONFIGS: dict[str, tuple[str, dict[str, Any], int, int, int, int, int | None]] = {
    # digits: 1437 training images, batch 64 -> 23 steps per epoch, 30 epochs; studies use ΔT = 50
    "vit_digits": (
        "vit_tiny_patch16_224",
        dict(img_size=8, patch_size=2, in_chans=1, embed_dim=64, depth=4, num_heads=4, mlp_ratio=2.0, num_classes=10),
        64, 1, 8, 23 * 30, 50,
    ),
    # ImageNet-1k at batch 32: 40037 steps per epoch, the paper's 600 epochs
    "deit_tiny_224_b32": ("deit_tiny_patch16_224", dict(num_classes=1000), 32, 3, 224, 40037 * 600, None),
}
TINY_CONFIGS = {
    "vit_micro": (
        "vit_tiny_patch16_224",
        dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, mlp_ratio=2.0, num_classes=10),
        8, 3, 32, 200, 50,
    ),
}

WHY_MISSED = (
    "Either the engine's own work (one foreach multiply over the weights and one over both Adam "
    "moments per step, plus the update spread over ΔT) exceeds 5 % of a step this small (the "
    "engine-timed ratio says so), or the end-to-end ratio is above the goal even at its lower "
    "quartile, which is either an indirect cost of the engine or load from other processes (re-run "
    "on a quiet machine to tell). Closing it: mask the gradients before the optimizer step on "
    "non-update steps, which keeps inactive weights and moments at zero without the pass over "
    "the moments; or a longer ΔT for tiny models."
)


def plan(name: str, args: argparse.Namespace) -> tuple[int, int]:
    """(warm-up rounds, timed rounds): few for DeiT-Tiny 224 on a CPU (seconds per step)."""
    if args.tiny:
        return 1, 3
    if name == "deit_tiny_224_b32" and args.device.type == "cpu":
        return 1, args.large_repeats
    return args.warmup, args.repeats


def measure(name: str, spec: tuple, args: argparse.Namespace) -> dict[str, Any]:
    model_name, kwargs, batch, chans, pixels, run_steps, study_interval = spec
    device = args.device
    # the same initial weights; no update falls inside the timed steps: it is timed on its own below
    dense = bk.bench_trainer(model_name, kwargs, device=device, amp=args.amp)
    sparse = bk.bench_trainer(model_name, kwargs, device=device, amp=args.amp, method="svite",
                              sparsity={"density": 0.5, "update_interval": bk.NEVER})
    sparsifier = sparse.components["svite"]
    images, targets = bk.random_batch(batch, chans, pixels, kwargs.get("num_classes", 1000), device)
    step_a = bk.TrainStep(dense, images, targets)
    step_b = bk.TrainStep(sparse, images, targets)
    warmup, repeats = plan(name, args)
    timings = bk.interleave({"dense": step_a, "svite": step_b}, warmup=warmup, repeats=repeats, device=device)
    engine = bk.Spread.of(step_b.engine_seconds[-repeats:])

    saved = sparsifier.state_dict()
    update_times = []
    for _ in range(args.update_repeats if not args.tiny else 2):
        update_times.append(bk.time_call(lambda: sparsifier.update_topology(prune_rate=UPDATE_RATE), device))
        sparsifier.load_state_dict(saved)
    update = bk.Spread.of(update_times)

    paper_interval = resolve_update_interval(run_steps, 0.8, updates_per_run=UPDATES_PER_RUN)
    intervals = {"paper": paper_interval}
    if study_interval is not None:
        intervals["study"] = study_interval
    dense_s, ratios = timings.seconds["dense"], timings.ratios("svite")
    engine_s = step_b.engine_seconds[-repeats:]
    dense_step = statistics.median(dense_s)
    end_to_end = {
        label: bk.Spread.of([r + update.median / (interval * a) for r, a in zip(ratios, dense_s)])
        for label, interval in intervals.items()
    }
    engine_timed = {
        label: bk.Spread.of([1 + (e + update.median / interval) / a for e, a in zip(engine_s, dense_s)])
        for label, interval in intervals.items()
    }
    row = {
        "config": name,
        "model": model_name,
        "create_kwargs": kwargs,
        "batch_size": batch,
        "input": [chans, pixels, pixels],
        "run_steps": run_steps,
        "masked_weights": sum(m.numel() for m in sparsifier.masks.values()),
        "density": sparsifier.stats()["density"],
        "warmup_rounds": warmup,
        "timings": timings.to_dict(),
        "step_ratio": timings.ratio("svite").to_dict(),
        "engine_step_s": engine.to_dict(),
        "engine_step_share": engine.median / dense_step,
        "update_s": update.to_dict(),
        "update_intervals": intervals,
        "end_to_end_ratio": {k: v.to_dict() for k, v in end_to_end.items()},
        "engine_timed_ratio": {k: v.to_dict() for k, v in engine_timed.items()},
    }
    print(
        f"{name}: dense step {bk.ms(dense_step)}, A/B {bk.with_iqr(timings.ratio('svite'))}, engine "
        f"{bk.ms(engine.median, 3)}, update {bk.ms(update.median)}; at ΔT={paper_interval}: end-to-end "
        f"{bk.with_iqr(end_to_end['paper'])}, engine-timed {bk.with_iqr(engine_timed['paper'], lambda v: f'{v:.4f}')}",
        file=sys.stderr,
    )
    return row


def run(args: argparse.Namespace) -> dict[str, Any]:
    info = bk.machine(args.device)
    started = time.perf_counter()
    configs = TINY_CONFIGS if args.tiny else CONFIGS
    rows = [measure(name, spec, args) for name, spec in configs.items()]
    checks, table_rows = [], []
    for row in rows:
        timed_ratio = bk.Spread(**row["engine_timed_ratio"]["paper"])
        e2e = bk.Spread(**row["end_to_end_ratio"]["paper"])
        interval = row["update_intervals"]["paper"]
        checks.append(bk.check(
            f"{row['config']} (batch {row['batch_size']}): step-time ratio with/without SViTE, "
            f"amortised at ΔT = {interval:,}",
            timed_ratio.median, spread=timed_ratio, goal=f"≤ {GOAL}",
            met=timed_ratio.median <= GOAL and e2e.q25 <= GOAL,
            shown=f"engine-timed {bk.with_iqr(timed_ratio, lambda v: f'{v:.4f}')}; end-to-end {bk.with_iqr(e2e)}",
            why_missed=WHY_MISSED,
        ))
        step = bk.Spread(**row["step_ratio"])
        dense = row["timings"]["seconds"]["dense"]
        for label, interval in row["update_intervals"].items():
            table_rows.append([
                row["config"], row["batch_size"], bk.ms(dense["median"]), bk.with_iqr(step),
                bk.ms(row["engine_step_s"]["median"], 2), bk.ms(row["update_s"]["median"]),
                f"{interval:,} ({label})", bk.with_iqr(bk.Spread(**row["end_to_end_ratio"][label])),
                bk.with_iqr(bk.Spread(**row["engine_timed_ratio"][label]), lambda v: f"{v:.4f}"),
            ])
    tables = [bk.table(
        "Step time with vs without the SViTE sparsifier (ratios per interleaved round)",
        ["config", "batch", "dense step", "step ratio (no update)", "engine.step()", "one update (dr 0.5)",
         "ΔT", "end-to-end ratio", "engine-timed ratio"],
        table_rows,
    )]
    return bk.record(
        "engine_overhead",
        title="Engine overhead: training step with vs without SViTE",
        what="How much slower one training step gets with the SViTE sparsifier, including its topology "
        "updates amortised over the paper's update cadence.",
        how="Two copies of one model with their own AdamW, stepped interleaved (AB, BA, ...) after "
        "warm-up; SViTE at 50 % ERK density, optimizer_state=reset. Per round: end-to-end ratio = "
        "(t_svite + t_update / ΔT) / t_dense; engine-timed ratio = (t_dense + t_engine.step() + "
        "t_update / ΔT) / t_dense. Goal met when the engine-timed median is within it and the "
        "end-to-end lower quartile does not contradict it (two dense copies alone differ by several "
        "percent per round on a busy machine).",
        checks=checks,
        tables=tables,
        settings={"threads": args.threads, "amp": args.amp, "density": 0.5, "distribution": "erk",
                  "optimizer": "AdamW", "optimizer_state": "reset", "update_prune_rate": UPDATE_RATE,
                  "updates_per_run": UPDATES_PER_RUN},
        machine_info=info,
        tiny=args.tiny,
        wall_s=time.perf_counter() - started,
        rows=rows,
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--warmup", type=int, default=3, help="untimed rounds (small configs)")
    parser.add_argument("--repeats", type=int, default=21, help="timed rounds (small configs)")
    parser.add_argument("--large-repeats", type=int, default=5, help="timed rounds of DeiT-Tiny 224 on a CPU")
    parser.add_argument("--update-repeats", type=int, default=5, help="timed topology updates")


def main(argv: list[str] | None = None) -> int:
    return bk.bench_main(run, __doc__.split("\n\n")[0], argv, add_arguments)


if __name__ == "__main__":
    sys.exit(main())
