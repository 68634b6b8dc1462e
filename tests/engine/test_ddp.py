"""SViTE under DistributedDataParallel: masks agree on every rank without being broadcast.

Two CPU processes (gloo) start from *different* random weights and see *different* data. DDP
broadcasts rank 0's weights once and all-reduces gradients; the sparsifier's initial masks come
from the shared seed and every update from the identical weights and gradients, so the masks
must stay identical on both ranks through several prune-and-grow updates.
"""
from __future__ import annotations

import torch
from _support.ddp import run_ranks

WORLD_SIZE = 2
STEPS = 12


def _worker(rank: int) -> dict:
    import svite_search.models  # noqa: F401  (the torchvision import guard, before timm)
    import timm
    import torch.nn.functional as F
    from torch.nn.parallel import DistributedDataParallel

    from svite_search.engine.sparse import SViTE, SViTEConfig

    torch.manual_seed(100 + rank)  # different initial weights on each rank
    model = timm.create_model(
        "vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=10
    )
    ddp = DistributedDataParallel(model)
    optimizer = torch.optim.AdamW(ddp.parameters(), lr=1e-2, weight_decay=0.05)
    sparsifier = SViTE(ddp, optimizer, SViTEConfig(density=0.4, total_steps=STEPS, update_interval=2, seed=5))
    initial = {n: m.clone() for n, m in sparsifier.masks.items()}
    data = torch.Generator().manual_seed(rank)  # different data on each rank
    for _ in range(STEPS):
        images = torch.randn(4, 3, 32, 32, generator=data)
        targets = torch.randint(0, 10, (4,), generator=data)
        loss = F.cross_entropy(ddp(images), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        sparsifier.step()
    return {
        "masks": {n: m.clone() for n, m in sparsifier.masks.items()},
        "initial": initial,
        "weights": {n: p.detach().clone() for n, p in model.named_parameters()},
        "updates": sparsifier.updates,
    }


def test_masks_agree_on_all_ranks_without_broadcasting() -> None:
    first, second = run_ranks(_worker, WORLD_SIZE)
    assert first["updates"] == second["updates"] == 4  # steps 2, 4, 6 and 8 (< 0.8 · 12)
    for name, mask in first["masks"].items():
        assert torch.equal(mask, second["masks"][name]), name
        assert not bool(first["weights"][name][mask == 0].any())
    for name, weight in first["weights"].items():
        assert torch.equal(weight, second["weights"][name]), name
    moved = sum(int((first["masks"][n] != first["initial"][n]).sum()) for n in first["masks"])
    assert moved > 0  # the updates changed the topology, identically on both ranks
