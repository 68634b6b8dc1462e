"""Per-layer densities (ERK, ER, uniform) and exact active counts."""
from __future__ import annotations

import math

import pytest
import torch

from svite_search.engine.sparse import layer_counts, layer_densities, masked_parameters
from svite_search.errors import ConfigError
from svite_search.metrics.flops import meta_model


@pytest.fixture(scope="module")
def deit_small_shapes() -> dict[str, tuple[int, ...]]:
    model = meta_model("deit_small_patch16_224")
    return {name: tuple(p.shape) for name, p in masked_parameters(model).items()}


def test_masked_weights_are_the_paper_layers(deit_small_shapes) -> None:
    names = list(deit_small_shapes)
    assert names[0] == "patch_embed.proj.weight" and names[-1] == "head.weight"
    assert len(names) == 2 + 12 * 4
    for kind in ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"):
        assert sum(n.endswith(f"{kind}.weight") for n in names) == 12
    assert not any("bias" in n or "norm" in n or "token" in n or "pos_embed" in n for n in names)


def test_erk_sanity_point_deit_small_half_density(deit_small_shapes) -> None:
    dens = layer_densities(deit_small_shapes, 0.5, "erk")
    for i in range(12):
        assert dens[f"blocks.{i}.attn.qkv.weight"] == pytest.approx(0.504, abs=1e-3)
        assert dens[f"blocks.{i}.attn.proj.weight"] == pytest.approx(0.756, abs=1e-3)
        assert dens[f"blocks.{i}.mlp.fc1.weight"] < 0.5
    # the size-weighted mean is the global density
    sizes = {n: math.prod(s) for n, s in deit_small_shapes.items()}
    assert sum(dens[n] * sizes[n] for n in sizes) / sum(sizes.values()) == pytest.approx(0.5, rel=1e-12)


def test_erk_dense_layer_loop_makes_every_proj_dense_at_0_7(deit_small_shapes) -> None:
    dens = layer_densities(deit_small_shapes, 0.7, "erk")
    assert all(dens[f"blocks.{i}.attn.proj.weight"] == 1.0 for i in range(12))
    assert all(d < 1.0 for n, d in dens.items() if "attn.proj" not in n)
    assert max(dens.values()) <= 1.0
    sizes = {n: math.prod(s) for n, s in deit_small_shapes.items()}
    assert sum(dens[n] * sizes[n] for n in sizes) / sum(sizes.values()) == pytest.approx(0.7, rel=1e-12)


def test_er_ignores_the_kernel_and_uniform_is_flat(deit_small_shapes) -> None:
    er = layer_densities(deit_small_shapes, 0.5, "er")
    erk = layer_densities(deit_small_shapes, 0.5, "erk")
    # ER scores the 4-D patch embedding as a 384 x 3 matrix, which makes it dense; ERK counts
    # the 16 x 16 kernel and keeps only about a fifth of it
    assert er["patch_embed.proj.weight"] == 1.0
    assert erk["patch_embed.proj.weight"] == pytest.approx(0.206, abs=1e-3)
    assert set(layer_densities(deit_small_shapes, 0.3, "uniform").values()) == {0.3}


def test_density_one_is_all_dense(deit_small_shapes) -> None:
    assert set(layer_densities(deit_small_shapes, 1.0, "erk").values()) == {1.0}


@pytest.mark.parametrize("distribution", ["erk", "er", "uniform"])
def test_exact_counts_hit_the_global_density(deit_small_shapes, distribution: str) -> None:
    dens = layer_densities(deit_small_shapes, 0.37, distribution)
    counts = layer_counts(deit_small_shapes, dens)
    sizes = {n: math.prod(s) for n, s in deit_small_shapes.items()}
    assert sum(counts.values()) == round(0.37 * sum(sizes.values()))
    for name, count in counts.items():
        assert abs(count - dens[name] * sizes[name]) < 1.0


def test_unknown_distribution_and_bad_density_are_rejected() -> None:
    shapes = {"w": (4, 4)}
    with pytest.raises(ConfigError, match="distribution"):
        layer_densities(shapes, 0.5, "bogus")
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ConfigError, match="density"):
            layer_densities(shapes, bad, "erk")


def test_masked_parameters_skips_modules_declared_dense() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 1))
    model[1].svite_dense = True
    assert list(masked_parameters(model)) == ["0.weight"]
