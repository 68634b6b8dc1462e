"""Slim export through timm's public API only, and one error handling for every torch file the
project reads (slim models and training checkpoints)."""
from __future__ import annotations

import inspect
from pathlib import Path
from typing import Callable

import pytest
import torch
from timm.layers import get_act_layer
from timm.models.vision_transformer import VisionTransformer

from svite_search.engine.structured import load_slim, random_block_masks, save_slim, slim_model, surgery
from svite_search.errors import UserInputError
from svite_search.train.checkpoint import load_checkpoint


def _known_activations() -> list[str]:
    known = []
    for name in surgery.SLIM_ACTIVATIONS:
        try:
            get_act_layer(name)
        except KeyError:
            continue
        known.append(name)
    return known


def test_slimming_reads_no_private_timm_names() -> None:
    source = inspect.getsource(surgery)
    assert "timm.layers.create_act" not in source and "_ACT_LAYER" not in source


@pytest.mark.parametrize("name", _known_activations())
def test_every_slim_activation_is_recognised_and_rebuilt_with_the_same_function(name: str) -> None:
    act = get_act_layer(name)()
    recorded = surgery._act_name(act)
    rebuilt = surgery._act_layer(recorded)()
    x = torch.linspace(-4, 4, 33)
    assert torch.allclose(rebuilt(x), act(x)), (name, recorded)


def test_the_activations_timm_models_use_are_all_known() -> None:
    assert {"gelu", "gelu_tanh", "quick_gelu", "relu", "silu", "swish"} <= set(_known_activations())


def test_an_unknown_activation_is_refused_in_one_line() -> None:
    class Squared(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * x

    with pytest.raises(UserInputError, match="MLP activation is Squared"):
        surgery._act_name(Squared())


@pytest.mark.parametrize("act_layer", ["relu", "silu", "quick_gelu"])
def test_a_vit_with_another_activation_slims_saves_and_loads(act_layer: str, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = VisionTransformer(img_size=16, patch_size=4, embed_dim=16, depth=2, num_heads=4, mlp_ratio=2.0,
                              num_classes=3, act_layer=act_layer).eval()
    masks = random_block_masks(model, 0.5, 0.5, seed=0)
    with torch.no_grad():
        for block, mask in zip(model.blocks, masks):
            attn = block.attn
            attn.qkv.weight.view(3, attn.num_heads, attn.head_dim, -1)[:, ~mask.heads] = 0
            block.mlp.fc2.weight[:, ~mask.neurons] = 0
    slim = slim_model(model, masks)  # verifies the outputs
    path = save_slim(slim, tmp_path / "slim.pt")  # verifies the rebuilt architecture
    loaded = load_slim(path)
    assert type(loaded.blocks[0].mlp.act) is type(model.blocks[0].mlp.act)
    images = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(loaded(images), model(images), atol=1e-5)


LOADERS: dict[str, tuple[Callable, str]] = {"checkpoint": (load_checkpoint, "checkpoint"),
                                            "slim": (load_slim, "slim model file")}


@pytest.mark.parametrize("kind", list(LOADERS))
def test_every_torch_file_reader_reports_the_same_faults_the_same_way(kind: str, tmp_path: Path) -> None:
    load, what = LOADERS[kind]
    missing = tmp_path / "missing.pt"
    with pytest.raises(UserInputError, match=f"^{missing}: no such {what}$"):
        load(missing)

    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torch file at all")
    with pytest.raises(UserInputError, match=f"^{garbage}: not a readable {what} \\(UnpicklingError: "):
        load(garbage)

    damaged = tmp_path / "damaged.pt"
    torch.save({"model": {"w": torch.arange(4096.0)}}, damaged)
    data = bytearray(damaged.read_bytes())
    offset = data.index(torch.arange(4096.0).numpy().tobytes()[:64])
    data[offset + 100] ^= 0xFF  # one flipped bit pattern inside the tensor bytes
    damaged.write_bytes(bytes(data))
    with pytest.raises(UserInputError, match=f"^{damaged}: damaged archive"):
        load(damaged)
