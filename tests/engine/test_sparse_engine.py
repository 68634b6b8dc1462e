"""The SViTE sparsifier: exact densities, no revival, prune/grow choices, optimizer state, resume."""
from __future__ import annotations

import copy
import io
import math

import pytest
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.optim import Lamb

from svite_search.engine.sparse import SViTE, SViTEConfig, masked_parameters
from svite_search.errors import ConfigError


def tiny_vit() -> nn.Module:
    return timm.create_model(
        "vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=10
    )


def batches(n: int, seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(8, 3, 32, 32, generator=g), torch.randint(0, 10, (8,), generator=g)) for _ in range(n)]


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, sparsifier: SViTE, batch) -> None:
    images, targets = batch
    loss = F.cross_entropy(model(images), targets)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    sparsifier.step()


def active_count(sparsifier: SViTE) -> int:
    return sum(int(m.count_nonzero()) for m in sparsifier.masks.values())


def masks_snapshot(sparsifier: SViTE) -> dict[str, torch.Tensor]:
    return {n: m.bool().clone() for n, m in sparsifier.masks.items()}


# ---------------------------------------------------------------------------- masks and densities


def test_masks_cover_the_weight_matrices_only() -> None:
    model = tiny_vit()
    sparsifier = SViTE(model, None, SViTEConfig(density=0.5, total_steps=10))
    names = set(sparsifier.masks)
    assert {"patch_embed.proj.weight", "head.weight", "blocks.1.attn.qkv.weight", "blocks.1.mlp.fc2.weight"} <= names
    assert all(n.endswith(".weight") for n in names)
    assert not any(k in n for n in names for k in ("norm", "bias", "cls_token", "pos_embed"))
    assert len(names) == 2 + 2 * 4
    for name, mask in sparsifier.masks.items():
        param = dict(model.named_parameters())[name]
        assert mask.shape == param.shape and mask.dtype == param.dtype
        assert set(mask.unique().tolist()) <= {0.0, 1.0}


def test_exact_global_density_after_init_and_after_many_updates() -> None:
    model = tiny_vit()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.05)
    config = SViTEConfig(density=0.3, total_steps=40, update_interval=1, t_end=1.0, prune_rate=0.5)
    sparsifier = SViTE(model, optimizer, config)
    total = sum(p.numel() for p in masked_parameters(model).values())
    assert active_count(sparsifier) == round(0.3 * total)
    per_layer = {n: int(m.count_nonzero()) for n, m in sparsifier.masks.items()}
    initial = masks_snapshot(sparsifier)
    for batch in batches(40):
        train_step(model, optimizer, sparsifier, batch)
        assert {n: int(m.count_nonzero()) for n, m in sparsifier.masks.items()} == per_layer
    assert sparsifier.updates == 39  # every step below t_end · T = 40
    assert sparsifier.stats()["density"] == pytest.approx(round(0.3 * total) / total, abs=0)
    changed = sum(int((initial[n] != m.bool()).sum()) for n, m in sparsifier.masks.items())
    assert changed > 0  # the topology really moved
    stats = sparsifier.stats()
    assert 0.3 < stats["fired"] <= 1.0 and stats["fired"] > stats["density"]
    assert stats["params_total"] == sum(p.numel() for p in model.parameters())
    assert stats["params_total"] - stats["params_nonzero"] == total - active_count(sparsifier)


def test_updates_run_only_on_update_iterations() -> None:
    model = tiny_vit()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    sparsifier = SViTE(model, optimizer, SViTEConfig(density=0.5, total_steps=20, update_interval=3, t_end=0.5))
    previous = masks_snapshot(sparsifier)
    changed_at = []
    for step, batch in enumerate(batches(20), start=1):
        train_step(model, optimizer, sparsifier, batch)
        current = masks_snapshot(sparsifier)
        if any(not torch.equal(previous[n], current[n]) for n in current):
            changed_at.append(step)
        previous = current
    assert changed_at == [3, 6, 9]
    assert sparsifier.updates == 3 and sparsifier.step_count == 20


