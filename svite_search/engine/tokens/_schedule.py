"""The Gumbel temperature schedule of SViTE+, as an engine component.

A high temperature early spreads the straight-through gradient over many tokens (the scorer
explores); a low one late makes the soft selection approach the hard one the forward pass
uses, so the gradient describes what the network actually sees. The paper's (fixed) schedule
goes linearly from 10 to 0.1 over training (an earlier version of the authors' code had it
increasing; ``start < end`` is still accepted, for experiments).

The temperature never changes the forward pass (the hard top-k of ``log_softmax + g`` does
not depend on it), only the gradient that reaches the scorer.
"""
from __future__ import annotations

import math
from typing import Any

from torch import nn

from ...errors import ConfigError
from ..base import Sparsifier
from ._selector import TokenSelector, find_token_selector

SHAPES: tuple[str, ...] = ("linear", "cosine", "exponential", "constant")


def temperature_at(step: int, total_steps: int, start: float, end: float, shape: str) -> float:
    """The temperature after ``step`` of ``total_steps`` optimizer steps (``end`` beyond)."""
    progress = min(max(step / total_steps, 0.0), 1.0)
    if shape == "linear":
        return start * (1.0 - progress) + end * progress  # exactly `end` at the end
    if shape == "cosine":
        return end + (start - end) * (1.0 + math.cos(math.pi * progress)) / 2.0
    if shape == "exponential":
        return start * (end / start) ** progress
    if shape == "constant":
        return start
    raise ConfigError("tokens.tau_decay", f"{shape!r} is not one of {', '.join(SHAPES)}")


class TokenTemperature(Sparsifier):
    """Sets ``selector.tau`` from a schedule; call :meth:`step` after every ``optimizer.step()``.

    A :class:`~svite_search.engine.Sparsifier` of data rather than weights: it masks no weights,
    so its optional read-outs say so (``layer_densities()`` and ``structure()`` are ``None``,
    ``apply_masks`` does nothing). ``selector`` is the :class:`TokenSelector` or a model that
    carries one.

    Example::

        from svite_search.engine.tokens import install_token_selector

        selector = install_token_selector(model, keep_ratio=0.5)
        optimizer = torch.optim.AdamW(model.parameters())
        temperature = TokenTemperature(selector, total_steps=1000)   # 10 -> 0.1, linear
        assert selector.tau == 10.0
        for _ in range(500):
            ...; optimizer.step(); temperature.step()
        assert abs(selector.tau - 5.05) < 1e-9
    """

    name = "tokens"

    def __init__(
        self,
        selector: TokenSelector | nn.Module,
        total_steps: int,
        start: float = 10.0,
        end: float = 0.1,
        shape: str = "linear",
    ) -> None:
        found = selector if isinstance(selector, TokenSelector) else find_token_selector(selector)
        if found is None:
            raise ConfigError("tokens", "the model has no token selector to schedule")
        if isinstance(total_steps, bool) or int(total_steps) != total_steps or total_steps < 1:
            raise ValueError(f"total_steps={total_steps!r} must be a positive integer")
        if not start > 0:
            raise ConfigError("tokens.tau_start", f"{start!r} must be > 0")
        if not end > 0:
            raise ConfigError("tokens.tau_end", f"{end!r} must be > 0")
        if shape not in SHAPES:
            raise ConfigError("tokens.tau_decay", f"{shape!r} is not one of {', '.join(SHAPES)}")
        self.selector = found
        self.total_steps = int(total_steps)
        self.start = float(start)
        self.end = float(end)
        self.shape = shape
        self.steps_done = 0
        self._apply()

    @property
    def tau(self) -> float:
        """The temperature the next forward pass uses."""
        return temperature_at(self.steps_done, self.total_steps, self.start, self.end, self.shape)

    def _apply(self) -> None:
        self.selector.tau = self.tau

    def step(self) -> None:
        """Advance one optimizer step and set the temperature of the next forward pass."""
        self.steps_done += 1
        self._apply()

    def state_dict(self) -> dict[str, Any]:
        return {
            "steps_done": self.steps_done,
            "total_steps": self.total_steps,
            "start": self.start,
            "end": self.end,
            "shape": self.shape,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the position (and schedule) of a checkpoint and set ``selector.tau``."""
        self.total_steps = int(state["total_steps"])
        self.start = float(state["start"])
        self.end = float(state["end"])
        self.shape = str(state["shape"])
        self.steps_done = int(state["steps_done"])
        self._apply()

    def stats(self) -> dict[str, float]:
        """Numbers worth logging: the temperature and the kept patch tokens (count and share)."""
        selector = self.selector
        return {
            "tau": self.selector.tau,
            "keep_tokens": float(selector.keep_tokens),
            "keep_ratio": selector.keep_tokens / selector.num_patches,
        }
