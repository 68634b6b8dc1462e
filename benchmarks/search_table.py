"""The tabulated quickstart problem of the search-efficiency benchmark: record it once, replay it.

HPO benchmarks (HPOBench, YAHPO, the LCBench tables) make search methods comparable and cheap to
compare by training every point of a grid once, keeping each point's whole learning curve, and
letting the methods "train" by looking the curve up: a trial that runs ``k`` epochs costs ``k``
epochs of budget and sees the top-1 after each of them, exactly as it would have live. This
module is that table for the quickstart study (``studies/quickstart.yaml``: dense, SViTE and
S²ViTE on the embedded 8×8 digits, ``vit_digits``, 20 epochs): a grid over the method, the weight
density (SViTE), the head and neuron densities (S²ViTE) and the token keep ratio, the other
settings at the spec's defaults. Each point records its per-epoch validation top-1 and its MACs
(known before training, as every cost objective is).

Recording costs about a quarter of an hour of one CPU core (``--threads 1``); the table is
committed (``benchmarks/data/search_table.json``), so the benchmark itself never trains::

    nice -n 10 python -m benchmarks.search_table --out benchmarks/data/search_table.json

The recorder resumes: points already in ``--out`` are kept, and the file is rewritten
atomically after every point, so an interrupted recording loses at most one point.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

REPO = Path(__file__).resolve().parents[1]
TABLE = Path(__file__).resolve().parent / "data" / "search_table.json"
SPEC = REPO / "studies" / "quickstart.yaml"

#: The grid: every method with every token keep ratio; SViTE over weight densities, S²ViTE over
#: head and neuron densities (the quickstart's ranges, at a few levels each).
KEEP_RATIOS = (1.0, 0.75, 0.5)
DENSITIES = (0.2, 0.35, 0.5, 0.65, 0.8)
HEAD_DENSITIES = (0.5, 0.75, 1.0)
MLP_DENSITIES = (0.25, 0.5, 1.0)


def grid() -> Iterator[dict[str, Any]]:
    """The grid's points as the parameter dicts a trial of the quickstart study gets."""
    for keep in KEEP_RATIOS:
        yield {"method": "dense", "tokens.keep_ratio": keep}
    for density, keep in itertools.product(DENSITIES, KEEP_RATIOS):
        yield {"method": "svite", "sparsity.density": density, "tokens.keep_ratio": keep}
    for heads, mlp, keep in itertools.product(HEAD_DENSITIES, MLP_DENSITIES, KEEP_RATIOS):
        yield {"method": "s2vite", "sparsity.head_density": heads, "sparsity.mlp_density": mlp,
               "tokens.keep_ratio": keep}


def key_of(params: dict[str, Any]) -> str:
    return json.dumps(params, sort_keys=True)


def _write_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)


def record_point(params: dict[str, Any], epochs: int) -> dict[str, Any]:
    """Train one grid point with the project's own trainer; its curve, MACs and cost."""
    from svite_search.search.space import trial_config
    from svite_search.search.spec import load_spec
    from svite_search.train.trainer import run_training

    spec = load_spec(SPEC)
    cfg = trial_config(spec, {**params, "train.epochs": epochs, "train.checkpoint": False})
    curve: list[float] = []
    seconds: list[float] = []
    last = [time.perf_counter()]

    def on_epoch(metrics: dict[str, Any]) -> None:
        now = time.perf_counter()
        curve.append(round(float(metrics["top1"]), 4))
        seconds.append(round(now - last[0], 3))
        last[0] = now

    cpu = time.process_time()
    result = run_training(cfg, None, on_epoch=on_epoch, progress=False)
    return {"params": params, "top1": curve, "gmacs": float(result["gmacs"]),
            "dense_gmacs": float(result["dense_gmacs"]), "params_nonzero": result.get("params_nonzero"),
            "epoch_s": seconds, "cpu_s": round(time.process_time() - cpu, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=TABLE, help="the table (JSON); points in it are kept")
    parser.add_argument("--epochs", type=int, default=20, help="epochs per point (the quickstart's 20)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: the cost is one core's)")
    parser.add_argument("--limit", type=int, default=None, help="record at most this many new points")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    table = json.loads(args.out.read_text()) if args.out.is_file() else None
    if table is None or table.get("epochs") != args.epochs:
        table = {"problem": "quickstart on digits (studies/quickstart.yaml), vit_digits", "epochs": args.epochs,
                 "objectives": [{"metric": "top1", "direction": "maximize"},
                                {"metric": "gmacs", "direction": "minimize"}],
                 "torch_threads": args.threads, "points": []}
    done = {key_of(p["params"]) for p in table["points"]}
    todo = [p for p in grid() if key_of(p) not in done][: args.limit]
    for i, params in enumerate(todo, 1):
        point = record_point(params, args.epochs)
        table["points"].append(point)
        _write_atomic(args.out, table)
        print(f"[{i}/{len(todo)}] {params}: top1 {point['top1'][-1]:.2f}, {point['gmacs'] * 1e6:.0f} kMACs, "
              f"{point['cpu_s']:.1f} CPU-s", file=sys.stderr, flush=True)
    total = sum(p["cpu_s"] for p in table["points"])
    print(f"{len(table['points'])} points, {total / 60:.1f} CPU-min in all", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
