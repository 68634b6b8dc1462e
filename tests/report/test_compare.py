"""compare: fronts of several real Optuna studies overlaid, hypervolume on one shared scale."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest

from svite_search.cli import main
from svite_search.report.pareto import hypervolume, normalisation

from _browser import render

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _study(directory: Path, name: str, points: list[tuple[float, float]], directions=("maximize", "minimize")) -> None:
    directory.mkdir(parents=True)
    study = optuna.create_study(study_name=name, storage=f"sqlite:///{directory / 'optuna.db'}", directions=list(directions))
    for number, values in enumerate(points):
        trial = study.ask()
        trial.set_user_attr("method", "dense" if number == 0 else "svite")
        study.tell(trial, list(values))


A = [(96.0, 0.0024), (94.0, 0.0015), (90.0, 0.0010), (88.0, 0.0020)]
B = [(96.5, 0.0024), (95.0, 0.0012), (91.0, 0.0008)]  # dominates A's front everywhere


def test_compare_two_studies(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _study(tmp_path / "a", "study-a", A)
    _study(tmp_path / "b", "study-b", B)
    out = tmp_path / "cmp"
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert sorted(result["files"]) == ["compare.html", "compare.md", "compare.png", "fronts.csv"]
    assert all((out / f).is_file() for f in result["files"])
    a, b = result["studies"]
    assert [f["number"] for f in a["front"]] == [0, 1, 2] and [f["number"] for f in b["front"]] == [0, 1, 2]
    # one reference point for both, from all their trials
    pooled = np.array(A + B)
    reference, ideal = normalisation(pooled, [True, False])
    assert a["hypervolume"] == pytest.approx(hypervolume(np.array(A), [True, False], reference, ideal))
    assert b["hypervolume"] == pytest.approx(hypervolume(np.array(B), [True, False], reference, ideal))
    assert b["hypervolume"] > a["hypervolume"]
    assert result["reference_point"]["top1"] < 88.0 and result["reference_point"]["gmacs"] > 0.0024
    assert a["trials"] == 4 and a["trial_time_s"] >= 0 and a["wall_time_s"] is not None
    fronts = pd.read_csv(out / "fronts.csv")
    assert fronts["study"].tolist() == ["study-a"] * 3 + ["study-b"] * 3
    text = (out / "compare.md").read_text()
    assert "## Front of `study-a`" in text and "## Front of `study-b`" in text and "hypervolume (shared)" in text

    dom = render(out / "compare.html")
    assert len(re.findall(r'class="point"', dom)) == len(A) + len(B) + 6  # every trial, then the fronts' markers
    assert "study-a: front (3)" in dom and "study-b: front (3)" in dom


def test_compare_refuses_what_would_not_compare(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    _study(tmp_path / "a", "study-a", A)
    _study(tmp_path / "c", "study-c", [(96.0, 0.0024)], directions=("maximize", "maximize"))
    assert main(["compare", str(tmp_path / "a"), "--out", str(tmp_path / "x")]) == 2
    assert "at least two" in capsys.readouterr().err
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "c"), "--out", str(tmp_path / "x")]) == 2
    assert "objectives" in capsys.readouterr().err
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "missing"), "--out", str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x").exists()
    (tmp_path / "file").write_text("")
    assert main(["compare", str(tmp_path / "a"), str(tmp_path / "a"), "--out", str(tmp_path / "file")]) == 2
    assert "is a file" in capsys.readouterr().err
