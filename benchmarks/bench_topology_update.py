"""Topology update cost at DeiT-Base size: SViTE (86 M weights) and S²ViTE (heads and neurons).

A topology update is the one expensive thing the engines do, and it grows with the model, not
with the batch. This benchmark times it at the paper's largest model, DeiT-Base at 224 px, and
sets it against one dense training step of the same model, measured in the same rounds:

* **dense**: one training step (the trainer's ``train_step``: forward, backward, AdamW) of
  DeiT-Base, the baseline;
* **SViTE update**: ``update_topology(prune_rate=0.5)`` at 50 % ERK density on a copy of the
  model that reads the dense model's real gradients of that round (prune by |W|, grow by
  |grad| in each of the 50 masked layers);
* **S²ViTE update iteration**: a second DeiT-Base under S²ViTE at (0.7, 0.6) with an update
  due at every step: its training step with the head-score capture armed, then
  ``engine.step()`` (Taylor head scores, neuron magnitudes and growth signals, prune and grow,
  re-masking weights and Adam moments), timed on its own as the update's cost.

Reported per round and summarised by median and IQR: each update in ms, each update as a
fraction of the dense step, the S²ViTE update iteration against the dense step (what an update
iteration costs in all, capture included), and the cost per iteration when spread over the
paper's DeiT-Base interval ΔT = 7000. The fraction depends on the batch (the update does not,
the step does): it is measured at batch 4 on a CPU, which makes it large; at the paper's
per-GPU batch of 128 a step is ~32x longer. No goal is set by the issue: these are reported.

Run alone::

    python -m benchmarks.bench_topology_update --out topology.json
    python -m benchmarks.run_all --only topology_update
    python -m benchmarks.bench_topology_update --tiny
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from . import benchkit as bk  # first: it runs the torchvision import guard before timm
import timm
import torch

from svite_search.engine.sparse import SViTE, SViTEConfig

PAPER_INTERVAL = 7000  # DeiT-Base at global batch 1024
PRUNE_RATE = 0.5
HEAD_DENSITY, MLP_DENSITY = 0.7, 0.6


def model_spec(tiny: bool) -> tuple[str, dict[str, Any], int]:
    if tiny:
        return "vit_tiny_patch16_224", dict(img_size=32, patch_size=8, depth=2, num_classes=10), 32
    return "deit_base_patch16_224", dict(num_classes=1000), 224


def run(args: argparse.Namespace) -> dict[str, Any]:
    info = bk.machine(args.device)
    device = args.device
    model_name, kwargs, pixels = model_spec(args.tiny)
    batch = args.batch_size or (2 if args.tiny else (4 if device.type == "cpu" else 128))
    warmup, repeats = (1, 2) if args.tiny else (args.warmup, args.repeats)
    started = time.perf_counter()

    # one architecture, one seed: the trainers' models start from the same weights
    dense_trainer = bk.bench_trainer(model_name, kwargs, device=device, amp=args.amp)
    structured = bk.bench_trainer(model_name, kwargs, device=device, amp=args.amp, method="s2vite", sparsity={
        "head_density": HEAD_DENSITY, "mlp_density": MLP_DENSITY, "update_interval": 1, "prune_rate": PRUNE_RATE,
    })
    s2vite = structured.components["s2vite"]
    torch.manual_seed(0)
    unstructured = timm.create_model(model_name, **kwargs).to(device)
    images, targets = bk.random_batch(batch, 3, pixels, kwargs["num_classes"], device)

    with bk.stopwatch() as elapsed:
        svite = SViTE(unstructured, None, SViTEConfig(density=0.5, total_steps=bk.NEVER, update_interval=bk.NEVER))
    svite_init_s = elapsed()
    dense_step = bk.TrainStep(dense_trainer, images, targets)
    s2vite_iteration = bk.TrainStep(structured, images, targets)
    dense_params = dict(dense_step.model.named_parameters())

    def svite_update() -> None:
        # the dense model's gradients of this round: what a real update iteration would see
        for name, param in svite.params.items():
            param.grad = dense_params[name].grad
        svite.update_topology(prune_rate=PRUNE_RATE)

    timings = bk.interleave(
        {"dense_step": dense_step, "svite_update": svite_update, "s2vite_update_iteration": s2vite_iteration},
        warmup=warmup, repeats=repeats, device=device,
    )
    dense_s = timings.seconds["dense_step"]
    s2vite_update = s2vite_iteration.engine_seconds[-repeats:]
    updates = {"svite": timings.seconds["svite_update"], "s2vite": s2vite_update}
    fractions = {k: bk.Spread.of([u / d for u, d in zip(v, dense_s)]) for k, v in updates.items()}
    iteration_ratio = timings.ratio("s2vite_update_iteration")
    stats = s2vite.stats()
    rows = {
        "svite": {
            "what": "update_topology, 50 % ERK, prune rate 0.5",
            "masked_weights": sum(m.numel() for m in svite.masks.values()),
            "masked_layers": len(svite.masks),
            "mask_init_s": svite_init_s,
        },
        "s2vite": {
            "what": f"engine.step() on an update iteration, heads {HEAD_DENSITY}, neurons {MLP_DENSITY}",
            "heads": f"{int(stats['heads_kept'])}/{int(stats['heads_total'])}",
            "neurons": f"{int(stats['neurons_kept'])}/{int(stats['neurons_total'])}",
            "updates_done": s2vite.updates,
            "update_iteration_over_dense_step": iteration_ratio.to_dict(),
        },
    }
    for key, values in updates.items():
        spread = bk.Spread.of(values)
        rows[key].update(
            update_s=spread.to_dict(),
            fraction_of_dense_step=fractions[key].to_dict(),
            per_iteration_at_paper_interval=fractions[key].median / PAPER_INTERVAL,
        )
        print(f"{key}: update {bk.ms(spread.median)}, {bk.with_iqr(fractions[key])} of a dense step", file=sys.stderr)

    dense_spread = bk.Spread.of(dense_s)
    checks = [
        bk.check(
            f"SViTE update on {model_name} ({rows['svite']['masked_weights'] / 1e6:.1f} M weights), "
            f"fraction of one dense step at batch {batch}",
            fractions["svite"].median, spread=fractions["svite"], shown=bk.with_iqr(fractions["svite"]),
            goal=None, met=None,
        ),
        bk.check(
            f"S²ViTE update on {model_name} heads/neurons, fraction of one dense step at batch {batch}",
            fractions["s2vite"].median, spread=fractions["s2vite"], shown=bk.with_iqr(fractions["s2vite"]),
            goal=None, met=None,
        ),
    ]
    table_rows = []
    for key, label in (("svite", "SViTE"), ("s2vite", "S²ViTE")):
        row = rows[key]
        table_rows.append([
            label, row["what"], bk.with_iqr(bk.Spread(**row["update_s"]), lambda v: f"{v * 1e3:,.0f}") + " ms",
            bk.ms(dense_spread.median, 0), bk.with_iqr(fractions[key]),
            f"{row['per_iteration_at_paper_interval'] * 100:.4f} %",
        ])
    tables = [bk.table(
        f"One topology update on {model_name} vs one dense training step (batch {batch})",
        ["engine", "update", "update time", "dense step", "update / dense step", f"per iteration at ΔT = {PAPER_INTERVAL}"],
        table_rows,
    )]
    notes = [
        f"The S²ViTE update iteration in all (training step with the head-score capture armed, then the "
        f"update) took {bk.with_iqr(iteration_ratio)} times a dense step.",
        f"SViTE mask set-up on {model_name}: {bk.secs(svite_init_s)} (once per run).",
    ]
    return bk.record(
        "topology_update",
        title="Topology update cost at DeiT-Base size",
        what="Time of one SViTE and one S²ViTE topology update on DeiT-Base, in ms and as a fraction "
        "of one dense training step of the same model, measured in the same rounds.",
        how="Three contenders interleaved in rotating order after warm-up: a dense training step, a "
        "SViTE update on the dense step's gradients, an S²ViTE update iteration (engine.step() timed "
        "inside it). Fractions are per round, summarised by median and IQR.",
        checks=checks,
        tables=tables,
        notes=notes,
        settings={"threads": args.threads, "amp": args.amp, "batch_size": batch, "warmup_rounds": warmup,
                  "timed_rounds": repeats, "prune_rate": PRUNE_RATE, "paper_interval": PAPER_INTERVAL},
        machine_info=info,
        tiny=args.tiny,
        wall_s=time.perf_counter() - started,
        model=model_name,
        timings=timings.to_dict(),
        rows=rows,
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--batch-size", type=int, default=None, help="dense step batch (CPU 4, CUDA 128)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds")


def main(argv: list[str] | None = None) -> int:
    return bk.bench_main(run, __doc__.split("\n\n")[0], argv, add_arguments)


if __name__ == "__main__":
    sys.exit(main())
