"""Studies on a real multi-node Ray cluster: ``ray.cluster_utils.Cluster`` starts a head and
two worker nodes as separate raylets on this machine, each with its own resources; the worker
nodes declare 2 GPUs each, so GPU packing is scheduled (and checked) on a CPU-only machine.

Every study is a real ``svite-search search`` process joining the cluster through
``RAY_ADDRESS`` or ``executor.address``. Its trials train :mod:`scaleout_trials`' probe model,
which records, from inside each trial, the node it ran on, its ``CUDA_VISIBLE_DEVICES``, its
device and its start and end, and holds at a barrier until the trials that should run at once
do (a state, with a bounded wait; no timing is asserted).

One cluster serves the module; it is torn down by its own handles (no other Ray instance on
the machine is touched, and the machine's "current cluster" address file is left alone).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator
from unittest import mock

import pytest

from svite_search.search.study import trial_attrs

from reliability_support import CRASH_SPEC, cli_env, spec_with, write_yaml
from services import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.scaleout]
ray = pytest.importorskip("ray")

HERE = Path(__file__).resolve().parent
PROBE_CLI = HERE / "scaleout_trials.py"
NODE_CPUS, NODE_GPUS = 4, 2


class ClusterHandle:
    def __init__(self) -> None:
        from ray.cluster_utils import Cluster

        self.temp_dir = tempfile.mkdtemp(prefix="rayc")  # short: unix socket paths have a length limit
        with _own_address_file():
            # the head runs no trials (0 CPUs): trials land on the worker nodes only
            self.cluster = Cluster(initialize_head=True, connect=False, head_node_args={
                "num_cpus": 0, "temp_dir": self.temp_dir, "include_dashboard": False})
            self.workers = [self.cluster.add_node(num_cpus=NODE_CPUS, num_gpus=NODE_GPUS, temp_dir=self.temp_dir)
                            for _ in range(2)]

    @property
    def address(self) -> str:
        return self.cluster.address

    def node_of(self, node_id: str) -> Any:
        return next(node for node in self.workers if node.node_id == node_id)

    def remove(self, node: Any) -> None:
        self.cluster.remove_node(node, allow_graceful=False)
        self.workers.remove(node)

    def shutdown(self) -> None:
        with _own_address_file():
            self.cluster.shutdown()
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def _own_address_file() -> Any:
    """``Cluster`` records its address as the machine's current Ray cluster (so a bare
    ``ray.init()`` anywhere on it would join this cluster) and deletes that record on shutdown;
    neither is done here."""
    stack = mock.patch.multiple("ray._private.utils", write_ray_address=lambda *a, **k: None)
    reset = mock.patch("ray._common.utils.reset_ray_address", lambda *a, **k: None)

    class Both:
        def __enter__(self) -> None:
            stack.__enter__()
            reset.__enter__()

        def __exit__(self, *exc: Any) -> None:
            reset.__exit__(*exc)
            stack.__exit__(*exc)

    return Both()


@pytest.fixture(scope="module")
def cluster() -> Iterator[ClusterHandle]:
    handle = ClusterHandle()
    try:
        yield handle
    finally:
        handle.shutdown()


def _spec(n_trials: int, **executor: Any) -> dict[str, Any]:
    return spec_with(
        CRASH_SPEC, name="cluster", model={"name": "scale_vit_probe"},
        train={**CRASH_SPEC["train"], "epochs": 1, "max_steps_per_epoch": 2},
        search={"sampler": "random", "n_trials": n_trials, "seed": 0},
        executor={"kind": "ray", "cpus_per_trial": 1, **executor},
        tracking={"enabled": True},
    )


def _job_env(records: Path, **probe: str) -> str:
    """The job's runtime environment: the workers import the probe model, and learn where to
    record (``RAY_JOB_CONFIG_JSON_ENV_VAR`` is how a ``ray job submit`` hands a driver its
    runtime environment)."""
    env_vars = {"PYTHONPATH": str(HERE), "SCALE_RECORDS": str(records), "OMP_NUM_THREADS": "1", **probe}
    return json.dumps({"runtime_env": {"worker_process_setup_hook": "scaleout_trials.setup", "env_vars": env_vars}})


def _search(tmp_path: Path, spec: dict[str, Any], records: Path, *, address: str | None, wait: bool = True,
            **probe: str) -> Any:
    import subprocess
    import sys

    records.mkdir(parents=True, exist_ok=True)
    spec_file = write_yaml(tmp_path / "spec.yaml", spec)
    env = cli_env(RAY_JOB_CONFIG_JSON_ENV_VAR=_job_env(records, **probe))
    if address:
        env["RAY_ADDRESS"] = address
    command = [sys.executable, str(PROBE_CLI), "search", str(spec_file), "--out", str(tmp_path / "study"),
               "--no-progress", "--json"]
    if wait:
        return subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    log = open(tmp_path / "search.log", "w")
    proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    log.close()
    return proc


def _records(records: Path) -> list[dict[str, Any]]:
    out = []
    for start in sorted(records.glob("*.start.json")):
        data = json.loads(start.read_text())
        run = start.with_name(start.name.replace(".start.", ".run."))
        data.update(json.loads(run.read_text()) if run.exists() else {})
        out.append(data)
    return sorted(out, key=lambda r: r["start"])


def _max_overlap(records: list[dict[str, Any]]) -> int:
    """The most trials running at one moment, from the trials' own start and last-forward times."""
    events = sorted([(r["start"], 1) for r in records] + [(r["last"], -1) for r in records])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


