"""Analytic MACs: the DeiT figures, the SViTE+ headline, and a cross-check with FlopCounterMode."""
from __future__ import annotations

import pytest
import timm
import torch
import torch.nn as nn

from svite_search.errors import ConfigError, UserInputError
from svite_search.metrics._torch_counter import counted_macs
from svite_search.metrics.flops import meta_model, vit_macs
from svite_search.report.macs import macs_for


def tiny_vit() -> nn.Module:
    return timm.create_model(
        "vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=10
    )


def deit_formula(depth: int, dim: int, mlp: int, tokens: int, patches: int, patch_macs: int, classes: int) -> int:
    """The DeiT MACs formula, written out independently of the implementation."""
    block = tokens * (3 * dim * dim + dim * dim + 2 * dim * mlp) + 2 * tokens * tokens * dim
    return depth * block + patches * patch_macs + dim * classes


def test_deit_small_is_4_60_gmacs() -> None:
    report = macs_for("deit_small_patch16_224")
    expected = deit_formula(12, 384, 1536, 197, 196, 3 * 16 * 16 * 384, 1000)
    assert report.dense_total == expected == report.total
    assert round(report.dense_gmacs, 2) == 4.60
    assert report.tokens == report.dense_tokens == 197
    assert report.savings == 0.0


@pytest.mark.parametrize("name,gmacs", [("deit_tiny_patch16_224", 1.25), ("deit_base_patch16_224", 17.56)])
def test_other_deit_sizes(name: str, gmacs: float) -> None:
    assert round(macs_for(name).dense_gmacs, 2) == gmacs


def test_svite_plus_headline_saving() -> None:
    """DeiT-Small, ERK at 50 % weights, 187 of 197 tokens: the paper reports 49.32 %."""
    report = macs_for("deit_small_patch16_224", density=0.5, distribution="erk", keep_tokens=187)
    assert report.tokens == 187
    assert 100 * report.savings == pytest.approx(49.32, abs=0.3)


@pytest.mark.parametrize("name", ["deit_small_patch16_224", "deit_base_patch16_224"])
def test_dense_count_matches_flop_counter_mode(name: str) -> None:
    model = meta_model(name)  # shapes only: the counter runs on the meta device
    assert counted_macs(model) == vit_macs(model).dense_total


def test_counter_cross_check_on_a_real_model_restores_fused_attention() -> None:
    model = tiny_vit()
    flags = [m.fused_attn for m in model.modules() if hasattr(m, "fused_attn")]
    assert counted_macs(model) == vit_macs(model).dense_total
    assert [m.fused_attn for m in model.modules() if hasattr(m, "fused_attn")] == flags


def test_layer_density_scales_only_that_layers_weight_macs() -> None:
    model = tiny_vit()
    dense = vit_macs(model)
    report = vit_macs(model, layer_density={"blocks.0.attn.qkv.weight": 0.25, "head.weight": 0.5})
    qkv = dense.dense_parts["blocks.0.attn.qkv"]
    assert report.total == pytest.approx(dense.total - 0.75 * qkv - 0.5 * dense.dense_parts["head"])
    assert report.parts["blocks.0.attn.matmul"] == dense.parts["blocks.0.attn.matmul"]  # attention stays dense


def test_tokens_shrink_every_block_but_not_the_patch_embedding() -> None:
    model = tiny_vit()  # 16 patches + cls
    dense, kept = vit_macs(model), vit_macs(model, tokens=8)
    assert kept.tokens == 9 and dense.tokens == 17
    assert kept.parts["patch_embed"] == dense.parts["patch_embed"]
    assert kept.parts["blocks.1.mlp.fc1"] == dense.parts["blocks.1.mlp.fc1"] * 9 / 17
    assert kept.parts["blocks.1.attn.matmul"] == dense.parts["blocks.1.attn.matmul"] * 81 / 289
    assert kept.parts["token_selector"] == 16 * 32  # the Linear(D, 1) scorer on every patch
    assert kept.dense_total == dense.total