def test_fully_dense_layers_are_left_alone() -> None:
    model = tiny_vit()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    sparsifier = SViTE(model, optimizer, SViTEConfig(density=0.9, total_steps=10, update_interval=1))
    dense = [n for n, d in sparsifier.layer_densities().items() if d == 1.0]
    assert dense  # ERK at 0.9 makes the small layers dense
    for batch in batches(5):
        train_step(model, optimizer, sparsifier, batch)
    assert all(bool(sparsifier.masks[n].all()) for n in dense)
    params = dict(model.named_parameters())
    assert all(bool((params[n] != 0).all()) for n in dense)


def test_reference_preset_draws_bernoulli_masks_and_keeps_state() -> None:
    model = tiny_vit()
    config = SViTEConfig.reference(density=0.5, total_steps=10, seed=3)
    assert config.optimizer_state == "keep" and not config.exact_counts
    sparsifier = SViTE(model, None, config)
    counts = {n: int(m.count_nonzero()) for n, m in sparsifier.masks.items()}
    exact = SViTE(tiny_vit(), None, SViTEConfig(density=0.5, total_steps=10, seed=3))
    exact_counts = {n: int(m.count_nonzero()) for n, m in exact.masks.items()}
    assert counts != exact_counts  # per-entry draws: counts vary around density · n
    for name, count in counts.items():
        n = sparsifier.masks[name].numel()
        density = sparsifier.target_densities[name]
        assert abs(count - density * n) < 5 * math.sqrt(n * density * (1 - density)) + 1


def test_invalid_settings_are_rejected() -> None:
    model = tiny_vit()
    with pytest.raises(ConfigError, match="distribution"):
        SViTE(model, None, SViTEConfig(density=0.5, distribution="random", total_steps=10))
    with pytest.raises(ConfigError, match="optimizer_state"):
        SViTE(model, None, SViTEConfig(density=0.5, optimizer_state="zero", total_steps=10))
    with pytest.raises(ConfigError, match="density"):
        SViTE(model, None, SViTEConfig(density=0.0, total_steps=10))


# ---------------------------------------------------------------------------- no revival, grown at zero


@pytest.mark.parametrize(
    "make_optimizer",
    [
        lambda params: torch.optim.AdamW(params, lr=1e-2, weight_decay=0.05),
        lambda params: torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=1e-4),
    ],
    ids=["adamw", "sgd-momentum"],
)
@pytest.mark.parametrize("policy", ["reset", "keep"])
def test_no_pruned_weight_is_nonzero_after_any_step(make_optimizer, policy: str) -> None:
    model = tiny_vit()
    optimizer = make_optimizer(model.parameters())
    config = SViTEConfig(density=0.4, total_steps=24, update_interval=4, optimizer_state=policy)
    sparsifier = SViTE(model, optimizer, config)
    params = dict(model.named_parameters())
    for batch in batches(24):
        before = masks_snapshot(sparsifier)
        train_step(model, optimizer, sparsifier, batch)
        for name, mask in sparsifier.masks.items():
            assert not bool(params[name][mask == 0].any()), f"{name} has a nonzero inactive weight"
            grown = mask.bool() & ~before[name]
            assert not bool(params[name][grown].any()), f"{name}: a grown weight does not start at 0"
    assert sparsifier.updates == 4


class UnlistedAdamW(torch.optim.AdamW):
    """AdamW under another name: not on the element-wise list, so the engines zero the state of
    inactive weights after every step, as they do for LAMB."""


@pytest.mark.parametrize("make_optimizer", [torch.optim.AdamW, UnlistedAdamW, Lamb], ids=["adamw", "unlisted", "lamb"])
def test_adam_moments_are_zero_at_grown_and_inactive_positions_under_reset(make_optimizer) -> None:
    """At every update the state of grown and inactive weights is zero and survivors keep theirs;
    between updates it stays zero too, except under an element-wise optimizer (nothing reads it)."""
    model = tiny_vit()
    optimizer = make_optimizer(model.parameters(), lr=1e-2)
    config = SViTEConfig(density=0.4, total_steps=20, update_interval=5, optimizer_state="reset")
    sparsifier = SViTE(model, optimizer, config)
    per_step = make_optimizer is not torch.optim.AdamW
    params = dict(model.named_parameters())
    stale_seen = False
    for step, batch in enumerate(batches(10), start=1):
        before = masks_snapshot(sparsifier)
        train_step(model, optimizer, sparsifier, batch)
        for name, mask in sparsifier.masks.items():
            state = optimizer.state[params[name]]
            inactive = mask == 0
            zero = not bool(state["exp_avg"][inactive].any()) and not bool(state["exp_avg_sq"][inactive].any())
            if step % 5 == 0 or per_step:
                assert zero, f"step {step}: {name} has state at inactive weights"
            stale_seen |= not zero
            if step % 5 == 0:
                grown = mask.bool() & ~before[name]
                assert bool(grown.any()) or sparsifier.layer_densities()[name] == 1.0
                assert not bool(state["exp_avg"][grown].any()) and not bool(state["exp_avg_sq"][grown].any())
                kept = mask.bool() & before[name]
                assert bool(state["exp_avg_sq"][kept].all())  # survivors keep their moments
    assert stale_seen != per_step  # AdamW's per-step pass is skipped; the others' is not


