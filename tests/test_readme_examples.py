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


# ----------------------------------------------------------------------------- the shell examples

import os  # noqa: E402
import shlex  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

import pytest  # noqa: E402

#: README lines not run, and why: the test suite itself, the benchmarks (minutes), the GPU check, a package
#: download and a web server that runs until stopped.
NOT_RUN = {"make test": "the suite itself", "make bench": "minutes of benchmarks", "make gpu-check": "a CUDA GPU",
           ".venv/bin/pip install": "a download", ".venv/bin/mlflow ui": "a server"}
#: Appended to every training command so the examples run in seconds: one optimiser step per
#: epoch (the epochs, and so each example's spec, stay the README's) and one trial per study.
#: ``make demo`` keeps Ray (its first run is the one checked for noise); the searches after it
#: run locally (the executor is not part of a study's identity, so collisions still show).
TINY = {"train": ["--set", "train.max_steps_per_epoch=1"],
        "search": ["--set", "train.max_steps_per_epoch=1", "--trials", "1", "--no-progress", "--executor", "local"],
        "demo": ["--set", "train.max_steps_per_epoch=1", "--trials", "1", "--no-progress"]}
#: What a first run must not print (library chatter, see the CLI's QUIET_LOGGERS).
NOISE = ("Token authentication is enabled", "Generated new authentication token", "Creating initial MLflow",
         "Updating database tables", "Editable installation", "may be a performance bottleneck",
         "Wrote the latest version of all result files")


def shell_examples() -> list[str]:
    """Every command line of the README's ```bash blocks, comments dropped, in order. (The scale-out
    commands are ```sh blocks: they need a cluster, a database or a server, and tests/scaleout runs them.)"""
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S):
        for line in block.splitlines():
            command = line.split("  #")[0].split(" # ")[0].strip()
            if command and not command.startswith("#"):
                lines.append(command)
    return lines


def _argv(command: str, bin_dir: Path) -> list[str] | None:
    if any(command.startswith(prefix) for prefix in NOT_RUN):
        return None
    words = shlex.split(command)
    if words[:2] == ["make", "demo"]:
        words = ["svite-search", "demo"]
    elif words[0] == ".venv/bin/svite-search":
        words[0] = "svite-search"
    else:
        raise AssertionError(f"README command the test does not know how to run: {command}")
    return [str(bin_dir / words[0]), *words[1:], *TINY.get(words[1], [])]


def test_the_readme_lists_the_examples_it_claims() -> None:
    commands = shell_examples()
    assert commands[:2] == ["make demo", "make test"]
    assert sum(c.startswith(".venv/bin/svite-search train") for c in commands) == 3
    assert sum(c.startswith(".venv/bin/svite-search search") for c in commands) == 3


@pytest.mark.slow
def test_readme_shell_examples_run_in_order_on_a_fresh_clone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture) -> None:
    """A fresh clone (the studies, no runs/) runs every README example in order and each exits 0.
    ``make demo`` runs as its own process, as a user's first run, and must print no library
    chatter; the commands after it run in this process (the same entry point, without a dozen
    interpreter start-ups). About 40 s of CPU (one local Ray instance, a dozen trainings of one
    step per epoch); minutes of wall time on a loaded machine."""
    from svite_search.cli import main

    shutil.copytree(README.parent / "studies", tmp_path / "studies")
    bin_dir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE")}
    env.update(MLFLOW_DISABLE_TELEMETRY="true", RAY_USAGE_STATS_ENABLED="0", MPLBACKEND="Agg", PYTHONUNBUFFERED="1")
    commands = [(c, _argv(c, bin_dir)) for c in shell_examples()]
    commands = [(c, argv) for c, argv in commands if argv is not None]
    assert commands[0][0] == "make demo"
    done = subprocess.run(commands[0][1], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert not [n for n in NOISE if n in output], output  # a first run prints only what the user needs
    assert "report:" in output and "MLflow store:" in output

    monkeypatch.chdir(tmp_path)
    for command, argv in commands[1:]:
        code = main(argv[1:])
        assert code == 0, f"{command}\n{capsys.readouterr().err[-3000:]}"
    assert len(commands) >= 12
    assert (tmp_path / "runs" / "compare" / "compare.md").is_file()
    assert (tmp_path / "runs" / "train" / "s2vite-tokens" / "slim.pt").is_file()
