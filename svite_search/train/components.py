"""Build the engine components a run config asks for, and the trainer's view of them.

The trainer knows nothing about sparsity: it sees named :class:`~svite_search.engine.Sparsifier`
components (``step()`` after every optimizer step, ``state_dict``/``load_state_dict``,
``stats()``, and the typed read-outs ``apply_masks(module)`` for the EMA copy,
``layer_densities()`` / ``structure()`` for FLOPs accounting and ``needs_eager_step()`` under
``train.compile``, each ``None``/``False``/a no-op where it does not apply). This module maps
the harness config (including the ``reference`` preset) onto the engine's own configs, and the
engine's argument names in its errors back onto the config's keys.
"""
from __future__ import annotations

import dataclasses
from contextlib import contextmanager
from typing import Any, Iterator

import torch
import torch.nn as nn

from ..config import RunConfig, SparsityConfig
from ..engine.base import Sparsifier
from ..errors import ConfigError

#: The run-config key behind an engine argument that is not a ``sparsity`` field of its own name.
_ENGINE_ARGUMENT_KEYS = {"seed": "train.seed", "neuron_growth": "preset", "exact_counts": "preset"}
_SPARSITY_FIELDS = frozenset(f.name for f in dataclasses.fields(SparsityConfig))


@contextmanager
def config_keys() -> Iterator[None]:
    """Re-raise an engine :class:`ConfigError` under the run-config key it came from: the engine
    names its own arguments (``updates_per_run``), a user's file names ``sparsity.updates_per_run``."""
    try:
        yield
    except ConfigError as err:
        key = _ENGINE_ARGUMENT_KEYS.get(err.field)
        if key is None and err.field in _SPARSITY_FIELDS:
            key = f"sparsity.{err.field}"
        if key is None:
            raise
        message = str(err).removeprefix(f"{err.field}: ")
        raise ConfigError(key, message) from None


def install_model_modules(model: nn.Module, cfg: RunConfig) -> Any | None:
    """Model surgery that must happen before weights are loaded: the SViTE+ token selector."""
    if not cfg.uses_tokens:
        return None
    from ..engine.tokens import install_token_selector

    reference = cfg.preset == "reference"
    return install_token_selector(
        model,
        keep_ratio=None if cfg.tokens.keep_tokens is not None else cfg.tokens.keep_ratio,
        keep_tokens=cfg.tokens.keep_tokens,
        mode="zero" if reference else "gather",
        eval_noise=reference,
    )


def build_components(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    cfg: RunConfig,
    *,
    total_steps: int,
    selector: Any | None,
) -> dict[str, Sparsifier]:
    """The engine components for ``cfg.method`` (and SViTE+ when tokens are on), by name.

    Build them after the optimizer holds the model's parameters (S²ViTE and SViTE reset the
    optimizer state of the weights they mask) and after :func:`install_model_modules`."""
    with config_keys():
        return _build_components(model, optimizer, cfg, total_steps=total_steps, selector=selector)


def _build_components(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    cfg: RunConfig,
    *,
    total_steps: int,
    selector: Any | None,
) -> dict[str, Sparsifier]:
    components: dict[str, Sparsifier] = {}
    sp = cfg.sparsity
    reference = cfg.preset == "reference"
    from ..engine.sparse import DEFAULT_OPTIMIZER_STATE

    optimizer_state = sp.optimizer_state or ("keep" if reference else DEFAULT_OPTIMIZER_STATE)
    schedule = dict(
        total_steps=total_steps,
        update_interval=sp.update_interval if sp.updates_per_run is None else None,
        updates_per_run=sp.updates_per_run,
        prune_rate=sp.prune_rate,
        prune_rate_min=sp.prune_rate_min,
        decay=sp.decay,
        t_end=sp.t_end,
        optimizer_state=optimizer_state,
        seed=cfg.train.seed,
    )
    if cfg.method == "svite":
        from ..engine.sparse import SViTE, SViTEConfig

        components["svite"] = SViTE(
            model,
            optimizer,
            SViTEConfig(density=sp.density, distribution=sp.distribution, exact_counts=not reference, **schedule),
        )
    elif cfg.method == "s2vite":
        from ..engine.structured import DEFAULT_HEAD_GROWTH, S2ViTE, S2ViTEConfig

        components["s2vite"] = S2ViTE(
            model,
            optimizer,
            S2ViTEConfig(
                head_density=sp.head_density,
                mlp_density=sp.mlp_density,
                neuron_growth="reference" if reference else "signal",
                head_growth=sp.head_growth or ("reference" if reference else DEFAULT_HEAD_GROWTH),
                **schedule,
            ),
        )
    if selector is not None:
        from ..engine.tokens import TokenTemperature

        components["tokens"] = TokenTemperature(
            selector,
            total_steps=total_steps,
            start=cfg.tokens.tau_start,
            end=cfg.tokens.tau_end,
            shape=cfg.tokens.tau_decay,
        )
    return components


def needs_eager_step(components: dict[str, Sparsifier]) -> bool:
    """Whether the next forward/backward must run the eager model under ``train.compile``.

    S²ViTE's head-score capture (armed only for the iteration before a topology update) hooks
    ``attn.proj``'s input and registers a gradient hook on it from Python; a compiled graph
    would not run those hooks the same way. Those iterations (one per ΔT) run eagerly; every
    other step runs compiled.
    """
    return any(comp.needs_eager_step() for comp in components.values())
