"""SIGKILL of a running ``svite-search search`` mid-trial, then the same command again."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from optuna.trial import TrialState

from _support.kill import kill_when
from svite_search.harness import run_search
from svite_search.search import load_spec, load_study
from svite_search.search.study import INTERRUPTED

pytestmark = pytest.mark.slow


def _states(db: Path) -> dict[int, str]:
    if not db.exists():
        return {}
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return dict(conn.execute("SELECT number, state FROM trials").fetchall())
    except sqlite3.OperationalError:  # tables not created yet, or locked for a moment
        return {}


def test_sigkill_mid_study_loses_nothing_and_counts_nothing_twice(tmp_path: Path, tiny_spec: Any,
                                                                   write_spec: Any) -> None:
    spec_path = write_spec(tmp_path, tiny_spec(
        train={"epochs": 4, "max_steps_per_epoch": 4, "warmup_epochs": 0, "checkpoint": True},
        search={"sampler": "tpe", "n_trials": 3, "seed": 0},
    ))
    out = tmp_path / "study"
    env = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "svite_search", "search", str(spec_path), "--executor", "local", "--out", str(out),
         "--json", "--no-progress"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )
    def mid_trial() -> int | None:
        """One trial finished and the next one has checkpointed at least one epoch."""
        states = _states(out / "optuna.db")
        running = [n for n, s in states.items() if s == "RUNNING"]
        done = [n for n, s in states.items() if s == "COMPLETE"]
        if done and running and (out / "trials" / str(running[0]) / "last.pt").exists():
            return running[0]
        return None

    killed = kill_when(proc, mid_trial)
    assert killed is not None, "the search finished or stalled before it could be killed mid-trial"
    assert proc.returncode == -signal.SIGKILL

    before = load_study(out)
    complete_before = {t.number for t in before.trials if t.state == TrialState.COMPLETE}
    assert before.trials[killed].state == TrialState.RUNNING

    summary = run_search(load_spec(spec_path), out, live=False)  # the same study again
    study = load_study(out)
    trials = study.trials
    assert summary["recovered"] == [killed]
    assert summary["trials_complete"] == 3
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 3 and len({t.number for t in complete}) == 3
    assert complete_before <= {t.number for t in complete}  # nothing completed was lost
    interrupted = trials[killed]
    assert interrupted.state == TrialState.FAIL and interrupted.user_attrs["fail_reason"] == INTERRUPTED
    reruns = [t for t in trials if t.user_attrs.get("retry_of") == killed]
    assert len(reruns) == 1 and reruns[0].state == TrialState.COMPLETE
    assert reruns[0].params == interrupted.params
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
