"""Config validation and the train command's contract: exit codes, one-line errors, JSON."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from svite_search.cli import main
from svite_search.config import apply_overrides, config_from_dict, load_config
from svite_search.errors import ConfigError
from _support.waiting import HANG_S


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"trian": {}}, "trian"),
        ({"train": {"epochs": 0}}, "train.epochs"),
        ({"train": {"epochs": "many"}}, "train.epochs"),
        ({"sparsity": {"density": 1.5}}, "sparsity.density"),
        ({"sparsity": {"distribution": "gaussian"}}, "sparsity.distribution"),
        ({"tokens": {"keep_ratio": 0}}, "tokens.keep_ratio"),
        ({"method": "magic"}, "method"),
        ({"model": {"depth": True}}, "model.depth"),
        ({"data": {"dataset": "imagefolder"}}, "data.root"),
    ],
)
def test_bad_values_name_their_key(raw: dict, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_dict(raw)
    assert info.value.field == field


def test_overrides_and_yaml_quirks() -> None:
    data = apply_overrides({}, ["train.lr=5e-4", "method=svite", "sparsity.density=0.3"])
    cfg = config_from_dict(data)
    assert cfg.train.lr == 5e-4 and cfg.method == "svite" and cfg.sparsity.density == 0.3


def test_train_cli_bad_config_exits_2_naming_the_key(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text("train:\n  epochs: 3\n  learning_rate: 0.1\n")
    assert main(["train", str(spec), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train.learning_rate" in err[0]
    assert not (tmp_path / "out").exists()


def test_train_cli_malformed_yaml_and_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    spec = tmp_path / "broken.yaml"
    spec.write_text("train: [epochs: 3\n")
    assert main(["train", str(spec)]) == 2
    assert "broken.yaml" in capsys.readouterr().err
    assert main(["train", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml" in capsys.readouterr().err


def test_train_cli_missing_data_path_exits_2_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    missing = tmp_path / "no-such-imagenet"
    code = main(["train", "studies/digits.yaml", "--set", "data.dataset=imagefolder",
                 "--set", f"data.root={missing}", "--out", str(tmp_path / "out")])
    assert code == 2
    assert str(missing) in capsys.readouterr().err


def test_unknown_model_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(["train", "studies/digits.yaml", "--set", "model.name=vit_imaginary", "--out", str(tmp_path)])
    assert code == 2 and "model.name" in capsys.readouterr().err


@pytest.mark.slow
def test_train_cli_json_end_to_end(tmp_path: Path) -> None:
    """The real console entry point, in a subprocess: one JSON object on stdout, logs on stderr."""
    proc = subprocess.run(
        [sys.executable, "-m", "svite_search", "train", "studies/digits.yaml", "--json",
         "--set", "train.epochs=2", "--set", "train.max_steps_per_epoch=3", "--set", "method=svite",
         "--out", str(tmp_path / "run")],
        capture_output=True, text=True, timeout=HANG_S, cwd=Path(__file__).resolve().parents[2],
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    for key in ("top1", "gmacs", "dense_gmacs", "flops_savings", "density", "params_nonzero", "epochs", "wall_s"):
        assert key in result
    assert result["epochs"] == 2 and result["method"] == "svite"
    assert (tmp_path / "run" / "last.pt").exists() and (tmp_path / "run" / "result.json").exists()
    assert load_config(tmp_path / "run" / "config.yaml").method == "svite"
