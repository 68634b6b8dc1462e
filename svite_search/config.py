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
import functools
import math
import reprlib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

from .errors import ConfigError, UserInputError, first_line

METHODS = ("dense", "svite", "s2vite")
PRESETS = ("default", "reference")
DATASETS = ("digits", "cifar10", "cifar100", "imagefolder", "synthetic")
DISTRIBUTIONS = ("erk", "er", "uniform")
DECAYS = ("cosine", "linear", "constant")
#: Seeds go to numpy, torch and Optuna's samplers, which take 0 .. 2**32 - 1.
SEED_MAX = 2**32 - 1
#: The largest integer any field takes: exact as a float, far above every sane count.
INT_MAX = 2**53
#: Sane upper bounds of counts that size a run (a typo such as 1e308 epochs is refused, not run).
EPOCHS_MAX, STEPS_MAX, SIZE_MAX = 100_000, 10**9, 1 << 20

_brief = reprlib.Repr()
_brief.maxstring, _brief.maxother, _brief.maxlist, _brief.maxdict, _brief.maxlevel = 60, 60, 4, 4, 2


def brief(value: Any) -> str:
    """A short one-line ``repr`` for error messages (a value can be megabytes)."""
    return _brief.repr(value)


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
    batch_size: int = setting(64, ge=1, le=SIZE_MAX, help="per-process training batch")
    eval_batch_size: int | None = setting(None, ge=1, le=SIZE_MAX)
    num_workers: int | None = setting(None, ge=0, le=1024, help="loader processes; default: 0 for in-memory data "
                                       "(digits, synthetic), else the run's CPUs - 1, at most 8")
    augment: str = setting("auto", choices=("auto", "none", "light", "deit"))
    randaug: str = setting("rand-m9-mstd0.5-inc1", help="timm auto_augment string (deit recipe)")
    reprob: float = setting(0.25, ge=0.0, le=1.0, help="random erasing probability (deit recipe)")
    repeated_aug: int = setting(0, ge=0, le=64, help="repeated augmentation: copies of each image per epoch "
                              "across ranks (timm's RepeatAugSampler; DeiT: 3; 0 = off)")
    seed: int = setting(0, ge=0, le=SEED_MAX, help="seed of the train/val split")
    synthetic_size: int = setting(512, ge=16, le=10**8, help="synthetic: number of images")

    def synthetic_val_size(self, num_classes: int) -> int:
        """Images a synthetic data set holds out: its ``val_fraction``, and at least one per class."""
        return max(num_classes, int(self.synthetic_size * self.val_fraction))

    def synthetic_size_problem(self, num_classes: int) -> str | None:
        """Why ``synthetic_size`` leaves no training images for ``num_classes`` classes, or None."""
        n_val = self.synthetic_val_size(num_classes)
        if self.synthetic_size > n_val:
            return None
        return (f"{self.synthetic_size} leaves no training images: {n_val} are held out for validation "
                f"(val_fraction {self.val_fraction:g}, at least one per class of {num_classes}); "
                f"set at least {n_val + 1}")


#: Classes of the synthetic data set when the model does not set ``num_classes``.
SYNTHETIC_NUM_CLASSES = 10


@dataclass
class ModelConfig:
    name: str = setting("vit_digits", help="a preset (vit_digits, ...) or any timm ViT name")
    img_size: int | None = setting(None, ge=1, le=SIZE_MAX)
    patch_size: int | None = setting(None, ge=1, le=SIZE_MAX)
    in_chans: int | None = setting(None, ge=1, le=SIZE_MAX)
    num_classes: int | None = setting(None, ge=1, le=10**7, help="default: the dataset's")
    embed_dim: int | None = setting(None, ge=1, le=SIZE_MAX)
    depth: int | None = setting(None, ge=1, le=SIZE_MAX)
    num_heads: int | None = setting(None, ge=1, le=SIZE_MAX)
    mlp_ratio: float | None = setting(None, gt=0.0, le=1024.0)
    drop_rate: float = setting(0.0, ge=0.0, lt=1.0)
    drop_path: float = setting(0.0, ge=0.0, lt=1.0)
    pretrained: bool = setting(False, help="load timm pretrained weights (needs them cached)")


