"""The S²ViTE component: budgets, exploration, optimizer state, EMA masking and exact resume."""
from __future__ import annotations

import copy
import io

import pytest
import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer

from svite_search.engine.structured import (
    S2ViTE,
    S2ViTEConfig,
    neuron_growth_signal,
    neuron_magnitude,
    prune_and_grow,
    slim_model,
)
from svite_search.errors import ConfigError, UserInputError

HEADS, HEAD_DIM, HIDDEN = 4, 8, 64


def tiny_vit(seed: int = 0) -> VisionTransformer:
    torch.manual_seed(seed)
    return VisionTransformer(
        img_size=16, patch_size=4, embed_dim=HEADS * HEAD_DIM, depth=2, num_heads=HEADS, mlp_ratio=2.0, num_classes=4
    )


def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 + step)
    return torch.randn(8, 3, 16, 16, generator=g), torch.randint(0, 4, (8,), generator=g)


def build(neuron_growth: str = "signal", total: int = 24, interval: int = 3, **kw):
    model = tiny_vit()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    config = S2ViTEConfig(
        total_steps=total,
        head_density=0.5,
        mlp_density=0.5,
        update_interval=interval,
        neuron_growth=neuron_growth,
        **kw,
    )
    return model, optimizer, S2ViTE(model, optimizer, config)


