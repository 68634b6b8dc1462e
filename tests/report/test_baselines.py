"""train and export-slim name the baseline of every saving they print, in one MACs unit."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from svite_search.cli import main

DIGITS = str(Path(__file__).resolve().parents[2] / "studies" / "digits.yaml")
TRAIN = ["--set", "model.name=vit_digits", "--set", "method=s2vite", "--set", "tokens.keep_ratio=0.75",
         "--set", "train.epochs=1", "--set", "train.warmup_epochs=0", "--set", "train.max_steps_per_epoch=2",
         "--set", "train.threads=1", "--set", "train.checkpoint=true"]


def test_train_and_export_slim_agree_once_the_baselines_are_named(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = tmp_path / "run"
    assert main(["train", DIGITS, "--out", str(run), *TRAIN]) == 0
    text = capsys.readouterr().out
    saving = re.search(r"saving (\d+\.\d+) % vs the dense model \((\S+) MMACs: every weight, head and token\)", text)
    assert saving, text
    assert "GMACs" not in text  # one unit for one model
    assert main(["train", DIGITS, "--out", str(run), *TRAIN, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert float(saving.group(1)) == pytest.approx(100 * result["flops_savings"], abs=0.005)

    assert main(["export-slim", str(run / "last.pt"), "--out", str(tmp_path / "slim.pt")]) == 0
    text = capsys.readouterr().out
    assert "GMACs" not in text and "MMACs" in text
    line = next(l for l in text.splitlines() if l.startswith("MACs"))
    unslimmed = re.search(r"saving (\d+\.\d+) % vs the unslimmed model \(same (\d+) of (\d+) tokens\)", line)
    dense = re.search(r"(\d+\.\d+) % vs the dense model \((\S+) MMACs: every head, neuron and token", line)
    assert unslimmed and dense, line
    assert float(dense.group(1)) == pytest.approx(float(saving.group(1)), abs=0.005)  # same checkpoint, same baseline
    assert dense.group(2) == saving.group(2)
    assert float(unslimmed.group(1)) < float(dense.group(1))  # the unslimmed model already drops tokens
    assert int(unslimmed.group(2)) < int(unslimmed.group(3)) == 17