@pytest.mark.parametrize("policy", ["reset", "calibrated"])
def test_skipping_the_per_step_state_pass_trains_bit_identical_weights(policy: str) -> None:
    """AdamW with the state of inactive weights zeroed at updates only gives, bit for bit, the
    weights and active state of AdamW with it zeroed after every step (through prune/grow)."""
    runs = []
    for make_optimizer in (torch.optim.AdamW, UnlistedAdamW):
        torch.manual_seed(0)
        model = tiny_vit()
        optimizer = make_optimizer(model.parameters(), lr=1e-2, weight_decay=0.05)
        sparsifier = SViTE(model, optimizer, SViTEConfig(density=0.4, total_steps=24, update_interval=4, optimizer_state=policy))
        for batch in batches(20):
            train_step(model, optimizer, sparsifier, batch)
        assert sparsifier.updates == 4
        runs.append((model, optimizer, sparsifier))
    (fast, fast_opt, fast_sp), (slow, slow_opt, slow_sp) = runs
    slow_params = dict(slow.named_parameters())
    for name, param in fast.named_parameters():
        assert torch.equal(param, slow_params[name]), name
        if name in fast_sp.masks:
            assert torch.equal(fast_sp.masks[name], slow_sp.masks[name])
            active = fast_sp.masks[name].bool()
            for key in ("exp_avg", "exp_avg_sq"):
                assert torch.equal(fast_opt.state[param][key][active], slow_opt.state[slow_params[name]][key][active])


def test_keep_policy_leaves_adam_state_alone() -> None:
    model = tiny_vit()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sparsifier = SViTE(model, optimizer, SViTEConfig(density=0.4, total_steps=20, update_interval=5, optimizer_state="keep"))
    for batch in batches(5):
        train_step(model, optimizer, sparsifier, batch)
    name = "blocks.0.mlp.fc1.weight"
    state = optimizer.state[dict(model.named_parameters())[name]]
    assert bool(state["exp_avg_sq"][sparsifier.masks[name] == 0].all())  # stale moments, as in the reference


def test_sgd_momentum_buffer_is_masked_under_reset() -> None:
    model = tiny_vit()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sparsifier = SViTE(model, optimizer, SViTEConfig(density=0.4, total_steps=20, update_interval=2))
    for batch in batches(4):
        train_step(model, optimizer, sparsifier, batch)
    for name, param in masked_parameters(model).items():
        buffer = optimizer.state[param]["momentum_buffer"]
        assert not bool(buffer[sparsifier.masks[name] == 0].any())


# ---------------------------------------------------------------------------- the prune/grow choice


def test_prune_and_grow_follow_magnitude_and_gradient_on_a_hand_built_layer() -> None:
    layer = nn.Sequential(nn.Linear(4, 2, bias=False))  # one 2 x 4 weight, 4 of 8 active
    config = SViTEConfig(density=0.5, distribution="uniform", total_steps=10, update_interval=1)
    sparsifier = SViTE(layer, None, config)
    name = "0.weight"
    mask = sparsifier.masks[name].flatten().bool()
    active = mask.nonzero().flatten().tolist()
    inactive = (~mask).nonzero().flatten().tolist()
    weight = torch.zeros(8)
    weight[active] = torch.tensor([0.1, -0.9, 0.05, 0.7])  # the two smallest |W|: active[2], active[0]
    grad = torch.zeros(8)
    grad[inactive] = torch.tensor([0.2, -3.0, 0.01, 0.5])  # largest |grad| inactive: inactive[1]
    grad[active[0]] = 1.0  # a weight pruned now but with a large gradient: regrown, keeps its value
    with torch.no_grad():
        layer[0].weight.copy_(weight.view(2, 4))
    layer[0].weight.grad = grad.view(2, 4).clone()

    assert sparsifier.update_topology(prune_rate=0.5)  # ceil(0.5 · 4) = 2 pruned, 2 grown

    new = sparsifier.masks[name].flatten().bool()
    expected = {active[1], active[3], inactive[1], active[0]}
    assert set(new.nonzero().flatten().tolist()) == expected
    values = layer[0].weight.detach().flatten()
    assert values[active[0]] == pytest.approx(0.1)  # pruned and regrown: value kept
    assert values[inactive[1]] == 0.0  # newly grown: starts at zero
    assert values[active[2]] == 0.0  # pruned for good
    assert sparsifier.stats()["fired"] == pytest.approx(5 / 8)


