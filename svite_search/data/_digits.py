"""In-memory datasets: scikit-learn's digits, and synthetic class-dependent images."""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

# digits pixel values are 0..16; these are the train-set statistics after scaling to [0, 1]
_DIGITS_MEAN, _DIGITS_STD = 0.3051, 0.3781


@lru_cache(maxsize=1)
def _digits_arrays() -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = torch.from_numpy(bunch.images.astype(np.float32) / 16.0)
    images = (images - _DIGITS_MEAN) / _DIGITS_STD
    return images.unsqueeze(1), torch.from_numpy(bunch.target.astype(np.int64))


def digits_split(val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded, stratified train/val indices into the 1,797 digits (computed once per
    ``(val_fraction, seed)`` in a process: every trial of a study asks for the same split)."""
    train_idx, val_idx = _digits_split(float(val_fraction), int(seed))
    return train_idx.copy(), val_idx.copy()


@lru_cache(maxsize=8)
def _digits_split(val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    _, labels = _digits_arrays()
    idx = np.arange(len(labels))
    train_idx, val_idx = train_test_split(idx, test_size=val_fraction, random_state=seed, stratify=labels.numpy())
    return np.sort(train_idx), np.sort(val_idx)


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
        prototypes = torch.randn(num_classes, in_chans, low, low, generator=gen)
        self.prototypes = F.interpolate(prototypes, size=(img_size, img_size), mode="nearest")
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
        return self.prototypes[label] + 0.5 * noise, label
