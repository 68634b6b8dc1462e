"""A study that stops before its target: a signal, a failing machine, too many failed trials.

* SIGINT / SIGTERM of ``search`` (both executors): a clean stop, the running trial FAIL with
  the reason ``interrupted`` and queued again, the MLflow study run KILLED, exit 130 / 143 and
  one line saying that the same command resumes; the same command then finishes the study.
* A file size limit (``RLIMIT_FSIZE``, the kernel's EFBIG: what a full disk or a quota does to
  a checkpoint write) inside a trial: the study stops at once with exit 1 and one line naming
  the file and the cause; the trial is queued again, no enqueued point is lost, and the rerun
  takes the stopped trial first.
* ``search.max_failures`` reached before ``n_trials``: exit 1 and why.
* SIGKILL of a Ray driver: the next run stops the Ray processes it left and removes their
  session folder.

Every stop point is a state seen from outside (a trial RUNNING in the Optuna storage, a file
the trial wrote), never a pause.
"""
from __future__ import annotations

import os
import re
import resource
import signal
import subprocess
from pathlib import Path

import pytest

from reliability_support import (
    CRASH_SPEC,
    assert_study_consistent,
    cli_command,
    cli_env,
    load_trials,
    mlflow_runs,
    run_cli,
    sigkill,
    spec_with,
    start_cli,
    trial_states,
    wait_for,
    write_yaml,
)
from _support.waiting import HANG_S

pytestmark = pytest.mark.slow

#: two trials of the slow fault model: each waits at the gate before its first step
SLOW_SPEC = spec_with(
    CRASH_SPEC, name="stops", model={"name": "rel_vit_slow"},
    train={**CRASH_SPEC["train"], "epochs": 2, "max_steps_per_epoch": 2},
    search={"sampler": "tpe", "n_trials": 2, "seed": 0},
)
#: a Ray study whose trial lasts (60 epochs of 2 steps) so that a signal finds it running
RAY_SPEC = spec_with(
    CRASH_SPEC, name="ray-stops",
    train={**CRASH_SPEC["train"], "epochs": 60, "max_steps_per_epoch": 2},
    search={"sampler": "random", "n_trials": 1, "seed": 0},
    executor={"kind": "ray", "cpus_per_trial": 1, "max_concurrent": 1, "num_cpus": 1},
)


def _last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def _assert_interrupted(study: Path, log_text: str, code: int, sig: int) -> None:
    assert code == 128 + sig, (code, log_text[-3000:])
    last = _last_line(log_text)
    assert last.startswith("svite-search search: interrupted by") and "same command resumes" in last, last
    for noise in ("Traceback", "Tuner.restore", "core dumped"):
        assert noise not in log_text, log_text[-3000:]
    trials = load_trials(study)
    stopped = [t for t in trials if t.state.name == "FAIL"]
    assert [t.number for t in stopped] == [0], {t.number: t.state.name for t in trials}
    assert stopped[0].user_attrs["fail_reason"].startswith("interrupted"), stopped[0].user_attrs
    assert "RUNNING" not in {t.state.name for t in trials}
    queued = [t for t in trials if t.state.name == "WAITING" and t.user_attrs.get("retry_of") == 0]
    assert len(queued) == 1 and queued[0].system_attrs["fixed_params"] == stopped[0].params, queued
    parents, runs = mlflow_runs(study)
    assert [p.info.status for p in parents] == ["KILLED"], [p.info.status for p in parents]
    run = {int(r.data.tags["svite.trial"]): r for r in runs}[0]
    assert run.info.status == "FAILED" and run.data.tags["svite.error"].startswith("interrupted"), run.data.tags


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_stops_a_local_search_cleanly_and_the_same_command_resumes(sig: int, tmp_path: Path,
                                                                            new_study_dir) -> None:
    study = new_study_dir("study")
    spec = write_yaml(tmp_path / "stops.yaml", SLOW_SPEC)
    gate, built = tmp_path / "gate", tmp_path / "built.jsonl"
    env = {"REL_SLOW_S": "0.01", "REL_GATE": str(gate), "REL_FAULT_LOG": str(built)}
    args = ("search", spec, "--out", study, "--no-progress")
    log = tmp_path / "stopped.log"
    proc = start_cli(*args, cwd=tmp_path, log=log, faults=True, **env)
    try:  # the trial is running: its model is built and waits at the gate
        wait_for(lambda: trial_states(study).get(0) == "RUNNING" and built.is_file(), proc)
        proc.send_signal(sig)
        code = proc.wait(timeout=HANG_S)
    finally:
        sigkill(proc)
    _assert_interrupted(study, log.read_text(), code, sig)
    if sig == signal.SIGINT:
        return  # the same stop: the resume is shown once, after SIGTERM

    gate.touch()
    rerun = run_cli(*args, cwd=tmp_path, faults=True, **env)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    trials = assert_study_consistent(study, SLOW_SPEC["search"]["n_trials"])
    assert [t.user_attrs.get("retry_of") for t in trials if t.number == 1] == [0]


