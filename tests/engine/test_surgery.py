"""Physical slimming: the slim model computes what the masked model computes, and round-trips."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer

from svite_search.cli import main
from svite_search.engine.structured import (
    BlockMask,
    S2ViTE,
    S2ViTEConfig,
    SlimAttention,
    SlimMismatchError,
    load_slim,
    random_block_masks,
    save_slim,
    slim_model,
)
from svite_search.engine.tokens import find_token_selector, install_token_selector
from svite_search.errors import UserInputError
from svite_search.metrics.flops import vit_macs


def randomized(model: VisionTransformer, seed: int = 0) -> VisionTransformer:
    """Every parameter random (biases, norms, layer scales too), so nothing folds trivially."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    return model.eval()


def mask_model(model: VisionTransformer, masks: list[BlockMask]) -> None:
    """Zero inactive q/k/v rows and fc2 columns, as S²ViTE does (biases are left alone)."""
    with torch.no_grad():
        for block, mask in zip(model.blocks, masks):
            attn = block.attn
            attn.qkv.weight.view(3, attn.num_heads, attn.head_dim, -1)[:, ~mask.heads] = 0
            block.mlp.fc2.weight[:, ~mask.neurons] = 0


VARIANTS = {
    "plain": dict(),
    "no-qkv-bias": dict(qkv_bias=False),
    "fold-creates-proj-bias": dict(proj_bias=False),
    "qk-norm-layer-scale-avg-pool-registers": dict(
        qk_norm=True, init_values=0.1, class_token=False, global_pool="avg", reg_tokens=2, no_embed_class=True
    ),
    "pre-norm": dict(pre_norm=True),
}


def tiny(**kw) -> VisionTransformer:
    args = dict(img_size=16, patch_size=4, embed_dim=48, depth=3, num_heads=4, mlp_ratio=2.0, num_classes=5)
    args.update(kw)
    return VisionTransformer(**args)


def outputs(model, x):
    with torch.no_grad():
        return model.eval()(x)


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("densities", [(0.5, 0.5), (0.75, 0.3)])
def test_slim_equals_masked(variant: str, densities: tuple[float, float]) -> None:
    model = randomized(tiny(**VARIANTS[variant]))
    masks = random_block_masks(model, *densities, seed=1)
    mask_model(model, masks)
    slim = slim_model(model, masks)
    x = torch.randn(3, 3, 16, 16)
    assert torch.allclose(outputs(slim, x), outputs(model, x), rtol=1e-4, atol=1e-5)
    heads = int(4 * densities[0])
    for block, mask in zip(slim.blocks, masks):
        assert isinstance(block.attn, SlimAttention) and block.attn.num_heads == heads
        assert block.attn.qkv.weight.shape == (3 * heads * 12, 48)
        assert block.attn.proj.weight.shape == (48, heads * 12)
        assert block.mlp.fc1.weight.shape[0] == block.mlp.fc2.weight.shape[1] == int(mask.neurons.sum())
    assert sum(p.numel() for p in slim.parameters()) < sum(p.numel() for p in model.parameters())


def test_a_block_left_with_one_head_and_one_with_none() -> None:
    model = randomized(tiny())
    masks = random_block_masks(model, 0.5, 0.5, seed=2)
    masks[0].heads[:] = False
    masks[0].heads[3] = True  # one head
    masks[1].heads[:] = False  # no head at all: the block's attention is a learned constant
    masks[2].neurons[:] = False
    masks[2].neurons[0] = True  # one neuron
    mask_model(model, masks)
    slim = slim_model(model, masks)
    assert [b.attn.num_heads for b in slim.blocks] == [1, 0, 2]
    x = torch.randn(2, 3, 16, 16)
    assert torch.allclose(outputs(slim, x), outputs(model, x), rtol=1e-4, atol=1e-5)
    # the constant each inactive head emitted went into proj.bias
    assert not torch.allclose(slim.blocks[1].attn.proj.bias, model.blocks[1].attn.proj.bias)


def test_flops_read_the_slim_architecture() -> None:
    model = randomized(tiny())
    masks = random_block_masks(model, 0.5, 0.5, seed=0)
    mask_model(model, masks)
    slim = slim_model(model, masks)
    structure = [m.kept for m in masks]
    assert vit_macs(slim).total == pytest.approx(vit_macs(model, structure=structure).total)
    assert vit_macs(slim).total < vit_macs(model).total


def test_unmasked_model_is_refused() -> None:
    model = randomized(tiny())
    masks = random_block_masks(model, 0.5, 0.5, seed=0)
    with pytest.raises(SlimMismatchError, match="masked"):
        slim_model(model, masks)


def test_units_can_be_read_off_the_weights() -> None:
    model = randomized(tiny())
    masks = random_block_masks(model, 0.5, 0.5, seed=3)
    mask_model(model, masks)
    slim = slim_model(model)  # no unit sets given
    assert [b.mlp.fc1.out_features for b in slim.blocks] == [int(m.neurons.sum()) for m in masks]