def test_update_is_skipped_when_gradients_are_not_finite() -> None:
    model = tiny_vit()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    sparsifier = SViTE(model, optimizer, SViTEConfig(density=0.5, total_steps=10, update_interval=2))
    images, targets = batches(1)[0]
    F.cross_entropy(model(images), targets).backward()
    model.blocks[0].mlp.fc1.weight.grad[0, 0] = float("inf")
    before = masks_snapshot(sparsifier)
    optimizer.step()
    sparsifier.step()
    sparsifier.step()  # step 2 is an update iteration
    assert sparsifier.updates == 0 and sparsifier.skipped_updates == 1
    assert all(torch.equal(before[n], m.bool()) for n, m in sparsifier.masks.items())


# ---------------------------------------------------------------------------- EMA and resume


def test_apply_masks_masks_an_ema_copy() -> None:
    model = tiny_vit()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sparsifier = SViTE(model, optimizer, SViTEConfig(density=0.5, total_steps=10, update_interval=2))
    ema = timm.utils.ModelEmaV3(model, decay=0.5)
    with torch.no_grad():
        for p in ema.module.parameters():
            p.add_(1.0)  # an EMA that lags behind: nonzero where the model is masked
    for batch in batches(4):
        train_step(model, optimizer, sparsifier, batch)
        ema.update(model)
        sparsifier.apply_masks(ema)
    ema_params = dict(ema.module.named_parameters())
    for name, mask in sparsifier.masks.items():
        assert not bool(ema_params[name][mask == 0].any())
        assert bool(ema_params[name][mask == 1].any())


def _fresh(seed: int):
    torch.manual_seed(seed)
    model = tiny_vit()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.05)
    config = SViTEConfig(density=0.4, total_steps=16, update_interval=2, seed=7)
    return model, optimizer, SViTE(model, optimizer, config)


def test_resume_mid_run_gives_identical_masks_and_weights() -> None:
    data = batches(16)
    model_a, opt_a, sp_a = _fresh(0)
    for batch in data:
        train_step(model_a, opt_a, sp_a, batch)

    model_b, opt_b, sp_b = _fresh(0)
    for batch in data[:7]:  # stop between two updates (6 and 8)
        train_step(model_b, opt_b, sp_b, batch)
    buffer = io.BytesIO()
    torch.save({"model": model_b.state_dict(), "opt": opt_b.state_dict(), "svite": sp_b.state_dict()}, buffer)
    buffer.seek(0)
    checkpoint = torch.load(buffer, weights_only=False)

    model_c, opt_c, sp_c = _fresh(123)  # a different init: everything must come from the checkpoint
    model_c.load_state_dict(checkpoint["model"])
    opt_c.load_state_dict(checkpoint["opt"])
    sp_c.load_state_dict(checkpoint["svite"])
    assert sp_c.step_count == 7 and sp_c.updates == 3
    for batch in data[7:]:
        train_step(model_c, opt_c, sp_c, batch)

    assert sp_c.updates == sp_a.updates == 6
    for name in sp_a.masks:
        assert torch.equal(sp_a.masks[name], sp_c.masks[name])
        assert torch.equal(sp_a.fired[name], sp_c.fired[name])
    for (name, p_a), p_c in zip(model_a.state_dict().items(), model_c.state_dict().values()):
        assert torch.equal(p_a, p_c), name
    assert sp_a.stats() == sp_c.stats()