def _slim(model: nn.Module, heads: list[int], neurons: list[int]) -> nn.Module:
    """Physically narrower blocks (fresh weights): what S²ViTE's export produces."""
    for block, h, m in zip(model.blocks, heads, neurons):
        attn, dim = block.attn, block.attn.qkv.in_features
        width = h * attn.head_dim
        attn.qkv = nn.Linear(dim, 3 * width)
        attn.proj = nn.Linear(width, dim)
        attn.num_heads, attn.attn_dim = h, width
        block.mlp.fc1 = nn.Linear(dim, m)
        block.mlp.fc2 = nn.Linear(m, dim)
    return model


def test_structure_of_a_masked_model_equals_the_slim_model() -> None:
    structure = [(1, 40), (2, 17)]
    masked = vit_macs(tiny_vit(), structure=structure)
    slim_model = _slim(tiny_vit(), [1, 2], [40, 17])
    slim = vit_macs(slim_model)
    assert masked.total == slim.total
    assert counted_macs(slim_model) == slim.total  # a forward pass through different widths per block
    assert masked.dense_total > masked.total


def test_structure_from_densities_uses_the_s2vite_budget() -> None:
    # DeiT-Small at (0.7, 0.6): 4 of 6 heads and 921 of 1536 neurons in every block
    report = macs_for("deit_small_patch16_224", head_density=0.7, mlp_density=0.6)
    expected = deit_formula(12, 384, 1536, 197, 196, 3 * 16 * 16 * 384, 1000)
    block_saving = 197 * (3 * 384 * 128 + 128 * 384 + 2 * 384 * 615) + 2 * 197 * 197 * 128
    assert report.dense_total == expected
    assert report.total == expected - 12 * block_saving


def test_bad_inputs_are_user_errors() -> None:
    model = tiny_vit()
    with pytest.raises(ConfigError, match="tokens"):
        vit_macs(model, tokens=17)
    with pytest.raises(ConfigError, match="structure"):
        vit_macs(model, structure=[(1, 10)])
    with pytest.raises(ConfigError, match="structure"):
        vit_macs(model, structure=[(3, 10), (1, 10)])
    with pytest.raises(UserInputError, match="not a timm VisionTransformer"):
        vit_macs(nn.Sequential(nn.Linear(2, 2)))
    with pytest.raises(UserInputError, match="unknown model 'deit_nope'"):
        macs_for("deit_nope")
    with pytest.raises(ConfigError, match="keep_tokens"):
        macs_for("deit_small_patch16_224", keep_tokens=198)
    with pytest.raises(ConfigError, match="keep_tokens"):
        macs_for("deit_small_patch16_224", keep_tokens=100, keep_ratio=0.5)


def test_engine_read_out_feeds_the_count() -> None:
    from svite_search.engine.sparse import SViTE, SViTEConfig

    model = tiny_vit()
    sparsifier = SViTE(model, None, SViTEConfig(density=0.5, total_steps=10))
    report = vit_macs(model, layer_density=sparsifier.layer_densities())
    assert 0.0 < report.savings < 0.5  # attention matmuls stay dense
    assert torch.isfinite(torch.tensor(report.gmacs))


def test_slim_blocks_without_heads_or_neurons_are_counted() -> None:
    """``slim_model`` allows a block that keeps no head or no neuron: it costs only its other
    parts, and the count must equal a masked model with the same structure."""
    from svite_search.engine.structured import BlockMask, slim_model

    torch.manual_seed(0)
    model = tiny_vit().eval()
    blocks = list(model.blocks)
    masks = [
        BlockMask(torch.tensor([False, False]), torch.ones(blocks[0].mlp.fc1.out_features, dtype=torch.bool)),
        BlockMask(torch.tensor([True, False]), torch.zeros(blocks[1].mlp.fc1.out_features, dtype=torch.bool)),
    ]
    with torch.no_grad():
        for block, mask in zip(blocks, masks):
            rows = mask.heads.view(1, -1, 1).expand(3, -1, block.attn.head_dim).reshape(-1)
            block.attn.qkv.weight[~rows] = 0.0
            block.mlp.fc2.weight[:, ~mask.neurons] = 0.0
    slim = slim_model(model, masks)
    report = vit_macs(slim)
    masked = vit_macs(model, structure=[(0, blocks[0].mlp.fc1.out_features), (1, 0)])
    assert report.total == masked.total
    assert report.parts["blocks.0.attn.qkv"] == report.parts["blocks.0.attn.matmul"] == 0.0
    assert report.parts["blocks.0.attn.proj"] == 0.0
    assert report.parts["blocks.1.mlp.fc1"] == report.parts["blocks.1.mlp.fc2"] == 0.0
    assert report.dense_parts["blocks.1.mlp.fc1"] == 0.0  # the slim model's dense width is 0 too
    # A real forward pass through the empty widths; the counter does not see the slim
    # attention's fused SDPA matmuls, so they are left out of the comparison.
    matmuls = sum(v for k, v in report.parts.items() if k.endswith("attn.matmul"))
    assert counted_macs(slim) == report.total - matmuls