def _ray_processes_of(pid: int) -> dict[int, str]:
    """pid -> command line of the descendants of ``pid`` that belong to a Ray session."""
    children: dict[int, list[int]] = {}
    cmdlines: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdlines[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = {}, list(children.get(pid, []))
    while todo:
        child = todo.pop()
        todo.extend(children.get(child, []))
        if "/ray" in cmdlines.get(child, "") and re.search(r"/tmp/ray\w+/", cmdlines[child]):
            found[child] = cmdlines[child]
    return found


def _alive(processes: dict[int, str]) -> list[int]:
    alive = []
    for pid, cmdline in processes.items():
        try:
            now = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if now == cmdline:
            alive.append(pid)
    return alive


def _session_dirs(processes: dict[int, str]) -> set[Path]:
    return {Path(m) for cmdline in processes.values() for m in re.findall(r"(/tmp/ray\w+)/", cmdline)}


def test_sigint_stops_a_ray_search_cleanly(ray_address: str, tmp_path: Path, new_study_dir) -> None:
    study = new_study_dir("study")
    spec = write_yaml(tmp_path / "ray.yaml", RAY_SPEC)
    log = tmp_path / "stopped.log"
    proc = start_cli("search", spec, "--out", study, "--no-progress", cwd=tmp_path, log=log, RAY_ADDRESS=ray_address)
    try:
        wait_for(lambda: trial_states(study).get(0) == "RUNNING" and (study / "trials" / "0" / "config.yaml").is_file(),
                 proc)
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=HANG_S)
    finally:
        sigkill(proc)
    _assert_interrupted(study, log.read_text(), code, signal.SIGINT)


def test_sigterm_stops_a_ray_search_and_the_ray_it_started(tmp_path: Path, new_study_dir) -> None:
    study = new_study_dir("study")
    spec = write_yaml(tmp_path / "ray.yaml", RAY_SPEC)
    log = tmp_path / "stopped.log"
    proc = start_cli("search", spec, "--out", study, "--no-progress", cwd=tmp_path, log=log)
    ray_processes: dict[int, str] = {}
    try:
        wait_for(lambda: trial_states(study).get(0) == "RUNNING" and (study / "trials" / "0" / "config.yaml").is_file(),
                 proc)
        ray_processes = _ray_processes_of(proc.pid)
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=HANG_S)
    finally:
        sigkill(proc)
    _assert_interrupted(study, log.read_text(), code, signal.SIGTERM)
    assert ray_processes, "the driver started no Ray processes"
    assert not _alive(ray_processes), {pid: ray_processes[pid][:120] for pid in _alive(ray_processes)}
    assert not [d for d in _session_dirs(ray_processes) if d.exists()]


def test_the_run_after_a_sigkilled_ray_driver_stops_the_ray_it_left(tmp_path: Path, new_study_dir) -> None:
    study = new_study_dir("study")
    spec = write_yaml(tmp_path / "ray.yaml", spec_with(RAY_SPEC, train={**RAY_SPEC["train"], "epochs": 10}))
    proc = start_cli("search", spec, "--out", study, "--no-progress", cwd=tmp_path, log=tmp_path / "killed.log")
    try:
        wait_for(lambda: trial_states(study).get(0) == "RUNNING" and (study / "trials" / "0" / "config.yaml").is_file(),
                 proc)
        left = _ray_processes_of(proc.pid)
    finally:
        sigkill(proc)
    sessions = _session_dirs(left)
    assert left and sessions
    try:
        rerun = run_cli("search", spec, "--out", study, "--no-progress", "--executor", "local", cwd=tmp_path)
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        assert not _alive(left), {pid: left[pid][:120] for pid in _alive(left)}
        assert not [d for d in sessions if d.exists()]
        assert_study_consistent(study, 1)
    finally:  # never leave them to the next test, whatever happened
        for pid in _alive(left):
            os.kill(pid, signal.SIGKILL)