@dataclass
class TrainConfig:
    epochs: int = setting(30, ge=1, le=EPOCHS_MAX)
    lr: float = setting(1e-3, gt=0.0, le=1e3)
    lr_base_batch: int | None = setting(None, ge=1, le=SIZE_MAX, help="scale lr by global_batch / this (DeiT: 512)")
    min_lr: float = setting(1e-5, ge=0.0, le=1e3)
    warmup_lr: float = setting(1e-6, ge=0.0, le=1e3)
    warmup_epochs: int = setting(2, ge=0, le=EPOCHS_MAX)
    sched: str = setting("cosine", choices=("cosine", "step", "plateau", "poly", "tanh", "none"))
    opt: str = setting("adamw", choices=("adamw", "adam", "sgd", "momentum", "lamb", "lion"))
    momentum: float = setting(0.9, ge=0.0, lt=1.0)
    weight_decay: float = setting(0.05, ge=0.0, le=1e3)
    label_smoothing: float = setting(0.1, ge=0.0, lt=1.0)
    mixup: float = setting(0.0, ge=0.0, le=1e3, help="Mixup alpha (0 = off); DeiT: 0.8")
    cutmix: float = setting(0.0, ge=0.0, le=1e3, help="CutMix alpha (0 = off); DeiT: 1.0")
    clip_grad: float | None = setting(None, gt=0.0, le=1e9)
    amp: bool | None = setting(None, help="mixed precision; default: on when CUDA is used")
    amp_dtype: str = setting("auto", choices=("auto", "bfloat16", "float16"),
                             help="auto: bfloat16 where supported, else float16 with a gradient scaler")
    compile: bool = setting(False, help="torch.compile (inductor) the training forward and backward")
    device: str = setting("auto", help="auto | cpu | cuda | cuda:N")
    seed: int = setting(0, ge=0, le=SEED_MAX)
    ema: bool = setting(False, help="keep an EMA copy of the weights (masked too)")
    ema_decay: float = setting(0.9998, gt=0.0, lt=1.0)
    max_steps_per_epoch: int | None = setting(None, ge=1, le=STEPS_MAX, help="cap iterations per epoch (smoke runs)")
    checkpoint: bool = setting(True, help="write last.pt after every epoch (atomic)")
    threads: int | None = setting(None, ge=1, le=4096, help="torch intra-op threads on CPU")


@dataclass
class SparsityConfig:
    density: float = setting(0.5, gt=0.0, le=1.0, help="svite: global weight density")
    distribution: str = setting("erk", choices=DISTRIBUTIONS)
    update_interval: int | None = setting(100, ge=1, le=STEPS_MAX, help="ΔT in iterations")
    updates_per_run: int | None = setting(None, ge=1, le=STEPS_MAX, help="alternative to ΔT: topology updates in all")
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
        None, ge=1, le=SIZE_MAX, help="alternative to keep_ratio: PATCH tokens kept; cls comes on top (paper's 187 of 197 = 186)"
    )
    tau_start: float = setting(10.0, gt=0.0, le=1e6)
    tau_end: float = setting(0.1, gt=0.0, le=1e6)
    tau_decay: str = setting("linear", choices=("linear", "cosine", "exponential", "constant"))


@dataclass
class TrackingConfig:
    enabled: bool = setting(False, help="log this run to MLflow")
    uri: str | None = setting(None, help="tracking URI; default MLFLOW_TRACKING_URI or sqlite in the run dir")
    experiment: str | None = setting(None)


