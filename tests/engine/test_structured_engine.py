"""The S²ViTE component: budgets, exploration, optimizer state, EMA masking and exact resume."""
from __future__ import annotations

import copy
import math
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


@pytest.mark.parametrize("policy", ["reset", "calibrated"])
def test_grown_units_start_at_zero_with_fresh_optimizer_state(policy: str) -> None:
    model, optimizer, engine = build("signal", optimizer_state=policy)
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
        assert bool((state["exp_avg"][:, grown] == 0).all())
        if policy == "reset":
            assert bool((state["exp_avg_sq"][:, grown] == 0).all())
        else:  # the second moment starts at the mean over the neurons kept in this fc2
            kept = new.neurons & old.neurons
            layer_mean = state["exp_avg_sq"][:, kept].mean()
            assert torch.allclose(state["exp_avg_sq"][:, grown], layer_mean.expand_as(state["exp_avg_sq"][:, grown]))
        assert bool((state["exp_avg_sq"][:, ~new.neurons] == 0).all())
        assert bool((state["exp_avg"][:, ~new.neurons] == 0).all())
        qkv_state = optimizer.state[block.attn.qkv.weight]["exp_avg"].view(3, HEADS, HEAD_DIM, -1)
        assert bool((qkv_state[:, ~new.heads] == 0).all())
        new_heads, kept_heads = new.heads & ~old.heads, new.heads & old.heads
        assert bool(new_heads.any())  # heads explore: one swapped in every block
        qkv_sq = optimizer.state[block.attn.qkv.weight]["exp_avg_sq"].view(3, HEADS, HEAD_DIM, -1)
        assert bool((qkv_state[:, new_heads] == 0).all())
        if policy == "reset":
            assert bool((qkv_sq[:, new_heads] == 0).all())
        else:
            want = qkv_sq[:, kept_heads].mean().expand_as(qkv_sq[:, new_heads])
            assert torch.allclose(qkv_sq[:, new_heads], want)
    assert grown_any


class UnlistedAdamW(torch.optim.AdamW):
    """AdamW under another name: not element-wise as far as the engine knows, so the state of
    inactive units is zeroed after every step."""


@pytest.mark.parametrize("policy", ["reset", "calibrated"])
def test_skipping_the_per_step_state_pass_trains_bit_identical_weights(policy: str) -> None:
    """AdamW with the inactive units' state zeroed at updates only trains, bit for bit, what
    AdamW with it zeroed after every step trains; between updates that state is left alone."""
    runs = []
    for make_optimizer in (torch.optim.AdamW, UnlistedAdamW):
        model = tiny_vit()
        optimizer = make_optimizer(model.parameters(), lr=1e-2, weight_decay=0.05)
        engine = S2ViTE(model, optimizer, S2ViTEConfig(total_steps=24, head_density=0.5, mlp_density=0.5,
                                                       update_interval=3, optimizer_state=policy))
        for step in range(1, 17):
            train_step(model, optimizer, engine, step)
        assert engine.stats()["updates"] == 5
        runs.append((model, optimizer, engine))
    (fast, fast_opt, fast_engine), (slow, slow_opt, _) = runs
    for (name, a), b in zip(fast.named_parameters(), slow.parameters()):
        assert torch.equal(a, b), name
    fc2 = fast.blocks[0].mlp.fc2.weight
    inactive = ~fast_engine.unit_masks()[0].neurons
    assert bool((fast_opt.state[fc2]["exp_avg"][:, inactive] != 0).any())  # step 16 is no update: left alone
    slow_fc2 = slow.blocks[0].mlp.fc2.weight
    assert not bool(slow_opt.state[slow_fc2]["exp_avg"][:, inactive].any())
    active = ~inactive
    assert torch.equal(fast_opt.state[fc2]["exp_avg"][:, active], slow_opt.state[slow_fc2]["exp_avg"][:, active])


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


# ---------------------------------------------------------------------------- head exploration


def _brute_force_heads(
    active: torch.Tensor, taylor: torch.Tensor, growth: torch.Tensor, r: int, *, regrow_pruned: bool = False
) -> torch.Tensor:
    """The rules written out by enumeration: prune the r-subset of active heads with the least
    total Taylor importance, grow the r-subset with the largest total growth signal of the heads
    inactive before the update ("explore") or of those and the ones just pruned ("reference")."""
    from itertools import combinations

    on = active.nonzero().flatten().tolist()
    off = (~active).nonzero().flatten().tolist()
    assert len(off) >= r
    pruned = min(combinations(on, r), key=lambda s: float(taylor[list(s)].sum()))
    candidates = off + list(pruned) if regrow_pruned else off
    grown = max(combinations(candidates, r), key=lambda s: float(growth[list(s)].sum()))
    new = active.clone()
    new[list(pruned)] = False
    new[list(grown)] = True
    return new