def train_step(model, optimizer, engine, step: int) -> None:
    x, y = batch(step)
    model.train()
    loss = F.cross_entropy(model(x), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    engine.step()


def assert_masked(model, engine, reference: bool) -> None:
    for block, mask in zip(model.blocks, engine.unit_masks()):
        qkv = block.attn.qkv.weight.view(3, HEADS, HEAD_DIM, -1)
        assert bool((qkv[:, ~mask.heads] == 0).all())
        assert bool((block.mlp.fc2.weight[:, ~mask.neurons] == 0).all())
        fc1_rows = block.mlp.fc1.weight[~mask.neurons]
        if reference:
            assert bool((fc1_rows == 0).all()) and bool((block.mlp.fc1.bias[~mask.neurons] == 0).all())
        else:  # the default keeps inactive neurons computing, so they have a growth signal
            assert bool((fc1_rows != 0).any())


@pytest.mark.parametrize("neuron_growth", ["signal", "reference"])
def test_budgets_and_masks_hold_after_every_step(neuron_growth: str) -> None:
    model, optimizer, engine = build(neuron_growth)
    assert engine.structure() == [(2, 32), (2, 32)]
    for step in range(1, 20):
        train_step(model, optimizer, engine, step)
        assert engine.structure() == [(2, 32), (2, 32)]
        assert_masked(model, engine, reference=neuron_growth == "reference")
    stats = engine.stats()
    assert stats["updates"] == 6  # steps 3, 6, ..., 18 (< 0.8 · 24)
    assert stats["heads_kept"] == 4 and stats["neurons_kept"] == 64


def test_neuron_sets_change_by_default_and_follow_the_signal() -> None:
    model, optimizer, engine = build("signal")
    initial = engine.unit_masks()
    for step in range(1, 6):
        train_step(model, optimizer, engine, step)
    # Step 6 is an update: predict it from the scores the component should read.
    x, y = batch(6)
    loss = F.cross_entropy(model(x), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    before = engine.unit_masks()
    expected = []
    rate = engine.schedule.prune_rate(6)
    for block, mask in zip(model.blocks, before):
        with torch.no_grad():  # the component zeroes what this optimizer step wrote into inactive units
            block.mlp.fc2.weight[:, ~mask.neurons] = 0
        magnitude = neuron_magnitude(block.mlp)
        signal = neuron_growth_signal(block.mlp, include_fc1=False)
        assert bool((signal[~mask.neurons] > 0).all()), "inactive neurons must have a growth signal"
        expected.append(prune_and_grow(mask.neurons, magnitude, signal, rate))
    engine.step()
    after = engine.unit_masks()
    for (want, _), got, old in zip(expected, after, before):
        assert torch.equal(got.neurons, want)
        grown = got.neurons & ~old.neurons
        assert int(grown.sum()) > 0  # units that were inactive before this update came in
    for step in range(7, 19):
        train_step(model, optimizer, engine, step)
    final = engine.unit_masks()
    assert any(not torch.equal(a.neurons, b.neurons) for a, b in zip(initial, final))
    assert engine.stats()["neurons_fired"] > 0.5


def test_reference_neuron_sets_never_change() -> None:
    model, optimizer, engine = build("reference")
    initial = engine.unit_masks()
    for step in range(1, 20):
        train_step(model, optimizer, engine, step)
        for a, b in zip(initial, engine.unit_masks()):
            assert torch.equal(a.neurons, b.neurons)  # the authors' static neuron sparsity
    assert engine.stats()["updates"] == 6
    assert engine.stats()["neurons_fired"] == 0.5


def test_grown_units_start_at_zero_with_fresh_optimizer_state() -> None:
    model, optimizer, engine = build("signal")
    for step in range(1, 6):
        train_step(model, optimizer, engine, step)
    before = engine.unit_masks()
    train_step(model, optimizer, engine, 6)  # an update
    after = engine.unit_masks()
    grown_any = False
    for block, old, new in zip(model.blocks, before, after):
        grown = new.neurons & ~old.neurons
        grown_any |= bool(grown.any())
        state = optimizer.state[block.mlp.fc2.weight]
        assert bool((block.mlp.fc2.weight[:, grown] == 0).all())
        assert bool((state["exp_avg"][:, grown] == 0).all()) and bool((state["exp_avg_sq"][:, grown] == 0).all())
        assert bool((state["exp_avg"][:, ~new.neurons] == 0).all())
        qkv_state = optimizer.state[block.attn.qkv.weight]["exp_avg"].view(3, HEADS, HEAD_DIM, -1)
        assert bool((qkv_state[:, ~new.heads] == 0).all())
    assert grown_any


def test_keep_leaves_optimizer_state_alone() -> None:
    model, optimizer, engine = build("signal", optimizer_state="keep")
    for step in range(1, 4):
        train_step(model, optimizer, engine, step)
    mask = engine.unit_masks()[0]
    state = optimizer.state[model.blocks[0].mlp.fc2.weight]["exp_avg"]
    assert bool((state[:, ~mask.neurons] != 0).any())


def test_head_scores_are_only_captured_before_updates() -> None:
    model, optimizer, engine = build("signal", interval=4)  # updates at 4, 8, 12, 16 (< 0.8 · 24)
    armed = []
    for step in range(1, 25):
        armed.append(engine._capture.armed)
        train_step(model, optimizer, engine, step)
        if not engine._capture.armed:
            # the hook did no work for the next iteration either: nothing accumulated
            x, y = batch(100 + step)
            F.cross_entropy(model(x), y).backward()
            assert not engine._capture.captured
    assert [i + 1 for i, a in enumerate(armed) if a] == [4, 8, 12, 16]
    assert engine.stats()["updates"] == 4


def test_update_is_skipped_on_non_finite_gradients() -> None:
    model, optimizer, engine = build("signal")
    for step in range(1, 3):
        train_step(model, optimizer, engine, step)
    before = engine.unit_masks()
    x, y = batch(3)
    loss = F.cross_entropy(model(x), y)
    optimizer.zero_grad()
    loss.backward()
    model.blocks[0].mlp.fc2.weight.grad[0, 0] = float("inf")
    engine.step()  # no optimizer step: as when a gradient scaler skips one
    assert engine.stats()["skipped_updates"] == 1 and engine.stats()["updates"] == 0
    for a, b in zip(before, engine.unit_masks()):
        assert torch.equal(a.heads, b.heads) and torch.equal(a.neurons, b.neurons)


def test_apply_masks_to_an_ema_copy() -> None:
    model, optimizer, engine = build("signal")
    train_step(model, optimizer, engine, 1)
    ema = copy.deepcopy(model)
    with torch.no_grad():
        for p in ema.parameters():
            p.add_(1.0)
    engine.apply_masks(ema)
    for block, mask in zip(ema.blocks, engine.unit_masks()):
        assert bool((block.attn.qkv.weight.view(3, HEADS, HEAD_DIM, -1)[:, ~mask.heads] == 0).all())
        assert bool((block.mlp.fc2.weight[:, ~mask.neurons] == 0).all())
        assert bool((block.attn.qkv.weight.view(3, HEADS, HEAD_DIM, -1)[:, mask.heads] != 0).all())


def test_stats_count_what_slimming_keeps() -> None:
    model, optimizer, engine = build("signal")
    for step in range(1, 4):
        train_step(model, optimizer, engine, step)
    stats = engine.stats()
    slim = slim_model(model, engine)
    assert stats["params_nonzero"] == sum(p.numel() for p in slim.parameters())
    assert stats["params_total"] == sum(p.numel() for p in model.parameters())
    weights = lambda m: sum(  # noqa: E731
        mod.weight.numel() for mod in m.modules() if isinstance(mod, (torch.nn.Linear, torch.nn.Conv2d))
    )
    assert stats["density"] == pytest.approx(weights(slim) / weights(model))
    for key in ("density", "updates", "heads_kept", "neurons_kept", "params_nonzero", "params_total"):
        assert isinstance(stats[key], float)


def _run(resume_at: int | None, total: int = 14) -> tuple[VisionTransformer, S2ViTE]:
    model, optimizer, engine = build("signal", total=total, interval=3)
    for step in range(1, total + 1):
        train_step(model, optimizer, engine, step)
        if step == resume_at:
            buffer = io.BytesIO()
            torch.save(
                {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "engine": engine.state_dict()},
                buffer,
            )
            buffer.seek(0)
            saved = torch.load(buffer, weights_only=True)
            model, optimizer, engine = build("signal", total=total, interval=3)
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            engine.load_state_dict(saved["engine"])
    return model, engine


def test_checkpoint_resume_is_exact() -> None:
    # Resume right before an update iteration (5 -> update at 6), so the capture must re-arm.
    straight_model, straight = _run(None)
    resumed_model, resumed = _run(5)
    assert straight.state_dict()["step_count"] == resumed.state_dict()["step_count"] == 14
    for a, b in zip(straight.unit_masks(), resumed.unit_masks()):
        assert torch.equal(a.heads, b.heads) and torch.equal(a.neurons, b.neurons)
    for (name, p), q in zip(straight_model.state_dict().items(), resumed_model.state_dict().values()):
        assert torch.equal(p, q), name
    assert straight.stats() == resumed.stats()


def test_state_of_another_model_is_refused() -> None:
    _, _, engine = build("signal")
    state = engine.state_dict()
    state["heads"] = [torch.ones(3, dtype=torch.bool)] * 2
    with pytest.raises(UserInputError):
        engine.load_state_dict(state)


@pytest.mark.parametrize(
    "field, value",
    [("head_density", 0.0), ("mlp_density", 1.5), ("neuron_growth", "static"), ("optimizer_state", "zero"), ("decay", "step")],
)
def test_bad_config_names_the_field(field: str, value) -> None:
    with pytest.raises(ConfigError, match=field):
        S2ViTEConfig(total_steps=10, **{field: value})