@dataclass
class RunConfig:
    """One training run."""

    name: str = setting("run")
    method: str = setting("dense", choices=METHODS)
    preset: str = setting("default", choices=PRESETS, help="reference: the authors' code's behaviour")
    data: DataConfig = setting(default_factory=DataConfig)
    model: ModelConfig = setting(default_factory=ModelConfig)
    train: TrainConfig = setting(default_factory=TrainConfig)
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
        number: Any = None
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        elif isinstance(value, float) and value.is_integer():
            number = int(value)
        if number is not None:
            if abs(number) > INT_MAX:
                raise ConfigError(key, f"{float(number):.3g} is out of range (|value| <= 2**53)")
            return number
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(key, f"{value!r} is not a finite number")
    elif tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value) if abs(value) < 1e308 or isinstance(value, float) else math.inf
        elif isinstance(value, str) and _looks_numeric(value):  # YAML 1.1 reads "5e-4" (no dot) as a string
            number = float(value)
        if number is not None:
            if not math.isfinite(number):
                raise ConfigError(key, f"{brief(value)} is not a finite number")
            return number
    elif tp is str:
        if isinstance(value, str):
            return value
    else:  # pragma: no cover - only the types above are used
        return value
    raise ConfigError(key, f"expected {_type_name(tp)}, got {type(value).__name__} {brief(value)}")


def _looks_numeric(text: str) -> bool:
    """Whether a string is a number as YAML 1.1 writes it without a dot (``5e-4``); ``inf`` and
    ``nan`` pass, so that the finiteness check names them."""
    try:
        float(text)
    except ValueError:
        return False
    return text.strip().lower().lstrip("+-") not in ("infinity",) and "_" not in text


def _check_bounds(value: Any, meta: typing.Mapping[str, Any], key: str) -> None:
    if value is None:
        return
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        raise ConfigError(key, f"{brief(value)} is not one of {', '.join(map(str, choices))}")
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
            raise ConfigError(key, f"{brief(value)} " + text.format(limit))


@functools.lru_cache(maxsize=None)
def _type_hints(cls: type) -> dict[str, Any]:
    """``typing.get_type_hints`` of a config dataclass, resolved once (it re-evaluates every
    annotation on each call, and a spec validates hundreds of configs)."""
    return typing.get_type_hints(cls)


