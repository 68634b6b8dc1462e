"""S²ViTE under DistributedDataParallel: unit sets agree on every rank without a broadcast.

Two CPU processes (gloo) see different data, so their local head scores differ; the component
all-reduces the head score sums and counts, and DDP all-reduces the MLP gradients, so every
prune-and-grow decision is the same on both ranks. The set-up is hard on purpose (8 heads of
which 4 are kept, an update after every step, 15 updates): without the all-reduce of the head
scores the ranks choose different heads within a few updates.

The second test goes through the trainer's own DDP path (its data sharding, its DDP wrapper,
its engine components) on the digits data.
"""
from __future__ import annotations

import json

import torch
from _support.ddp import run_ranks

WORLD_SIZE = 2
STEPS = 19  # updates after steps 1..15 (ΔT = 1, t < 0.8 · 19 = 15.2)
UPDATES = 15


def _worker(rank: int) -> dict:
    import svite_search.models  # noqa: F401  (the torchvision import guard, before timm)
    import torch.nn.functional as F
    from timm.models.vision_transformer import VisionTransformer
    from torch.nn.parallel import DistributedDataParallel

    from svite_search.engine.structured import S2ViTE, S2ViTEConfig

    torch.manual_seed(100 + rank)  # different initial weights; DDP broadcasts rank 0's
    model = VisionTransformer(img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=8, num_classes=5)
    ddp = DistributedDataParallel(model)
    optimizer = torch.optim.AdamW(ddp.parameters(), lr=1e-2)
    config = S2ViTEConfig(total_steps=STEPS, head_density=0.5, mlp_density=0.5, update_interval=1, seed=7)
    engine = S2ViTE(ddp, optimizer, config)
    data = torch.Generator().manual_seed(rank)  # different data on each rank
    local_scores, heads_after_update = [], []
    for step in range(1, STEPS + 1):
        images = torch.randn(4, 3, 16, 16, generator=data)
        targets = torch.randint(0, 5, (4,), generator=data)
        loss = F.cross_entropy(ddp(images), targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        update = engine.schedule.is_update_step(step)
        if update:
            local_scores.append(torch.cat([t.clone() for t in engine._capture._taylor]))
        engine.step()
        if update:
            heads_after_update.append(torch.stack([m.heads for m in engine.unit_masks()]))
    return {
        "heads": [m.heads for m in engine.unit_masks()],
        "neurons": [m.neurons for m in engine.unit_masks()],
        "heads_after_update": heads_after_update,
        "local_scores": local_scores,
        "weights": {n: p.detach().clone() for n, p in model.named_parameters()},
        "updates": engine.updates,
        "heads_fired": engine.stats()["heads_fired"],
        "neurons_fired": engine.stats()["neurons_fired"],
    }


def test_unit_sets_agree_on_all_ranks() -> None:
    first, second = run_ranks(_worker, WORLD_SIZE)
    assert first["updates"] == second["updates"] == UPDATES
    # the ranks' own scores differ at every update: only the all-reduce makes them agree
    assert all(not torch.allclose(a, b) for a, b in zip(first["local_scores"], second["local_scores"]))
    for update, (a, b) in enumerate(zip(first["heads_after_update"], second["heads_after_update"]), start=1):
        assert torch.equal(a, b), f"head sets differ between ranks after update {update}"
    for a, b in zip(first["heads"] + first["neurons"], second["heads"] + second["neurons"]):
        assert torch.equal(a, b)
    for name, weight in first["weights"].items():
        assert torch.equal(weight, second["weights"][name]), name
    # head and neuron sets moved, identically on both ranks
    assert first["heads_fired"] > 0.5 and first["neurons_fired"] > 0.5


def _trainer_worker(rank: int) -> dict:
    import svite_search  # noqa: F401
    from svite_search.config import config_from_dict
    from svite_search.train.trainer import Trainer

    cfg = config_from_dict(
        {
            "method": "s2vite",
            "data": {"dataset": "digits", "batch_size": 16},
            "model": {"name": "vit_digits"},
            "train": {"epochs": 1, "max_steps_per_epoch": 10, "lr": 2e-3, "warmup_epochs": 0,
                      "device": "cpu", "threads": 1, "checkpoint": False, "seed": 3},
            "sparsity": {"update_interval": 1, "head_density": 0.5, "mlp_density": 0.5},
        }
    )
    trainer = Trainer(cfg, None, progress=False)
    assert trainer.distributed and isinstance(trainer.train_model, torch.nn.parallel.DistributedDataParallel)
    first_batch = next(iter(trainer.data.train))[1]
    trainer.fit(resume=False)
    engine = trainer.components["s2vite"]
    return {
        "first_targets": first_batch,
        "heads": [m.heads for m in engine.unit_masks()],
        "neurons": [m.neurons for m in engine.unit_masks()],
        "weights": {n: p.detach().clone() for n, p in trainer.model.named_parameters()},
        "stats": json.dumps(engine.stats()),
    }


def test_the_trainers_ddp_path_keeps_ranks_identical() -> None:
    first, second = run_ranks(_trainer_worker, WORLD_SIZE)
    assert not torch.equal(first["first_targets"], second["first_targets"])  # each rank has its shard
    stats = json.loads(first["stats"])
    assert stats == json.loads(second["stats"])
    assert stats["updates"] == 7  # steps 1..7 (< 0.8 · 10)
    assert stats["heads_fired"] > 0.5  # heads explored, identically on both ranks
    for a, b in zip(first["heads"] + first["neurons"], second["heads"] + second["neurons"]):
        assert torch.equal(a, b)
    for name, weight in first["weights"].items():
        assert torch.equal(weight, second["weights"][name]), name
