"""The decisions a GPU run makes, checked on any machine: device, precision, DDP backend,
loader workers and pinning.

``resolve_device`` takes what a process would see (CUDA present, device count, the current
device, the environment Ray sets) as arguments, so each case of a GPU node is checked here with
the real function; the real CUDA path runs in ``tests/gpu``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from svite_search.config import DataConfig, config_from_dict
from svite_search.data import build_data, default_num_workers
from svite_search.errors import UserInputError
from svite_search.train.device import amp_settings, ddp_backend, resolve_device

GPU_NODE = dict(cuda_available=True, device_count=2, current_device=0)


def test_auto_is_cpu_where_no_gpu_is_visible() -> None:
    # Ray gives a trial without GPUs CUDA_VISIBLE_DEVICES="" even on a GPU node: torch then
    # sees no CUDA, and "auto" must train on the CPUs rather than fail.
    assert resolve_device("auto", cuda_available=False, env={"CUDA_VISIBLE_DEVICES": ""}) == torch.device("cpu")
    assert resolve_device("cpu", **GPU_NODE, env={}) == torch.device("cpu")


def test_cuda_without_a_visible_gpu_names_cuda_visible_devices() -> None:
    with pytest.raises(UserInputError, match=r"train.device.*CUDA_VISIBLE_DEVICES=''.*gpus_per_trial"):
        resolve_device("cuda", cuda_available=False, env={"CUDA_VISIBLE_DEVICES": ""})
    with pytest.raises(UserInputError, match="CUDA is not available"):
        resolve_device("cuda:0", cuda_available=False, env={})


def test_cuda_devices_are_indexed_and_checked_against_what_the_process_sees() -> None:
    assert resolve_device("auto", **GPU_NODE, env={}) == torch.device("cuda", 0)
    assert resolve_device("cuda", **GPU_NODE, env={}) == torch.device("cuda", 0)
    assert resolve_device("cuda:1", **GPU_NODE, env={}) == torch.device("cuda", 1)
    # Ray renumbers a trial's GPUs from 0: cuda:1 in a one-GPU trial does not exist
    with pytest.raises(UserInputError, match=r"sees 1 GPU.*CUDA_VISIBLE_DEVICES='3'"):
        resolve_device("cuda:1", cuda_available=True, device_count=1, current_device=0,
                       env={"CUDA_VISIBLE_DEVICES": "3"})


def test_each_ddp_worker_trains_on_its_own_gpu() -> None:
    # Ray Train makes the worker's GPU current before the loop: that one wins
    assert resolve_device("auto", distributed=True, cuda_available=True, device_count=2, current_device=1,
                          env={"LOCAL_RANK": "1"}) == torch.device("cuda", 1)
    # torchrun leaves device 0 current and sets LOCAL_RANK
    assert resolve_device("cuda", distributed=True, **GPU_NODE, env={"LOCAL_RANK": "1"}) == torch.device("cuda", 1)
    assert resolve_device("cuda", distributed=True, **GPU_NODE, env={}) == torch.device("cuda", 0)


def test_amp_is_bf16_where_supported_and_fp16_with_a_scaler_elsewhere() -> None:
    cuda = torch.device("cuda", 0)
    bf16 = amp_settings(cuda, None, "auto", bf16_supported=True)
    assert (bf16.enabled, bf16.dtype, bf16.needs_scaler) == (True, torch.bfloat16, False)
    fp16 = amp_settings(cuda, None, "auto", bf16_supported=False)  # pre-Ampere GPUs
    assert (fp16.enabled, fp16.dtype, fp16.needs_scaler) == (True, torch.float16, True)
    assert amp_settings(cuda, None, "float16", bf16_supported=True).needs_scaler
    assert not amp_settings(cuda, False, "auto", bf16_supported=True).enabled
    with pytest.raises(UserInputError, match="train.amp_dtype: bfloat16 is not supported"):
        amp_settings(cuda, None, "bfloat16", bf16_supported=False)
    cpu = amp_settings(torch.device("cpu"), None)
    assert not cpu.enabled and cpu.scaler() is None  # off on CPU unless asked for
    assert amp_settings(torch.device("cpu"), True).dtype == torch.bfloat16


def test_ddp_backend_follows_the_workers_device() -> None:
    assert ddp_backend(None, gpus_per_worker=1) == "nccl"
    assert ddp_backend(None, gpus_per_worker=0) == "gloo"
    assert ddp_backend(None, gpus_per_worker=0.5) == "gloo"  # NCCL refuses two ranks on one GPU
    assert ddp_backend("gloo", gpus_per_worker=1) == "gloo"
    with pytest.raises(UserInputError, match="executor.backend: nccl needs GPU workers"):
        ddp_backend("nccl", gpus_per_worker=0)
    with pytest.raises(UserInputError, match="one whole GPU per worker"):
        ddp_backend("nccl", gpus_per_worker=0.25)


def _imagefolder(root: Path) -> None:
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in range(2):
            folder = root / split / f"c{c}"
            folder.mkdir(parents=True)
            for i in range(2):
                Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(folder / f"{i}.png")


def test_loader_workers_come_from_the_cpus_of_the_run() -> None:
    files = DataConfig(dataset="imagefolder", root="unused")
    assert default_num_workers(files, cpus=4) == 3  # the training process keeps one
    assert default_num_workers(files, cpus=1) == 0
    assert default_num_workers(files, cpus=64) == 8
    assert default_num_workers(DataConfig(dataset="digits"), cpus=16) == 0  # in memory
    assert default_num_workers(DataConfig(dataset="digits", num_workers=2), cpus=1) == 2  # as asked


def test_trainer_sizes_workers_from_its_threads_and_pins_only_for_cuda(tmp_path: Path) -> None:
    from svite_search.train import Trainer

    _imagefolder(tmp_path)
    cfg = config_from_dict({
        "data": {"dataset": "imagefolder", "root": str(tmp_path), "batch_size": 2, "augment": "none"},
        "model": {"name": "vit_digits", "img_size": 12, "patch_size": 4, "in_chans": 3, "embed_dim": 16,
                  "depth": 1, "num_heads": 2},
        "train": {"epochs": 1, "warmup_epochs": 0, "threads": 3, "checkpoint": False},
    })
    previous = torch.get_num_threads()
    try:
        trainer = Trainer(cfg, progress=False)
    finally:
        torch.set_num_threads(previous)
    assert trainer.data.train.num_workers == 2 and trainer.data.val.num_workers == 2
    assert trainer.data.train.pin_memory is False  # CPU run
    bundle = build_data(DataConfig(), img_size=8, in_chans=1, num_classes=10, pin_memory=True)
    assert bundle.train.pin_memory and bundle.val.pin_memory
