"""Smoke test of the benchmark suite: every benchmark runs at its tiny size and hands back a
record the report can render; run_all.py writes results.json and README.md and keeps the other
benchmarks' results when one is re-run alone. No timing is asserted: these sizes measure nothing.

The harness and concurrency benchmarks run their studies on the local executor here (``make
bench`` uses Ray): starting Ray and a Ray worker would take most of this test's time budget.
"""
from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BENCH_DIR = REPO / "benchmarks"
MODEL_BENCHMARKS = ("engine_overhead", "topology_update", "slim", "tokens", "peers")
STUDY_BENCHMARKS = ("harness", "concurrency", "startup", "driver")


@pytest.fixture(scope="module")
def run_all():
    return importlib.import_module("benchmarks.run_all")


@pytest.fixture(scope="module")
def records(run_all, tmp_path_factory):
    """Every benchmark's record at tiny size, run in this process (imports are shared)."""
    out_dir = tmp_path_factory.mktemp("bench")
    found = {}
    for name, (script, _, uses_executor) in run_all.BENCHMARKS.items():
        module = importlib.import_module(f"benchmarks.{Path(script).stem}")
        out = out_dir / f"{name}.json"
        argv = ["--tiny", "--out", str(out)] + (["--executor", "local"] if uses_executor else [])
        assert module.main(argv) == 0
        found[name] = json.loads(out.read_text())
    return found


def test_every_benchmark_is_in_the_suite(run_all) -> None:
    scripts = {p.name for p in BENCH_DIR.glob("bench_*.py")} - set(run_all.STANDALONE)
    assert scripts == {script for script, _, _ in run_all.BENCHMARKS.values()}
    assert set(run_all.BENCHMARKS) == set(MODEL_BENCHMARKS + STUDY_BENCHMARKS)


def test_every_script_is_a_module_of_the_package() -> None:
    """``python -m benchmarks.<name>`` runs a script: none puts its folder on ``sys.path``."""
    for path in sorted(BENCH_DIR.glob("*.py")):
        assert "sys.path" not in path.read_text(), f"{path.name} edits sys.path"
        module = importlib.import_module(f"benchmarks.{path.stem}")
        assert Path(module.__file__).resolve() == path.resolve()


def test_records_carry_figures_goals_and_machine(records) -> None:
    for name, record in records.items():
        assert record["benchmark"] == name and record["tiny"] is True
        assert record["checks"] and record["tables"], name
        for check in record["checks"]:
            assert check["met"] in (True, False, None)
            assert (check["goal"] is None) == (check["met"] is None)
            assert check["why_missed"] is None or check["met"] is False
            if check["met"] is False:
                assert check["why_missed"], f"{name}: a missed goal must say why"
        for table in record["tables"]:
            assert all(len(row) == len(table["columns"]) for row in table["rows"])
        machine = record["machine"]
        for key in ("cpu_model", "cpu_logical", "torch_threads", "torch", "date", "device"):
            assert machine[key] is not None, (name, key)
        assert machine["gpu"] is None or machine["gpu"]["name"]


def test_comparisons_are_interleaved_ratios(records) -> None:
    engine = records["engine_overhead"]["rows"][0]
    seconds = engine["timings"]["seconds"]
    assert seconds["dense"]["n"] == seconds["svite"]["n"] == 3
    assert engine["end_to_end_ratio"]["paper"]["median"] > 0
    assert engine["engine_timed_ratio"]["paper"]["median"] > 1  # the engine adds work, never removes it
    assert engine["update_intervals"]["paper"] >= 1

    update = records["topology_update"]["rows"]
    for key in ("svite", "s2vite"):
        assert update[key]["update_s"]["median"] > 0
        assert update[key]["fraction_of_dense_step"]["n"] == 2
    assert update["s2vite"]["updates_done"] >= 3  # one per iteration: warm-up and timed rounds

    slim = records["slim"]["rows"]
    assert {(r["head_density"], r["batch_size"]) for r in slim} == {(0.7, 1), (0.7, 2), (0.5, 1), (0.5, 2)}
    for row in slim:
        assert 0 < row["macs_saving"] < 1 and row["slim_vs_masked_max_abs_diff"] < 1e-4
        assert row["ratio"]["q25"] <= row["ratio"]["median"] <= row["ratio"]["q75"]


def test_study_benchmarks_split_the_overhead(records) -> None:
    harness = records["harness"]
    phases = harness["phases_s"][0]
    assert {"optuna storage", "mlflow tracking", "executor", "study report", "training (in the trial)"} <= set(phases)
    study_s = harness["timings"]["seconds"]["study"]["median"]
    assert sum(phases.values()) == pytest.approx(study_s, rel=0.05)
    assert harness["top1"]["direct"] == pytest.approx(harness["top1"]["study"])  # same config, same seed

    concurrency = records["concurrency"]
    assert concurrency["same_trials"] is True
    assert set(concurrency["trials_per_hour"]) == {"1_concurrent", "2_concurrent"}
    assert concurrency["speedup"]["median"] > 0


