"""The run configuration: typed, validated, and the single source of defaults.

A run is described by a YAML file with the sections below. Every key is checked before anything
runs: unknown keys, wrong types and out-of-range values raise :class:`ConfigError` naming the
dotted key (``train.epochs``), which the CLI turns into exit code 2.

The study spec of the search harness uses the same sections, where any scalar may instead be a
search distribution; a sampled trial is validated through this module too.

Example::

    cfg = load_config("studies/digits.yaml", overrides=["train.epochs=5", "method=svite"])
    cfg.sparsity.density  # 0.5
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from .errors import ConfigError, UserInputError

METHODS = ("dense", "svite", "s2vite")
PRESETS = ("default", "reference")
DATASETS = ("digits", "cifar10", "cifar100", "imagefolder", "synthetic")
DISTRIBUTIONS = ("erk", "er", "uniform")
DECAYS = ("cosine", "linear", "constant")


def setting(
    default: Any = dataclasses.MISSING,
    *,
    default_factory: Any = dataclasses.MISSING,
    help: str = "",
    choices: tuple[Any, ...] | None = None,
    gt: float | None = None,
    ge: float | None = None,
    le: float | None = None,
    lt: float | None = None,
) -> Any:
    """A dataclass field with the validation metadata :func:`from_dict` reads (choices, numeric
    bounds, a help text). The run config and the study spec declare their fields with it."""
    meta = {"help": help, "choices": choices, "gt": gt, "ge": ge, "le": le, "lt": lt}
    if default_factory is not dataclasses.MISSING:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class DataConfig:
    dataset: str = setting("digits", choices=DATASETS, help="digits is embedded; others read `root`")
    root: str | None = setting(None, help="local dataset directory (never downloaded)")
    val_fraction: float = setting(0.2, gt=0.0, lt=1.0, help="digits/synthetic: held-out share")
    batch_size: int = setting(64, ge=1, help="per-process training batch")
    eval_batch_size: int | None = setting(None, ge=1)
    num_workers: int | None = setting(None, ge=0, help="loader processes; default: 0 for in-memory data "
                                       "(digits, synthetic), else the run's CPUs - 1, at most 8")
    augment: str = setting("auto", choices=("auto", "none", "light", "deit"))
    randaug: str = setting("rand-m9-mstd0.5-inc1", help="timm auto_augment string (deit recipe)")
    reprob: float = setting(0.25, ge=0.0, le=1.0, help="random erasing probability (deit recipe)")
    repeated_aug: int = setting(0, ge=0, help="repeated augmentation: copies of each image per epoch "
                              "across ranks (timm's RepeatAugSampler; DeiT: 3; 0 = off)")
    seed: int = setting(0, help="seed of the train/val split")
    synthetic_size: int = setting(512, ge=16, help="synthetic: number of images")


@dataclass
class ModelConfig:
    name: str = setting("vit_digits", help="a preset (vit_digits, ...) or any timm ViT name")
    img_size: int | None = setting(None, ge=1)
    patch_size: int | None = setting(None, ge=1)
    in_chans: int | None = setting(None, ge=1)
    num_classes: int | None = setting(None, ge=1, help="default: the dataset's")
    embed_dim: int | None = setting(None, ge=1)
    depth: int | None = setting(None, ge=1)
    num_heads: int | None = setting(None, ge=1)
    mlp_ratio: float | None = setting(None, gt=0.0)
    drop_rate: float = setting(0.0, ge=0.0, lt=1.0)
    drop_path: float = setting(0.0, ge=0.0, lt=1.0)
    pretrained: bool = setting(False, help="load timm pretrained weights (needs them cached)")


@dataclass
class TrainSection:
    epochs: int = setting(30, ge=1)
    lr: float = setting(1e-3, gt=0.0)
    lr_base_batch: int | None = setting(None, ge=1, help="scale lr by global_batch / this (DeiT: 512)")
    min_lr: float = setting(1e-5, ge=0.0)
    warmup_lr: float = setting(1e-6, ge=0.0)
    warmup_epochs: int = setting(2, ge=0)
    sched: str = setting("cosine", choices=("cosine", "step", "plateau", "poly", "tanh", "none"))
    opt: str = setting("adamw", choices=("adamw", "adam", "sgd", "momentum", "lamb", "lion"))
    momentum: float = setting(0.9, ge=0.0, lt=1.0)
    weight_decay: float = setting(0.05, ge=0.0)
    label_smoothing: float = setting(0.1, ge=0.0, lt=1.0)
    mixup: float = setting(0.0, ge=0.0, help="Mixup alpha (0 = off); DeiT: 0.8")
    cutmix: float = setting(0.0, ge=0.0, help="CutMix alpha (0 = off); DeiT: 1.0")
    clip_grad: float | None = setting(None, gt=0.0)
    amp: bool | None = setting(None, help="mixed precision; default: on when CUDA is used")
    amp_dtype: str = setting("auto", choices=("auto", "bfloat16", "float16"),
                             help="auto: bfloat16 where supported, else float16 with a gradient scaler")
    compile: bool = setting(False, help="torch.compile (inductor) the training forward and backward")
    device: str = setting("auto", help="auto | cpu | cuda | cuda:N")
    seed: int = setting(0)
    ema: bool = setting(False, help="keep an EMA copy of the weights (masked too)")
    ema_decay: float = setting(0.9998, gt=0.0, lt=1.0)
    max_steps_per_epoch: int | None = setting(None, ge=1, help="cap iterations per epoch (smoke runs)")
    checkpoint: bool = setting(True, help="write last.pt after every epoch (atomic)")
    threads: int | None = setting(None, ge=1, help="torch intra-op threads on CPU")


@dataclass
class SparsityConfig:
    density: float = setting(0.5, gt=0.0, le=1.0, help="svite: global weight density")
    distribution: str = setting("erk", choices=DISTRIBUTIONS)
    update_interval: int | None = setting(100, ge=1, help="ΔT in iterations")
    updates_per_run: int | None = setting(None, ge=1, help="alternative to ΔT: topology updates in all")
    prune_rate: float = setting(0.5, gt=0.0, le=1.0, help="dr0, the initial prune (death) rate")
    prune_rate_min: float = setting(0.005, ge=0.0, le=1.0)
    decay: str = setting("cosine", choices=DECAYS)
    t_end: float = setting(0.8, gt=0.0, le=1.0, help="share of training with topology updates")
    optimizer_state: str | None = setting(
        None, choices=("reset", "calibrated", "keep"), help="state of grown weights; default per preset"
    )
    head_density: float = setting(0.7, gt=0.0, le=1.0, help="s2vite: share of heads kept")
    mlp_density: float = setting(0.6, gt=0.0, le=1.0, help="s2vite: share of MLP neurons kept")
    head_growth: str | None = setting(
        None, choices=("explore", "reference", "frozen"), help="s2vite: head exploration; default per preset"
    )


@dataclass
class TokenConfig:
    keep_ratio: float = setting(1.0, gt=0.0, le=1.0, help="SViTE+: share of patch tokens kept (1 = off)")
    keep_tokens: int | None = setting(
        None, ge=1, help="alternative to keep_ratio: PATCH tokens kept; cls comes on top (paper's 187 of 197 = 186)"
    )
    tau_start: float = setting(10.0, gt=0.0)
    tau_end: float = setting(0.1, gt=0.0)
    tau_decay: str = setting("linear", choices=("linear", "cosine", "exponential", "constant"))


@dataclass
class TrackingConfig:
    enabled: bool = setting(False, help="log this run to MLflow")
    uri: str | None = setting(None, help="tracking URI; default MLFLOW_TRACKING_URI or sqlite in the run dir")
    experiment: str | None = setting(None)


@dataclass
class TrainConfig:
    """One training run."""

    name: str = setting("run")
    method: str = setting("dense", choices=METHODS)
    preset: str = setting("default", choices=PRESETS, help="reference: the authors' code's behaviour")
    data: DataConfig = setting(default_factory=DataConfig)
    model: ModelConfig = setting(default_factory=ModelConfig)
    train: TrainSection = setting(default_factory=TrainSection)
    sparsity: SparsityConfig = setting(default_factory=SparsityConfig)
    tokens: TokenConfig = setting(default_factory=TokenConfig)
    tracking: TrackingConfig = setting(default_factory=TrackingConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def uses_tokens(self) -> bool:
        return self.tokens.keep_ratio < 1.0 or self.tokens.keep_tokens is not None


# ----------------------------------------------------------------------------- validation


def _type_name(tp: Any) -> str:
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if args:
        return " or ".join(_type_name(a) for a in args) + (" or null" if _is_optional(tp) else "")
    return getattr(tp, "__name__", str(tp))


def _is_optional(tp: Any) -> bool:
    return _is_union(tp) and type(None) in typing.get_args(tp)


def _is_union(tp: Any) -> bool:
    origin = typing.get_origin(tp)
    return origin is Union or origin is types.UnionType


def _coerce(value: Any, tp: Any, key: str) -> Any:
    if _is_union(tp):
        if value is None and _is_optional(tp):
            return None
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        errors = []
        for candidate in inner:
            try:
                return _coerce(value, candidate, key)
            except ConfigError as err:
                errors.append(err)
        raise errors[0]
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, key)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "5e-4" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif tp is str:
        if isinstance(value, str):
            return value
    else:  # pragma: no cover - only the types above are used
        return value
    raise ConfigError(key, f"expected {_type_name(tp)}, got {type(value).__name__} {value!r}")


def _check_bounds(value: Any, meta: typing.Mapping[str, Any], key: str) -> None:
    if value is None:
        return
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        raise ConfigError(key, f"{value!r} is not one of {', '.join(map(str, choices))}")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    for bound, ok, text in (
        ("gt", lambda v, b: v > b, "must be > {}"),
        ("ge", lambda v, b: v >= b, "must be >= {}"),
        ("lt", lambda v, b: v < b, "must be < {}"),
        ("le", lambda v, b: v <= b, "must be <= {}"),
    ):
        limit = meta.get(bound)
        if limit is not None and not ok(value, limit):
            raise ConfigError(key, f"{value!r} " + text.format(limit))


def from_dict(cls: type, data: Any, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys and bad values."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(prefix or "config", f"expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in known:
            where = f"{prefix}.{key}" if prefix else str(key)
            raise ConfigError(where, f"unknown key (allowed: {', '.join(known)})")
    values = {}
    for name, fld in known.items():
        key = f"{prefix}.{name}" if prefix else name
        if name in data:
            value = _coerce(data[name], hints[name], key)
            _check_bounds(value, fld.metadata, key)
            values[name] = value
    return cls(**values)


def _check_cross_field(cfg: TrainConfig) -> None:
    if cfg.train.warmup_epochs > cfg.train.epochs:
        raise ConfigError("train.warmup_epochs", f"must be <= train.epochs ({cfg.train.epochs})")
    if cfg.sparsity.prune_rate_min > cfg.sparsity.prune_rate:
        raise ConfigError("sparsity.prune_rate_min", "must be <= sparsity.prune_rate")
    if cfg.data.dataset in ("cifar10", "cifar100", "imagefolder") and not cfg.data.root:
        raise ConfigError("data.root", f"required for dataset {cfg.data.dataset!r}")
    if cfg.train.device not in ("auto", "cpu", "cuda") and not cfg.train.device.startswith("cuda:"):
        raise ConfigError("train.device", f"{cfg.train.device!r} is not auto, cpu, cuda or cuda:N")


def config_from_dict(data: Any) -> TrainConfig:
    """Validate a raw mapping (from YAML) into a :class:`TrainConfig`."""
    cfg = from_dict(TrainConfig, data)
    _check_cross_field(cfg)
    return cfg


# ----------------------------------------------------------------------------- files and overrides


def read_yaml(path: str | Path) -> Any:
    """Read a YAML file with the safe loader; a missing or malformed file is a user error."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"{path}: no such file")
    try:
        return yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise UserInputError(f"{path}: malformed YAML{where}: {getattr(err, 'problem', err)}") from None


def apply_overrides(data: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """Apply ``key.path=value`` overrides (values parsed as YAML) to a nested mapping."""
    for item in overrides or []:
        if "=" not in item:
            raise UserInputError(f"--set {item!r}: expected key.path=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key or any(not part for part in key.split(".")):
            raise UserInputError(f"--set {item!r}: empty key")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        node = data
        parts = key.split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(key, f"{part} is not a section")
            node = child
        node[parts[-1]] = value
    return data


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> TrainConfig:
    """Load, override and validate a run config. ``path=None`` starts from the defaults."""
    data = read_yaml(path) if path is not None else {}
    if not isinstance(data, dict):
        raise ConfigError("config", f"{path}: the top level must be a mapping")
    return config_from_dict(apply_overrides(data, overrides))


def dump_config(cfg: TrainConfig) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
