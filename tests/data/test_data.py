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


def _train_transform_ops(transform) -> list:
    """The RandAugment ops inside a built train transform (timm's Compose)."""
    from timm.data.auto_augment import RandAugment

    augments = [t for t in transform.transforms if isinstance(t, RandAugment)]
    assert len(augments) == 1, transform
    return augments[0].ops


def test_strongest_posterize_of_the_deit_recipe_gives_a_black_image_on_any_pillow(tmp_path: Path) -> None:
    # PosterizeIncreasing at magnitude 10 keeps 0 bits: a black image in Pillow <= 12 and the
    # TPU recipe timm follows; Pillow 13 refuses 0 bits with a ValueError that ends the run
    _make_imagefolder(tmp_path, per_class=1)
    cfg = DataConfig(dataset="imagefolder", root=str(tmp_path), randaug="rand-m10-mstd0-inc1")
    bundle = build_data(cfg, img_size=16, in_chans=3, num_classes=3)
    (posterize,) = [op for op in _train_transform_ops(bundle.train.dataset.transform) if op.name == "PosterizeIncreasing"]
    posterize.prob = 1.0
    image = Image.fromarray(np.full((8, 8, 3), 200, dtype=np.uint8))
    assert np.asarray(posterize(image)).max() == 0


def test_deit_recipe_at_full_strength_trains_through_every_op(tmp_path: Path) -> None:
    import random

    _make_imagefolder(tmp_path)
    random.seed(0)
    np.random.seed(0)  # timm's RandAugment draws its ops from numpy's global state
    torch.manual_seed(0)  # the loader's worker processes seed Python's random from torch
    # the strongest PosterizeIncreasing, the weakest Posterize, the TPU policy's black-image
    # sub-policy (Posterize at 2), and AugMix's PosterizeIncreasing
    for randaug in ("rand-m10-n15-mstd0-inc1", "rand-m0-n15-mstd0", "v0", "augmix-m10-mstd0-w3"):
        cfg = DataConfig(dataset="imagefolder", root=str(tmp_path), batch_size=4, randaug=randaug)
        bundle = build_data(cfg, img_size=16, in_chans=3, num_classes=3)
        for _ in range(4):
            for images, _labels in bundle.train:
                assert torch.isfinite(images).all()


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


def test_a_synthetic_set_with_no_training_image_left_is_refused_naming_the_field(tmp_path: Path, capsys) -> None:
    """One image per class is held out, so 16 images cannot serve 1,000 classes: the config says
    so (exit 2, one line, nothing written), and so does building the data for a model whose
    classes the config does not name."""
    import yaml

    from svite_search.cli import main
    from svite_search.config import config_from_dict
    from svite_search.errors import ConfigError

    raw = {"data": {"dataset": "synthetic", "synthetic_size": 16}, "model": {"name": "vit_digits", "num_classes": 1000}}
    with pytest.raises(ConfigError, match=r"data\.synthetic_size.*1000 are held out.*at least 1001"):
        config_from_dict(raw)
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump(raw))
    run = tmp_path / "run"
    assert main(["train", str(config), "--out", str(run), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "data.synthetic_size" in err[0], err
    assert not run.exists()
    with pytest.raises(ConfigError, match=r"data\.synthetic_size"):
        build_data(DataConfig(dataset="synthetic", synthetic_size=16), img_size=8, in_chans=3, num_classes=100)


def test_synthetic_images_are_their_class_prototype_upsampled_plus_seeded_noise() -> None:
    """Prototypes are kept at low resolution and upsampled per image: the images are those of
    upsampling all of them at once, and 1,000 classes at 224 px hold no full-size copy."""
    import torch.nn.functional as F

    from svite_search.data import SyntheticDataset

    data = SyntheticDataset(6, img_size=224, in_chans=3, num_classes=1000, seed=3, split_seed=1)
    gen = torch.Generator().manual_seed(3)
    eager = F.interpolate(torch.randn(1000, 3, 28, 28, generator=gen), size=(224, 224), mode="nearest")
    for i in range(len(data)):
        image, label = data[i]
        noise = torch.randn(3, 224, 224, generator=torch.Generator().manual_seed(int(data.noise_seeds[i])))
        assert torch.equal(image, eager[label] + 0.5 * noise)
    held = sum(v.numel() for v in vars(data).values() if isinstance(v, torch.Tensor))
    assert held < 1000 * 3 * 224 * 224 // 10
