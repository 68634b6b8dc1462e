"""In-memory datasets: scikit-learn's digits, and synthetic class-dependent images.

The digits and their seeded split come from scikit-learn once per machine and scikit-learn
version, then from the per-user cache (:mod:`svite_search._cache`): importing scikit-learn
costs a process over a second, and every trial process of a digits study would pay it for the
same 1,797 images and the same split. A cached entry is checked when read; a damaged one is
computed again and replaced, and an unwritable cache only means computing each time.
"""
from __future__ import annotations

import io
import logging
import zipfile
from functools import lru_cache
from importlib import metadata
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .._cache import cache_dir
from .._io import atomic_write_bytes

log = logging.getLogger(__name__)

# digits pixel values are 0..16; these are the train-set statistics after scaling to [0, 1]
_DIGITS_MEAN, _DIGITS_STD = 0.3051, 0.3781
_N_DIGITS, _DIGITS_SIDE = 1797, 8


@lru_cache(maxsize=1)
def _sklearn_version() -> str:
    try:
        return metadata.version("scikit-learn")
    except metadata.PackageNotFoundError:  # an unusual install: the import below says what is wrong
        return "unknown"


def _cached_arrays(name: str, compute: Callable[[], dict[str, np.ndarray]],
                   valid: Callable[[dict[str, np.ndarray]], bool]) -> dict[str, np.ndarray]:
    """``compute()``'s arrays, read from the cache entry ``name`` when it holds valid ones."""
    path = cache_dir() / name
    try:
        with np.load(path, allow_pickle=False) as stored:
            arrays = {key: stored[key] for key in stored.files}
        if valid(arrays):
            return arrays
        log.debug("cache entry %s does not hold what it should: computing it again", path)
    except FileNotFoundError:
        pass
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as err:
        log.debug("cache entry %s unreadable (%s): computing it again", path, err)
    arrays = compute()
    try:
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        atomic_write_bytes(path, buffer.getvalue())  # makes the cache folder when it is missing
    except OSError as err:
        log.debug("cache entry %s not written (%s)", path, err)
    return arrays


def _load_digits() -> dict[str, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return {"images": bunch.images.astype(np.uint8), "target": bunch.target.astype(np.int64)}


def _valid_digits(arrays: dict[str, np.ndarray]) -> bool:
    images, target = arrays.get("images"), arrays.get("target")
    return (images is not None and target is not None and images.dtype == np.uint8
            and images.shape == (_N_DIGITS, _DIGITS_SIDE, _DIGITS_SIDE) and int(images.max()) <= 16
            and target.dtype == np.int64 and target.shape == (_N_DIGITS,) and set(np.unique(target)) == set(range(10)))


@lru_cache(maxsize=1)
def _digits_arrays() -> tuple[torch.Tensor, torch.Tensor]:
    raw = _cached_arrays(f"digits-scikit-learn-{_sklearn_version()}.npz", _load_digits, _valid_digits)
    images = torch.from_numpy(raw["images"].astype(np.float32) / 16.0)
    images = (images - _DIGITS_MEAN) / _DIGITS_STD
    return images.unsqueeze(1), torch.from_numpy(raw["target"])


def clear_memory() -> None:
    """Forget the digits and splits held in this process (the cache on disk stays)."""
    _digits_arrays.cache_clear()
    _digits_split.cache_clear()


def digits_split(val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded, stratified train/val indices into the 1,797 digits (computed once per
    ``(val_fraction, seed)`` in a process: every trial of a study asks for the same split)."""
    train_idx, val_idx = _digits_split(float(val_fraction), int(seed))
    return train_idx.copy(), val_idx.copy()


@lru_cache(maxsize=8)
def _digits_split(val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    _, labels = _digits_arrays()

    def compute() -> dict[str, np.ndarray]:
        from sklearn.model_selection import train_test_split

        idx = np.arange(len(labels))
        train_idx, val_idx = train_test_split(idx, test_size=val_fraction, random_state=seed, stratify=labels.numpy())
        return {"train": np.sort(train_idx).astype(np.int64), "val": np.sort(val_idx).astype(np.int64)}

    def valid(arrays: dict[str, np.ndarray]) -> bool:
        train, val = arrays.get("train"), arrays.get("val")
        if train is None or val is None or train.dtype != np.int64 or val.dtype != np.int64:
            return False
        together = np.concatenate([train, val])
        return len(together) == _N_DIGITS and np.array_equal(np.sort(together), np.arange(_N_DIGITS))

    name = f"digits-split-scikit-learn-{_sklearn_version()}-val{val_fraction!r}-seed{seed}.npz"
    split = _cached_arrays(name, compute, valid)
    return split["train"], split["val"]


def _resize(images: torch.Tensor, img_size: int, in_chans: int) -> torch.Tensor:
    if images.shape[-1] != img_size:
        images = F.interpolate(images, size=(img_size, img_size), mode="bilinear", align_corners=False)
    if images.shape[1] != in_chans:
        images = images.expand(-1, in_chans, -1, -1).contiguous()
    return images


class DigitsDataset(Dataset):
    """A split of the digits as tensors. ``augment`` applies a random shift of up to one pixel
    (of the native 8x8 grid), drawn from torch's global RNG so runs are seeded and resumable."""

    def __init__(self, indices: np.ndarray, *, img_size: int = 8, in_chans: int = 1, augment: bool = False) -> None:
        images, labels = _digits_arrays()
        index = torch.as_tensor(indices, dtype=torch.long)
        self.images = _resize(images[index], img_size, in_chans)
        self.labels = labels[index]
        self.augment = augment
        self.shift = max(1, img_size // 8)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image = self.images[i]
        if self.augment:
            dy, dx = (torch.randint(-self.shift, self.shift + 1, (2,))).tolist()
            image = torch.roll(image, shifts=(dy, dx), dims=(1, 2))
        return image, int(self.labels[i])


class SyntheticDataset(Dataset):
    """Class-dependent random images of any size: each class is a fixed random pattern plus noise.

    Learnable, deterministic for a seed, and needs no files: for smoke runs and benchmarks at
    ImageNet resolution.
    """

    def __init__(self, size: int, *, img_size: int, in_chans: int, num_classes: int, seed: int, split_seed: int) -> None:
        gen = torch.Generator().manual_seed(seed)
        low = max(1, img_size // 8)
        # Kept at low resolution and upsampled per item: 1,000 classes at 224 px would otherwise
        # hold 600 MB of prototypes in every split.
        self._low_prototypes = torch.randn(num_classes, in_chans, low, low, generator=gen)
        gen_split = torch.Generator().manual_seed(seed * 1000 + split_seed)
        self.labels = torch.randint(0, num_classes, (size,), generator=gen_split)
        self.noise_seeds = torch.randint(0, 2**31 - 1, (size,), generator=gen_split)
        self.img_size, self.in_chans = img_size, in_chans

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        gen = torch.Generator().manual_seed(int(self.noise_seeds[i]))
        label = int(self.labels[i])
        noise = torch.randn(self.in_chans, self.img_size, self.img_size, generator=gen)
        prototype = F.interpolate(self._low_prototypes[label : label + 1], size=(self.img_size, self.img_size), mode="nearest")
        return prototype[0] + 0.5 * noise, label