def from_dict(cls: type, data: Any, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, rejecting unknown keys and bad values."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(prefix or "config", f"expected a mapping, got {type(data).__name__}")
    hints = _type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    for key in data:
        if key not in known:
            where = f"{prefix}.{key}" if prefix else str(key)
            raise ConfigError(brief(where) if len(where) > 80 else where, f"unknown key (allowed: {', '.join(known)})")
    values = {}
    for name, fld in known.items():
        key = f"{prefix}.{name}" if prefix else name
        if name in data:
            value = _coerce(data[name], hints[name], key)
            _check_bounds(value, fld.metadata, key)
            values[name] = value
    return cls(**values)


def _check_cross_field(cfg: RunConfig) -> None:
    if cfg.train.warmup_epochs > cfg.train.epochs:
        raise ConfigError("train.warmup_epochs", f"must be <= train.epochs ({cfg.train.epochs})")
    if cfg.sparsity.prune_rate_min > cfg.sparsity.prune_rate:
        raise ConfigError("sparsity.prune_rate_min", "must be <= sparsity.prune_rate")
    if cfg.data.dataset in ("cifar10", "cifar100", "imagefolder") and not cfg.data.root:
        raise ConfigError("data.root", f"required for dataset {cfg.data.dataset!r}")
    if cfg.data.dataset == "synthetic":
        problem = cfg.data.synthetic_size_problem(cfg.model.num_classes or SYNTHETIC_NUM_CLASSES)
        if problem is not None:
            raise ConfigError("data.synthetic_size", problem)
    if cfg.train.device not in ("auto", "cpu", "cuda") and not cfg.train.device.startswith("cuda:"):
        raise ConfigError("train.device", f"{cfg.train.device!r} is not auto, cpu, cuda or cuda:N")


def config_from_dict(data: Any) -> RunConfig:
    """Validate a raw mapping (from YAML) into a :class:`RunConfig`."""
    cfg = from_dict(RunConfig, data)
    _check_cross_field(cfg)
    return cfg


# ----------------------------------------------------------------------------- files and overrides

#: A spec or config is a few kilobytes; anything far larger is not one (and would take long to read).
MAX_YAML_BYTES = 1 << 20
#: Values a YAML document may expand to, aliases counted at every use: a few hundred in a real
#: spec; the cap stops an alias bomb (a few hundred bytes that expand to billions of values).
MAX_YAML_NODES = 20_000


class _StrictLoader(yaml.SafeLoader):
    """The safe loader, refusing what it would accept silently: duplicate keys (the last one
    would win) and aliases that expand beyond :data:`MAX_YAML_NODES` values."""


def _check_nodes(root: yaml.Node, where: str) -> None:
    """Count the expanded values of ``root`` (each alias as often as it is used) and look for
    duplicate keys, naming the dotted key and its line. Shared nodes are visited once."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def visit(node: yaml.Node, path: str) -> int:
        ident = id(node)
        if ident in sizes:
            return sizes[ident]
        if ident in active:
            raise UserInputError(f"{where}: {path or 'the document'} refers to itself (a recursive YAML alias)")
        active.add(ident)
        total = 1
        if isinstance(node, yaml.MappingNode):
            seen: dict[tuple[str, str], int] = {}
            for key_node, value_node in node.value:
                key = (key_node.tag, key_node.value) if isinstance(key_node, yaml.ScalarNode) else None
                line = key_node.start_mark.line + 1
                name = f"{path}.{key_node.value}" if path and key else (str(key_node.value) if key else path)
                if key is not None and key_node.tag != "tag:yaml.org,2002:merge":
                    if key in seen:
                        raise UserInputError(f"{where}: duplicate key {name} (line {line}; first on line {seen[key]})")
                    seen[key] = line
                total += visit(key_node, path) + visit(value_node, name)
                if total > MAX_YAML_NODES:
                    break
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                total += visit(item, f"{path}[{i}]")
                if total > MAX_YAML_NODES:
                    break
        active.discard(ident)
        if total > MAX_YAML_NODES:
            raise UserInputError(f"{where}: {path or 'the document'} expands to more than {MAX_YAML_NODES} "
                                 "values (YAML aliases); a spec is a few hundred")
        sizes[ident] = total
        return total

    visit(root, "")


def parse_yaml(text: str, where: str) -> Any:
    """Parse one YAML document with :class:`_StrictLoader`; ``where`` (a path, ``--set KEY``)
    names it in the one-line error."""
    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_nodes(node, where)
        return loader.construct_document(node)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" (line {mark.line + 1})" if mark is not None else ""
        problem = first_line(getattr(err, "problem", None) or err)
        raise UserInputError(f"{where}: malformed YAML{at}: {problem}") from None
    except RecursionError:
        raise UserInputError(f"{where}: nested too deeply") from None
    finally:
        loader.dispose()


def read_yaml(path: str | Path) -> Any:
    """Read a YAML file with the strict safe loader; a missing, oversized, non-UTF-8 or malformed
    file is a user error naming the path."""
    path = Path(path)
    if not path.is_file():
        raise UserInputError(f"{path}: no such file")
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_YAML_BYTES + 1)
    except OSError as err:
        raise UserInputError(f"{path}: cannot be read ({err.strerror or err})") from None
    if len(data) > MAX_YAML_BYTES:
        raise UserInputError(f"{path}: larger than {MAX_YAML_BYTES >> 10} KiB; a spec or config is a few kilobytes")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise UserInputError(f"{path}: not UTF-8 text (byte {err.start})") from None
    return parse_yaml(text, str(path)) or {}


def apply_overrides(data: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """Apply ``key.path=value`` overrides (values parsed as YAML) to a nested mapping."""
    for item in overrides or []:
        if "=" not in item:
            raise UserInputError(f"--set {brief(item)}: expected key.path=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key or any(not part for part in key.split(".")):
            raise UserInputError(f"--set {brief(item)}: empty key")
        try:
            value = parse_yaml(raw, f"--set {key}")
        except UserInputError as err:
            if "malformed YAML" not in str(err):
                raise
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


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> RunConfig:
    """Load, override and validate a run config. ``path=None`` starts from the defaults."""
    data = read_yaml(path) if path is not None else {}
    if not isinstance(data, dict):
        raise ConfigError("config", f"{path}: the top level must be a mapping")
    return config_from_dict(apply_overrides(data, overrides))


def dump_config(cfg: RunConfig) -> str:
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)