def _updates_against_brute_force(head_growth: str | None) -> tuple[S2ViTE, int, list]:
    """Train 19 steps (9 updates); check every update's head sets by enumeration."""
    extra = {} if head_growth is None else {"head_growth": head_growth}
    model, optimizer, engine = build("signal", total=24, interval=2, **extra)
    checked, swaps = 0, []
    for step in range(1, 20):
        if not engine.schedule.is_update_step(step):
            train_step(model, optimizer, engine, step)
            continue
        x, y = batch(step)
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        taylor, growth = engine._capture.scores()  # what the update will read
        r = math.ceil(engine.schedule.prune_rate(step) * 2)
        before = engine.unit_masks()
        engine.step()
        reference = head_growth == "reference"
        for i, (old, new) in enumerate(zip(before, engine.unit_masks())):
            assert len(set(taylor[i].tolist())) == HEADS and len(set(growth[i].tolist())) == HEADS  # no ties
            want = _brute_force_heads(old.heads, taylor[i], growth[i], r, regrow_pruned=reference)
            assert torch.equal(new.heads, want)
            swaps.append(not torch.equal(new.heads, old.heads))
            checked += 1
    assert checked == 2 * 9  # updates at 2, 4, ..., 18 (< 0.8 · 24), two blocks
    return engine, checked, swaps


def test_head_sets_change_by_default_and_the_grown_heads_rank_first() -> None:
    engine, _, swaps = _updates_against_brute_force(None)
    assert all(swaps)  # every update swaps a head in every block
    assert engine.config.head_growth == "explore"
    assert engine.stats()["heads_fired"] == 1.0  # every head was active at some point
    assert engine.stats()["heads_kept"] == 4  # budgets hold


def test_reference_head_growth_lets_the_pruned_heads_compete() -> None:
    engine, _, swaps = _updates_against_brute_force("reference")
    assert not all(swaps)  # pruned heads win some updates back (on digits: every one of them)


def test_frozen_heads_keep_their_initial_sets_while_neurons_explore() -> None:
    model, optimizer, engine = build("signal", total=24, interval=2, head_growth="frozen")
    initial = engine.unit_masks()
    for step in range(1, 20):
        train_step(model, optimizer, engine, step)
        for a, b in zip(initial, engine.unit_masks()):
            assert torch.equal(a.heads, b.heads)
    assert engine.updates == 9
    assert engine.stats()["heads_fired"] == 0.5 and engine.stats()["neurons_fired"] > 0.5


def test_prune_and_grow_without_regrowing_the_pruned_units() -> None:
    active = torch.tensor([True, True, True, False, False])
    importance = torch.tensor([0.1, 5.0, 0.2, 0.0, 0.0])  # prune units 0 and 2 (r = ceil(0.5 · 3))
    growth = torch.tensor([9.0, 0.0, 8.0, 1.0, 0.5])  # the pruned ones rank first
    regrown, changed = prune_and_grow(active, importance, growth, 0.5)
    assert regrown.tolist() == [True, True, True, False, False] and changed == 0
    explored, changed = prune_and_grow(active, importance, growth, 0.5, regrow_pruned=False)
    assert explored.tolist() == [False, True, False, True, True] and changed == 2
    # too few other inactive units: the best pruned one fills the last slot
    explored, changed = prune_and_grow(active, importance, growth, 1.0, regrow_pruned=False)
    assert explored.tolist() == [True, False, False, True, True] and changed == 2


@pytest.mark.parametrize("where", ["blocks.0.attn.proj.bias", "blocks.1.norm2.weight", "cls_token", "head.weight"])
def test_update_is_skipped_when_any_parameter_gradient_is_not_finite(where: str) -> None:
    """The update reads head scores and MLP gradients, but the optimizer step applied every
    parameter's gradient: a NaN in any of them (a bias the scores never see) skips the update."""
    model, optimizer, engine = build("signal")
    for step in range(1, 3):
        train_step(model, optimizer, engine, step)
    before = engine.unit_masks()
    x, y = batch(3)
    loss = F.cross_entropy(model(x), y)
    optimizer.zero_grad()
    loss.backward()
    dict(model.named_parameters())[where].grad.view(-1)[0] = float("nan")
    engine.step()  # step 3 is an update iteration
    assert engine.stats()["skipped_updates"] == 1 and engine.stats()["updates"] == 0
    for a, b in zip(before, engine.unit_masks()):
        assert torch.equal(a.heads, b.heads) and torch.equal(a.neurons, b.neurons)


@pytest.mark.parametrize(
    "preset, sparsity, head_growth, optimizer_state",
    [
        ("default", {}, "explore", "reset"),
        ("reference", {}, "reference", "keep"),
        ("default", {"head_growth": "frozen", "optimizer_state": "calibrated"}, "frozen", "calibrated"),
    ],
)
def test_run_config_reaches_the_engine(preset: str, sparsity: dict, head_growth: str, optimizer_state: str) -> None:
    """``sparsity.head_growth`` and ``sparsity.optimizer_state`` of a run config, and their
    per-preset defaults, are what the S²ViTE component is built with."""
    from svite_search.config import config_from_dict
    from svite_search.train.components import build_components

    cfg = config_from_dict({"method": "s2vite", "preset": preset, "sparsity": sparsity})
    model = tiny_vit()
    optimizer = torch.optim.AdamW(model.parameters())
    engine = build_components(model, optimizer, cfg, total_steps=10, selector=None)["s2vite"]
    assert (engine.config.head_growth, engine.config.optimizer_state) == (head_growth, optimizer_state)