def test_report_shows_every_goal_and_its_status(run_all, records, tmp_path) -> None:
    results = {
        "suite": {"command": "python -m benchmarks.run_all --tiny", "tiny": True, "wall_s": 1.0,
                  "ran": list(records), "date": "today",
                  "full_run": {"command": "python -m benchmarks.run_all --tiny", "date": "today", "wall_s": 60.0,
                               "tiny": True},
                  "machine": run_all.suite_machine("cpu", list(records.values()))},
        "benchmarks": records,
    }
    run_all.write_report(results, tmp_path)
    text = (tmp_path / "README.md").read_text()
    assert json.loads((tmp_path / "results.json").read_text())["benchmarks"].keys() == records.keys()
    assert "## Machine" in text and records["slim"]["machine"]["cpu_model"] in text
    assert "took 1.0 min" in text and "tiny smoke sizes, not results" in text
    for record in records.values():
        assert f"## {record['title']}" in text
        for check in record["checks"]:
            assert check["figure"] in text
            if check["met"] is False:
                assert check["why_missed"] in text


def test_run_all_reruns_one_benchmark_and_keeps_the_others(records, tmp_path) -> None:
    kept = records["slim"]
    full_run = {"command": "python -m benchmarks.run_all --tiny", "date": "earlier", "wall_s": 90.0, "tiny": True}
    (tmp_path / "results.json").write_text(json.dumps({"suite": {"full_run": full_run}, "benchmarks": {"slim": kept}}))
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.run_all", "--tiny", "--only", "tokens", "--out-dir", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["suite"]["ran"] == ["tokens"] and results["suite"]["tiny"] is True
    assert results["suite"]["full_run"] == full_run  # the header still tells of the last full run
    assert results["benchmarks"]["slim"] == kept
    assert results["benchmarks"]["tokens"]["total_tokens"] == 65
    text = (tmp_path / "README.md").read_text()
    assert "## SViTE+ token dropping" in text and "## Slim S²ViTE inference" in text
    assert "started on earlier and took 1.5 min; re-run alone since: tokens" in text


def test_the_header_names_every_benchmark_run_after_the_full_run_and_mixed_machines(records, run_all) -> None:
    """A report kept across ``--only`` runs lists each newer benchmark with its date, not just the
    last run's, and says when its figures come from different CPUs."""
    import copy

    chosen = {name: copy.deepcopy(records[name]) for name in ("slim", "tokens", "driver")}
    chosen["slim"]["machine"].update(date="2026-01-01T10:00:00+00:00", cpu_model="CPU A")
    chosen["driver"]["machine"].update(date="2026-01-03T09:00:00+00:00", cpu_model="CPU A")
    chosen["tokens"]["machine"].update(date="2026-01-02T09:00:00+00:00", cpu_model="CPU B")
    full_run = {"command": "python -m benchmarks.run_all", "date": "2026-01-01T09:59:00+00:00", "wall_s": 600.0,
                "tiny": False}
    machine = dict(chosen["driver"]["machine"])
    text = run_all.render({"suite": {"full_run": full_run, "ran": ["driver"], "date": machine["date"],
                                     "machine": machine, "tiny": False},
                           "benchmarks": chosen})
    assert ("re-run alone since: tokens (2026-01-02T09:00+00:00), driver (2026-01-03T09:00+00:00).") in text
    assert "more than one machine (CPU A, CPU B)" in text
    one_cpu = copy.deepcopy(chosen)
    one_cpu["tokens"]["machine"]["cpu_model"] = "CPU A"
    assert "more than one machine" not in run_all.render(
        {"suite": {"full_run": full_run, "ran": ["driver"], "date": machine["date"], "machine": machine,
                   "tiny": False}, "benchmarks": one_cpu})


def test_unknown_benchmark_is_a_usage_error(tmp_path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.run_all", "--only", "nope", "--out-dir", str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2 and "nope" in proc.stderr
    assert not (tmp_path / "results.json").exists()


def test_the_bench_trainer_builds_a_model_of_a_thousand_classes() -> None:
    """The timing trainer's synthetic set fits the model's classes (ImageNet heads included):
    ``make bench`` times DeiT at 1,000 classes, which the tiny sizes above never build."""
    from benchmarks import benchkit as bk

    trainer = bk.bench_trainer("vit_tiny_patch16_224", dict(img_size=32, patch_size=8, embed_dim=32, depth=1,
                                                            num_heads=2, num_classes=1000),
                               device="cpu", amp=False)
    assert trainer.num_classes == 1000
