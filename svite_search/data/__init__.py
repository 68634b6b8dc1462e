"""Datasets and loaders.

* ``digits``: scikit-learn's embedded 8x8 handwritten digits (1,797 images, 10 classes); always
  available, no download. Seeded, stratified train/val split.
* ``cifar10`` / ``cifar100``: torchvision's CIFAR from a local ``root`` (never downloaded).
* ``imagefolder``: an ImageNet-style tree ``root/train/<class>/*`` and ``root/val/<class>/*``.
* ``synthetic``: class-dependent random images at any size, for smoke runs and benchmarks.

Real images use the DeiT recipe through ``timm.data.create_transform``; digits a light one.
Missing or malformed paths raise :class:`DataPathError` naming the path.

Loaders pin host memory when the run trains on CUDA (so the trainer's ``non_blocking`` copies
overlap with compute) and size their worker processes from the CPUs the run may use (see
:func:`default_num_workers`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from ..config import SYNTHETIC_NUM_CLASSES, DataConfig
from ..errors import ConfigError, DataPathError
from ._digits import DigitsDataset, SyntheticDataset, digits_split
from ._images import cifar_datasets, imagefolder_datasets

__all__ = ["DataBundle", "build_data", "default_num_workers", "DigitsDataset", "SyntheticDataset"]

#: datasets held in memory as tensors: loader workers would only add start-up and IPC cost
IN_MEMORY = ("digits", "synthetic")
#: more decoding workers than this rarely feeds one GPU faster, and each costs memory
MAX_WORKERS = 8


@dataclass
class DataBundle:
    train: DataLoader
    val: DataLoader
    num_classes: int
    in_chans: int


def _native_shape(cfg: DataConfig) -> tuple[int, int]:
    """(num_classes, channels) of a dataset, known before any image is read."""
    if cfg.dataset == "digits":
        return 10, 1
    if cfg.dataset == "cifar10":
        return 10, 3
    if cfg.dataset == "cifar100":
        return 100, 3
    if cfg.dataset == "synthetic":
        return SYNTHETIC_NUM_CLASSES, 3
    return -1, 3  # imagefolder: counted from the class folders


def dataset_classes_and_channels(cfg: DataConfig) -> tuple[int, int]:
    classes, chans = _native_shape(cfg)
    if classes < 0:
        root = Path(cfg.root or "")
        train_dir = root / "train"
        if not train_dir.is_dir():
            raise DataPathError(str(train_dir), "missing: imagefolder expects ROOT/train/<class>/ and ROOT/val/<class>/")
        classes = sum(1 for p in train_dir.iterdir() if p.is_dir())
        if classes == 0:
            raise DataPathError(str(train_dir), "has no class folders")
    return classes, chans


def _datasets(cfg: DataConfig, img_size: int, in_chans: int, num_classes: int) -> tuple[Dataset, Dataset]:
    augment = cfg.augment
    if cfg.dataset == "digits":
        train_idx, val_idx = digits_split(cfg.val_fraction, cfg.seed)
        train_aug = augment in ("light", "deit")  # shifts hurt on 8x8: off unless asked for
        return (
            DigitsDataset(train_idx, img_size=img_size, in_chans=in_chans, augment=train_aug),
            DigitsDataset(val_idx, img_size=img_size, in_chans=in_chans, augment=False),
        )
    if cfg.dataset == "synthetic":
        problem = cfg.synthetic_size_problem(num_classes)
        if problem is not None:  # the config check knew the classes only if the model named them
            raise ConfigError("data.synthetic_size", problem)
        n_val = cfg.synthetic_val_size(num_classes)
        common = dict(img_size=img_size, in_chans=in_chans, num_classes=num_classes, seed=cfg.seed)
        return (
            SyntheticDataset(cfg.synthetic_size - n_val, split_seed=1, **common),
            SyntheticDataset(n_val, split_seed=2, **common),
        )
    if augment == "auto":
        augment = "deit"
    if cfg.dataset in ("cifar10", "cifar100"):
        return cifar_datasets(cfg, img_size, augment)
    return imagefolder_datasets(cfg, img_size, augment)


def default_num_workers(cfg: DataConfig, cpus: int) -> int:
    """Loader worker processes when ``data.num_workers`` is not set.

    ``cpus`` is what the run may use: under a search, ``executor.cpus_per_trial`` (the trial's
    torch threads are set from it). In-memory datasets get none; image files get one worker per
    CPU the training process leaves free, at most :data:`MAX_WORKERS`.
    """
    if cfg.num_workers is not None:
        return cfg.num_workers
    if cfg.dataset in IN_MEMORY:
        return 0
    return max(0, min(MAX_WORKERS, int(cpus) - 1))


def build_data(
    cfg: DataConfig,
    *,
    img_size: int,
    in_chans: int,
    num_classes: int,
    seed: int = 0,
    drop_last: bool = False,
    pin_memory: bool = False,
    cpus: int | None = None,
) -> DataBundle:
    """Build train/val loaders. Shuffling is seeded per epoch (call ``set_epoch`` on the sampler)
    so a resumed run sees exactly the batches an uninterrupted one would; under
    ``torch.distributed`` each rank gets its shard. ``pin_memory``: the run trains on CUDA;
    ``cpus``: the CPUs the run may use (default: torch's intra-op threads)."""
    train_set, val_set = _datasets(cfg, img_size, in_chans, num_classes)
    if len(train_set) == 0:
        raise DataPathError(str(cfg.root or cfg.dataset), "the training split is empty")
    distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
    world = torch.distributed.get_world_size() if distributed else 1
    rank = torch.distributed.get_rank() if distributed else 0
    if cfg.repeated_aug > 0:
        from .._torchvision_guard import ensure_torchvision

        ensure_torchvision()
        from timm.data.distributed_sampler import RepeatAugSampler

        train_sampler: Sampler = RepeatAugSampler(train_set, num_replicas=world, rank=rank, num_repeats=cfg.repeated_aug)
    else:
        train_sampler = DistributedSampler(train_set, num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=drop_last)
    val_sampler = DistributedSampler(val_set, num_replicas=world, rank=rank, shuffle=False) if distributed else None
    workers = default_num_workers(cfg, torch.get_num_threads() if cpus is None else cpus)
    persistent = workers > 0
    train = DataLoader(
        train_set,
        batch_size=cfg.batch_size,
        sampler=train_sampler,
        num_workers=workers,
        drop_last=drop_last,
        pin_memory=pin_memory,
        persistent_workers=persistent,
    )
    val = DataLoader(
        val_set,
        batch_size=cfg.eval_batch_size or cfg.batch_size * 2,
        sampler=val_sampler,
        shuffle=False,
        num_workers=workers,
        pin_memory=pin_memory,
        persistent_workers=persistent,
    )
    return DataBundle(train=train, val=val, num_classes=num_classes, in_chans=in_chans)
