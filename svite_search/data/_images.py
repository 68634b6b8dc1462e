"""Image datasets read from a local path: CIFAR-10/100 and ImageNet-style folders.

Nothing is ever downloaded: a missing or malformed path is a :class:`DataPathError`.
Transforms come from timm (``create_transform``): the DeiT recipe (RandAugment, random erasing,
bicubic resize) for training, centre crop for evaluation; its posterize ops keep their
meaning on every Pillow release (see :mod:`._augment`).
"""
from __future__ import annotations

from pathlib import Path

from torch.utils.data import Dataset

from .._torchvision_guard import ensure_torchvision

ensure_torchvision()  # before timm, which imports torchvision

from timm.data import create_transform  # noqa: E402

from ..config import DataConfig  # noqa: E402
from ..errors import DataPathError  # noqa: E402
from ._augment import with_defined_posterize  # noqa: E402

_IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def _transforms(cfg: DataConfig, img_size: int, augment: str, mean=None, std=None):
    extra = {}
    if mean is not None:
        extra.update(mean=mean, std=std)
    if augment == "deit":
        train = with_defined_posterize(
            create_transform(
                img_size,
                is_training=True,
                auto_augment=cfg.randaug or None,
                re_prob=cfg.reprob,
                re_mode="pixel",
                interpolation="bicubic",
                **extra,
            )
        )
    elif augment == "light":
        train = create_transform(img_size, is_training=True, no_aug=False, scale=(0.6, 1.0), hflip=0.5, **extra)
    else:
        train = create_transform(img_size, is_training=False, crop_pct=1.0, **extra)
    crop_pct = 1.0 if img_size < 64 else 0.875
    val = create_transform(img_size, is_training=False, interpolation="bicubic", crop_pct=crop_pct, **extra)
    return train, val


def _require_dir(path: Path, what: str) -> Path:
    if not path.exists():
        raise DataPathError(str(path), f"missing ({what})")
    if not path.is_dir():
        raise DataPathError(str(path), f"not a directory ({what})")
    return path


def cifar_datasets(cfg: DataConfig, img_size: int, augment: str) -> tuple[Dataset, Dataset]:
    from torchvision.datasets import CIFAR10, CIFAR100

    root = _require_dir(Path(cfg.root or ""), f"{cfg.dataset} root")
    cls = CIFAR10 if cfg.dataset == "cifar10" else CIFAR100
    mean, std = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
    train_tf, val_tf = _transforms(cfg, img_size, augment, mean, std)
    try:
        return cls(str(root), train=True, transform=train_tf, download=False), cls(str(root), train=False, transform=val_tf, download=False)
    except RuntimeError as err:  # torchvision: "Dataset not found or corrupted"
        raise DataPathError(str(root), f"no {cfg.dataset} data in the torchvision layout ({err})") from None


def imagefolder_datasets(cfg: DataConfig, img_size: int, augment: str) -> tuple[Dataset, Dataset]:
    from torchvision.datasets import ImageFolder

    root = _require_dir(Path(cfg.root or ""), "imagefolder root")
    train_tf, val_tf = _transforms(cfg, img_size, augment)
    splits = []
    for split, tf in (("train", train_tf), ("val", val_tf)):
        split_dir = _require_dir(root / split, f"expected {root}/{split}/<class>/<images>")
        try:
            splits.append(ImageFolder(str(split_dir), transform=tf))
        except (FileNotFoundError, RuntimeError) as err:
            raise DataPathError(str(split_dir), f"no images in class folders ({err})") from None
    train, val = splits
    if train.classes != val.classes:
        raise DataPathError(str(root / "val"), f"class folders differ from {root / 'train'}")
    return train, val
