"""paper-table: the paper's grid, its reported values, our analytic MACs and our runs' accuracy."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from svite_search.cli import main
from svite_search.config import load_config
from svite_search.report.paper import paper_results, paper_rows
from svite_search.train import run_training


@pytest.fixture(scope="module")
def deit_rows() -> list[dict]:
    return paper_rows()


def _row(rows: list[dict], label: str, setting: str) -> dict:
    return next(r for r in rows if r["label"] == label and r["setting"] == setting)


def test_svite_plus_headline_saving(deit_rows: list[dict]) -> None:
    row = _row(deit_rows, "DeiT-Small", "SViTE+ 187/197 tokens, 50 % sparse (density 0.5)")
    assert row["tokens_kept"] == 187 and row["density"] == 0.5
    assert abs(row["macs_saving_pct"] - 49.32) < 0.3
    assert row["paper_flops_saving_pct"] == 49.32 and row["paper_time_saving_pct"] == 4.40
    assert row["paper_top1"] == 80.18 and "abstract" in row["paper_source"]
    assert row["dense_gmacs"] == pytest.approx(4.6, abs=0.01)  # DeiT-Small: 4.6 G MACs


def test_grid_covers_every_model_and_known_value(deit_rows: list[dict]) -> None:
    for label in ("DeiT-Tiny", "DeiT-Small", "DeiT-Base"):
        settings = [r["setting"] for r in deit_rows if r["label"] == label]
        assert settings[0] == "dense"
        assert {f"SViTE, {s} % sparse (density {1 - s / 100:g})" for s in (30, 40, 50, 60, 70)} <= set(settings)
        assert {f"SViTE+ {k}/197 tokens, 50 % sparse (density 0.5)" for k in (187, 177, 138, 99)} <= set(settings)
        assert sum(s.startswith("S²ViTE") for s in settings) == 3
    reported = {(r["label"], r["setting"]): r["paper_top1"] for r in deit_rows if r["paper_top1"] is not None}
    assert reported == {
        ("DeiT-Tiny", "dense"): 72.2, ("DeiT-Small", "dense"): 79.8, ("DeiT-Base", "dense"): 81.8,
        ("DeiT-Small", "SViTE+ 187/197 tokens, 50 % sparse (density 0.5)"): 80.18, ("DeiT-Small", "SViTE+ 177/197 tokens, 50 % sparse (density 0.5)"): 79.91,
        ("DeiT-Base", "SViTE, 40 % sparse (density 0.6)"): 81.56, ("DeiT-Base", "SViTE, 50 % sparse (density 0.5)"): 81.51,
        ("DeiT-Base", "S²ViTE, head density 0.7, MLP density 0.6"): 82.22, ("DeiT-Small", "S²ViTE, head density 0.5, MLP density 0.5"): 79.22,
        ("DeiT-Tiny", "S²ViTE, head density 0.7, MLP density 0.7"): 70.12,
    }
    assert all(item["source"] for item in paper_results()["reported"])
    savings = [r["macs_saving_pct"] for r in deit_rows if r["label"] == "DeiT-Base" and r["setting"].startswith("SViTE, ")]
    assert savings == sorted(savings)  # sparser saves more
    assert "79.90" in _row(deit_rows, "DeiT-Small", "dense")["paper_note"]


def test_our_runs_fill_the_matching_row(tmp_path: Path) -> None:
    """A real (very short) SViTE+ run on digits lands in its row, with the same MACs saving."""
    cfg = load_config(None, ["model.name=vit_digits", "train.epochs=1", "train.warmup_epochs=0",
                             "train.max_steps_per_epoch=2", "method=svite", "sparsity.density=0.5",
                             "tokens.keep_ratio=0.95", "train.threads=1"])
    result = run_training(cfg, tmp_path / "runs" / "a", progress=False)
    copy = tmp_path / "runs" / "mlartifacts" / "1" / "abc" / "artifacts"  # a tracked run's artifact copy
    copy.mkdir(parents=True)
    for name in ("result.json", "config.yaml"):
        (copy / name).write_bytes((tmp_path / "runs" / "a" / name).read_bytes())
    rows = paper_rows(["vit_digits"], runs=[tmp_path / "runs"])
    mine = [r for r in rows if r["our_runs"]]
    assert [r["setting"] for r in mine] == ["SViTE+ 16/17 tokens, 50 % sparse (density 0.5)"] and mine[0]["our_runs"] == 1
    assert mine[0]["our_top1"] == pytest.approx(result["top1"])
    assert mine[0]["our_macs_saving_pct"] == pytest.approx(mine[0]["macs_saving_pct"], abs=1e-6)


def test_paper_table_command_formats(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    assert main(["paper-table", "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 3 * 13 and rows[0]["model"] == "deit_tiny_patch16_224"
    assert main(["paper-table", "--json", "--model", "vit_digits"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["paper"]["arxiv"] == "2106.04533" and len(data["rows"]) == 13
    assert main(["paper-table"]) == 0
    text = capsys.readouterr().out
    assert "## DeiT-Small (dense: 4.599 GMACs)" in text and "49.24 (paper: 49.32)" in text
    assert main(["paper-table", "--runs", str(tmp_path / "missing")]) == 2
    assert main(["paper-table", "--model", "no_such_model"]) == 2


def test_rows_count_what_macs_for_counts(deit_rows: list[dict]) -> None:
    """The table's shared shape-only model gives the flops command's figures."""
    from svite_search.report.macs import macs_for

    for row in deit_rows[13:26]:  # DeiT-Small
        report = macs_for(row["model"], density=row["density"], head_density=row["head_density"],
                          mlp_density=row["mlp_density"], keep_tokens=row["tokens_kept"])
        assert row["gmacs"] == pytest.approx(report.gmacs, rel=1e-12)


def _dense_run(out: Path, *overrides: str) -> dict:
    cfg = load_config(None, ["model.name=vit_digits", "train.warmup_epochs=0", "train.max_steps_per_epoch=1",
                             "method=dense", "train.threads=1", *overrides])
    return run_training(cfg, out, progress=False)


def test_runs_pool_only_within_one_recipe(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Two seeds of one recipe pool (mean ± sd, n=2); a run with more epochs gets its own row."""
    runs = tmp_path / "runs"
    a = _dense_run(runs / "seed0", "train.epochs=1", "train.seed=0")
    b = _dense_run(runs / "seed1", "train.epochs=1", "train.seed=1")
    c = _dense_run(runs / "longer", "train.epochs=2", "train.seed=0")
    rows = [r for r in paper_rows(["vit_digits"], runs=[runs]) if r["setting"] == "dense"]
    assert [(r["our_recipe"], r["our_runs"]) for r in rows] == [("R1", 2), ("R2", 1)]
    pooled, single = rows
    assert pooled["our_top1"] == pytest.approx((a["top1"] + b["top1"]) / 2)
    assert pooled["our_top1_sd"] == pytest.approx(abs(a["top1"] - b["top1"]) / 2 ** 0.5)
    assert sorted(pooled["our_run_dirs"]) == [str(runs / "seed0"), str(runs / "seed1")]
    assert single["our_top1"] == pytest.approx(c["top1"]) and single["our_top1_sd"] is None
    assert single["our_run_dirs"] == [str(runs / "longer")]

    assert main(["paper-table", "--model", "vit_digits", "--runs", str(runs)]) == 0
    text = capsys.readouterr().out
    assert "| dense [R1] |" in text and "| dense [R2] |" in text and " ± " in text and "(n=2)" in text
    assert "- **R1**: train.epochs=1" in text and "- **R2**: train.epochs=2" in text
    assert f"`{runs / 'longer'}`" in text
    assert "density = 1 − sparsity" in text
    assert main(["paper-table", "--model", "vit_digits", "--runs", str(runs), "--format", "csv"]) == 0
    rows = [r for r in csv.DictReader(io.StringIO(capsys.readouterr().out)) if r["setting"] == "dense"]
    assert [r["our_recipe"] for r in rows] == ["R1", "R2"] and rows[0]["our_run_dirs"].count(";") == 1
