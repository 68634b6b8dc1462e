"""SViTE+ combined with SViTE (unstructured masks) and S²ViTE (heads, neurons, slim export)."""
from __future__ import annotations

import io

import pytest
import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer

from svite_search.engine.sparse import SViTE, SViTEConfig, masked_parameters
from svite_search.engine.structured import S2ViTE, S2ViTEConfig, load_slim, save_slim, slim_model
from svite_search.engine.tokens import (
    TokenSelector,
    TokenTemperature,
    find_token_selector,
    install_token_selector,
    kept_patch_tokens,
)
from svite_search.metrics.flops import vit_macs

STEPS = 6


def tiny_vit() -> VisionTransformer:
    return VisionTransformer(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=4, num_classes=4)


def build(method: str, mode: str = "gather"):
    """Model with a selector installed first, then the optimizer, then the sparsity engine."""
    model = tiny_vit()
    install_token_selector(model, keep_ratio=0.5, mode=mode)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    if method == "svite":
        engine = SViTE(model, optimizer, SViTEConfig(density=0.5, total_steps=STEPS, update_interval=2, t_end=1.0))
    else:
        engine = S2ViTE(
            model, optimizer,
            S2ViTEConfig(total_steps=STEPS, head_density=0.5, mlp_density=0.5, update_interval=2, t_end=1.0),
        )
    temperature = TokenTemperature(model, total_steps=STEPS)
    return model, optimizer, engine, temperature


def train(parts, batches) -> list[float]:
    model, optimizer, engine, temperature = parts
    model.train()
    losses = []
    for x, y in batches:
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        engine.step()
        temperature.step()
        losses.append(loss.item())
    return losses


def batches(n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(torch.randn(4, 3, 16, 16), torch.randint(0, 4, (4,))) for _ in range(n)]


def test_the_scorer_is_never_weight_masked() -> None:
    model = tiny_vit()
    install_token_selector(model, keep_ratio=0.5)
    names = set(masked_parameters(model))
    assert "blocks.0.attn.qkv.weight" in names
    assert not any(name.startswith("patch_drop.") for name in names)


@pytest.mark.parametrize("method", ["svite", "s2vite"])
def test_trains_and_the_scorer_stays_dense_and_learns(method: str) -> None:
    parts = build(method)
    model, _, engine, _ = parts
    scorer = find_token_selector(model).scorer
    before = scorer.weight.detach().clone()
    losses = train(parts, batches(STEPS))
    assert all(torch.isfinite(torch.tensor(losses)))
    assert engine.updates >= 2
    assert not torch.equal(before, scorer.weight) and bool((scorer.weight != 0).all())
    if method == "svite":
        stats = engine.stats()
        assert stats["density"] == pytest.approx(0.5, abs=0.02)
        for name, mask in engine.masks.items():
            weight = dict(model.named_parameters())[name]
            assert bool((weight[mask == 0] == 0).all()), name


@pytest.mark.parametrize("method", ["svite", "s2vite"])
@pytest.mark.parametrize("mode", ["gather", "zero"])
def test_checkpoint_resume_is_exact(method: str, mode: str) -> None:
    data = batches(STEPS)
    parts = build(method, mode)
    train(parts, data[:3])
    model, optimizer, engine, temperature = parts
    buffer = io.BytesIO()
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "engine": engine.state_dict(),
            "tokens": temperature.state_dict(),
            "rng": torch.get_rng_state(),
        },
        buffer,
    )
    uninterrupted = train(parts, data[3:])

    torch.manual_seed(99)
    buffer.seek(0)
    checkpoint = torch.load(buffer, weights_only=False)
    resumed = build(method, mode)
    resumed[0].load_state_dict(checkpoint["model"])
    resumed[1].load_state_dict(checkpoint["optimizer"])
    resumed[2].load_state_dict(checkpoint["engine"])
    resumed[3].load_state_dict(checkpoint["tokens"])
    torch.set_rng_state(checkpoint["rng"])
    assert train(resumed, data[3:]) == uninterrupted
    for (name, a), b in zip(model.state_dict().items(), resumed[0].state_dict().values()):
        assert torch.equal(a, b), name


def test_slim_export_keeps_the_selector(tmp_path) -> None:
    parts = build("s2vite")
    train(parts, batches(STEPS))
    model, _, engine, _ = parts
    model.eval()
    slim = slim_model(model, engine)  # verifies equal outputs in eval mode
    selector = find_token_selector(slim)
    assert isinstance(selector, TokenSelector) and selector is not find_token_selector(model)
    assert selector.keep_tokens == 8 and kept_patch_tokens(slim) == 8
    assert torch.equal(selector.scorer.weight, model.patch_drop.scorer.weight)
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        expected = model(x)
        assert torch.allclose(slim(x), expected, atol=1e-5)
    loaded = load_slim(save_slim(slim, tmp_path / "slim.pt"))
    assert find_token_selector(loaded).keep_tokens == 8
    with torch.no_grad():
        assert torch.allclose(loaded(x), expected, atol=1e-5)
    # The slim model is cheaper on both axes: fewer units and fewer tokens.
    macs = vit_macs(slim, tokens=kept_patch_tokens(slim))
    assert macs.tokens == 9 and macs.total < vit_macs(model).total


def test_paper_headline_flops_saving_with_an_installed_selector() -> None:
    """DeiT-Small, ERK 50 % weights, 187 of 197 tokens: the paper reports a 49.32 % saving."""
    from svite_search.engine.sparse import layer_counts, layer_densities
    from svite_search.metrics.flops import meta_model

    model = meta_model("deit_small_patch16_224")
    install_token_selector(model, keep_tokens=187 - 1)  # the class token is the 197th
    shapes = {name: tuple(p.shape) for name, p in masked_parameters(model).items()}
    counts = layer_counts(shapes, layer_densities(shapes, 0.5, "erk"))
    density = {name: counts[name] / torch.Size(shape).numel() for name, shape in shapes.items()}
    report = vit_macs(model, layer_density=density, tokens=kept_patch_tokens(model))
    assert report.tokens == 187
    assert report.savings * 100 == pytest.approx(49.32, abs=0.3)
