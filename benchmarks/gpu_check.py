"""One prepared check of the CUDA paths and the engine's speed on a GPU (``make gpu-check``).

Four parts, in this order, each within a share of one time budget (default 7.5 minutes):

1. ``gpu_tests``: ``pytest -m gpu tests/gpu``: training steps of dense, SViTE, S²ViTE and SViTE+
   in bf16 and fp16, exact resume from a checkpoint on CUDA, slim equality, gathered tokens,
   ``torch.compile``, CUDA-event latency, the trainer's DDP path over NCCL, no host sync on the
   hot path;
2. ``train_throughput``: DeiT-Small training images/s, dense vs SViTE (50 % ERK) vs S²ViTE
   (heads 0.7, neurons 0.6), bf16 autocast, a batch that fills the GPU, interleaved rounds, the
   topology-update cost amortised at the paper's ΔT. Goal: SViTE ≥ 0.97 of dense. Also counts
   the synchronising CUDA calls per training step of each engine;
3. ``inference``: slim S²ViTE vs dense at batch 1, 64 and 256, and gathered tokens at 187, 138
   and 99 of 197; goal at batch 256: time saving ÷ MACs saving ≥ 0.8 (batch 1 is reported as
   measured: it is bound by kernel launches, not by MACs);
4. ``study``: four quickstart trials (5 epochs) on the GPU with the local executor, through
   the real Optuna storage.

On a CUDA machine it writes ``reports/benchmarks/gpu/`` (``results.json`` and ``README.md``).
Without CUDA, or with ``--tiny``, it runs *degraded*: the same code at tiny sizes on whatever
device there is, so the script itself is tested, and it writes a new directory under
``runs/gpu-check/``; it refuses to write a degraded run into ``reports/benchmarks/gpu/``. A part
whose packages are missing (a GPU image with torch and timm but no Optuna or pytest) is
skipped, and the report says which and why.

Usage::

    python -m benchmarks.gpu_check                 # make gpu-check
    python -m benchmarks.gpu_check --only inference --only train_throughput
    python -m benchmarks.gpu_check --tiny          # degraded smoke run (seconds on a CPU)
"""
from __future__ import annotations

import argparse
import copy
import datetime as _dt
import importlib.util
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Callable

from . import benchkit as bk  # first: it runs the torchvision import guard before timm
import timm
import torch

from svite_search._io import atomic_write_text
from svite_search.engine.sparse import SViTE, resolve_update_interval
from svite_search.engine.structured import random_block_masks, slim_model
from svite_search.engine.tokens import install_token_selector, kept_patch_tokens
from svite_search.metrics.flops import vit_macs

from .reporting import STATUS, machine_lines, markdown_table, tables_and_notes

REPO = Path(__file__).resolve().parents[1]
GPU_REPORT_DIR = REPO / "reports" / "benchmarks" / "gpu"
DEGRADED_ROOT = REPO / "runs" / "gpu-check"
PARTS = ("gpu_tests", "train_throughput", "inference", "study")
#: share of the budget each part may use at most (the GPU tests compile models: the largest)
SHARES = {"gpu_tests": 0.5, "train_throughput": 0.2, "inference": 0.12, "study": 0.18}
BUDGET_S = 450

THROUGHPUT_GOAL = 0.97  # SViTE images/s over dense images/s
SAVING_GOAL = 0.8  # time saving / MACs saving at the goal batch
HEAD_DENSITY, MLP_DENSITY = 0.7, 0.6
PAPER_TOKENS = (187, 138, 99)  # of 197, class token included
IMAGENET_TRAIN = 1_281_167
PAPER_EPOCHS = 600
UPDATES_PER_RUN = 80  # the paper's cadence: ΔT = 15,000-20,000 at batch 512 over 600 epochs


class Skip(Exception):
    """A part cannot run here; the message says why."""


# ----------------------------------------------------------------------------- helpers


def has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def amp_dtype(device: torch.device) -> torch.dtype | None:
    """The trainer's autocast dtype on CUDA (bf16 where supported, else fp16); None (fp32) on
    the CPU of a degraded run."""
    return bk.amp_dtype(device) if device.type == "cuda" else None


