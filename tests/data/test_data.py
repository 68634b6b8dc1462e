"""Datasets: the digits split, and the real ImageFolder loader on generated images."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from svite_search.config import DataConfig
from svite_search.data import build_data, dataset_classes_and_channels
from svite_search.data._digits import digits_split
from svite_search.errors import DataPathError


def test_digits_split_is_seeded_stratified_and_disjoint() -> None:
    train_a, val_a = digits_split(0.2, seed=0)
    train_b, val_b = digits_split(0.2, seed=0)
    train_c, _ = digits_split(0.2, seed=1)
    assert np.array_equal(train_a, train_b) and np.array_equal(val_a, val_b)
    assert not np.array_equal(train_a, train_c)
    assert not set(train_a) & set(val_a) and len(train_a) + len(val_a) == 1797
    bundle = build_data(DataConfig(), img_size=8, in_chans=1, num_classes=10)
    labels = torch.cat([y for _, y in bundle.val])
    assert torch.bincount(labels, minlength=10).min() >= 30  # every class held out


def _make_imagefolder(root: Path, classes: int = 3, per_class: int = 4, size: int = 20) -> None:
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in range(classes):
            folder = root / split / f"class_{c}"
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")


def test_imagefolder_loader_reads_generated_pngs(tmp_path: Path) -> None:
    _make_imagefolder(tmp_path)
    cfg = DataConfig(dataset="imagefolder", root=str(tmp_path), batch_size=4)
    assert dataset_classes_and_channels(cfg) == (3, 3)
    bundle = build_data(cfg, img_size=16, in_chans=3, num_classes=3)
    images, labels = next(iter(bundle.train))
    assert images.shape == (4, 3, 16, 16) and labels.dtype == torch.int64
    assert len(bundle.val.dataset) == 12 and set(bundle.val.dataset.classes) == {"class_0", "class_1", "class_2"}


def test_imagefolder_errors_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(DataPathError, match=str(tmp_path / "train")):
        dataset_classes_and_channels(DataConfig(dataset="imagefolder", root=str(tmp_path)))
    (tmp_path / "train").mkdir()
    with pytest.raises(DataPathError, match="no class folders"):
        dataset_classes_and_channels(DataConfig(dataset="imagefolder", root=str(tmp_path)))
    (tmp_path / "train" / "a").mkdir()
    cfg = DataConfig(dataset="imagefolder", root=str(tmp_path))
    with pytest.raises(DataPathError, match=f"{tmp_path / 'train'}: no images"):
        build_data(cfg, img_size=16, in_chans=3, num_classes=1)
    Image.new("RGB", (8, 8)).save(tmp_path / "train" / "a" / "0.png")
    with pytest.raises(DataPathError, match=str(tmp_path / "val")):
        build_data(cfg, img_size=16, in_chans=3, num_classes=1)


def test_cifar_without_files_is_a_path_error(tmp_path: Path) -> None:
    with pytest.raises(DataPathError, match=str(tmp_path)):
        build_data(DataConfig(dataset="cifar10", root=str(tmp_path)), img_size=32, in_chans=3, num_classes=10)


def test_repeated_augmentation_repeats_each_image_across_ranks() -> None:
    from timm.data.distributed_sampler import RepeatAugSampler

    cfg = DataConfig(repeated_aug=3, batch_size=16)
    bundle = build_data(cfg, img_size=8, in_chans=1, num_classes=10)
    sampler = bundle.train.sampler
    assert isinstance(sampler, RepeatAugSampler) and sampler.num_repeats == 3
    sampler.set_epoch(0)
    first = list(sampler)
    sampler.set_epoch(0)
    assert list(sampler) == first  # seeded by the epoch: resumable