def test_load_state_dict_rejects_masks_of_another_model() -> None:
    _, _, sparsifier = _fresh(0)
    state = sparsifier.state_dict()
    other = SViTE(nn.Sequential(nn.Linear(4, 4)), None, SViTEConfig(density=0.5, total_steps=10))
    with pytest.raises(ValueError, match="do not match"):
        other.load_state_dict(state)


def test_masks_are_drawn_from_the_seed_not_the_weights() -> None:
    torch.manual_seed(1)
    a = SViTE(tiny_vit(), None, SViTEConfig(density=0.5, total_steps=10, seed=11))
    torch.manual_seed(2)
    b = SViTE(tiny_vit(), None, SViTEConfig(density=0.5, total_steps=10, seed=11))
    c = SViTE(tiny_vit(), None, SViTEConfig(density=0.5, total_steps=10, seed=12))
    assert all(torch.equal(a.masks[n], b.masks[n]) for n in a.masks)
    assert not all(torch.equal(a.masks[n], c.masks[n]) for n in a.masks)


def test_a_ddp_style_wrapper_is_looked_through() -> None:
    class Wrapper(nn.Module):
        def __init__(self, module: nn.Module) -> None:
            super().__init__()
            self.module = module

    model = tiny_vit()
    sparsifier = SViTE(Wrapper(model), None, SViTEConfig(density=0.5, total_steps=10))
    assert "blocks.0.attn.qkv.weight" in sparsifier.masks
    copy_ = copy.deepcopy(model)
    sparsifier.apply_masks(Wrapper(copy_))
    assert not bool(copy_.blocks[0].attn.qkv.weight[sparsifier.masks["blocks.0.attn.qkv.weight"] == 0].any())


def test_a_compiled_model_keeps_the_plain_names() -> None:
    model = tiny_vit()
    compiled = torch.compile(model)  # only wrapped here, never run: names must be the inner ones
    sparsifier = SViTE(compiled, None, SViTEConfig(density=0.5, total_steps=10))
    assert set(sparsifier.masks) == set(masked_parameters(model))


# ---------------------------------------------------------------------------- tied weights, finiteness


def tied_vit() -> nn.Module:
    """A tiny ViT whose two blocks share one ``mlp.fc1`` weight (one storage, two Linear layers)."""
    model = tiny_vit()
    model.blocks[1].mlp.fc1.weight = model.blocks[0].mlp.fc1.weight
    return model


def test_a_tied_weight_gets_one_mask() -> None:
    model = tied_vit()
    names = list(masked_parameters(model))
    assert "blocks.0.mlp.fc1.weight" in names and "blocks.1.mlp.fc1.weight" not in names
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    config = SViTEConfig(density=0.5, distribution="uniform", total_steps=12, update_interval=3)
    sparsifier = SViTE(model, optimizer, config)
    shared = model.blocks[0].mlp.fc1.weight
    mask = sparsifier.masks["blocks.0.mlp.fc1.weight"]
    for step, batch in enumerate(batches(6), start=1):
        train_step(model, optimizer, sparsifier, batch)
        assert int(mask.count_nonzero()) == shared.numel() // 2
        assert not bool(shared[mask == 0].any())
        if step % 3 != 0:  # (grown weights are exactly 0 right after an update)
            # the density its one mask says, not the product of two masks' (0.25)
            assert int(shared.count_nonzero()) == int(mask.count_nonzero())
    assert sparsifier.updates == 2
    assert sparsifier.stats()["density"] == pytest.approx(0.5, abs=1e-3)
    densities = sparsifier.layer_densities()  # both layers compute with the half-dense weight
    assert densities["blocks.1.mlp.fc1.weight"] == densities["blocks.0.mlp.fc1.weight"] == 0.5


def test_a_weight_sharing_storage_under_another_parameter_gets_one_mask() -> None:
    """Tying by storage (two Parameter objects over one tensor's memory) counts as one weight."""
    model = tiny_vit()
    first = model.blocks[0].mlp.fc1
    model.blocks[1].mlp.fc1.weight = nn.Parameter(first.weight.data)  # same storage, new Parameter
    names = list(masked_parameters(model))
    assert "blocks.1.mlp.fc1.weight" not in names