#: a wider model: its checkpoint (about 10 MB) is past the file size limit, the stores are not
WIDE_SPEC = spec_with(
    CRASH_SPEC, name="disk",
    model={"name": "vit_digits", "embed_dim": 192, "depth": 2, "num_heads": 2},
    train={**CRASH_SPEC["train"], "epochs": 1, "max_steps_per_epoch": 2},
    search={"sampler": "tpe", "n_trials": 3, "seed": 0,
            "enqueue": [{"sparsity.density": 0.5, "sparsity.update_interval": 2},
                        {"sparsity.density": 0.3, "sparsity.update_interval": 1}]},
)
FILE_LIMIT = 4 * 2**20


def _limit_file_size() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_LIMIT, FILE_LIMIT))


def test_a_full_disk_stops_the_study_and_loses_no_trial(tmp_path: Path, new_study_dir) -> None:
    study = new_study_dir("study")
    spec = write_yaml(tmp_path / "disk.yaml", WIDE_SPEC)
    args = ("search", spec, "--out", study, "--no-progress")
    full = subprocess.run(cli_command(*args), cwd=tmp_path, env=cli_env(), capture_output=True, text=True,
                          timeout=HANG_S, preexec_fn=_limit_file_size)
    assert full.returncode == 1, full.stderr[-3000:]
    last = _last_line(full.stderr)
    assert last.startswith("svite-search search: stopped:"), full.stderr[-3000:]
    assert str(study / "trials" / "0" / "last.pt") in last and "File too large" in last, last
    trials = load_trials(study)
    states = {t.number: t.state.name for t in trials}
    # one trial ran and stopped; both enqueued points are still to run (the first as its rerun)
    assert [n for n, s in states.items() if s != "WAITING"] == [0], states
    assert trials[0].user_attrs["fail_reason"].startswith("infrastructure:"), trials[0].user_attrs
    waiting = [t for t in trials if t.state.name == "WAITING"]
    points = [{"sparsity.density": p["sparsity.density"], "sparsity.update_interval": p["sparsity.update_interval"]}
              for p in WIDE_SPEC["search"]["enqueue"]]
    queued = [t.system_attrs.get("fixed_params") or t.params for t in waiting]
    assert sorted(sorted(q.items()) for q in queued) == sorted(sorted(p.items()) for p in points)
    assert [t.user_attrs.get("retry_of") for t in waiting if t.user_attrs.get("retry_of") is not None] == [0]
    parents, _ = mlflow_runs(study)
    assert [p.info.status for p in parents] == ["FAILED"]

    rerun = run_cli(*args, "--json", cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    trials = assert_study_consistent(study, WIDE_SPEC["search"]["n_trials"])
    first = min((t for t in trials if t.number > 0 and t.state.name == "COMPLETE"), key=lambda t: t.datetime_start)
    assert first.user_attrs.get("retry_of") == 0 and first.params == trials[0].params  # the stopped trial first


def test_reaching_max_failures_before_n_trials_exits_1_and_says_why(tmp_path: Path, new_study_dir) -> None:
    study = new_study_dir("study")
    spec = write_yaml(tmp_path / "failures.yaml", spec_with(
        CRASH_SPEC, name="failures",
        model={"name": {"choices": ["rel_vit_ok", "rel_vit_raise", "rel_vit_memory"]}},
        train={**CRASH_SPEC["train"], "epochs": 1, "max_steps_per_epoch": 2},
        sparsity={"density": 0.5, "update_interval": 2},
        search={"sampler": "grid", "n_trials": 3, "max_failures": 1,
                "points": [{"model.name": "rel_vit_ok"}, {"model.name": "rel_vit_raise"},
                           {"model.name": "rel_vit_memory"}]},
    ))
    done = run_cli("search", spec, "--out", study, "--no-progress", cwd=tmp_path, faults=True)
    assert done.returncode == 1, done.stderr[-3000:]
    last = _last_line(done.stderr)
    assert "stopped at 1 of 3" in last and "max_failures" in last, last
