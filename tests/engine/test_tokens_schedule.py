"""SViTE+ temperature schedule and exact resume of a training run with a token selector."""
from __future__ import annotations

import copy
import io
import math

import pytest
import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer

from svite_search.engine.tokens import (
    TokenSelector,
    TokenTemperature,
    install_token_selector,
    temperature_at,
)
from svite_search.errors import ConfigError


def test_default_is_linear_from_10_to_01_over_training() -> None:
    selector = TokenSelector(embed_dim=4, num_patches=8, keep_tokens=4)
    temperature = TokenTemperature(selector, total_steps=100)
    assert selector.tau == 10.0
    seen = []
    for _ in range(100):
        temperature.step()
        seen.append(selector.tau)
    assert seen[49] == pytest.approx(10.0 + (0.1 - 10.0) * 0.5)
    assert seen[-1] == pytest.approx(0.1)
    assert all(a > b for a, b in zip(seen, seen[1:]))
    temperature.step()  # past the end: stays at the end value
    assert selector.tau == pytest.approx(0.1)
    assert temperature.stats() == {"tau": pytest.approx(0.1), "keep_tokens": 4.0, "keep_ratio": 0.5}


@pytest.mark.parametrize(
    ("shape", "middle"),
    [("cosine", 0.1 + 9.9 / 2), ("exponential", math.sqrt(10.0 * 0.1)), ("constant", 10.0)],
)
def test_other_shapes(shape: str, middle: float) -> None:
    assert temperature_at(0, 10, 10.0, 0.1, shape) == pytest.approx(10.0)
    assert temperature_at(5, 10, 10.0, 0.1, shape) == pytest.approx(middle)
    end = 10.0 if shape == "constant" else 0.1
    assert temperature_at(10, 10, 10.0, 0.1, shape) == pytest.approx(end)


def test_accepts_the_model_and_checks_its_arguments() -> None:
    model = VisionTransformer(img_size=8, patch_size=4, embed_dim=8, depth=1, num_heads=2)
    with pytest.raises(ConfigError, match="no token selector"):
        TokenTemperature(model, total_steps=10)
    selector = install_token_selector(model, keep_tokens=2)
    assert TokenTemperature(model, total_steps=10, start=3.0).selector is selector
    with pytest.raises(ConfigError) as err:
        TokenTemperature(model, total_steps=10, shape="step")
    assert err.value.field == "tokens.tau_decay"
    with pytest.raises(ConfigError) as err:
        TokenTemperature(model, total_steps=10, end=0.0)
    assert err.value.field == "tokens.tau_end"
    with pytest.raises(ValueError):
        TokenTemperature(model, total_steps=0)


def test_state_dict_restores_the_position() -> None:
    selector = TokenSelector(embed_dim=4, num_patches=8, keep_tokens=4)
    temperature = TokenTemperature(selector, total_steps=50, start=5.0, end=0.5, shape="cosine")
    for _ in range(17):
        temperature.step()
    state = copy.deepcopy(temperature.state_dict())
    other_selector = TokenSelector(embed_dim=4, num_patches=8, keep_tokens=4)
    restored = TokenTemperature(other_selector, total_steps=50, start=5.0, end=0.5, shape="cosine")
    restored.load_state_dict(state)
    assert other_selector.tau == selector.tau and restored.steps_done == 17
    temperature.step()
    restored.step()
    assert other_selector.tau == selector.tau


# ----------------------------------------------------------------------------- exact resume


def _run(model, optimizer, temperature, batches) -> list[float]:
    losses = []
    model.train()
    for x, y in batches:
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        temperature.step()
        losses.append(loss.item())
    return losses


def _build(keep_ratio: float, mode: str):
    model = VisionTransformer(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2, num_classes=4)
    install_token_selector(model, keep_ratio=keep_ratio, mode=mode)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    temperature = TokenTemperature(model, total_steps=6)
    return model, optimizer, temperature


@pytest.mark.parametrize("mode", ["gather", "zero"])
def test_training_resumes_exactly_from_a_checkpoint(mode: str) -> None:
    batches = [(torch.randn(4, 3, 16, 16), torch.randint(0, 4, (4,))) for _ in range(6)]
    model, optimizer, temperature = _build(0.5, mode)
    _run(model, optimizer, temperature, batches[:3])
    buffer = io.BytesIO()
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "tokens": temperature.state_dict(),
            "rng": torch.get_rng_state(),  # the Gumbel noise comes from torch's global RNG
        },
        buffer,
    )
    uninterrupted = _run(model, optimizer, temperature, batches[3:])

    torch.manual_seed(123)  # a different process state, then restore
    buffer.seek(0)
    checkpoint = torch.load(buffer, weights_only=True)
    resumed_model, resumed_optimizer, resumed_temperature = _build(0.5, mode)
    resumed_model.load_state_dict(checkpoint["model"])
    resumed_optimizer.load_state_dict(checkpoint["optimizer"])
    resumed_temperature.load_state_dict(checkpoint["tokens"])
    torch.set_rng_state(checkpoint["rng"])
    resumed = _run(resumed_model, resumed_optimizer, resumed_temperature, batches[3:])

    assert resumed == uninterrupted
    for (name, a), b in zip(model.state_dict().items(), resumed_model.state_dict().values()):
        assert torch.equal(a, b), name
    assert resumed_model.patch_drop.tau == model.patch_drop.tau == pytest.approx(0.1)