def test_module_docstring_example_states_what_the_code_returns() -> None:
    """The Example of ``macs_for`` gives figures; they must be the ones the code returns."""
    import re

    import svite_search.report.macs as flops

    example = flops.__doc__.split("Example::", 1)[1]
    call = re.search(r"report = (macs_for\(.*\))", example).group(1)
    stated = [float(v) for v in re.search(r"#\s*([\d.]+), ([\d.]+), ([\d.]+)", example).groups()]
    report = eval(call, {"macs_for": flops.macs_for})
    assert [round(report.dense_gmacs, 2), round(report.gmacs, 2), round(report.savings, 4)] == stated


def test_metrics_imports_nothing_of_the_package_above_it() -> None:
    """metrics is the lowest layer: besides itself it may import only ``svite_search.errors``."""
    import ast
    from pathlib import Path

    import svite_search.metrics as metrics

    upward = []
    for path in sorted(Path(metrics.__file__).parent.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level >= 2:  # from ..x import ...
                target = (node.module or "").split(".")[0]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("svite_search."):
                target = node.module.split(".")[1]
            elif isinstance(node, ast.Import):
                names = [a.name.split(".") for a in node.names if a.name.startswith("svite_search.")]
                target = names[0][1] if names else "errors"
            else:
                continue
            if target not in ("errors", "metrics", "_torchvision_guard"):
                upward.append(f"{path.name}:{node.lineno} imports svite_search.{target}")
    assert upward == []


def test_one_unwrap_for_the_count_and_the_engine() -> None:
    from svite_search.engine import sparse
    from svite_search.engine.sparse import _targets
    from svite_search.metrics.wrappers import unwrap

    assert sparse.unwrap is _targets.unwrap is unwrap
    model = tiny_vit()
    compiled = type("Compiled", (nn.Module,), {})()
    compiled._orig_mod = nn.Sequential()
    compiled._orig_mod.module = model  # a compiled DDP-style wrapper
    assert unwrap(compiled) is model and vit_macs(compiled).total == vit_macs(model).total
    looped = nn.Module()
    object.__setattr__(looped, "module", looped)  # a wrapper that names itself stops the walk
    assert unwrap(looped) is looped


def test_metrics_docstring_example_states_what_the_code_returns() -> None:
    import re

    import svite_search.metrics.flops as flops

    example = flops.__doc__.split("Example::", 1)[1]
    namespace = {"meta_model": meta_model, "vit_macs": vit_macs}
    exec(re.search(r"(model = .*)\n", example).group(1) + "\n" + re.search(r"(report = .*)\n", example).group(1), namespace)
    report = namespace["report"]
    stated = [float(v) for v in re.search(r"#\s*([\d.]+), ([\d.]+), ([\d.]+)", example).groups()]
    assert [round(report.dense_gmacs, 2), round(report.gmacs, 2), round(report.savings, 4)] == stated


def test_presets_are_counted_by_name_like_any_timm_model() -> None:
    """One path resolves a name: the count by name is the count of ``timm.create_model``."""
    report = macs_for("vit_digits", density=0.5, keep_ratio=0.5)
    with torch.device("meta"):
        model = timm.create_model("vit_digits")
    from svite_search.report.macs import layer_density_for

    assert report.img_size == (8, 8) and report.num_classes == 10
    assert report.total == vit_macs(model, layer_density=layer_density_for(model, 0.5), tokens=8).total