def _optuna_and_mlflow(study: Path) -> tuple[list[Any], list[Any]]:
    from reliability_support import load_trials, mlflow_runs

    return load_trials(study), mlflow_runs(study)[1]


def _assert_complete_once(study: Path, n_trials: int) -> list[Any]:
    trials, runs = _optuna_and_mlflow(study)
    assert [t.state.name for t in trials] == ["COMPLETE"] * n_trials, {t.number: t.state.name for t in trials}
    numbers = sorted(int(r.data.tags["svite.trial"]) for r in runs)
    assert numbers == [t.number for t in trials]  # one MLflow run per trial, none twice
    assert {r.info.status for r in runs} == {"FINISHED"}
    return trials


def test_half_a_gpu_per_trial_runs_eight_trials_at_once_on_two_nodes(cluster: ClusterHandle, tmp_path: Path) -> None:
    records = tmp_path / "records"
    done = _search(tmp_path, _spec(8, gpus_per_trial=0.5, max_concurrent=8), records, address=cluster.address,
                   SCALE_BARRIER="8")
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-3000:])
    _assert_complete_once(tmp_path / "study", 8)
    seen = _records(records)
    assert len(seen) == 8
    assert all(r["barrier_met"] for r in seen), "the 8 trials were not all running at once"
    assert _max_overlap(seen) == 8
    nodes = {r["node_id"] for r in seen}
    assert nodes == {node.node_id for node in cluster.workers}  # both nodes, never the head
    for node in nodes:  # each node's 2 GPUs carry 2 trials each: half a GPU per trial
        devices = sorted(r["cuda_visible_devices"] for r in seen if r["node_id"] == node)
        assert devices == ["0", "0", "1", "1"], devices
    # CUDA_VISIBLE_DEVICES is set but this machine has no CUDA: the trials trained on the CPU
    assert {r["device"] for r in seen} == {"cpu"}


def test_one_gpu_per_trial_runs_four_at_a_time(cluster: ClusterHandle, tmp_path: Path) -> None:
    records = tmp_path / "records"
    # executor.address this time, and no RAY_ADDRESS
    done = _search(tmp_path, _spec(6, gpus_per_trial=1, max_concurrent=8, address=cluster.address), records,
                   address=None, SCALE_BARRIER="4")
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-3000:])
    _assert_complete_once(tmp_path / "study", 6)
    seen = _records(records)
    assert len(seen) == 6 and all(r["barrier_met"] for r in seen)
    assert _max_overlap(seen) == 4  # 4 GPUs in the cluster, one per trial
    assert {r["node_id"] for r in seen} == {node.node_id for node in cluster.workers}
    assert all(len(r["gpu_ids"]) == 1 and r["cuda_visible_devices"] == r["gpu_ids"][0] for r in seen)


def test_two_workers_of_one_trial_spread_over_two_nodes(cluster: ClusterHandle, tmp_path: Path) -> None:
    records = tmp_path / "records"
    # 3 CPUs a worker: two workers cannot share a 4-CPU node
    done = _search(tmp_path, _spec(1, workers_per_trial=2, cpus_per_trial=3, max_concurrent=1, backend="gloo"),
                   records, address=cluster.address)
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-3000:])
    trials = _assert_complete_once(tmp_path / "study", 1)
    attrs = trial_attrs(trials[0])
    assert attrs["world_size"] == 2  # DDP over two gloo workers, one per node
    assert attrs["epochs"] == 1 and attrs["density"] == pytest.approx(trials[0].params["sparsity.density"], abs=0.01)
    seen = _records(records)
    assert len(seen) == 2 and len({r["node_id"] for r in seen}) == 2, seen


def _running(pid: int) -> bool:
    """Whether process ``pid`` still runs (a zombie, dead but not yet reaped, does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def test_a_node_dies_mid_trial_and_the_trial_is_rerun_on_another(cluster: ClusterHandle, tmp_path: Path) -> None:
    """Last in the module: it removes a node. The held trial is let go only once its worker
    process has exited: a worker outlives its killed raylet for a moment, and a trial let go in
    that moment finished on the dead node (its driver connection is direct), so no trial was lost
    and the next one was handed the dying cached actor instead."""
    records, hold = tmp_path / "records", tmp_path / "hold"
    proc = _search(tmp_path, _spec(2, max_concurrent=1, max_retries=2), records, address=cluster.address,
                   wait=False, SCALE_HOLD=str(hold))
    try:
        # the first trial has started on a node and is held mid-training there
        wait_until(lambda: len(list(records.glob("*.start.json"))) == 1, 300, "first trial started", proc)
        first = _records(records)[0]
        victim = first["node_id"]
        cluster.remove(cluster.node_of(victim))
        wait_until(lambda: not _running(first["pid"]), 300, "the held trial's worker ended with its node", proc)
        hold.touch()
        proc.wait(timeout=600)
    finally:
        hold.touch()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = (tmp_path / "search.log").read_text()
    assert proc.returncode == 0, text[-3000:]
    trials = _assert_complete_once(tmp_path / "study", 2)  # the lost attempt counted neither as a trial nor a run
    seen = _records(records)
    survivor = cluster.workers[0].node_id
    assert seen[0]["node_id"] == victim
    # rerun elsewhere, then trial 1: both on the survivor
    assert len(seen) == 3 and {r["node_id"] for r in seen[1:]} == {survivor}, seen
    assert len(trials) == 2
