"""``make gpu-check`` on a machine without a GPU: the degraded run says what it skipped and why,
and never writes into the committed GPU report."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from benchmarks import gpu_check


@pytest.mark.skipif(torch.cuda.is_available(), reason="the degraded run is what a CPU machine does")
def test_degraded_run_reports_every_part_and_what_it_skipped(tmp_path: Path) -> None:
    threads = torch.get_num_threads()
    try:
        code = gpu_check.main(["--out-dir", str(tmp_path / "check")])
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    results = json.loads((tmp_path / "check" / "results.json").read_text())
    suite, parts = results["suite"], results["parts"]
    assert "no CUDA device" in suite["degraded"] and "tiny" in suite["degraded"]
    assert list(parts) == list(gpu_check.PARTS)
    assert all(p["status"] == "ran" for p in parts.values()), {n: p["reason"] for n, p in parts.items()}
    tests = parts["gpu_tests"]["counts"]
    assert tests["skipped"] >= 20 and tests["passed"] == tests["failed"] == 0  # the GPU tests skip themselves
    throughput = parts["train_throughput"]["throughput"]
    assert throughput["svite"]["median"] > 0 and throughput["s2vite"]["median"] > 0
    assert {c["met"] for p in parts.values() for c in p["checks"] if p["part"] != "study"} == {None}  # no verdicts
    assert parts["study"]["summary"]["trials_complete"] == 1
    readme = (tmp_path / "check" / "README.md").read_text()
    assert "Degraded run: no CUDA device" in readme and "not results" in readme
    assert "needs a CUDA device" in readme


def test_a_degraded_run_refuses_the_gpu_report_directory(capsys: pytest.CaptureFixture[str]) -> None:
    report = gpu_check.GPU_REPORT_DIR
    before = {p.name: p.read_bytes() for p in report.iterdir()} if report.is_dir() else {}
    assert gpu_check.main(["--tiny", "--only", "inference", "--out-dir", str(report)]) == 2
    assert "may not write the GPU report" in capsys.readouterr().err
    after = {p.name: p.read_bytes() for p in report.iterdir()} if report.is_dir() else {}
    assert after == before


def test_missing_packages_skip_their_part_with_the_reason(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    real = gpu_check.has
    monkeypatch.setattr(gpu_check, "has", lambda name: False if name in ("optuna", "pytest") else real(name))
    assert gpu_check.main(["--tiny", "--only", "gpu_tests", "--only", "study", "--out-dir", str(tmp_path)]) == 0
    parts = json.loads((tmp_path / "results.json").read_text())["parts"]
    assert parts["study"]["status"] == "skipped" and "optuna not installed" in parts["study"]["reason"]
    assert parts["gpu_tests"]["status"] == "skipped" and "pytest is not installed" in parts["gpu_tests"]["reason"]
    assert "skipped: optuna not installed" in (tmp_path / "README.md").read_text()
    # a rerun of one part keeps the other's last result
    assert gpu_check.main(["--tiny", "--only", "gpu_tests", "--out-dir", str(tmp_path)]) == 0
    again = json.loads((tmp_path / "results.json").read_text())
    assert list(again["parts"]) == ["gpu_tests", "study"] and again["suite"]["kept_from_earlier_run"]["parts"] == ["study"]