@pytest.mark.parametrize("where", ["blocks.0.mlp.fc1.bias", "blocks.1.norm1.weight", "cls_token", "pos_embed"])
def test_a_non_finite_gradient_outside_the_masked_weights_skips_the_update(where: str) -> None:
    """The optimizer step applies every parameter's gradient: one NaN anywhere (a bias, a norm,
    the class token) means the step was not a real one, so the topology must not follow it."""
    model = tiny_vit()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    sparsifier = SViTE(model, optimizer, SViTEConfig(density=0.5, total_steps=10, update_interval=1))
    images, targets = batches(1)[0]
    F.cross_entropy(model(images), targets).backward()
    dict(model.named_parameters())[where].grad.view(-1)[0] = float("nan")
    before = masks_snapshot(sparsifier)
    sparsifier.step()  # step 1 is an update iteration
    assert sparsifier.updates == 0 and sparsifier.skipped_updates == 1
    assert all(torch.equal(before[n], m.bool()) for n, m in sparsifier.masks.items())


# ---------------------------------------------------------------------------- first steps of grown weights


def grown_weight_steps(
    policy: str, steps: int = 3, lr: float = 1e-3, late: int = 20_000
) -> tuple[list[float], list[float]]:
    """Median |Δw| / lr of the weights grown at an update, and of the layer's surviving active
    weights, over the ``steps`` optimizer steps after it (Adam, betas (0.9, 0.999)). The update comes after 40 real steps; Adam's step
    count is then moved on by ``late`` steps, as in a long run, where bias correction is ≈ 1."""
    torch.manual_seed(0)
    model = tiny_vit()
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    config = SViTEConfig(density=0.5, total_steps=100, update_interval=40, optimizer_state=policy)
    sparsifier = SViTE(model, optimizer, config)
    data = batches(40 + steps)
    name = "blocks.0.mlp.fc1.weight"
    weight = dict(model.named_parameters())[name]
    for batch in data[:39]:
        train_step(model, optimizer, sparsifier, batch)
    for state in optimizer.state.values():
        state["step"] += late
    before = sparsifier.masks[name].bool().clone()
    train_step(model, optimizer, sparsifier, data[39])  # step 40: an update
    grown = sparsifier.masks[name].bool() & ~before
    survivors = sparsifier.masks[name].bool() & before
    assert int(grown.sum()) > 50
    sizes: tuple[list[float], list[float]] = ([], [])
    previous = weight.detach().clone()
    for batch in data[40:]:
        train_step(model, optimizer, sparsifier, batch)
        now = weight.detach().clone()
        for out, where in zip(sizes, (grown, survivors)):
            out.append(float((now - previous)[where].abs().median()) / lr)
        previous = now
    return sizes


def test_reset_gives_grown_weights_oversized_first_steps_and_calibrated_does_not() -> None:
    """Zeroed Adam moments with the layer's bias correction (its ``step`` is shared by the whole
    tensor) make a grown weight's first step (1-β1)/sqrt(1-β2) = 3.16 lr, rising after; a fresh
    Adam's first step is lr. ``calibrated`` starts the second moment at the layer's mean."""
    reset, established = grown_weight_steps("reset")
    calibrated, _ = grown_weight_steps("calibrated")
    assert reset[0] == pytest.approx(0.1 / math.sqrt(0.001), rel=0.02)
    assert min(reset) > 5 * max(established)  # far beyond what the layer's weights take
    assert max(calibrated) <= 1.0  # never more than a fresh Adam's first step (lr)
    assert max(calibrated) <= 2 * max(established)  # a normal step for this layer


def test_calibrated_sets_the_grown_second_moment_from_the_layer() -> None:
    model = tiny_vit()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sparsifier = SViTE(model, optimizer, SViTEConfig(density=0.4, total_steps=20, update_interval=5, optimizer_state="calibrated"))
    params = dict(model.named_parameters())
    for step, batch in enumerate(batches(5), start=1):
        before = masks_snapshot(sparsifier)
        train_step(model, optimizer, sparsifier, batch)
    for name, mask in sparsifier.masks.items():
        if sparsifier.layer_densities()[name] == 1.0:
            continue
        state = optimizer.state[params[name]]
        grown, kept = mask.bool() & ~before[name], mask.bool() & before[name]
        assert not bool(state["exp_avg"][grown].any())  # first moment starts at zero
        assert torch.allclose(state["exp_avg_sq"][grown], state["exp_avg_sq"][kept].mean().expand(int(grown.sum())))
        assert not bool(state["exp_avg_sq"][mask == 0].any())  # inactive state stays at zero
