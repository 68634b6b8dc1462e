"""The README's examples stay true: its study spec and run config validate."""
from __future__ import annotations

import re
from pathlib import Path

import yaml

from svite_search.config import config_from_dict
from svite_search.search.spec import spec_from_dict

README = Path(__file__).resolve().parents[1] / "README.md"


def _yaml_blocks() -> list[dict]:
    blocks = re.findall(r"```yaml\n(.*?)```", README.read_text(), flags=re.S)
    return [yaml.safe_load(block) for block in blocks]


def test_readme_study_spec_validates() -> None:
    specs = [b for b in _yaml_blocks() if "objectives" in b]
    assert specs, "the README shows a study spec"
    for raw in specs:
        spec = spec_from_dict(raw)
        assert spec.name == raw["name"]


def test_readme_run_config_validates() -> None:
    configs = [b for b in _yaml_blocks() if "objectives" not in b and "method" in b]
    assert configs, "the README shows a run config"
    for raw in configs:
        config_from_dict(raw)
