"""The protocol every engine component follows: :class:`Sparsifier`.

Shaped like ``torch.ao.pruning.BaseSparsifier``: a sparsifier is built beside a model (and its
optimizer), holds its masks itself, and is driven from the training loop by one call per
optimizer step. What every component does (:meth:`~Sparsifier.step`,
:meth:`~Sparsifier.state_dict` / :meth:`~Sparsifier.load_state_dict`, :meth:`~Sparsifier.stats`)
is abstract; what only some can do is a typed read-out whose default says "does not apply"
(``None``, or ``False``), so a training loop asks every component the same questions and never
probes for attributes:

* :meth:`~Sparsifier.apply_masks`: mask another copy of the model (an EMA copy); a no-op for a
  component that masks no weights;
* :meth:`~Sparsifier.layer_densities`: the density of each masked weight (unstructured sparsity);
* :meth:`~Sparsifier.structure`: (heads, neurons) kept per block (structured sparsity);
* :meth:`~Sparsifier.needs_eager_step`: whether the next forward and backward must run eagerly,
  outside ``torch.compile``, because Python hooks capture scores on it.

The order in which a loop calls these is in the :mod:`svite_search.engine` docstring.

Example::

    class Constant(Sparsifier):
        name = "constant"            # the key of its state in a checkpoint and of its stats

        def __init__(self):
            self.steps = 0

        def step(self):
            self.steps += 1

        def state_dict(self):
            return {"steps": self.steps}

        def load_state_dict(self, state):
            self.steps = int(state["steps"])

        def stats(self):
            return {"steps": float(self.steps)}

    component = Constant()
    component.step()
    assert component.stats() == {"steps": 1.0} and component.layer_densities() is None
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar, Iterable

if TYPE_CHECKING:  # the protocol itself needs no torch at import time
    import torch
    from torch import nn


class Sparsifier(ABC):
    """Base class of the engine's components (SViTE, S²ViTE, the SViTE+ temperature schedule).

    Subclasses implement :meth:`step`, :meth:`state_dict`, :meth:`load_state_dict` and
    :meth:`stats`, and override the read-outs that apply to them.
    """

    #: A short name: the key of the component in a checkpoint's ``engine`` section and the
    #: prefix of its stats in logs.
    name: ClassVar[str] = "sparsifier"

    @abstractmethod
    def step(self) -> None:
        """Call once after every ``optimizer.step()``, before the next ``zero_grad``: the
        component may read the gradients of the step just taken."""

    @abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Everything an exact resume needs, as tensors and plain Python values (safe for
        ``torch.load(weights_only=True)``)."""

    @abstractmethod
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output into a component built for the same model."""

    @abstractmethod
    def stats(self) -> dict[str, float]:
        """Numbers worth logging; ``density``, ``params_nonzero`` and ``params_total`` where
        the component knows them."""

    def apply_masks(self, module: nn.Module | None = None) -> None:
        """Zero the inactive weights of ``module`` (same parameter names as the model, e.g. an
        EMA copy), or of the component's own model. Components without masks do nothing."""

    def layer_densities(self) -> dict[str, float] | None:
        """Density of every masked weight by parameter name; ``None`` where the component
        does not mask individual weights."""
        return None

    def structure(self) -> list[tuple[int, int]] | None:
        """(heads kept, neurons kept) per block; ``None`` where the component keeps no unit
        structure."""
        return None

    def needs_eager_step(self) -> bool:
        """Whether the next forward and backward must run the eager model (not a
        ``torch.compile`` graph): Python hooks capture what the next :meth:`step` reads."""
        return False


def check_build_order(
    model: nn.Module, optimizer: torch.optim.Optimizer | None, masked: Iterable[tuple[str, torch.Tensor]]
) -> None:
    """Refuse a weight sparsifier built out of the documented order (rules 1 and 2 of
    :mod:`svite_search.engine`): the optimizer must already hold every trainable weight the
    sparsifier masks (it resets their optimizer state), and a token selector on the model must
    have been installed before the optimizer was built (else its scorer is never trained).
    Raises :class:`ValueError` naming what is missing; nothing to check without an optimizer."""
    if optimizer is None:
        return
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    for name, param in masked:
        if param.requires_grad and id(param) not in held:
            raise ValueError(
                f"the optimizer does not hold {name!r}: build the optimizer over the model before the sparsifier"
            )
    from .tokens._selector import find_token_selector  # not the package: it imports this module

    selector = find_token_selector(model)
    if selector is not None and any(p.requires_grad and id(p) not in held for p in selector.parameters()):
        raise ValueError(
            "the optimizer does not hold the token selector's scorer: install the selector before building the optimizer"
        )
