"""One training run: data + model + engine components + optimizer + loop + checkpoints.

Everything standard comes from timm: the optimizer factory (AdamW without weight decay on 1-D
parameters and position/class embeddings), the cosine scheduler with warm-up (stepped per
iteration), label smoothing and Mixup/CutMix losses, the EMA. The loop is seeded and, on CPU,
bit-for-bit deterministic; a checkpoint after every epoch holds the model, optimizer, scheduler,
engine components and every RNG, so a resumed run continues exactly.

On CUDA (see :mod:`svite_search.train.device`) the loop trains in bf16 autocast where the GPU
supports it, else fp16 with a gradient scaler whose gradients are unscaled before the engine
reads them (an iteration whose optimizer step the scaler skips for overflow skips the engine's
step too, so the engine only ever reads finite gradients); copies from pinned host memory are asynchronous; the loss is read a step late so
the host never waits for the GPU mid-step (:mod:`svite_search.train.loss_watch`); and
``train.compile`` runs the forward and backward through ``torch.compile`` (inductor).

The trainer knows nothing about sparsity. It calls the engine components (see
:mod:`svite_search.train.components`) after every optimizer step; the engine reads the dense
gradient still in ``.grad`` at that point. :meth:`Trainer.train_step` is the one place that
runs an iteration in the order the engine documents (:mod:`svite_search.engine`): the training
loop and the benchmarks call it.

Example::

    cfg = load_config("studies/digits.yaml")
    result = run_training(cfg, out_dir="runs/digits")
    result["top1"], result["gmacs"]
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn

from .._torchvision_guard import ensure_torchvision

ensure_torchvision()  # before timm, which imports torchvision

from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import create_scheduler_v2
from timm.utils import ModelEmaV3
from tqdm.auto import tqdm

from .._mapping import flatten
from .._study_dir import RUN_CHECKPOINT, RUN_CONFIG, RUN_RESULT
from ..config import RunConfig, config_from_dict, dump_config
from ..data import build_data, dataset_classes_and_channels
from ..errors import UserInputError, first_line
from ..models import build_model, model_input_size
from .checkpoint import (
    CHECKPOINT_VERSION,
    atomic_torch_save,
    atomic_write_text,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
)
from ..engine.base import Sparsifier
from .components import build_components, install_model_modules, needs_eager_step
from .device import amp_settings, resolve_device
from .loss_watch import LossWatch
from .summary import final_metrics

log = logging.getLogger(__name__)

EpochCallback = Callable[[dict[str, Any]], None]


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite: the run cannot continue."""


@dataclass
class RunState:
    """What the loop carries from epoch to epoch (and what a checkpoint restores)."""

    epoch: int = 0  # completed epochs
    step: int = 0  # completed optimizer steps
    history: list[dict[str, Any]] = field(default_factory=list)
    best_top1: float = -1.0
    best_epoch: int = -1
    train_seconds: float = 0.0
    overflow_steps: int = 0  # fp16: iterations whose optimizer step the gradient scaler skipped


