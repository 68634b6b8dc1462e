"""SViTE+ token selector: sequence length, gradients, determinism, prefix tokens, zero mode."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import svite_search.models  # noqa: F401,I001  (the torchvision import guard before timm: a spawned rank imports this module)
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from svite_search.engine.tokens import (
    TokenSelector,
    find_token_selector,
    gumbel_topk,
    install_token_selector,
    kept_patch_tokens,
    preset_options,
    uninstall_token_selector,
)
from svite_search.errors import ConfigError, UserInputError

NUM_PATCHES = 16  # 16 px images, 4 px patches


def tiny_vit(**overrides) -> VisionTransformer:
    kwargs = dict(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2, num_classes=5)
    kwargs.update(overrides)
    return VisionTransformer(**kwargs)


def images(batch: int = 3) -> torch.Tensor:
    return torch.randn(batch, 3, 16, 16)


class Capture:
    """Records the input of block 0 and the input of the selector (the full sequence)."""

    def __init__(self, model: VisionTransformer) -> None:
        self.block_input: torch.Tensor | None = None
        self.selector_input: torch.Tensor | None = None
        model.blocks[0].register_forward_pre_hook(self._block)
        model.patch_drop.register_forward_pre_hook(self._selector)

    def _block(self, module: nn.Module, args: tuple) -> None:
        self.block_input = args[0].detach().clone()

    def _selector(self, module: nn.Module, args: tuple) -> None:
        self.selector_input = args[0].detach().clone()


PREFIX_VARIANTS = {
    "cls": dict(),
    "cls+registers": dict(reg_tokens=2, no_embed_class=True),
    "no-prefix": dict(class_token=False, global_pool="avg"),
}


@pytest.mark.parametrize("variant", list(PREFIX_VARIANTS))
@pytest.mark.parametrize("training", [True, False])
def test_blocks_see_k_plus_prefix_tokens(variant: str, training: bool) -> None:
    model = tiny_vit(**PREFIX_VARIANTS[variant])
    install_token_selector(model, keep_ratio=0.75)
    capture = Capture(model)
    model.train(training)
    logits = model(images())
    prefix = model.num_prefix_tokens
    assert capture.block_input is not None
    assert capture.block_input.shape == (3, 12 + prefix, 32)
    assert logits.shape == (3, 5)
    assert kept_patch_tokens(model) == 12


def test_keep_tokens_gives_k_directly_and_ratio_rounds() -> None:
    model = tiny_vit()
    assert install_token_selector(model, keep_tokens=5).keep_tokens == 5
    uninstall_token_selector(model)
    assert install_token_selector(model, keep_ratio=0.3).keep_tokens == round(0.3 * NUM_PATCHES)


@pytest.mark.parametrize("training", [True, False])
def test_prefix_tokens_survive_and_kept_patches_keep_their_order(training: bool) -> None:
    model = tiny_vit(reg_tokens=2, no_embed_class=True)  # three prefix tokens
    install_token_selector(model, keep_tokens=6)
    capture = Capture(model)
    model.train(training)
    model(images())
    full, kept = capture.selector_input, capture.block_input
    assert torch.equal(kept[:, :3], full[:, :3])
    for sample in range(full.shape[0]):
        # Each kept token is one of the patches, exactly (the gate is exactly 1.0), and the
        # positions where they come from increase: original order.
        matches = (kept[sample, 3:, None, :] == full[sample, None, 3:, :]).all(-1)
        assert matches.sum(-1).eq(1).all()
        positions = matches.float().argmax(-1)
        assert torch.all(positions[1:] > positions[:-1])


def test_gradients_reach_the_scorer_through_gathered_tokens() -> None:
    model = tiny_vit()
    selector = install_token_selector(model, keep_ratio=0.5)
    selector.tau = 2.0
    model.train()
    loss = F.cross_entropy(model(images(4)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    grad = selector.scorer.weight.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert selector.scorer.bias.grad is not None


def test_straight_through_gradient_teaches_the_scorer_what_to_keep() -> None:
    """The loss rewards keeping tokens whose feature 0 is large; the scorer learns that."""
    selector = TokenSelector(embed_dim=8, num_patches=16, keep_tokens=4, tau=1.0)
    optimizer = torch.optim.SGD(selector.parameters(), lr=0.5)
    for _ in range(60):
        out = selector(torch.randn(32, 17, 8))
        loss = -out[:, 1:, 0].mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    selector.eval()
    x = torch.randn(128, 17, 8)
    chosen = selector(x)[:, 1:, 0].sum(-1)
    best = x[:, 1:, 0].topk(4, dim=-1).values.sum(-1)
    assert chosen.mean() > 0.97 * best.mean()  # a random choice would average about 0
    weight = selector.scorer.weight.detach()[0]
    assert weight[0] > 5 * weight[1:].abs().max()


def test_gumbel_topk_samples_by_softmax_probability() -> None:
    """Top-1 of log_softmax + Gumbel noise is a sample from the softmax: frequencies match."""
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    scores = probs.log().expand(20000, 4)
    indices, gate = gumbel_topk(scores, 1, tau=1.0)
    freq = torch.bincount(indices[:, 0], minlength=4).float() / 20000
    assert torch.allclose(freq, probs, atol=0.015)
    assert torch.equal(gate.sum(-1), torch.ones(20000))


def test_gate_is_exactly_hard_in_value() -> None:
    scores = torch.randn(5, 10, requires_grad=True)
    indices, gate = gumbel_topk(scores, 3, tau=0.37)
    assert set(gate.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(gate.gather(1, indices), torch.ones(5, 3))


def test_evaluation_is_deterministic_top_k_of_the_scores() -> None:
    model = tiny_vit()
    selector = install_token_selector(model, keep_tokens=7)
    capture = Capture(model)
    model.eval()
    x = images(4)
    torch.manual_seed(1)
    first = model(x)
    torch.manual_seed(2)
    second = model(x)
    assert torch.equal(first, second)
    scores = selector.scores(capture.selector_input)
    expected = scores.topk(7, dim=-1).indices.sort(dim=-1).values
    full = capture.selector_input[:, 1:]
    gathered = full.gather(1, expected[..., None].expand(-1, -1, full.shape[-1]))
    assert torch.equal(capture.block_input[:, 1:], gathered)


def test_training_selection_is_random() -> None:
    model = tiny_vit()
    install_token_selector(model, keep_tokens=4)
    capture = Capture(model)
    model.train()
    x = images(2)
    model(x)
    first = capture.block_input
    model(x)
    assert not torch.equal(first, capture.block_input)


def test_reference_eval_noise_makes_evaluation_random() -> None:
    model = tiny_vit()
    install_token_selector(model, keep_tokens=4, **preset_options("reference"))
    model.eval()
    x = images(2)
    assert not torch.equal(model(x), model(x))


@pytest.mark.parametrize("training", [True, False])
def test_zero_mode_keeps_the_length_and_zeroes_dropped_tokens(training: bool) -> None:
    model = tiny_vit()
    selector = install_token_selector(model, keep_tokens=5, mode="zero")
    capture = Capture(model)
    model.train(training)
    model(images())
    full, out = capture.selector_input, capture.block_input
    assert out.shape == full.shape
    assert torch.equal(out[:, 0], full[:, 0])
    kept = out[:, 1:].abs().sum(-1) > 0
    assert kept.sum(-1).tolist() == [5, 5, 5]
    assert torch.equal(out[:, 1:][kept], full[:, 1:][kept])
    assert kept_patch_tokens(model) == NUM_PATCHES
    assert kept_patch_tokens(model, nominal=True) == 5
    assert selector.mode == "zero"


def test_zero_mode_gradient_reaches_the_scorer() -> None:
    model = tiny_vit()
    selector = install_token_selector(model, keep_ratio=0.5, mode="zero")
    model.train()
    model(images()).sum().backward()
    assert selector.scorer.weight.grad.abs().sum() > 0


def test_zero_and_gather_modes_choose_the_same_tokens_given_the_same_noise() -> None:
    x = torch.randn(2, 1 + 9, 8)
    gather = TokenSelector(8, 9, 3)
    zero = TokenSelector(8, 9, 3, mode="zero")
    zero.load_state_dict(gather.state_dict())
    torch.manual_seed(5)
    a = gather(x)
    torch.manual_seed(5)
    b = zero(x)
    nonzero = b[:, 1:].abs().sum(-1) > 0
    assert torch.equal(a[:, 1:], b[:, 1:][nonzero].view(2, 3, 8))


def test_scorer_is_in_the_state_dict_and_trained_by_the_optimizer() -> None:
    model = tiny_vit()
    install_token_selector(model, keep_ratio=0.5)
    assert {"patch_drop.scorer.weight", "patch_drop.scorer.bias"} <= set(model.state_dict())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    before = model.patch_drop.scorer.weight.detach().clone()
    model.train()
    F.cross_entropy(model(images()), torch.tensor([0, 1, 2])).backward()
    optimizer.step()
    assert not torch.equal(before, model.patch_drop.scorer.weight)


def test_install_find_uninstall() -> None:
    model = tiny_vit()
    assert find_token_selector(model) is None and kept_patch_tokens(model) is None
    selector = install_token_selector(model, keep_ratio=0.5)
    assert find_token_selector(model) is selector
    with pytest.raises(UserInputError, match="already"):
        install_token_selector(model, keep_ratio=0.5)
    assert uninstall_token_selector(model) is selector
    assert isinstance(model.patch_drop, nn.Identity) and find_token_selector(model) is None


def test_install_follows_the_model_mode_and_dtype() -> None:
    model = tiny_vit().eval().double()
    selector = install_token_selector(model, keep_ratio=0.5)
    assert not selector.training and selector.scorer.weight.dtype == torch.float64
    assert model(images().double()).dtype == torch.float64


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        (dict(keep_ratio=0.0), "tokens.keep_ratio"),
        (dict(keep_ratio=1.5), "tokens.keep_ratio"),
        (dict(keep_tokens=0), "tokens.keep_tokens"),
        (dict(keep_tokens=NUM_PATCHES + 1), "tokens.keep_tokens"),
        (dict(keep_ratio=0.5, keep_tokens=3), "tokens"),
        (dict(), "tokens"),
        (dict(keep_ratio=0.5, mode="drop"), "tokens.mode"),
    ],
)
def test_bad_options_name_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ConfigError) as err:
        install_token_selector(tiny_vit(), **kwargs)
    assert err.value.field == field


def test_refuses_models_without_the_slot() -> None:
    with pytest.raises(UserInputError, match="patch dropout"):
        install_token_selector(tiny_vit(patch_drop_rate=0.25), keep_ratio=0.5)
    with pytest.raises(UserInputError, match="VisionTransformer"):
        install_token_selector(nn.Linear(3, 3), keep_ratio=0.5)


def test_keep_ratio_follows_other_image_sizes() -> None:
    model = tiny_vit(dynamic_img_size=True)
    install_token_selector(model, keep_ratio=0.5)
    capture = Capture(model)
    model.eval()
    model(torch.randn(1, 3, 32, 32))  # 64 patches
    assert capture.block_input.shape[1] == 1 + 32


def _ddp_worker(rank: int) -> dict:
    from torch.nn.parallel import DistributedDataParallel

    model = tiny_vit()
    selector = install_token_selector(model, keep_ratio=0.5)
    ddp = DistributedDataParallel(model)
    found = find_token_selector(ddp) is selector
    kept = kept_patch_tokens(ddp)
    ddp(images()).sum().backward()
    return {"found": found, "kept": kept, "grad": float(selector.scorer.weight.grad.abs().sum())}


def test_ddp_wrapped_model_trains_and_is_looked_through() -> None:
    """In a process of its own (world size 1), never in the test process: a gloo group torn down
    in a process whose thread state holds Python objects can deadlock (the group's destructor
    joins its worker thread while holding the GIL, and the worker needs the GIL to free a
    finished work item), which once hung the whole suite."""
    from _support.ddp import run_ranks

    (result,) = run_ranks(_ddp_worker, 1)
    assert result["found"] and result["kept"] == 8
    assert result["grad"] > 0
