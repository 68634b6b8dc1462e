"""Safety: nothing a file says is run as code, and nothing half-fitting is half-loaded.

* checkpoints and slim models load with ``torch.load(weights_only=True)``: a file carrying a
  pickled ``os.system`` call is refused and the call never runs;
* specs and configs load with the safe YAML loader: ``!!python/object/apply`` is refused;
* no spec string is evaluated: strings of Python code in every field are refused or kept as
  inert text, and the package's source holds no ``eval``/``exec``/unsafe loader;
* a checkpoint from an incompatible model is refused with a clear message before a single
  weight is copied.
"""
from __future__ import annotations

import ast
import os
import pickle
from pathlib import Path

import pytest
import torch

import svite_search
from reliability_support import CRASH_SPEC, TRAIN_CONFIG, run_cli, spec_with, write_yaml
from svite_search.cli import main
from svite_search.config import config_from_dict
from svite_search.errors import UserInputError


class _Payload:
    """Unpickling this calls ``os.system`` (what a malicious checkpoint does)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _malicious_files(tmp_path: Path) -> tuple[Path, list[Path]]:
    marker = tmp_path / "PWNED"
    zipped = tmp_path / "zipped" / "last.pt"
    zipped.parent.mkdir()
    torch.save({"model": {"w": torch.zeros(1)}, "config": TRAIN_CONFIG, "extra": _Payload(marker)}, zipped)
    legacy = tmp_path / "legacy" / "last.pt"
    legacy.parent.mkdir()
    legacy.write_bytes(pickle.dumps({"model": _Payload(marker)}))
    return marker, [zipped, legacy]


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_a_malicious_checkpoint_is_refused_and_nothing_runs(tmp_path: Path, capsys) -> None:
    from svite_search.engine.structured import load_slim
    from svite_search.train.checkpoint import load_checkpoint

    marker, files = _malicious_files(tmp_path)
    config = write_yaml(tmp_path / "train.yaml", TRAIN_CONFIG)
    for path in files:
        with pytest.raises(UserInputError, match="not a readable"):
            load_checkpoint(path)
        with pytest.raises(UserInputError, match="not a readable"):
            load_slim(path)
        assert main(["export-slim", str(path), "--out", str(tmp_path / "slim.pt")]) == 2
        assert main(["train", str(config), "--out", str(path.parent), "--no-progress"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 2 and all(str(path) in line for line in err), err
    assert not marker.exists()
    assert not (tmp_path / "slim.pt").exists()


@pytest.mark.slow
def test_a_real_process_refuses_a_malicious_checkpoint(tmp_path: Path) -> None:
    marker, files = _malicious_files(tmp_path)
    done = run_cli("export-slim", files[0], "--out", tmp_path / "slim.pt", cwd=tmp_path)
    assert done.returncode == 2 and str(files[0]) in done.stderr, done.stderr
    assert not marker.exists()


PYTHON_TAGS = [
    "!!python/object/apply:os.system ['touch {marker}']",
    "!!python/object/new:subprocess.check_output [['touch', '{marker}']]",
    "!!python/name:os.system",
]


@pytest.mark.parametrize("tag", PYTHON_TAGS)
def test_yaml_python_tags_are_refused(tmp_path: Path, tag: str, capsys) -> None:
    marker = tmp_path / "PWNED"
    value = tag.format(marker=marker)
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"name: tagged\ntrain:\n  lr: {value}\n")
    assert main(["search", str(spec), "--out", str(tmp_path / "study")]) == 2
    assert main(["train", str(spec), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("malformed YAML") == 2, err
    # the same text given on the command line is only ever a string
    base = write_yaml(tmp_path / "ok.yaml", CRASH_SPEC)
    assert main(["search", str(base), "--out", str(tmp_path / "study"), "--set", f"train.lr={value}"]) == 2
    assert "train.lr" in capsys.readouterr().err
    assert not marker.exists()
    assert not (tmp_path / "study").exists() and not (tmp_path / "run").exists()


CODE = "__import__('os').system('touch {marker}')"
#: Fields whose string value could be mistaken for code by a careless implementation.
CODE_FIELDS = [
    ("name", lambda code: {"name": code}),
    ("method", lambda code: {"method": code}),
    ("model.name", lambda code: {"model": {"name": code}}),
    ("data.dataset", lambda code: {"data": {"dataset": code}}),
    ("train.lr", lambda code: {"train": {**CRASH_SPEC["train"], "lr": code}}),
    ("train.device", lambda code: {"train": {**CRASH_SPEC["train"], "device": code}}),
    ("sparsity.density.low", lambda code: {"sparsity": {"density": {"low": code, "high": 0.5}}}),
    ("constraints[0]", lambda code: {"constraints": [f"gmacs <= {code}"]}),
    ("objectives[0].metric", lambda code: {"objectives": [{"metric": code}]}),
    ("search.sampler", lambda code: {"search": {"sampler": code}}),
]


@pytest.mark.parametrize("field, change", CODE_FIELDS, ids=[f for f, _ in CODE_FIELDS])
def test_no_spec_string_is_evaluated(tmp_path: Path, field: str, change, capsys) -> None:
    marker = tmp_path / "PWNED"
    spec = write_yaml(tmp_path / "spec.yaml", spec_with(CRASH_SPEC, **change(CODE.format(marker=marker))))
    assert main(["search", str(spec), "--out", str(tmp_path / "study"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and field.split("[")[0].split(".")[0] in err[0], err
    assert not marker.exists()
    assert not (tmp_path / "study").exists()


def _calls(tree: ast.AST) -> list[ast.Call]:
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call)]


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return ""


def test_the_package_source_has_no_unsafe_loader_or_eval() -> None:
    """Every ``torch.load`` passes ``weights_only=True``; YAML is read with ``safe_load``; no
    ``eval``/``exec``/``pickle.load``/``yaml.load`` anywhere in the package."""
    forbidden = {"eval", "exec", "pickle.load", "pickle.loads", "yaml.load", "yaml.unsafe_load", "yaml.full_load",
                 "yaml.load_all", "yaml.unsafe_load_all", "marshal.loads", "dill.load", "cloudpickle.load"}
    problems = []
    torch_loads = 0
    root = Path(svite_search.__file__).parent
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for call in _calls(tree):
            name = _dotted(call.func)
            where = f"{path.relative_to(root)}:{call.lineno}"
            if name in forbidden:
                problems.append(f"{where}: {name}")
            if name == "torch.load":
                torch_loads += 1
                safe = any(k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                           for k in call.keywords)
                if not safe:
                    problems.append(f"{where}: torch.load without weights_only=True")
    assert problems == []
    assert torch_loads >= 1  # checkpoints and slim models share one loader (_io.load_torch_file): the scan found it


def test_an_incompatible_checkpoint_is_refused_before_any_weight_is_copied(tmp_path: Path) -> None:
    from svite_search.train import Trainer

    trainer = Trainer(config_from_dict(TRAIN_CONFIG), tmp_path / "mine", progress=False)
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    wider = spec_with(TRAIN_CONFIG, model={**TRAIN_CONFIG["model"], "embed_dim": 48})
    other = Trainer(config_from_dict(wider), None, progress=False).checkpoint_state()
    foreign = {k: v for k, v in other.items() if k != "config"}  # no config to compare: the weights must tell
    with pytest.raises(UserInputError, match="does not fit this model"):
        trainer.load_state(foreign, source="foreign.pt")
    after = trainer.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "the model was half-loaded"


def test_train_refuses_a_checkpoint_of_another_model(tmp_path: Path, capsys) -> None:
    from svite_search.train import Trainer
    from svite_search.train.checkpoint import atomic_torch_save

    deeper = spec_with(TRAIN_CONFIG, model={**TRAIN_CONFIG["model"], "depth": 3})
    run = tmp_path / "run"
    state = Trainer(config_from_dict(deeper), run, progress=False).checkpoint_state()
    atomic_torch_save(state, run / "last.pt")
    config = write_yaml(tmp_path / "train.yaml", TRAIN_CONFIG)
    assert main(["train", str(config), "--out", str(run), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(run / "last.pt") in err[0] and "model.depth" in err[0], err
    del state["config"]  # without its config, the weights themselves are compared
    atomic_torch_save(state, run / "last.pt")
    assert main(["train", str(config), "--out", str(run), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not fit this model" in err[0], err
    assert sorted(p.name for p in run.iterdir()) == ["last.pt"]  # nothing trained, nothing written