def _distributed() -> tuple[bool, int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return True, torch.distributed.get_rank(), torch.distributed.get_world_size()
    return False, 0, 1


class Trainer:
    """Holds everything one run needs; :meth:`fit` runs (or resumes) it."""

    def __init__(self, cfg: RunConfig, out_dir: str | Path | None = None, *, progress: bool | None = None) -> None:
        self.cfg = cfg
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.progress = progress
        self.distributed, self.rank, self.world = _distributed()
        self.device = resolve_device(cfg.train.device, distributed=self.distributed)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)  # NCCL, caching allocator and events use it
        self.amp = amp_settings(self.device, cfg.train.amp, cfg.train.amp_dtype)
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)

        torch.manual_seed(cfg.train.seed)
        num_classes, in_chans = dataset_classes_and_channels(cfg.data)
        model = build_model(cfg.model, num_classes=num_classes, in_chans=in_chans)
        self.selector = install_model_modules(model, cfg)
        self.model = model.to(self.device)
        chans, height, _ = model_input_size(self.model)
        self.num_classes = self.model.num_classes

        self.mixup_fn = None
        if cfg.train.mixup > 0 or cfg.train.cutmix > 0:
            from timm.data import Mixup

            self.mixup_fn = Mixup(
                mixup_alpha=cfg.train.mixup,
                cutmix_alpha=cfg.train.cutmix,
                label_smoothing=cfg.train.label_smoothing,
                num_classes=self.num_classes,
            )
        self.data = build_data(
            cfg.data,
            img_size=height,
            in_chans=chans,
            num_classes=self.num_classes,
            seed=cfg.train.seed,
            drop_last=self.mixup_fn is not None,
            pin_memory=self.device.type == "cuda",
            cpus=cfg.train.threads or torch.get_num_threads(),
        )
        self.steps_per_epoch = len(self.data.train)
        if cfg.train.max_steps_per_epoch:
            self.steps_per_epoch = min(self.steps_per_epoch, cfg.train.max_steps_per_epoch)
        if self.steps_per_epoch == 0:
            raise UserInputError(f"data.batch_size: {cfg.data.batch_size} leaves no full training batch")
        self.total_steps = self.steps_per_epoch * cfg.train.epochs

        lr = cfg.train.lr
        if cfg.train.lr_base_batch:
            lr = lr * cfg.data.batch_size * self.world / cfg.train.lr_base_batch
        self.optimizer = create_optimizer_v2(
            self.model, opt=cfg.train.opt, lr=lr, weight_decay=cfg.train.weight_decay, momentum=cfg.train.momentum
        )
        self.scheduler = None
        if cfg.train.sched != "none":
            self.scheduler, _ = create_scheduler_v2(
                self.optimizer,
                sched=cfg.train.sched,
                num_epochs=cfg.train.epochs,
                warmup_epochs=cfg.train.warmup_epochs,
                warmup_lr=cfg.train.warmup_lr,
                min_lr=cfg.train.min_lr,
                step_on_epochs=False,
                updates_per_epoch=self.steps_per_epoch,
            )
        self.scaler = self.amp.scaler()

        self.components: dict[str, Sparsifier] = build_components(
            self.model, self.optimizer, cfg, total_steps=self.total_steps, selector=self.selector
        )
        self.ema = ModelEmaV3(self.model, decay=cfg.train.ema_decay) if cfg.train.ema else None

        self.train_model: nn.Module = self.model
        if self.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_model = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        # The eager module stays: evaluation, and the steps an engine must see eagerly (S²ViTE's
        # head-score capture hooks), run it; checkpoints hold its (unprefixed) state dict.
        self.eager_train_model: nn.Module = self.train_model
        if cfg.train.compile:
            self.train_model = torch.compile(self.train_model)

        if self.mixup_fn is not None:
            self.criterion: nn.Module = SoftTargetCrossEntropy()
        elif cfg.train.label_smoothing > 0:
            self.criterion = LabelSmoothingCrossEntropy(smoothing=cfg.train.label_smoothing)
        else:
            self.criterion = nn.CrossEntropyLoss()
        self.eval_criterion = nn.CrossEntropyLoss()
        self.state = RunState()

    # ------------------------------------------------------------------ checkpoints

    @property
    def checkpoint_path(self) -> Path | None:
        return self.out_dir / RUN_CHECKPOINT if self.out_dir is not None else None

    def checkpoint_state(self) -> dict[str, Any]:
        return {
            "version": CHECKPOINT_VERSION,
            "config": self.cfg.to_dict(),
            "epoch": self.state.epoch,
            "step": self.state.step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "engine": {name: comp.state_dict() for name, comp in self.components.items()},
            "rng": capture_rng_state(self.device),
            "history": self.state.history,
            "best_top1": self.state.best_top1,
            "best_epoch": self.state.best_epoch,
            "train_seconds": self.state.train_seconds,
            "overflow_steps": self.state.overflow_steps,
        }

    def save_checkpoint(self) -> None:
        if self.checkpoint_path is None or self.rank != 0:
            return
        atomic_torch_save(self.checkpoint_state(), self.checkpoint_path)

    def load_state(self, state: dict[str, Any], source: str = "checkpoint") -> None:
        """Restore a checkpoint, refusing one from a different run config or model."""
        saved = state.get("config")
        if saved is not None:
            mine = _comparable(self.cfg.to_dict())
            theirs = _comparable(config_from_dict(saved).to_dict())
            if mine != theirs:
                diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
                raise UserInputError(f"{source}: written by a different config (differs in {', '.join(diff[:5])})")
        self._check_fits(state, source)
        try:
            self.model.load_state_dict(state["model"])
        except RuntimeError as err:
            raise UserInputError(f"{source}: does not fit this model ({first_line(err)})") from None
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None and state.get("scaler") is not None:
            self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None and state.get("ema") is not None:
            self.ema.load_state_dict(state["ema"])
        for name, comp in self.components.items():
            comp.load_state_dict(state["engine"][name])
        restore_rng_state(state["rng"], self.device)
        self.state = RunState(
            epoch=int(state["epoch"]),
            step=int(state["step"]),
            history=list(state.get("history", [])),
            best_top1=float(state.get("best_top1", -1.0)),
            best_epoch=int(state.get("best_epoch", -1)),
            train_seconds=float(state.get("train_seconds", 0.0)),
            overflow_steps=int(state.get("overflow_steps", 0)),
        )

    def _check_fits(self, state: dict[str, Any], source: str) -> None:
        """Refuse a checkpoint that does not fit this run before anything is copied:
        ``load_state_dict`` copies every matching tensor before it reports a mismatch, which
        would leave the model half-loaded."""
        weights = state.get("model")
        if not isinstance(weights, dict):
            raise UserInputError(f"{source}: holds no model weights")
        own = self.model.state_dict()
        missing = [k for k in own if k not in weights]
        unexpected = [k for k in weights if k not in own]
        resized = [
            f"{k} {tuple(weights[k].shape)} vs {tuple(own[k].shape)}"
            for k in own
            if k in weights and tuple(getattr(weights[k], "shape", ())) != tuple(own[k].shape)
        ]
        for what, keys in (("size mismatch", resized), ("missing", missing), ("unexpected", unexpected)):
            if keys:
                more = f" and {len(keys) - 3} more" if len(keys) > 3 else ""
                raise UserInputError(f"{source}: does not fit this model ({what}: {', '.join(keys[:3])}{more})")
        engine = state.get("engine") or {}
        absent = [name for name in self.components if name not in engine]
        if absent or "rng" not in state or "optimizer" not in state:
            what = f"engine state {', '.join(absent)}" if absent else "optimizer or RNG state"
            raise UserInputError(f"{source}: incomplete checkpoint (no {what})")

    def maybe_resume(self) -> bool:
        path = self.checkpoint_path
        if path is None or not path.exists():
            return False
        # On the CPU: the RNG states must stay CPU ByteTensors, and load_state_dict copies the
        # weights, optimizer and engine state to the parameters' device itself.
        self.load_state(load_checkpoint(path, map_location="cpu"), source=str(path))
        log.info("resumed %s at epoch %d/%d", path, self.state.epoch, self.cfg.train.epochs)
        return True

    # ------------------------------------------------------------------ loop

    def _engine_step(self) -> None:
        for comp in self.components.values():
            comp.step()

    def _mask_ema(self) -> None:
        if self.ema is None:
            return
        for comp in self.components.values():
            comp.apply_masks(self.ema.module)

    def train_step(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """One optimizer step on one batch, in the engine's order; returns the detached loss.

        The order (see the ordering rules in :mod:`svite_search.engine`): forward and loss under
        autocast (on the eager model when a component captures on this step under
        ``train.compile``); ``zero_grad``; backward (scaled under fp16); unscale, so clipping
        and the engine read true gradients; clipping; the optimizer step (which the fp16 scaler
        skips on overflow); the engine's step, only after a real optimizer step and before the
        next ``zero_grad``, since it reads ``.grad``; then the EMA (masked like the model) and
        the per-iteration learning-rate update. ``images`` and ``targets`` are moved to the
        run's device if they are not there; Mixup, if any, is the caller's (the loop applies it).
        The loss is returned unread, so a CUDA caller decides when to wait for it.
        """
        images = images.to(self.device, non_blocking=True)
        targets = targets.to(self.device, non_blocking=True)
        model = self.eager_train_model if needs_eager_step(self.components) else self.train_model
        with self.amp.autocast():
            loss = self.criterion(model(images), targets)
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)  # the engine reads unscaled gradients
        else:
            loss.backward()
        if self.cfg.train.clip_grad is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.train.clip_grad)
        stepped = True
        if self.scaler is not None:
            scale = self.scaler.get_scale()
            self.scaler.step(self.optimizer)  # skipped when the fp16 gradients overflowed
            self.scaler.update()
            stepped = self.scaler.get_scale() >= scale  # update() lowers the scale only after a skip
        else:
            self.optimizer.step()
        self.state.step += 1
        if stepped:
            self._engine_step()  # the engine runs after every optimizer step, on finite gradients
        else:
            self.state.overflow_steps += 1
        if self.ema is not None:
            self.ema.update(self.model, step=self.state.step)
            self._mask_ema()
        if self.scheduler is not None:
            self.scheduler.step_update(num_updates=self.state.step)
        return loss.detach()

    def train_one_epoch(self, epoch: int) -> float:
        self.train_model.train()
        sampler = self.data.train.sampler
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        cfg = self.cfg.train
        watch = LossWatch(self.device, distributed=self.distributed, on_non_finite=partial(self._non_finite, epoch))
        bar = tqdm(
            total=self.steps_per_epoch,
            desc=f"epoch {epoch + 1}/{cfg.epochs}",
            leave=False,
            disable=self._bar_disabled(),
            unit="it",
        )
        for i, (images, targets) in enumerate(self.data.train):
            if i >= self.steps_per_epoch:
                break
            images = images.to(self.device, non_blocking=True)
            targets = targets.to(self.device, non_blocking=True)
            if self.mixup_fn is not None:
                images, targets = self.mixup_fn(images, targets)
            loss = self.train_step(images, targets)
            # Reads the previous step's loss (long finished): no wait on the kernels just queued.
            watch.push(loss, step=self.state.step, batch=images.shape[0])
            bar.update(1)
            if watch.reads:
                bar.set_postfix(loss=f"{watch.last:.3f}", refresh=False)
        mean_loss = watch.flush()  # before the checkpoint: a non-finite last step stops here
        bar.close()
        if self.scheduler is not None:
            self.scheduler.step(epoch + 1)
        return mean_loss

    def _non_finite(self, epoch: int, value: float, step: int) -> None:
        """The loss was NaN or infinite on some rank (the flag is reduced over ranks, so all
        stop together rather than leave the healthy ones waiting at the next all-reduce)."""
        raise NonFiniteLossError(f"training loss is {value} at epoch {epoch + 1}, step {step}")

    @torch.no_grad()
    def evaluate(self, model: nn.Module | None = None) -> dict[str, float]:
        model = model or self.model
        was_training = model.training
        model.eval()
        topk = (1, 5) if self.num_classes >= 5 else (1,)
        # correct top-1, correct top-5, loss sum, count: summed on the device, read once
        totals = torch.zeros(4, dtype=torch.float64, device=self.device)
        for images, targets in self.data.val:
            images = images.to(self.device, non_blocking=True)
            targets = targets.to(self.device, non_blocking=True)
            with self.amp.autocast():
                logits = model(images)
            logits = logits.float()
            hits = logits.topk(max(topk), dim=1).indices.eq(targets.unsqueeze(1))
            batch = torch.stack([
                hits[:, :1].any(1).sum(),
                hits[:, : topk[-1]].any(1).sum() if len(topk) > 1 else hits.new_zeros((), dtype=torch.long),
            ]).double()
            loss = self.eval_criterion(logits, targets).double() * images.shape[0]
            totals += torch.cat([batch, loss.reshape(1), totals.new_tensor([images.shape[0]])])
        if self.distributed:
            torch.distributed.all_reduce(totals)
        correct1, correct5, loss_sum, count = totals.tolist()
        model.train(was_training)
        result = {"top1": 100.0 * correct1 / max(count, 1), "val_loss": loss_sum / max(count, 1)}
        if len(topk) > 1:
            result["top5"] = 100.0 * correct5 / max(count, 1)
        return result

    def _bar_disabled(self) -> bool | None:
        if self.rank != 0:
            return True
        return None if self.progress is None else not self.progress

    def engine_stats(self) -> dict[str, float]:
        stats: dict[str, float] = {}
        for name, comp in self.components.items():
            for key, value in comp.stats().items():
                stats[f"{name}.{key}"] = value
        return stats

    def fit(
        self,
        *,
        on_epoch: EpochCallback | None = None,
        resume: bool = True,
        stop_after_epochs: int | None = None,
    ) -> dict[str, Any]:
        """Train to ``train.epochs`` (resuming from ``out_dir/last.pt`` when present).

        ``on_epoch`` receives each epoch's metrics and may raise to stop the run (an Optuna
        pruner or a Ray scheduler does). ``stop_after_epochs`` ends the call early, as an
        interruption would, leaving a checkpoint to resume from.
        """
        if resume:
            self.maybe_resume()
        if self.out_dir is not None and self.rank == 0:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.out_dir / RUN_CONFIG, dump_config(self.cfg))
        cfg = self.cfg.train
        wall_start = time.perf_counter()
        while self.state.epoch < cfg.epochs:
            if stop_after_epochs is not None and self.state.epoch >= stop_after_epochs:
                break
            epoch = self.state.epoch
            start = time.perf_counter()
            train_loss = self.train_one_epoch(epoch)
            self.state.train_seconds += time.perf_counter() - start
            metrics: dict[str, Any] = {"epoch": epoch + 1, "step": self.state.step, "train_loss": train_loss}
            metrics.update(self.evaluate())
            if self.ema is not None:
                metrics.update({f"ema_{k}": v for k, v in self.evaluate(self.ema.module).items()})
            metrics["lr"] = self.optimizer.param_groups[0]["lr"]
            metrics.update(self.engine_stats())
            if self.scaler is not None:
                metrics["amp_overflow_steps"] = self.state.overflow_steps
            self.state.epoch = epoch + 1
            if metrics["top1"] > self.state.best_top1:
                self.state.best_top1, self.state.best_epoch = metrics["top1"], epoch + 1
            self.state.history.append(metrics)
            log.info(
                "epoch %d/%d  loss %.4f  top1 %.2f  (best %.2f)",
                epoch + 1, cfg.epochs, train_loss, metrics["top1"], self.state.best_top1,
            )
            if cfg.checkpoint:
                self.save_checkpoint()
            if on_epoch is not None:
                on_epoch(metrics)
        result = self.result(wall_seconds=time.perf_counter() - wall_start)
        if self.out_dir is not None and self.rank == 0 and self.state.epoch >= cfg.epochs:
            atomic_write_text(self.out_dir / RUN_RESULT, json.dumps(result, indent=2, default=float))
        return result

    def result(self, wall_seconds: float = 0.0) -> dict[str, Any]:
        return final_metrics(self.cfg, self.state, self.model, self.components, device=self.device,
                             selects_tokens=self.selector is not None, engine_stats=self.engine_stats(),
                             wall_seconds=wall_seconds)


def _comparable(cfg_dict: dict[str, Any]) -> dict[str, Any]:
    """Flattened config without the keys that may change between resumptions."""
    flat = flatten(cfg_dict)
    for volatile in ("name", "tracking.enabled", "tracking.uri", "tracking.experiment", "train.device", "train.threads",
                     "train.compile", "data.num_workers"):
        flat.pop(volatile, None)
    return flat


def run_training(
    cfg: RunConfig,
    out_dir: str | Path | None = None,
    *,
    on_epoch: EpochCallback | None = None,
    resume: bool = True,
    progress: bool | None = None,
    stop_after_epochs: int | None = None,
) -> dict[str, Any]:
    """Train one model as ``cfg`` says and return its result metrics (see :func:`final_metrics`)."""
    trainer = Trainer(cfg, out_dir, progress=progress)
    return trainer.fit(on_epoch=on_epoch, resume=resume, stop_after_epochs=stop_after_epochs)

