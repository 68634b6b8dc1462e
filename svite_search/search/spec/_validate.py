"""Checks that every run a spec can sample is a valid, runnable run config, before anything runs."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from ..._mapping import set_dotted
from ...config import RunConfig, brief, config_from_dict
from ...errors import ConfigError, DataPathError
from ._types import Distribution


def _check_runnable(cfg: RunConfig) -> None:
    """What a trial would otherwise only find when it starts: an unknown model name, a missing
    or empty dataset directory. Nothing is loaded."""
    from ...data import dataset_classes_and_channels
    from ...models import is_known_model

    if not is_known_model(cfg.model.name):
        raise ConfigError("model.name", f"unknown model {cfg.model.name!r} (a preset such as vit_digits, or a timm ViT name)")
    if cfg.data.dataset in ("cifar10", "cifar100", "imagefolder"):
        root = Path(str(cfg.data.root))
        if not root.is_dir():
            raise DataPathError(str(root), "missing (data.root)")
        dataset_classes_and_channels(cfg.data)  # imagefolder: ROOT/train/<class>/ must exist


def _validate(data: dict[str, Any]) -> None:
    _check_runnable(config_from_dict(data))


def _validate_values(base: dict[str, Any], dists: list[Distribution]) -> None:
    """Every distribution's extremes (and every choice) must make a valid, runnable run config.

    The other distributions stay at their first values, so a field error names the distribution
    end that caused it (``sparsity.density.high``) rather than the config key alone.
    """
    try:
        _validate(copy.deepcopy(base))
    except ConfigError as err:
        culprit = next((d for d in dists if d.key == err.field), None)
        if culprit is None:
            raise
        raise ConfigError(culprit.extremes()[0][0], str(err).split(": ", 1)[-1]) from None
    for dist in dists:
        for spec_key, value in dist.extremes():
            trial = copy.deepcopy(base)
            set_dotted(trial, dist.key, value)
            try:
                _validate(trial)
            except ConfigError as err:
                field_name = spec_key if err.field == dist.key else err.field
                message = str(err).split(": ", 1)[-1]
                if err.field != dist.key:
                    message += f" (with {spec_key} = {brief(value)})"
                raise ConfigError(field_name, message) from None
