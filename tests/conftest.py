"""Test-session settings shared by every test module."""
from __future__ import annotations

import os
from typing import Iterator

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TQDM_DISABLE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

import svite_search.models  # noqa: E402,F401  (runs the torchvision import guard before timm)

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


#: process-wide settings a test must leave as it found them: a later test in the same worker
#: reads them (a leaked MLFLOW_TRACKING_URI sends the next study's runs into another test's store)
_PROCESS_SETTINGS = ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID", "SVITE_STORAGE_URL",
                     "SVITE_CACHE_DIR")


@pytest.fixture(autouse=True)
def _process_settings_stay() -> Iterator[None]:
    """Fail the test that changes one of :data:`_PROCESS_SETTINGS` behind its own back (not
    through ``monkeypatch``, whose undo runs first), and put the setting back for the next test."""
    before = {name: os.environ.get(name) for name in _PROCESS_SETTINGS}
    yield
    changed = [name for name, value in before.items() if os.environ.get(name) != value]
    for name in changed:
        if before[name] is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before[name]  # type: ignore[assignment]
    if changed:
        pytest.fail(f"the test left {', '.join(changed)} changed in the process environment", pytrace=False)
