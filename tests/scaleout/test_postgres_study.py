"""One study shared by drivers on a real PostgreSQL server (``search.storage: postgresql://…``
in the spec, or ``SVITE_STORAGE_URL``), as on a cluster whose machines share one database.

Each driver has a study directory of its own (as on two machines); the database is the study.
The trials use ``rel_vit_slow`` (tests/reliability/fault_models.py): a trial waits at a gate
file before its first step, so a driver can be caught, and killed, mid-trial whatever the
machine's load.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest

from reliability_support import CRASH_SPEC, run_cli, sigkill, spec_with, start_cli, wait_for, write_yaml
from _support.waiting import HANG_S

pytestmark = [pytest.mark.slow, pytest.mark.scaleout]

N_TRIALS = 3


def _spec(url: str | None, n_trials: int = N_TRIALS) -> dict[str, Any]:
    search: dict[str, Any] = {"sampler": "tpe", "n_trials": n_trials, "seed": 0}
    if url:
        search["storage"] = url
    return spec_with(
        CRASH_SPEC, name="shared-pg", model={"name": "rel_vit_slow"},
        train={**CRASH_SPEC["train"], "epochs": 1, "max_steps_per_epoch": 2},
        search=search, tracking={"enabled": False},
    )


def _trials(url: str) -> list[optuna.trial.FrozenTrial]:
    try:
        study = optuna.load_study(study_name="shared-pg", storage=url)
    except KeyError:
        return []
    return sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)


def _states(url: str) -> dict[int, str]:
    return {t.number: t.state.name for t in _trials(url)}


def _assert_exactly_n_complete(url: str, n: int) -> list[optuna.trial.FrozenTrial]:
    trials = _trials(url)
    states = {t.number: t.state.name for t in trials}
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(complete) == n, states
    assert "RUNNING" not in states.values() and "WAITING" not in states.values(), states
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers))
    params = [tuple(sorted(t.params.items())) for t in complete if t.user_attrs.get("retry_of") is None]
    assert len(params) == len(set(params)), "two trials ran the same parameters"
    return trials


def test_two_drivers_on_one_postgres_study_reach_n_trials_exactly(tmp_path: Path, postgres_url: str) -> None:
    spec_file = write_yaml(tmp_path / "in-spec.yaml", _spec(postgres_url))
    env_spec_file = write_yaml(tmp_path / "by-env.yaml", _spec(None))  # the same study, URL from the environment
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    a = start_cli("search", spec_file, "--out", tmp_path / "a", "--no-progress", cwd=tmp_path, log=logs[0],
                  faults=True, REL_SLOW_S="0.05")
    b = start_cli("search", env_spec_file, "--out", tmp_path / "b", "--no-progress", cwd=tmp_path, log=logs[1],
                  faults=True, REL_SLOW_S="0.05", SVITE_STORAGE_URL=postgres_url)
    for proc in (a, b):
        proc.wait(timeout=HANG_S)
    texts = [log.read_text() for log in logs]
    assert [a.returncode, b.returncode] == [0, 0], [t[-2000:] for t in texts]
    assert not [t for t in texts if "Traceback" in t], texts
    trials = _assert_exactly_n_complete(postgres_url, N_TRIALS)
    assert len(trials) == N_TRIALS  # no overshoot, no failures
    # each study directory names the shared database without its password
    assert "postgresql://" in (tmp_path / "b" / "study.json").read_text()


def test_a_killed_driver_s_trial_is_rerun_by_the_other_and_resume_adds_nothing(tmp_path: Path,
                                                                                postgres_url: str) -> None:
    spec_file = write_yaml(tmp_path / "spec.yaml", _spec(postgres_url))
    gate = tmp_path / "never-opened"  # driver A's first trial waits here until it is killed
    a = start_cli("search", spec_file, "--out", tmp_path / "a", "--no-progress", cwd=tmp_path,
                  log=tmp_path / "a.log", faults=True, REL_SLOW_S="0.05", REL_GATE=str(gate))
    b = None
    try:
        wait_for(lambda: "RUNNING" in _states(postgres_url).values(), a)
        victim = next(t for t in _trials(postgres_url) if t.state.name == "RUNNING")
        b = start_cli("search", spec_file, "--out", tmp_path / "b", "--no-progress", cwd=tmp_path,
                      log=tmp_path / "b.log", faults=True, REL_SLOW_S="0.05")
        # B is mid-study: one of its own trials has started while A's trial still waits at its gate
        wait_for(lambda: any(t.state.name != "WAITING" and t.number != victim.number for t in _trials(postgres_url)), b)
        assert _states(postgres_url)[victim.number] == "RUNNING"
        sigkill(a)
        b.wait(timeout=HANG_S)
    finally:
        for proc in (a, b):
            if proc is not None and proc.poll() is None:
                sigkill(proc)
    log_b = (tmp_path / "b.log").read_text()
    assert b.returncode == 0, log_b[-3000:]
    trials = _assert_exactly_n_complete(postgres_url, N_TRIALS)
    by_number = {t.number: t for t in trials}
    lost = by_number[victim.number]
    assert lost.state.name == "FAIL" and "interrupted" in lost.user_attrs["fail_reason"], lost.user_attrs
    reruns = [t for t in trials if t.user_attrs.get("retry_of") == victim.number]
    assert len(reruns) == 1 and reruns[0].state.name == "COMPLETE", {t.number: t.user_attrs for t in trials}
    assert reruns[0].params == lost.params

    # resume from the killed driver's directory: the study is done, nothing runs again
    again = run_cli("search", spec_file, "--out", tmp_path / "a", "--no-progress", "--json", cwd=tmp_path,
                    faults=True)
    assert again.returncode == 0, again.stderr[-2000:]
    assert '"trials_run_now": 0' in again.stdout, again.stdout[-2000:]
    assert [(t.number, t.state.name) for t in _trials(postgres_url)] == [(t.number, t.state.name) for t in trials]


def test_two_drivers_counting_together_on_postgres_create_one_trial_for_the_last_place(
        tmp_path: Path, postgres_url: str) -> None:
    # The PostgreSQL claim lock is an advisory lock: without it the second driver's trial is
    # created, found surplus and left WAITING in the finished study.
    from svite_search.search import prepare_study, spec_from_dict
    from svite_search.search.study import ClaimLock
    from _support.claims import race_at_ask  # shared with the sqlite twin in tests/search/test_claims.py

    raw = _spec(postgres_url, n_trials=1)
    spec = spec_from_dict({**raw, "model": {**raw["model"], "name": "vit_micro"}})  # nothing trains here
    a, b = prepare_study(spec, tmp_path / "a"), prepare_study(spec, tmp_path / "b")
    assert ClaimLock(a.url, spec.name).kind == "advisory"
    (mine, theirs), waited = race_at_ask(a, b, 1)
    assert waited.is_set(), "the second driver did not wait for the first one's claim"
    assert mine is not None and theirs is None
    assert _states(postgres_url) == {0: "RUNNING"}
