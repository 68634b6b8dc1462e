"""Smoke test of the SViTE+ benchmark script (tiny model): it runs and reports consistent rows."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_tokens.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_tokens", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tiny_run_writes_consistent_rows(bench, tmp_path) -> None:
    out = tmp_path / "tokens.json"
    assert bench.main(["--tiny", "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["total_tokens"] == 65 and result["threads"] == 1
    rows = {row["model"]: row for row in result["rows"]}
    assert set(rows) == {"gather_61", "gather_49", "gather_33", "zero_33"}
    for total in (61, 49, 33):
        row = rows[f"gather_{total}"]
        assert row["blocks_see_tokens"] == row["kept_tokens"] == total
        assert 0 < row["macs_saving"] < 1 and isinstance(row["meets_goal"], bool)
    assert rows["gather_33"]["macs_saving"] > rows["gather_49"]["macs_saving"] > rows["gather_61"]["macs_saving"]
    zero = rows["zero_33"]
    assert zero["blocks_see_tokens"] == 65 and zero["kept_tokens"] == 33
    assert zero["macs_saving"] == 0.0 and "meets_goal" not in zero
