"""Shared fixtures of the search tests: one Ray instance per test session, tiny study specs."""
from __future__ import annotations

import copy
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import yaml

#: A study that trains in about a second per trial: 2 epochs of 3 steps on the digits.
TINY: dict[str, Any] = {
    "name": "tiny",
    "method": {"choices": ["svite", "s2vite"]},
    "data": {"dataset": "digits", "batch_size": 64},
    "model": {"name": "vit_digits"},
    "train": {"epochs": 2, "max_steps_per_epoch": 3, "warmup_epochs": 0, "checkpoint": False},
    "sparsity": {
        "density": {"low": 0.2, "high": 0.8},
        "head_density": {"choices": [0.5, 1.0]},
        "update_interval": {"low": 1, "high": 3},
    },
    "tokens": {"keep_ratio": {"low": 0.5, "high": 1.0}},
    "search": {"sampler": "tpe", "n_trials": 4, "seed": 0},
    "tracking": {"enabled": False},
}


def _tiny_spec(**changes: Any) -> dict[str, Any]:
    spec = copy.deepcopy(TINY)
    spec.update(copy.deepcopy(changes))
    return spec


def _write_spec(directory: Path, spec: dict[str, Any], name: str = "study.yaml") -> Path:
    path = directory / name
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.fixture
def tiny_spec() -> Callable[..., dict[str, Any]]:
    """``tiny_spec(**changes)``: TINY with top-level keys replaced (a section is replaced whole)."""
    return _tiny_spec


@pytest.fixture
def write_spec() -> Callable[..., Path]:
    """``write_spec(directory, spec)``: the spec as a YAML file."""
    return _write_spec


@pytest.fixture(scope="session")
def ray_session() -> Iterator[None]:
    """One local Ray instance (2 CPUs) for every Ray test; the executor reuses it."""
    ray = pytest.importorskip("ray")
    if ray.is_initialized():  # another suite's session instance: share it
        yield
        return
    temp_dir = tempfile.mkdtemp(prefix="ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=temp_dir)
    try:
        yield
    finally:
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)
