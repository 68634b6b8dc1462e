"""Concurrency: two ``svite-search search`` processes on one study directory, so two trials
train at once against the same sqlite stores (Optuna and MLflow) for the length of a small
study. No write may fail on a lock, and the two drivers must either cooperate (every trial
complete, none run twice, none of the other driver's trials failed as "interrupted", the
target reached exactly: a driver waits for the other's last trials rather than overshoot) or the
second must refuse at once with exit code 2 and one line.

The trials use ``rel_vit_slow`` (:mod:`fault_models`): each training step sleeps, so a trial
lasts seconds without using the CPU, and the first steps wait at a gate the test opens once
both drivers have a trial running, so the two really overlap whatever the machine's load.

Two races of drivers that start at the same moment are reproduced on their own, where the
timing can be forced: both creating the MLflow store, and both drawing their first
parameters.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from reliability_support import (
    CRASH_SPEC,
    cli_env,
    load_trials,
    mlflow_runs,
    sigkill,
    spec_with,
    start_cli,
    trial_states,
    wait_for,
    write_yaml,
)
from _support.waiting import HANG_S

N_TRIALS = 4
SPEC = spec_with(
    CRASH_SPEC, name="shared",
    model={"name": "rel_vit_slow"},
    train={**CRASH_SPEC["train"], "epochs": 2, "max_steps_per_epoch": 4},
    search={"sampler": "tpe", "n_trials": N_TRIALS, "seed": 0},
)
LOCK_ERRORS = ("database is locked", "OperationalError", "Traceback", "already exists")


def _finish(procs: list, logs: list[Path]) -> list[tuple[int, str]]:
    out = []
    for proc, log in zip(procs, logs):
        try:
            proc.wait(timeout=HANG_S)
        finally:
            if proc.poll() is None:
                sigkill(proc)
        out.append((proc.returncode, log.read_text()))
    return out


@pytest.mark.slow
def test_a_second_search_on_a_running_study_cooperates_without_lock_errors(tmp_path: Path, new_study_dir) -> None:
    study = new_study_dir("study")
    spec = write_yaml(tmp_path / "shared.yaml", SPEC)
    gate = tmp_path / "gate"
    env = {"REL_SLOW_S": "0.2", "REL_GATE": str(gate)}
    args = ("search", spec, "--out", study, "--no-progress")
    logs = [tmp_path / "first.log", tmp_path / "second.log"]
    first = start_cli(*args, cwd=tmp_path, log=logs[0], faults=True, **env)
    second = None
    try:
        wait_for(lambda: trial_states(study).get(0) == "RUNNING", first)
        second = start_cli(*args, cwd=tmp_path, log=logs[1], faults=True, **env)
        wait_for(lambda: list(trial_states(study).values()).count("RUNNING") == 2 or second.poll() is not None, first)
    finally:
        gate.touch()
    results = _finish([first, second], logs)

    for code, text in results:
        found = [e for e in LOCK_ERRORS if e in text]
        assert not found, (found, text[-3000:])
    codes = [code for code, _ in results]
    if codes[1] == 2:  # the second refused: one line naming the directory; the first finished alone
        lines = [line for line in results[1][1].splitlines() if line.startswith("svite-search")]
        assert len(lines) == 1 and str(study) in lines[0], results[1][1][-2000:]
    assert codes in ([0, 0], [0, 2]), [text[-2000:] for _, text in results]

    trials = _assert_exactly_n_complete(study, N_TRIALS)
    params = [tuple(sorted(t.params.items())) for t in trials]
    assert len(set(params)) == len(params), "the two drivers ran the same parameters"
    if codes == [0, 0]:
        assert len({t.user_attrs.get("driver") for t in trials}) == 2, "the second driver never trained"
    parents, runs = mlflow_runs(study)
    assert [p.info.status for p in parents] == ["FINISHED"]
    assert sorted(int(r.data.tags["svite.trial"]) for r in runs) == [t.number for t in trials]
    assert {r.info.status for r in runs} == {"FINISHED"}


def _assert_exactly_n_complete(study: Path, n_trials: int) -> list:
    """The study has exactly ``n_trials`` trials, all COMPLETE: a driver whose claim of a trial
    came too late (the other driver's trials fill the study) gave it back to the queue unrun
    (WAITING, unsigned) and waited. Returns the trials that ran."""
    trials = load_trials(study)
    ran = [t for t in trials if t.state.name != "WAITING"]
    assert all(t.state.name == "COMPLETE" for t in ran), {t.number: t.state.name for t in trials}
    assert len(ran) == n_trials, {t.number: t.state.name for t in trials}  # never overshoot
    given_back = [t for t in trials if t.state.name == "WAITING"]
    assert all(t.user_attrs.get("driver") is None and not t.params for t in given_back), given_back
    return ran


#: A Ray study whose trials last long enough (20 epochs) for a second driver to join in.
RAY_SPEC = spec_with(
    CRASH_SPEC, name="shared-ray",
    train={**CRASH_SPEC["train"], "epochs": 20, "max_steps_per_epoch": 2},
    search={"sampler": "random", "n_trials": 3, "seed": 0},
    executor={"kind": "ray", "cpus_per_trial": 1, "max_concurrent": 1},
)


@pytest.mark.slow
def test_two_ray_drivers_on_one_study_run_exactly_n_trials(ray_address: str, tmp_path: Path, new_study_dir) -> None:
    study = new_study_dir("study")
    spec = write_yaml(tmp_path / "shared-ray.yaml", RAY_SPEC)
    args = ("search", spec, "--out", study, "--no-progress")
    logs = [tmp_path / "first.log", tmp_path / "second.log"]
    first = start_cli(*args, cwd=tmp_path, log=logs[0], RAY_ADDRESS=ray_address)
    second = None
    try:
        wait_for(lambda: trial_states(study).get(0) == "RUNNING", first)
        second = start_cli(*args, cwd=tmp_path, log=logs[1], RAY_ADDRESS=ray_address)
    finally:
        results = _finish([p for p in (first, second) if p is not None], logs)
    assert [code for code, _ in results] == [0, 0], [text[-2000:] for _, text in results]
    ran = _assert_exactly_n_complete(study, RAY_SPEC["search"]["n_trials"])
    parents, runs = mlflow_runs(study)
    assert sorted(int(r.data.tags["svite.trial"]) for r in runs) == [t.number for t in ran]


#: A report writer that stays alive, to name a staging folder as its own.
LIVE_WRITER = "import sys; sys.stdin.read()"


@pytest.mark.slow
def test_a_report_write_keeps_another_writers_staging_folder(tmp_path: Path, reference_study: Path) -> None:
    import shutil
    import socket

    study = tmp_path / "study"
    shutil.copytree(reference_study, study)
    report = study / "report"
    writer = subprocess.Popen([sys.executable, "-c", LIVE_WRITER], stdin=subprocess.PIPE)
    try:
        live = report / f".staging-{socket.gethostname()}-{writer.pid}-abcd1234.tmp"
        live.mkdir()
        (live / "trials.csv").write_text("being written\n")
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
        killed = report / f".staging-{socket.gethostname()}-{dead.stdout.strip()}-efgh5678.tmp"
        killed.mkdir()
        done = subprocess.run([sys.executable, "-m", "svite_search", "report", str(study)], cwd=tmp_path,
                              env=cli_env(), capture_output=True, text=True, timeout=HANG_S)
        assert done.returncode == 0, done.stderr[-3000:]
        assert (live / "trials.csv").read_text() == "being written\n"  # the live writer's folder is intact
        assert not killed.exists()  # a killed writer's folder is cleared
        assert (report / "summary.md").is_file()
    finally:
        writer.communicate(b"")


#: Waits for the go file, then opens the MLflow store as a search driver does.
OPEN_STORE = r"""
import sys, time
from pathlib import Path
import svite_search
from svite_search.tracking._client import make_client
ready, go, uri = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
ready.touch()
while not go.exists():
    time.sleep(0.005)
make_client(uri).search_experiments()
"""


@pytest.mark.slow
def test_two_drivers_creating_the_mlflow_store_at_once(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'study' / 'mlflow.db'}"
    go = tmp_path / "go"
    procs, ready = [], []
    for i in range(2):
        ready.append(tmp_path / f"ready-{i}")
        procs.append(subprocess.Popen([sys.executable, "-c", OPEN_STORE, str(ready[-1]), str(go), uri],
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=cli_env()))
    # both ready, or one ended early (its output then fails the assertion below)
    wait_for(lambda: all(r.exists() for r in ready) or any(proc.poll() is not None for proc in procs), None)
    go.touch()
    outputs = [proc.communicate(timeout=HANG_S)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], [out[-1500:] for out in outputs]


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_two_drivers_opening_a_study_together_draw_different_parameters(tmp_path: Path) -> None:
    from svite_search.search import load_spec, prepare_study, suggest_params

    spec = load_spec(write_yaml(tmp_path / "shared.yaml", CRASH_SPEC))
    study_dir = tmp_path / "study"
    first, second = prepare_study(spec, study_dir), prepare_study(spec, study_dir)
    drawn = [suggest_params(handle.study.ask(), spec) for handle in (first, second)]
    assert drawn[0] != drawn[1]
