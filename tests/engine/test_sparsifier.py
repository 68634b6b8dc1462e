"""The engine's protocol: every component is a Sparsifier with typed read-outs, and SViTE and
S²ViTE share one schedule config whose errors name the engine's own arguments."""
from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer

from svite_search.engine import Sparsifier
from svite_search.engine.sparse import DynamicSparsityConfig, SViTE, SViTEConfig
from svite_search.engine.structured import S2ViTE, S2ViTEConfig
from svite_search.engine.tokens import TokenTemperature, install_token_selector
from svite_search.errors import ConfigError


def tiny_vit() -> VisionTransformer:
    torch.manual_seed(0)
    return VisionTransformer(img_size=16, patch_size=4, embed_dim=16, depth=2, num_heads=4, mlp_ratio=2.0, num_classes=4)


def components(total: int = 12, interval: int = 3) -> tuple[VisionTransformer, torch.optim.Optimizer, dict]:
    model = tiny_vit()
    selector = install_token_selector(model, keep_ratio=0.5)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    built = {
        "s2vite": S2ViTE(model, optimizer, S2ViTEConfig(total_steps=total, head_density=0.5, mlp_density=0.5,
                                                        update_interval=interval)),
        "tokens": TokenTemperature(selector, total_steps=total),
    }
    return model, optimizer, built


def test_the_base_class_is_abstract_and_every_engine_component_is_one() -> None:
    with pytest.raises(TypeError):
        Sparsifier()  # type: ignore[abstract]
    model, optimizer, built = components()
    svite = SViTE(tiny_vit(), None, SViTEConfig(total_steps=10))
    for component in (svite, *built.values()):
        assert isinstance(component, Sparsifier)
    assert {svite.name, *(c.name for c in built.values())} == {"svite", "s2vite", "tokens"}


def test_optional_read_outs_are_typed_and_say_none_where_they_do_not_apply() -> None:
    _, _, built = components()
    svite = SViTE(tiny_vit(), None, SViTEConfig(total_steps=10))
    s2vite, tokens = built["s2vite"], built["tokens"]

    densities = svite.layer_densities()
    assert isinstance(densities, dict) and densities and all(0.0 < d <= 1.0 for d in densities.values())
    assert svite.structure() is None and svite.needs_eager_step() is False

    assert s2vite.layer_densities() is None
    assert s2vite.structure() == [(2, 16), (2, 16)]  # of 4 heads and 32 neurons per block

    assert tokens.layer_densities() is None and tokens.structure() is None and tokens.needs_eager_step() is False
    other = tiny_vit()
    before = {k: v.clone() for k, v in other.state_dict().items()}
    tokens.apply_masks(other)  # masks no weights: a no-op
    assert all(torch.equal(before[k], v) for k, v in other.state_dict().items())


def test_apply_masks_without_a_module_masks_the_components_own_model() -> None:
    model, _, built = components()
    with torch.no_grad():
        for param in model.parameters():
            param.fill_(1.0)
    built["s2vite"].apply_masks()
    kept_rows = int((model.blocks[0].attn.qkv.weight.abs().sum(1) > 0).sum())
    assert kept_rows == 3 * 2 * 4  # q, k and v rows of 2 kept heads of width 4


def test_s2vite_asks_for_an_eager_step_exactly_before_each_update() -> None:
    model, optimizer, built = components(total=12, interval=3)
    s2vite = built["s2vite"]
    asked = []
    for step in range(1, 13):
        asked.append(s2vite.needs_eager_step())
        images, targets = torch.randn(4, 3, 16, 16), torch.randint(0, 4, (4,))
        optimizer.zero_grad()
        F.cross_entropy(model(images), targets).backward()
        optimizer.step()
        for component in built.values():
            component.step()
    # updates after steps 3, 6, 9 (t < 0.8 · 12): the iterations that end with them capture
    assert [i + 1 for i, a in enumerate(asked) if a] == [3, 6, 9]
    assert s2vite.stats()["updates"] == 3.0


def test_svite_and_s2vite_share_one_schedule_config() -> None:
    shared = {f.name: f for f in dataclasses.fields(DynamicSparsityConfig)}
    assert {"total_steps", "update_interval", "updates_per_run", "prune_rate", "prune_rate_min", "decay", "t_end",
            "optimizer_state", "seed"} == set(shared)
    for config in (SViTEConfig, S2ViTEConfig):
        assert issubclass(config, DynamicSparsityConfig)
        own = set(config.__annotations__)
        assert not own & set(shared), f"{config.__name__} redeclares {own & set(shared)}"
        fields = {f.name: f for f in dataclasses.fields(config)}
        assert all(fields[name].default == f.default for name, f in shared.items())
    svite = SViTEConfig(total_steps=1000, updates_per_run=10)
    s2vite = S2ViTEConfig(total_steps=1000, updates_per_run=10)
    assert svite.schedule() == s2vite.schedule()


@pytest.mark.parametrize("config", [SViTEConfig, S2ViTEConfig])
@pytest.mark.parametrize(
    "field, value",
    [("updates_per_run", 10_000), ("update_interval", 0), ("t_end", 0.0), ("prune_rate", 1.5), ("decay", "step"),
     ("optimizer_state", "zero"), ("total_steps", 0)],
)
def test_both_configs_check_the_shared_fields_on_construction_under_the_engines_names(config, field: str, value) -> None:
    with pytest.raises(ConfigError) as err:
        config(**{"total_steps": 100, field: value})
    assert err.value.field == field


@pytest.mark.parametrize(
    "config, field, value",
    [(S2ViTEConfig, "head_density", 0.0), (S2ViTEConfig, "mlp_density", 1.5), (S2ViTEConfig, "head_growth", "grow"),
     (S2ViTEConfig, "neuron_growth", "static"), (SViTEConfig, "density", 0.0), (SViTEConfig, "distribution", "x")],
)
def test_own_fields_are_named_without_a_harness_prefix(config, field: str, value) -> None:
    with pytest.raises(ConfigError) as err:
        config(total_steps=100, **{field: value})
    assert err.value.field == field


@pytest.mark.parametrize("engine", ["svite", "s2vite"])
def test_a_sparsifier_built_out_of_order_is_refused(engine: str) -> None:
    def build(model, optimizer):
        if engine == "svite":
            return SViTE(model, optimizer, SViTEConfig(total_steps=10))
        return S2ViTE(model, optimizer, S2ViTEConfig(total_steps=10, head_density=0.5, mlp_density=0.5))

    model = tiny_vit()
    only_head = torch.optim.AdamW(model.head.parameters())  # built over part of the model
    with pytest.raises(ValueError, match="does not hold 'blocks.0.attn.qkv.weight'|does not hold 'patch_embed"):
        build(model, only_head)

    model = tiny_vit()
    optimizer = torch.optim.AdamW(model.parameters())
    install_token_selector(model, keep_ratio=0.5)  # after the optimizer: its scorer would never train
    with pytest.raises(ValueError, match="install the selector before building the optimizer"):
        build(model, optimizer)

    model = tiny_vit()
    install_token_selector(model, keep_ratio=0.5)
    build(model, torch.optim.AdamW(model.parameters()))  # the documented order
    build(tiny_vit(), None)  # no optimizer state to keep: nothing to check