def train_step(model_name: str, kwargs: dict[str, Any], images: torch.Tensor, targets: torch.Tensor,
               device: torch.device, method: str = "dense", **sparsity: Any) -> bk.TrainStep:
    """One iteration of a trainer's own ``train_step``, under its autocast on CUDA; the engine's
    ``step()`` not timed on its own (a throughput figure)."""
    trainer = bk.bench_trainer(model_name, kwargs, device=device, amp=device.type == "cuda", method=method,
                               sparsity=sparsity)
    return bk.TrainStep(trainer, images, targets, time_engine=False)


def count_syncs(fn: Callable[[], Any], device: torch.device, steps: int) -> float | None:
    """Synchronising CUDA calls per call of ``fn`` (torch's sync debug mode), None off CUDA."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            for _ in range(steps):
                fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message).lower() for w in caught) / steps


def part_record(name: str, title: str, **fields: Any) -> dict[str, Any]:
    return {"part": name, "title": title, "status": "ran", "reason": None, "checks": [], "tables": [],
            "notes": [], **fields}


# ----------------------------------------------------------------------------- 1. the GPU tests


def gpu_tests(args: argparse.Namespace, device: torch.device, budget_s: float) -> dict[str, Any]:
    if not has("pytest"):
        raise Skip("pytest is not installed (pip install pytest)")
    with tempfile.TemporaryDirectory(prefix="gpu-tests-") as work:
        junit = Path(work) / "junit.xml"
        command = [sys.executable, "-m", "pytest", "-m", "gpu", str(REPO / "tests" / "gpu"), "-q", "-rA",
                   "-p", "no:cacheprovider", f"--junitxml={junit}"]
        started = time.perf_counter()
        try:
            path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
            proc = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=max(30, budget_s),
                                  env={**bk.STUDY_ENV, **os.environ, "PYTHONPATH": path})
            timed_out = False
        except subprocess.TimeoutExpired:
            proc, timed_out = None, True
        wall = time.perf_counter() - started
        cases = _junit_cases(junit) if junit.is_file() else []
    counts = {k: sum(c["outcome"] == k for c in cases) for k in ("passed", "failed", "skipped")}
    record = part_record("gpu_tests", "GPU tests (pytest -m gpu)", wall_s=wall, counts=counts, cases=cases,
                         command="python -m pytest -m gpu tests/gpu")
    if timed_out:
        record["status"] = "failed"
        record["reason"] = f"stopped after {budget_s:.0f} s (its share of the budget)"
    elif proc is not None and proc.returncode not in (0, 5) and not cases:
        record["status"] = "failed"
        record["reason"] = (proc.stdout + proc.stderr).strip().splitlines()[-1] if (proc.stdout + proc.stderr).strip() else "pytest failed"
    met = counts["failed"] == 0 and counts["passed"] > 0 if device.type == "cuda" else None
    shown = f"{counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped"
    record["checks"].append(bk.check("pytest -m gpu: every GPU test passes", counts["failed"], goal="0 failed",
                                     met=met, shown=shown, why_missed="see the failing tests below"))
    rows = [[c["name"], c["message"][:200]] for c in cases if c["outcome"] == "failed"]
    if rows:
        record["tables"].append(bk.table("Failed tests", ["test", "message"], rows))
    reasons: dict[str, int] = {}
    for c in cases:
        if c["outcome"] == "skipped":
            reasons[c["message"]] = reasons.get(c["message"], 0) + 1
    if reasons:
        record["tables"].append(bk.table("Skipped tests, by reason", ["reason", "tests"],
                                         [[why, n] for why, n in sorted(reasons.items())]))
    if device.type != "cuda":
        record["notes"].append("No CUDA device: every GPU test skipped itself (this checks the wiring only).")
    return record


def _junit_cases(path: Path) -> list[dict[str, str]]:
    cases = []
    for case in ET.parse(path).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error"):
                outcome, message = "failed", (child.get("message") or child.text or "").strip().splitlines()[0:1]
                message = message[0] if message else ""
            elif child.tag == "skipped":
                outcome, message = "skipped", (child.get("message") or "").strip()
        cases.append({"name": f"{case.get('classname', '').rsplit('.', 1)[-1]}::{case.get('name')}",
                      "outcome": outcome, "message": message})
    return cases


# ----------------------------------------------------------------------------- 2. training throughput


def _model_spec(tiny: bool) -> tuple[str, dict[str, Any], int]:
    if tiny:
        return "vit_tiny_patch16_224", dict(img_size=32, patch_size=8, depth=2, num_classes=10), 32
    return "deit_small_patch16_224", dict(num_classes=1000), 224


def _train_batch(args: argparse.Namespace, device: torch.device) -> int:
    if args.batch_size:
        return args.batch_size
    if args.tiny or device.type != "cuda":
        return 4
    total_gib = torch.cuda.get_device_properties(device).total_memory / 2**30
    return 512 if total_gib >= 70 else 256 if total_gib >= 30 else 128  # DeiT-S bf16: ~30 GiB at 512


def train_throughput(args: argparse.Namespace, device: torch.device, budget_s: float) -> dict[str, Any]:
    model_name, kwargs, pixels = _model_spec(args.tiny)
    batch = _train_batch(args, device)
    warmup, repeats = (1, 2) if args.tiny else (args.warmup, args.repeats)
    started = time.perf_counter()
    images, targets = bk.random_batch(batch, 3, pixels, kwargs["num_classes"], device)
    never = dict(update_interval=bk.NEVER)  # no update inside the timed steps
    heads = dict(head_density=HEAD_DENSITY, mlp_density=MLP_DENSITY)
    steps = {  # one architecture, one seed: every model starts from the same weights
        "dense": train_step(model_name, kwargs, images, targets, device),
        "svite": train_step(model_name, kwargs, images, targets, device, "svite", density=0.5, distribution="erk",
                            **never),
        "s2vite": train_step(model_name, kwargs, images, targets, device, "s2vite", **heads, **never),
        # S²ViTE with an update at every step: the update iteration (head-score capture + update)
        "s2vite_update": train_step(model_name, kwargs, images, targets, device, "s2vite", **heads, update_interval=1),
    }
    timings = bk.interleave(steps, warmup=warmup, repeats=repeats, device=device)
    svite: SViTE = steps["svite"].engine
    dense_params = dict(steps["dense"].model.named_parameters())
    saved = svite.state_dict()

    def svite_update() -> None:  # on a dense step's gradients, as a real update iteration sees them
        for name, param in svite.params.items():
            param.grad = dense_params[name].grad
        svite.update_topology(prune_rate=0.5)

    update_times = []
    for _ in range(2 if args.tiny else 3):
        update_times.append(bk.time_call(svite_update, device))
        svite.load_state_dict(saved)
    svite_update_s = bk.Spread.of(update_times).median
    run_steps = (IMAGENET_TRAIN // batch) * PAPER_EPOCHS
    interval = resolve_update_interval(run_steps, 0.8, updates_per_run=UPDATES_PER_RUN)
    dense_s = timings.seconds["dense"]
    s2_extra = [u - s for u, s in zip(timings.seconds["s2vite_update"], timings.seconds["s2vite"])]
    throughput = {
        "svite": bk.Spread.of([d / (s + svite_update_s / interval) for d, s in zip(dense_s, timings.seconds["svite"])]),
        "s2vite": bk.Spread.of([d / (s + max(e, 0.0) / interval)
                                for d, s, e in zip(dense_s, timings.seconds["s2vite"], s2_extra)]),
    }
    syncs = {name: count_syncs(steps[name], device, 3) for name in ("dense", "svite", "s2vite")}
    label = f"{model_name} (batch {batch}, {str(amp_dtype(device) or 'fp32').removeprefix('torch.')})"
    record = part_record("train_throughput", "Training throughput: dense vs SViTE vs S²ViTE", wall_s=time.perf_counter() - started,
                         settings={"model": model_name, "batch_size": batch, "warmup": warmup, "repeats": repeats,
                                   "update_interval_paper": interval, "amp": str(amp_dtype(device))},
                         timings=timings.to_dict(), throughput={k: v.to_dict() for k, v in throughput.items()},
                         svite_update_s=svite_update_s, syncs_per_step=syncs)
    spread = throughput["svite"]
    record["checks"].append(bk.check(
        f"{label}: SViTE 50 % ERK images/s ÷ dense images/s, update amortised at ΔT = {interval:,}",
        spread.median, goal=f"≥ {THROUGHPUT_GOAL}", met=spread.median >= THROUGHPUT_GOAL if not args.degraded else None,
        shown=bk.with_iqr(spread), spread=spread,
        why_missed="SViTE's per-step work (masking the weights) is too large a share of a step; "
                   "see the engine.step() column."))
    record["checks"].append(bk.check(
        f"{label}: S²ViTE (0.7, 0.6) images/s ÷ dense images/s, update iteration amortised at ΔT = {interval:,}",
        throughput["s2vite"].median, goal=None, met=None, shown=bk.with_iqr(throughput["s2vite"]),
        spread=throughput["s2vite"]))
    rows = []
    for name in ("dense", "svite", "s2vite"):
        s = timings.spread(name)
        rows.append([name, bk.ms(s.median), f"{batch / s.median:,.0f}",
                     "1" if name == "dense" else bk.with_iqr(throughput[name]),
                     "—" if syncs[name] is None else f"{syncs[name]:g}"])
    record["tables"].append(bk.table(
        "Training step (median over interleaved rounds)",
        ["engine", "step", "images/s", "images/s ÷ dense (amortised)", "synchronising CUDA calls per step"], rows))
    record["notes"] += [
        f"SViTE update_topology (prune rate 0.5): {bk.ms(svite_update_s)}; S²ViTE update iteration costs "
        f"{bk.ms(max(bk.Spread.of(s2_extra).median, 0.0))} more than a plain S²ViTE step; both spread over ΔT = {interval:,} "
        f"(the paper's {UPDATES_PER_RUN} updates in 80 % of {PAPER_EPOCHS} ImageNet epochs at this batch).",
        "S²ViTE trains the full-width model with masks (slimming happens after training), so its step costs what "
        "a dense step costs plus the masking.",
    ]
    return record


# ----------------------------------------------------------------------------- 3. inference


def inference(args: argparse.Namespace, device: torch.device, budget_s: float) -> dict[str, Any]:
    model_name, kwargs, pixels = _model_spec(args.tiny)
    batches = (1, 2) if args.tiny else (1, 64, 256)
    goal_batch = batches[-1]
    warmup, repeats = (1, 3) if args.tiny else (args.warmup, args.repeats)
    amp = device.type == "cuda"  # the trainer's default: autocast on CUDA
    started = time.perf_counter()
    torch.manual_seed(0)
    dense = timm.create_model(model_name, **kwargs).eval()
    masks = random_block_masks(dense, HEAD_DENSITY, MLP_DENSITY, seed=0)
    slim = slim_model(bk.masked_copy(dense, masks), masks).eval()
    prefix = int(dense.num_prefix_tokens)
    total_tokens = int(dense.patch_embed.num_patches) + prefix
    kept = [max(prefix + 1, round(t * total_tokens / 197)) for t in PAPER_TOKENS]
    gathered = {}
    for tokens in kept:
        model = copy.deepcopy(dense)
        install_token_selector(model, keep_tokens=tokens - prefix, mode="gather")
        gathered[f"tokens_{tokens}"] = model.eval()
    dense_macs = vit_macs(dense).total
    macs = {"slim": vit_macs(slim).total}
    macs |= {name: vit_macs(m, tokens=kept_patch_tokens(m)).total for name, m in gathered.items()}
    dense, slim = dense.to(device), slim.to(device)
    gathered = {k: m.to(device) for k, m in gathered.items()}
    generator = torch.Generator().manual_seed(0)
    record = part_record("inference", "Inference: slim S²ViTE and gathered tokens vs dense",
                         settings={"model": model_name, "batches": list(batches), "amp": str(amp_dtype(device)),
                                   "warmup": warmup, "repeats": repeats, "tokens": kept, "tokens_total": total_tokens},
                         macs={"dense": dense_macs, **macs})
    rows, results = [], {}
    for batch in batches:
        x = torch.randn(batch, 3, pixels, pixels, generator=generator).to(device)
        contenders = {"dense": bk.inference(dense, x, device, amp=amp), "slim": bk.inference(slim, x, device, amp=amp)}
        if batch == goal_batch:
            contenders |= {name: bk.inference(m, x, device, amp=amp) for name, m in gathered.items()}
        rounds = repeats * 3 if batch == 1 else repeats
        timings = bk.interleave(contenders, warmup=warmup, repeats=rounds, device=device)
        results[str(batch)] = timings.to_dict()
        for name in contenders:
            if name == "dense":
                continue
            ratio = timings.ratio(name)
            time_saving, macs_saving = 1 - ratio.median, 1 - macs[name] / dense_macs
            efficiency = time_saving / macs_saving if macs_saving > 0 else math.nan
            what = (f"slim S²ViTE ({HEAD_DENSITY}, {MLP_DENSITY})" if name == "slim"
                    else f"{name.split('_')[1]} of {total_tokens} tokens, gathered")
            rows.append([what, batch, bk.ms(timings.spread("dense").median, 2), bk.ms(timings.spread(name).median, 2),
                         bk.pct(time_saving), bk.pct(macs_saving), f"{efficiency:.2f}"])
            if batch == goal_batch:
                record["checks"].append(bk.check(
                    f"{what}, batch {batch}: time saving ÷ MACs saving", efficiency, goal=f"≥ {SAVING_GOAL}",
                    met=efficiency >= SAVING_GOAL if not args.degraded else None,
                    shown=f"{efficiency:.2f} (time saving {bk.pct(time_saving)}, MACs saving {bk.pct(macs_saving)})",
                    why_missed="the layers that do not shrink (patch embedding, norms, the gather) weigh more than "
                               "their MACs on this GPU; see the table per batch."))
            elif batch == 1 and name == "slim":
                record["checks"].append(bk.check(
                    f"{what}, batch 1: time saving ÷ MACs saving (launch-bound)", efficiency, goal=None, met=None,
                    shown=f"{efficiency:.2f} (time saving {bk.pct(time_saving)})"))
    record["timings"] = results
    record["wall_s"] = time.perf_counter() - started
    record["tables"].append(bk.table(
        "Forward pass in eval mode (median over interleaved rounds)",
        ["model", "batch", "dense", "variant", "time saving", "MACs saving", "time ÷ MACs saving"], rows))
    record["notes"].append("At batch 1 a GPU forward pass is bound by kernel launches, not by MACs: a slimmer "
                           "model launches the same kernels, so its time saving stays far below its MACs saving.")
    return record


# ----------------------------------------------------------------------------- 4. a study


def study(args: argparse.Namespace, device: torch.device, budget_s: float) -> dict[str, Any]:
    missing = [m for m in ("optuna", "sklearn", "pandas", "matplotlib") if not has(m)]
    if missing:
        raise Skip(f"{', '.join(missing)} not installed (pip install svite-search): the search harness, "
                   "the quickstart's digits and its report need them")
    from svite_search.harness import run_search
    from svite_search.search import load_spec, load_study
    from svite_search.search.study import trial_attrs

    tracking = has("mlflow") and not args.tiny  # tiny: the storage only, for speed
    trials = 1 if args.tiny else 4
    overrides = [f"search.n_trials={trials}", "executor.kind=local", f"train.device={device.type}",
                 f"tracking.enabled={'true' if tracking else 'false'}"]
    overrides += ["train.epochs=1", "train.warmup_epochs=0", "train.max_steps_per_epoch=2"] if args.tiny \
        else ["train.epochs=5", "train.warmup_epochs=1"]
    spec = load_spec(REPO / "studies" / "quickstart.yaml", overrides)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu-study-") as work, bk.environment(bk.STUDY_ENV, ["MLFLOW_TRACKING_URI"]):
        study_dir = Path(work) / "quickstart"
        summary = run_search(spec, study_dir, live=False)
        storage = load_study(study_dir)
        rows = []
        per_trial = []
        for t in storage.trials:
            attrs = trial_attrs(t)
            wall = attrs.get("wall_s")
            per_trial.append(wall)
            rows.append([t.number, t.state.name, t.params.get("method", "?"), attrs.get("device", "?"),
                         "—" if attrs.get("top1") is None else f"{attrs['top1']:.1f}",
                         "—" if attrs.get("gmacs") is None else f"{attrs['gmacs']:.4f}",
                         "—" if wall is None else bk.secs(wall, 1)])
        storage_url = "sqlite (the study directory's Optuna storage)"
    wall = time.perf_counter() - started
    record = part_record("study", f"A {trials}-trial quickstart study on the {device.type.upper()} (local executor)",
                         wall_s=wall, summary={k: summary.get(k) for k in ("trials_complete", "trials_failed",
                                                                          "trials_pruned", "wall_s")},
                         settings={"overrides": overrides, "tracking": tracking})
    complete = summary["trials_complete"]
    record["checks"].append(bk.check(
        f"{trials} trials on {device.type} through the Optuna storage complete", complete, goal=f"{trials} complete",
        met=complete == trials, shown=f"{complete} complete, {summary['trials_failed']} failed in {bk.secs(wall, 1)}",
        why_missed="see the trials' states and errors below"))
    record["tables"].append(bk.table("Trials", ["trial", "state", "method", "device", "top-1 %", "GMACs", "wall"], rows))
    why_off = "tiny run" if args.tiny else "MLflow is not installed"
    record["notes"].append(f"Storage: {storage_url}; MLflow tracking {'on' if tracking else f'off ({why_off})'}.")
    return record


# ----------------------------------------------------------------------------- the report


def render(results: dict[str, Any]) -> str:
    suite = results["suite"]
    lines = [f"# GPU check ({suite['machine'].get('device')})", ""]
    if suite["degraded"]:
        lines += [f"**Degraded run: {suite['degraded']}. These figures are a smoke test of the script, not results.**", ""]
    kept = suite.get("kept_from_earlier_run")
    if kept and kept["parts"]:
        lines += [f"Parts {', '.join(kept['parts'])} are from the run of {kept['date']}; the others were rerun.", ""]
    lines += [
        f"Generated by `{suite['command']}` on {suite['date']} in {suite['wall_s'] / 60:.1f} min "
        f"(budget {suite['budget_s'] / 60:.1f} min). Every comparison ran in one process, its contenders interleaved "
        "in rotating order after warm-up; a ratio is the median over rounds with its interquartile range (IQR).",
        "",
        "## Machine",
        "",
        *machine_lines(suite["machine"]),
        "",
        "## Goals",
        "",
    ]
    rows = []
    for part in results["parts"].values():
        if part["status"] != "ran":
            rows.append([part["part"], part["title"], "—", "—", f"**{part['status']}: {part['reason']}**"])
        for c in part["checks"]:
            rows.append([part["part"], c["figure"], c["shown"], c["goal"] or "—", STATUS[c["met"]]])
    lines += [markdown_table(["part", "figure", "measured", "goal", "status"], rows), ""]
    for part in results["parts"].values():
        lines += ["", f"## {part['title']}", ""]
        if part["status"] != "ran":
            lines += [f"**{part['status'].capitalize()}:** {part['reason']}", ""]
            if part["status"] == "skipped":
                continue
        if part.get("wall_s") is not None:
            lines += [f"*Took* {part['wall_s']:.0f} s.", ""]
        lines += tables_and_notes(part)
        missed = sorted({c["why_missed"] for c in part["checks"] if c["met"] is False and c["why_missed"]})
        if missed:
            lines += ["", "**Goal missed.** " + " ".join(missed)]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def out_dir_for(args: argparse.Namespace, degraded: str | None) -> Path:
    """Where the report goes; a degraded run never goes into the committed GPU report."""
    if args.out_dir is not None:
        target = args.out_dir.resolve()
        if degraded and (target == GPU_REPORT_DIR.resolve() or GPU_REPORT_DIR.resolve() in target.parents):
            raise SystemExit(f"gpu_check: --out-dir {args.out_dir}: a degraded run ({degraded}) may not write the GPU "
                             "report; choose another directory")
        return target
    if degraded:
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        return DEGRADED_ROOT / f"{stamp}-{os.getpid()}"
    return GPU_REPORT_DIR


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", choices=PARTS, metavar="PART", help=f"run only this part: {', '.join(PARTS)}")
    parser.add_argument("--tiny", action="store_true", help="tiny sizes (degraded: a smoke test, not results)")
    parser.add_argument("--device", default=None, help="default: cuda when available, else cpu (degraded)")
    parser.add_argument("--out-dir", type=Path, default=None,
                        help=f"default: {GPU_REPORT_DIR.relative_to(REPO)} on CUDA, a new {DEGRADED_ROOT.relative_to(REPO)}/<time> otherwise")
    parser.add_argument("--budget-s", type=float, default=BUDGET_S, help="seconds for the whole check")
    parser.add_argument("--batch-size", type=int, default=None, help="training batch (default: fills the GPU)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: CUDA is not available on this machine")
    reasons = []
    if device.type != "cuda":
        reasons.append("no CUDA device, ran on the CPU")
    if args.tiny or device.type != "cuda":
        reasons.append("tiny sizes")
        args.tiny = True
    degraded = "; ".join(reasons) or None
    args.degraded = degraded
    try:
        out_dir = out_dir_for(args, degraded)
    except SystemExit as err:
        print(err, file=sys.stderr)
        return 2
    names = [p for p in PARTS if p in args.only] if args.only else list(PARTS)
    bk.set_threads(device, None if device.type == "cuda" else 1)
    started = time.perf_counter()
    date = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    machine = bk.machine(device) | {"timing_threads": torch.get_num_threads()}
    parts: dict[str, dict[str, Any]] = {}
    functions = {"gpu_tests": gpu_tests, "train_throughput": train_throughput, "inference": inference, "study": study}
    for name in names:
        left = args.budget_s - (time.perf_counter() - started)
        share = SHARES[name] * args.budget_s
        print(f"== {name} (budget {min(share, left):.0f} s)", file=sys.stderr, flush=True)
        if left < 10:
            parts[name] = part_record(name, name, status="skipped", reason=f"the {args.budget_s:.0f} s budget was spent")
            continue
        try:
            parts[name] = functions[name](args, device, min(share, left))
        except Skip as why:
            parts[name] = part_record(name, name, status="skipped", reason=str(why))
        except Exception as err:  # one part's failure is reported; the others still run
            parts[name] = part_record(name, name, status="failed", reason=f"{type(err).__name__}: {err}"[:300])
        if device.type == "cuda":
            torch.cuda.empty_cache()
    wall = time.perf_counter() - started
    skipped = {n: p["reason"] for n, p in parts.items() if p["status"] == "skipped"}
    command = "python -m benchmarks.gpu_check" + "".join(f" {a}" for a in (argv if argv is not None else sys.argv[1:]))
    results = {
        "suite": {"command": command, "date": date, "wall_s": wall, "budget_s": args.budget_s, "degraded": degraded,
                  "device": str(device), "ran": names, "skipped": skipped, "machine": machine,
                  "packages": {m: has(m) for m in ("pytest", "optuna", "mlflow", "ray", "sklearn", "pandas")}},
        "parts": parts,
    }
    previous = out_dir / "results.json"
    if args.only and previous.is_file():  # a rerun of some parts keeps the others' last results
        before = json.loads(previous.read_text())
        if bool(before.get("suite", {}).get("degraded")) == bool(degraded):
            kept = {n: p for n, p in before.get("parts", {}).items() if n not in parts}
            results["parts"] = {n: kept.get(n) or parts[n] for n in PARTS if n in kept or n in parts}
            results["suite"]["kept_from_earlier_run"] = {"date": before["suite"].get("date"), "parts": sorted(kept)}
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / "results.json", json.dumps(results, indent=2, default=str) + "\n")
    atomic_write_text(out_dir / "README.md", render(results))
    failed = [n for n, p in parts.items() if p["status"] == "failed"]
    missed = [c["figure"] for p in parts.values() for c in p["checks"] if c["met"] is False]
    print(f"gpu-check{' (DEGRADED: ' + degraded + ')' if degraded else ''}: {len(names)} part(s) in {wall / 60:.1f} min; "
          f"{len(missed)} goal(s) missed; {len(failed)} failed; {len(skipped)} skipped"
          f"{' (' + '; '.join(f'{k}: {v}' for k, v in skipped.items()) + ')' if skipped else ''}; report: {out_dir / 'README.md'}",
          file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
