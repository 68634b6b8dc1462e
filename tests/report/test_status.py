"""status / list / --version: read a study while another process runs it, from its storage."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import optuna
import pandas as pd

from svite_search.cli import main
from svite_search.report.status import estimate_eta, study_status
from _support.waiting import HANG_S

SPEC = {
    "name": "watched",
    "method": {"choices": ["dense", "svite"]},
    "data": {"dataset": "digits"},
    "model": {"name": "vit_micro"},
    "train": {"epochs": 4},
    "sparsity": {"density": {"low": 0.3, "high": 0.8}},
    "search": {"sampler": "random", "n_trials": 3, "seed": 0},
    "executor": {"kind": "local"},
    "tracking": {"enabled": False},
}

# A driver in its own process: one trial complete, one running at epoch 2 of 4 (written through the
# search's own monitor), then it waits for a line on stdin before finishing the running trial.
DRIVER = textwrap.dedent("""
    import sys, json
    from pathlib import Path
    from svite_search.search.spec import spec_from_dict
    from svite_search.search.study import prepare_study, record_outcome
    from svite_search.search.objective import TrialOutcome, COMPLETE
    from svite_search.search.monitor import SearchMonitor
    from svite_search.tracking.study import NullStudyTracker

    spec = spec_from_dict(json.loads(sys.argv[2]))
    handle = prepare_study(spec, Path(sys.argv[1]))
    study = handle.study
    monitor = SearchMonitor(spec, study, NullStudyTracker(), live=False, stream=sys.stderr)
    first = study.ask({"method": __import__("optuna").distributions.CategoricalDistribution(["dense", "svite"])})
    record_outcome(study, first, TrialOutcome(first.number, COMPLETE, values=[95.0, 0.002],
                   attrs={"top1": 95.0, "gmacs": 0.002, "top1_history": [80.0, 95.0]}), spec)
    second = study.ask({"method": __import__("optuna").distributions.CategoricalDistribution(["dense", "svite"])})
    from svite_search.search.study import DRIVER_ATTR, driver_id
    second.set_user_attr(DRIVER_ATTR, driver_id())
    monitor.started(second.number, second.params, second._trial_id)
    monitor.epoch(second.number, {"epoch": 1, "top1": 61.25})
    monitor.epoch(second.number, {"epoch": 2, "top1": 72.5})
    print("ready", flush=True)
    sys.stdin.readline()
    record_outcome(study, second, TrialOutcome(second.number, COMPLETE, values=[90.0, 0.001],
                   attrs={"top1": 90.0, "gmacs": 0.001}), spec)
    print("done", flush=True)
""")


def _storage_of(study_dir: Path) -> str:
    from svite_search.report._study import load_study_dir

    return load_study_dir(study_dir)[0]._storage


@pytest.fixture()
def running_study(tmp_path: Path, request: pytest.FixtureRequest):
    """``(study_dir, driver process)``; param ``shared``: the study lives in a database outside
    the study directory (``search.storage``), as on a cluster."""
    study_dir = tmp_path / "runs" / "watched"
    spec = json.loads(json.dumps(SPEC))
    if getattr(request, "param", "local") == "shared":
        spec["search"]["storage"] = f"sqlite:///{tmp_path / 'shared' / 'optuna.db'}"
        (tmp_path / "shared").mkdir()
    proc = subprocess.Popen([sys.executable, "-c", DRIVER, str(study_dir), json.dumps(spec)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        yield study_dir, proc
    finally:
        if proc.poll() is None:
            proc.stdin.write("\n")
            proc.stdin.flush()
        proc.wait(timeout=HANG_S)


@pytest.mark.parametrize("running_study", ["local", "shared"], indirect=True)
def test_status_of_a_study_another_process_is_running(running_study, capsys: pytest.CaptureFixture) -> None:
    study_dir, proc = running_study
    info = study_status(study_dir)
    assert info["state"] == "running" and info["n_trials"] == 3
    assert info["counts"]["complete"] == 1 and info["counts"]["running"] == 1
    (trial,) = info["running"]
    assert (trial["number"], trial["epoch"], trial["epochs"], trial["top1"]) == (1, 2, 4, 72.5)
    assert trial["driver_gone"] is False
    # what optuna-dashboard lists among the running trial's user attributes
    stored = optuna.load_study(study_name="watched", storage=_storage_of(study_dir)).trials[1].user_attrs
    assert stored["top1_history"] == [61.25, 72.5] and stored["epoch"] == 2
    assert info["eta_s"] is not None and info["eta_s"] > 0
    assert [f["number"] for f in info["front"]] == [0]

    assert main(["status", str(study_dir)]) == 0
    text = capsys.readouterr().out
    assert "running" in text.splitlines()[0] and "epoch 2/4" in text and "top1 72.50" in text and "ETA" in text
    assert main(["status", str(study_dir), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["running"][0]["top1"] == 72.5

    proc.stdin.write("\n")
    proc.stdin.flush()
    assert proc.stdout.readline().strip() == "done"
    proc.wait(timeout=60)
    # --watch returns by itself once nothing runs any more
    assert main(["status", str(study_dir), "--watch", "--interval", "0.01", "--json"]) == 0
    final = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert final["state"] == "stopped" and final["counts"]["complete"] == 2 and final["running"] == []
    assert final["eta_s"] is not None  # one trial left at the mean time

    from svite_search.report import write_report

    write_report(study_dir)
    curves = pd.read_csv(study_dir / "report" / "trials.csv")["top1_history"].tolist()
    assert json.loads(curves[0]) == [80.0, 95.0] and json.loads(curves[1]) == [61.25, 72.5]

    assert main(["list", str(study_dir.parent.parent), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)["studies"]
    assert [(s["study"], s["state"], s["counts"]["finished"]) for s in listed] == [("watched", "stopped", 2)]


def test_a_running_trial_whose_driver_died_is_not_running(running_study) -> None:
    study_dir, proc = running_study
    proc.kill()
    proc.wait(timeout=60)
    info = study_status(study_dir)
    assert info["running"][0]["driver_gone"] is True
    assert info["state"] == "stopped"


def test_eta_without_a_finished_trial_uses_the_epoch_rate() -> None:
    running = [{"epoch": 2, "epochs": 4, "elapsed_s": 10.0, "driver_gone": False}]
    assert estimate_eta(3, 0, running, None, concurrency=1) == pytest.approx(20.0 * (0.5 + 2))
    assert estimate_eta(None, 0, running, 5.0) is None


def test_bad_input_and_version(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["status", str(tmp_path / "nothing")]) == 2
    assert "no such directory" in capsys.readouterr().err
    assert main(["list", str(tmp_path / "nothing")]) == 2
    assert main(["list", str(tmp_path)]) == 0 and "no study directories" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.startswith("svite-search 0.")
