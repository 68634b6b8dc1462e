"""S²ViTE under DistributedDataParallel: unit sets agree on every rank without a broadcast.

Two CPU processes (gloo) see different data, so their local head scores differ; the component
all-reduces the head score sums and counts, and DDP all-reduces the MLP gradients, so every
prune-and-grow decision is the same on both ranks.
"""
from __future__ import annotations

import os
import tempfile

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

WORLD_SIZE = 2
STEPS = 12


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    import svite_search  # noqa: F401  (torchvision guard before timm)
    import torch.nn.functional as F
    from timm.models.vision_transformer import VisionTransformer
    from torch.nn.parallel import DistributedDataParallel

    from svite_search.engine.structured import S2ViTE, S2ViTEConfig

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD_SIZE)
    try:
        torch.manual_seed(100 + rank)  # different initial weights; DDP broadcasts rank 0's
        model = VisionTransformer(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=4, num_classes=5)
        ddp = DistributedDataParallel(model)
        optimizer = torch.optim.AdamW(ddp.parameters(), lr=1e-2)
        engine = S2ViTE(
            ddp, optimizer, S2ViTEConfig(total_steps=STEPS, head_density=0.5, mlp_density=0.5, update_interval=2, seed=7)
        )
        data = torch.Generator().manual_seed(rank)  # different data on each rank
        local_scores = []
        for step in range(1, STEPS + 1):
            images = torch.randn(4, 3, 16, 16, generator=data)
            targets = torch.randint(0, 5, (4,), generator=data)
            loss = F.cross_entropy(ddp(images), targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if engine.schedule.is_update_step(step):
                local_scores.append(torch.cat([t.clone() for t in engine._capture._taylor]))
            engine.step()
        torch.save(
            {
                "heads": [m.heads for m in engine.unit_masks()],
                "neurons": [m.neurons for m in engine.unit_masks()],
                "local_scores": local_scores,
                "weights": {n: p.detach().clone() for n, p in model.named_parameters()},
                "updates": engine.updates,
                "fired": engine.stats()["neurons_fired"],
            },
            os.path.join(out_dir, f"rank{rank}.pt"),
        )
    finally:
        dist.destroy_process_group()


def test_unit_sets_agree_on_all_ranks() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        init_file = os.path.join(tmp, "rendezvous")
        mp.spawn(_worker, args=(init_file, tmp), nprocs=WORLD_SIZE, join=True)
        first, second = (torch.load(os.path.join(tmp, f"rank{r}.pt"), weights_only=True) for r in range(WORLD_SIZE))
    assert first["updates"] == second["updates"] == 4  # steps 2, 4, 6, 8 (< 0.8 · 12)
    assert any(not torch.allclose(a, b) for a, b in zip(first["local_scores"], second["local_scores"]))
    for a, b in zip(first["heads"] + first["neurons"], second["heads"] + second["neurons"]):
        assert torch.equal(a, b)
    for name, weight in first["weights"].items():
        assert torch.equal(weight, second["weights"][name]), name
    assert first["fired"] > 0.5  # neuron sets moved, identically on both ranks