@pytest.mark.parametrize("neuron_growth", ["signal", "reference"])
def test_slim_after_training_with_the_engine(neuron_growth: str) -> None:
    torch.manual_seed(0)
    model = tiny()
    install_token_selector(model, keep_ratio=0.5, mode="zero" if neuron_growth == "reference" else "gather")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    engine = S2ViTE(
        model,
        optimizer,
        S2ViTEConfig(total_steps=8, head_density=0.5, mlp_density=0.5, update_interval=2, neuron_growth=neuron_growth),
    )
    for step in range(8):
        g = torch.Generator().manual_seed(step)
        x, y = torch.randn(4, 3, 16, 16, generator=g), torch.randint(0, 5, (4,), generator=g)
        model.train()
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        engine.step()
    slim = slim_model(model, engine)
    assert find_token_selector(slim) is not None
    x = torch.randn(3, 3, 16, 16)
    assert torch.allclose(outputs(slim, x), outputs(model, x), rtol=1e-4, atol=1e-5)
    assert [(b.attn.num_heads, b.mlp.fc1.out_features) for b in slim.blocks] == engine.structure()


def test_save_and_load_without_the_config(tmp_path: Path) -> None:
    model = randomized(tiny(qk_norm=True, init_values=0.1))
    install_token_selector(model, keep_tokens=9)
    randomized(model, seed=5)
    masks = random_block_masks(model, 0.5, 0.5, seed=4)
    mask_model(model, masks)
    slim = slim_model(model, masks)
    path = save_slim(slim, tmp_path / "out" / "slim.pt")
    assert sorted(p.name for p in path.parent.iterdir()) == ["slim.pt"]  # no temporary left behind
    raw = torch.load(path, weights_only=True)  # plain tensors and Python values only
    assert raw["format"] == "svite-search/slim-vit" and len(raw["arch"]["blocks"]) == 3
    loaded = load_slim(path)
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(outputs(loaded, x), outputs(slim, x))
    assert find_token_selector(loaded).keep_tokens == 9
    assert [b.attn.num_heads for b in loaded.blocks] == [2, 2, 2]


def test_bad_slim_files_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(UserInputError, match="missing.pt"):
        load_slim(tmp_path / "missing.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a torch file")
    with pytest.raises(UserInputError, match="corrupt.pt"):
        load_slim(corrupt)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(UserInputError, match="not a slim model file"):
        load_slim(foreign)


def _digits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(digits.target)
    g = torch.Generator().manual_seed(0)
    order = torch.randperm(len(y), generator=g)
    x, y = x[order], y[order]
    return x[:1400], y[:1400], x[1400:], y[1400:]


def test_export_load_evaluate_gives_the_same_accuracy(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = VisionTransformer(img_size=8, patch_size=2, in_chans=1, embed_dim=32, depth=2, num_heads=4, mlp_ratio=2.0, num_classes=10)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    steps = 120
    engine = S2ViTE(
        model, optimizer, S2ViTEConfig(total_steps=steps, head_density=0.5, mlp_density=0.5, update_interval=20)
    )
    x_train, y_train, x_val, y_val = _digits()
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        idx = torch.randint(0, len(y_train), (64,), generator=g)
        model.train()
        loss = F.cross_entropy(model(x_train[idx]), y_train[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        engine.step()
    assert engine.stats()["updates"] == 4
    masked_top1 = (outputs(model, x_val).argmax(1) == y_val).float().mean().item()
    loaded = load_slim(save_slim(slim_model(model, engine), tmp_path / "digits_slim.pt"))
    slim_top1 = (outputs(loaded, x_val).argmax(1) == y_val).float().mean().item()
    assert slim_top1 == masked_top1
    assert masked_top1 > 0.25  # it learned something: chance is 0.1


# ----------------------------------------------------------------------------- the command


def _train_checkpoint(out: Path) -> Path:
    from svite_search.config import load_config
    from svite_search.train import Trainer

    cfg = load_config(
        None,
        [
            "method=s2vite",
            "model.name=vit_digits",
            "train.epochs=2",
            "train.warmup_epochs=0",
            "train.max_steps_per_epoch=4",
            "sparsity.update_interval=2",
            "sparsity.head_density=0.5",
            "sparsity.mlp_density=0.5",
            "tokens.keep_ratio=0.75",
        ],
    )
    Trainer(cfg, out, progress=False).fit()
    return out / "last.pt"


def test_export_slim_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    checkpoint = _train_checkpoint(tmp_path / "run")
    out = tmp_path / "slim.pt"
    capsys.readouterr()
    assert main(["export-slim", str(checkpoint), "--out", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["heads_per_block"] == [2, 2, 2, 2] and result["out"] == str(out)
    assert result["params_slim"] < result["params_dense"] and 0 < result["flops_savings"] < 1
    slim = load_slim(out)
    assert find_token_selector(slim) is not None
    assert [b.attn.num_heads for b in slim.blocks] == result["heads_per_block"]


def test_export_slim_bad_input_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.pt"
    assert main(["export-slim", str(missing), "--out", str(tmp_path / "x.pt")]) == 2
    assert "nope.pt" in capsys.readouterr().err
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x00garbage")
    assert main(["export-slim", str(corrupt), "--out", str(tmp_path / "x.pt")]) == 2
    assert "corrupt.pt" in capsys.readouterr().err
