"""Engine ablations on the digits study: what head exploration and the optimizer-state policy do.

Three parts, each written into ``reports/ablations/results.json`` and rendered as tables in
``reports/ablations/README.md`` (followed by the hand-written ``discussion.md`` of that folder):

* ``first_steps``: how far a weight grown by SViTE moves in its first Adam steps, per
  optimizer-state policy, against the layer's established weights (a tiny ViT, seconds);
* ``optimizer_state``: top-1 of SViTE and S²ViTE on digits under ``reset``, ``calibrated`` and
  ``keep`` (SViTE) / ``reset`` and ``calibrated`` (S²ViTE), several seeds, the same budget;
* ``heads``: S²ViTE with head exploration (``head_growth: explore``) against the same run with
  the heads frozen after initialisation (``frozen``). (In the digits runs measured, the authors' rule,
  ``reference``, never moved a head, so its runs are the frozen ones.)

Every training run is ``studies/digits.yaml`` (30 epochs, one torch thread), run one after the
other. Top-1 is the final epoch's on the validation split; ``heads_fired`` is the share of heads
that were active at some point. ``--only PART`` reruns one part and keeps the others' results.

Usage::

    python -m benchmarks.ablate_engine                      # everything, about 9 CPU minutes
    python -m benchmarks.ablate_engine --only heads         # one part
    python -m benchmarks.ablate_engine --only heads --reuse # ... reusing runs already recorded
    python -m benchmarks.ablate_engine --seeds 0 --epochs 3 --out-dir /tmp/abl   # a smoke run
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from svite_search.config import load_config
from svite_search.engine.sparse import DEFAULT_OPTIMIZER_STATE, SViTE, SViTEConfig
from svite_search.engine.structured import DEFAULT_HEAD_GROWTH
from svite_search.train.trainer import Trainer

from .benchkit import machine

REPO = Path(__file__).resolve().parents[1]
STUDY = REPO / "studies" / "digits.yaml"
OUT_DIR = REPO / "reports" / "ablations"
PARTS = ("first_steps", "optimizer_state", "heads")


# ----------------------------------------------------------------------------- training runs


def train(overrides: list[str], epochs: int | None, cache: dict[tuple, dict[str, Any]]) -> dict[str, Any]:
    """One digits run with these ``--set`` overrides (memoised within this invocation)."""
    key = tuple(sorted(overrides)) + (epochs,)
    if key in cache:
        return cache[key]
    extra = [f"train.epochs={epochs}"] if epochs else []
    cfg = load_config(STUDY, overrides + extra + ["train.threads=1", "train.checkpoint=false"])
    start = time.perf_counter()
    result = Trainer(cfg, None, progress=False).fit(resume=False)
    keep = ("top1", "top1_best", "density")
    row = {k: result[k] for k in keep}
    row.update({k.split(".", 1)[1]: v for k, v in result.items() if k.startswith(("svite.", "s2vite.")) and k.endswith(("fired", "updates"))})
    row["wall_s"] = round(time.perf_counter() - start, 1)
    print(f"  {' '.join(overrides)}: top1 {row['top1']:.2f}  {row['wall_s']:.0f} s", flush=True)
    cache[key] = row
    return row


def arms(part: str) -> dict[str, list[str]]:
    """Arm name -> overrides of the digits study."""
    if part == "optimizer_state":
        out = {f"svite/{p}": ["method=svite", f"sparsity.optimizer_state={p}"] for p in ("reset", "calibrated", "keep")}
        out.update(
            {
                f"s2vite/{p}": ["method=s2vite", f"sparsity.optimizer_state={p}", f"sparsity.head_growth={DEFAULT_HEAD_GROWTH}"]
                for p in ("reset", "calibrated")
            }
        )
        return out
    if part == "heads":
        return {
            g: ["method=s2vite", f"sparsity.head_growth={g}", f"sparsity.optimizer_state={DEFAULT_OPTIMIZER_STATE}"]
            for g in ("explore", "frozen")
        }
    raise ValueError(part)


def run_arms(part: str, seeds: list[int], epochs: int | None, cache: dict) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, overrides in arms(part).items():
        print(f"{part}: {name}", flush=True)
        runs = [train(overrides + [f"train.seed={s}"], epochs, cache) for s in seeds]
        out[name] = {"overrides": overrides, "seeds": seeds, "runs": runs, "summary": summarise(runs)}
    return out


def summarise(runs: list[dict[str, Any]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for key in runs[0]:
        values = [float(r[key]) for r in runs]
        out[f"{key}_mean"] = statistics.fmean(values)
        out[f"{key}_sd"] = statistics.stdev(values) if len(values) > 1 else 0.0
    return out


# ----------------------------------------------------------------------------- first steps


def first_steps(steps: int = 4, lr: float = 1e-3) -> dict[str, Any]:
    """Median |Δw| / lr of grown weights and of surviving ones after one SViTE update (Adam)."""
    import timm

    out: dict[str, Any] = {"lr": lr, "layer": "blocks.0.mlp.fc1.weight", "rows": []}
    for late in (0, 1_000, 20_000):
        for policy in ("reset", "calibrated", "keep"):
            torch.manual_seed(0)
            model = timm.create_model(
                "vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=10
            )
            optimizer = torch.optim.Adam(model.parameters(), lr=lr)
            engine = SViTE(model, optimizer, SViTEConfig(density=0.5, total_steps=100, update_interval=40, optimizer_state=policy))
            weight = dict(model.named_parameters())[out["layer"]]
            g = torch.Generator().manual_seed(1)
            data = [(torch.randn(8, 3, 32, 32, generator=g), torch.randint(0, 10, (8,), generator=g)) for _ in range(40 + steps)]

            def step(batch: tuple[torch.Tensor, torch.Tensor]) -> None:
                loss = F.cross_entropy(model(batch[0]), batch[1])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                engine.step()

            for batch in data[:39]:
                step(batch)
            for state in optimizer.state.values():
                state["step"] += late  # as far into a run as `late` more steps
            before = engine.masks[out["layer"]].bool().clone()
            step(data[39])  # the update
            grown = engine.masks[out["layer"]].bool() & ~before
            kept = engine.masks[out["layer"]].bool() & before
            previous = weight.detach().clone()
            grown_steps, kept_steps = [], []
            for batch in data[40:]:
                step(batch)
                delta = (weight.detach() - previous).abs() / lr
                grown_steps.append(round(float(delta[grown].median()), 3))
                kept_steps.append(round(float(delta[kept].median()), 3))
                previous = weight.detach().clone()
            out["rows"].append({"adam_step": 40 + late, "policy": policy, "grown": grown_steps, "established": kept_steps})
    return out


# ----------------------------------------------------------------------------- the report


def _fmt(summary: dict[str, float], key: str, digits: int = 2) -> str:
    if f"{key}_mean" not in summary:
        return "–"
    return f"{summary[f'{key}_mean']:.{digits}f} ± {summary[f'{key}_sd']:.{digits}f}"


def render(results: dict[str, Any]) -> str:
    lines = [
        "# Engine ablations (digits)",
        "",
        "Regenerate with `python -m benchmarks.ablate_engine` (about 9 CPU minutes; `--only PART` reruns",
        "one part). Every training run is `studies/digits.yaml`: `vit_digits` (4 blocks, 4 heads, width 64),",
        "30 epochs, batch 64, AdamW at lr 2e-3, one torch thread, density 0.5 (SViTE) or 2 of 4 heads and",
        "half the MLP neurons (S²ViTE), an update every 50 iterations (11 updates). Runs differ only in",
        "the settings named and the seed (S²ViTE runs explore heads unless the arm says otherwise; the",
        f"head arms use the default optimizer state, `{DEFAULT_OPTIMIZER_STATE}`; the exact settings of every arm are in",
        "`results.json`). Top-1 is the final epoch's, on the 360-image validation split,",
        "as mean ± sd over the seeds; on 360 images one image is 0.28 points.",
        "",
    ]
    meta = results.get("machine")
    if meta:
        lines += [f"Measured {meta['date']} on {meta['cpu_model']} ({meta['cpu_logical']} logical CPUs, shared with other work).", ""]
    fs = results.get("first_steps")
    if fs:
        lines += [
            "## First steps of a regrown weight under Adam",
            "",
            f"Median |Δw| / lr over the first optimizer steps after one SViTE update, for the weights grown in",
            f"`{fs['layer']}` and for the layer's surviving weights (a tiny ViT, Adam lr {fs['lr']}, betas",
            "(0.9, 0.999)). torch's Adam keeps one step count per tensor, so a grown weight inherits the layer's",
            "bias correction; `adam_step` is that count at the update (moved on artificially for the later rows,",
            "as deep into a run). A fresh Adam's first step is 1.0 (in units of lr).",
            "",
            "| adam_step | policy | grown weights | established weights |",
            "| --- | --- | --- | --- |",
        ]
        for row in fs["rows"]:
            lines.append(
                f"| {row['adam_step']} | {row['policy']} | {', '.join(f'{v:.2f}' for v in row['grown'])} | "
                f"{', '.join(f'{v:.2f}' for v in row['established'])} |"
            )
        lines.append("")
    for part, title in (("optimizer_state", "Optimizer state of regrown weights"), ("heads", "S²ViTE head exploration")):
        section = results.get(part)
        if not section:
            continue
        lines += [f"## {title}", "", "| arm | seeds | top-1 (%) | best top-1 (%) | heads_fired | neurons_fired | fired (SViTE) |", "| --- | --- | --- | --- | --- | --- | --- |"]
        for name, arm in section["arms"].items():
            s = arm["summary"]
            lines.append(
                f"| {name} | {len(arm['seeds'])} | {_fmt(s, 'top1')} | {_fmt(s, 'top1_best')} | "
                f"{_fmt(s, 'heads_fired', 3)} | {_fmt(s, 'neurons_fired', 3)} | {_fmt(s, 'fired', 3)} |"
            )
        lines += ["", reading(part, section), ""]
    return "\n".join(lines).rstrip() + "\n"


def reading(part: str, section: dict[str, Any]) -> str:
    """A plain statement of what the numbers show (the README's prose around it is written by hand)."""
    means = {name: arm["summary"]["top1_mean"] for name, arm in section["arms"].items()}
    if part == "optimizer_state":
        parts = []
        for method in ("svite", "s2vite"):
            mine = {k: v for k, v in means.items() if k.startswith(method + "/")}
            best = max(mine, key=mine.get)
            parts.append(f"{method}: highest mean top-1 under `{best.split('/')[1]}` ({mine[best]:.2f} %)")
        return "Measured: " + "; ".join(parts) + f". Shipped default: `{DEFAULT_OPTIMIZER_STATE}`."
    best = max(means, key=means.get)
    return f"Measured: highest mean top-1 with head_growth `{best}` ({means[best]:.2f} %). Shipped default: `{DEFAULT_HEAD_GROWTH}`."


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ablate_engine", description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=PARTS, action="append", help="run these parts only (repeatable)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=None, help="override the study's 30 epochs (smoke runs)")
    parser.add_argument("--out-dir", type=Path, default=OUT_DIR)
    parser.add_argument("--render-only", action="store_true", help="rewrite README.md from results.json, run nothing")
    parser.add_argument(
        "--reuse", action="store_true", help="reuse the runs results.json already holds for the same settings and seed"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    path = args.out_dir / "results.json"
    results: dict[str, Any] = json.loads(path.read_text()) if path.is_file() else {}
    if args.render_only:
        args.only = []
    else:
        results["machine"] = machine("cpu")
    cache: dict[tuple, dict[str, Any]] = {}
    if args.reuse:
        for part in ("optimizer_state", "heads"):
            section = results.get(part) or {}
            for arm in section.get("arms", {}).values():
                for seed, row in zip(arm["seeds"], arm["runs"]):
                    overrides = arm["overrides"] + [f"train.seed={seed}"]
                    cache[tuple(sorted(overrides)) + (args.epochs,)] = row
    for part in PARTS if args.only is None else args.only:
        if part == "first_steps":
            results[part] = first_steps()
        else:
            section = {"arms": run_arms(part, args.seeds, args.epochs, cache), "epochs": args.epochs or 30}
            results[part] = section
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(results, indent=2) + "\n")
        tmp.replace(path)
    readme = args.out_dir / "README.md"
    text = render(results)
    discussion = args.out_dir / "discussion.md"  # the hand-written reading, kept across reruns
    if discussion.is_file():
        text += "\n" + discussion.read_text()
    readme.write_text(text)
    print(f"wrote {path} and {readme}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
