"""``svite-search masks`` and ``svite-search flops``: JSON contract, figures, and exit codes."""
from __future__ import annotations

import json

import pytest

from svite_search.cli import main


def run_json(capsys, *argv: str) -> dict:
    assert main([*argv, "--json"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1  # exactly one JSON object
    return json.loads(out)


def test_masks_erk_sanity_points(capsys) -> None:
    result = run_json(capsys, "masks", "--model", "deit_small_patch16_224", "--density", "0.5")
    layers = result["layers"]
    assert result["distribution"] == "erk"
    assert result["global_density"] == pytest.approx(0.5, abs=1e-7)
    assert layers["blocks.0.attn.qkv.weight"] == pytest.approx(0.504, abs=1e-3)
    assert layers["blocks.0.attn.proj.weight"] == pytest.approx(0.756, abs=1e-3)
    assert "blocks.0.norm1.weight" not in layers and "cls_token" not in layers
    dense = run_json(capsys, "masks", "--model", "deit_small_patch16_224", "--density", "0.7")
    assert all(dense["layers"][f"blocks.{i}.attn.proj.weight"] == 1.0 for i in range(12))
    assert len(dense["dense_layers"]) == 12


def test_masks_human_table(capsys) -> None:
    assert main(["masks", "--model", "vit_micro", "--density", "0.5", "--distribution", "uniform"]) == 0
    out = capsys.readouterr().out
    assert "blocks.1.mlp.fc2.weight" in out and "global" in out and "0.5000" in out


def test_flops_deit_small_half_density(capsys) -> None:
    result = run_json(
        capsys, "flops", "--model", "deit_small_patch16_224", "--density", "0.5", "--distribution", "erk"
    )
    assert round(result["dense_gmacs"], 2) == 4.60
    assert result["gmacs"] < result["dense_gmacs"]
    assert result["flops_savings"] == pytest.approx(1 - result["gmacs"] / result["dense_gmacs"])
    assert result["density"] == 0.5 and result["distribution"] == "erk"
    assert result["img_size"] == [224, 224] and result["num_classes"] == 1000


def test_flops_keep_tokens_counts_the_class_token(capsys) -> None:
    result = run_json(capsys, "flops", "--model", "deit_small_patch16_224", "--density", "0.5", "--keep-tokens", "187")
    assert result["tokens"] == 187 and result["dense_tokens"] == 197
    assert 100 * result["flops_savings"] == pytest.approx(49.32, abs=0.3)
    ratio = run_json(capsys, "flops", "--model", "deit_small_patch16_224", "--keep-ratio", "0.5")
    assert ratio["tokens"] == 98 + 1


def test_flops_structure_options_are_applied(capsys) -> None:
    dense = run_json(capsys, "flops", "--model", "deit_tiny_patch16_224")
    slim = run_json(capsys, "flops", "--model", "deit_tiny_patch16_224", "--head-density", "0.5", "--mlp-density", "0.5")
    assert slim["gmacs"] < dense["gmacs"] == dense["dense_gmacs"]
    assert slim["head_density"] == 0.5 and slim["mlp_density"] == 0.5


def test_flops_help_explains_keep_tokens(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["flops", "--help"])
    assert exit_info.value.code == 0
    assert "class token" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv,message",
    [
        (["masks", "--model", "deit_nope", "--density", "0.5"], "deit_nope"),
        (["flops", "--model", "deit_nope"], "deit_nope"),
        (["masks", "--model", "deit_small_patch16_224", "--density", "1.5"], "--density"),
        (["flops", "--model", "deit_small_patch16_224", "--keep-tokens", "1"], "--keep-tokens"),
        (["flops", "--model", "deit_small_patch16_224", "--keep-ratio", "0"], "--keep-ratio"),
        (["flops", "--model", "deit_small_patch16_224", "--mlp-density", "2"], "--mlp-density"),
        (["flops", "--model", "deit_small_patch16_224", "--distribution", "er"], "--distribution"),
        (["flops", "--model", "resnet18"], "not a timm VisionTransformer"),
    ],
)
def test_bad_input_exits_2_with_one_line(capsys, argv: list[str], message: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_unknown_distribution_is_a_usage_error(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["masks", "--model", "deit_small_patch16_224", "--density", "0.5", "--distribution", "random"])
    assert exit_info.value.code == 2


def test_flops_presets_count_as_the_registered_model(capsys) -> None:
    """``--model vit_digits`` is the timm model ``vit_digits``: its own input size and classes."""
    result = run_json(capsys, "flops", "--model", "vit_digits")
    assert result["img_size"] == [8, 8] and result["num_classes"] == 10 and result["dense_tokens"] == 17
    wider = run_json(capsys, "flops", "--model", "vit_digits", "--num-classes", "1000")
    assert wider["dense_gmacs"] - result["dense_gmacs"] == pytest.approx(64 * 990 / 1e9)


def test_refused_model_options_import_no_torch() -> None:
    import subprocess
    import sys

    code = (
        "import sys\nfrom svite_search.cli import main\n"
        "codes = [main(['flops', '--model', 'vit_digits', '--img-size', '0']),\n"
        "         main(['masks', '--model', 'vit_digits', '--density', '0.5', '--num-classes', '0'])]\n"
        "print(*codes, sorted({'torch', 'timm', 'torchvision'} & set(sys.modules)))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == "2 2 []", proc.stderr
    assert "flops: error: --img-size" in proc.stderr and "masks: error: --num-classes" in proc.stderr
