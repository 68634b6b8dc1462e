"""The SViTE+ token selector: a learnable top-k over patch tokens, installed into a timm ViT.

timm's ``VisionTransformer.forward_features`` runs ``patch_embed -> _pos_embed -> patch_drop
-> norm_pre -> blocks``; ``patch_drop`` is timm's own hook for dropping tokens (PatchDropout)
and is an ``nn.Identity`` by default. The selector takes that slot, so no timm code is copied
or patched: every block, ``forward_intermediates`` and the pooling see the selector's output.

A gathered sequence is no longer a full grid of patches, so ``forward_intermediates`` works
with ``output_fmt="NLC"`` only (its ``NCHW`` reshape needs every patch; ``mode="zero"`` keeps it).

Its only parameter is ``patch_drop.scorer`` (``Linear(D, 1)``). The weight masks of SViTE /
S²ViTE never target it (its name, and ``svite_dense = True``), so the scorer stays dense and is
trained by the optimizer like any other parameter.

Example, a plain training loop (install before building the optimizer, so the scorer is in
it)::

    import timm
    from svite_search.engine.tokens import TokenTemperature, install_token_selector

    model = timm.create_model("deit_tiny_patch16_224", num_classes=10)
    selector = install_token_selector(model, keep_ratio=0.7)      # 137 of 196 patches + cls
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-4)
    temperature = TokenTemperature(selector, total_steps=len(loader) * epochs)
    for epoch in range(epochs):
        model.train()
        for images, labels in loader:
            loss = F.cross_entropy(model(images), labels)          # blocks run on 138 tokens
            optimizer.zero_grad()
            loss.backward()                                         # reaches selector.scorer
            optimizer.step()
            temperature.step()                                      # tau: 10 -> 0.1
    model.eval()                                                    # deterministic top-k
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import nn
from torch.nn.init import trunc_normal_

from ...errors import ConfigError, UserInputError
from ._gumbel import gumbel_topk, topk_sorted
from ..sparse._targets import unwrap as _unwrap

Mode = Literal["gather", "zero"]
MODES: tuple[str, ...] = ("gather", "zero")


class TokenSelector(nn.Module):
    """Keep the ``keep_tokens`` highest-scoring patch tokens and every prefix token.

    Input and output are token sequences ``(B, prefix + N, D)`` whose first
    ``num_prefix_tokens`` entries are the class (and any register or distillation) tokens,
    which always survive, in front.

    * training: Gumbel top-k with a straight-through gradient to ``scorer`` (temperature
      ``tau``, set by :class:`TokenTemperature`);
    * evaluation: the deterministic top-k of the scores (``eval_noise=True`` samples noise at
      evaluation too, as the authors' code did, which makes test accuracy random);
    * ``mode="gather"``: the kept tokens are gathered, in their original order, so the output
      has ``prefix + keep_tokens`` tokens and every block is cheaper;
    * ``mode="zero"``: the authors' behaviour, dropped tokens are multiplied by zero and the
      length stays ``prefix + N`` (no compute is saved).

    Every constructor argument is kept as an attribute of the same name (``embed_dim`` as the
    scorer's input width): the slim export rebuilds the module from them.
    """

    #: Read by the SViTE / S²ViTE target rules: the scorer is never weight-masked.
    svite_dense = True

    def __init__(
        self,
        embed_dim: int,
        num_patches: int,
        keep_tokens: int,
        *,
        num_prefix_tokens: int = 1,
        keep_ratio: float | None = None,
        mode: Mode = "gather",
        eval_noise: bool = False,
        tau: float = 1.0,
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise ConfigError("tokens.mode", f"{mode!r} is not one of {', '.join(MODES)}")
        if not 1 <= keep_tokens <= num_patches:
            raise ConfigError("tokens.keep_tokens", f"{keep_tokens} is not in 1..{num_patches} patches")
        self.scorer = nn.Linear(embed_dim, 1)
        trunc_normal_(self.scorer.weight, std=0.02)
        nn.init.zeros_(self.scorer.bias)
        self.num_patches = num_patches
        self.keep_tokens = keep_tokens
        self.keep_ratio = keep_ratio
        self.num_prefix_tokens = num_prefix_tokens
        self.mode: Mode = mode
        self.eval_noise = eval_noise
        self.tau = tau

    def extra_repr(self) -> str:
        return (
            f"keep_tokens={self.keep_tokens}, num_patches={self.num_patches}, "
            f"num_prefix_tokens={self.num_prefix_tokens}, mode={self.mode!r}, tau={self.tau:.4g}"
        )

    def keep_for(self, num_patches: int) -> int:
        """Patch tokens kept out of ``num_patches`` (differs from the configured count only
        for models that accept other image sizes, where the keep ratio is applied again)."""
        if num_patches == self.num_patches:
            return self.keep_tokens
        if self.keep_ratio is None:
            raise UserInputError(
                f"token selector configured for {self.num_patches} patches with a fixed "
                f"keep_tokens={self.keep_tokens} got {num_patches}; configure it with keep_ratio"
            )
        return min(num_patches, max(1, round(self.keep_ratio * num_patches)))

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """Per-patch scores ``(B, N)`` of a sequence that still holds all tokens."""
        return self.scorer(x[:, self.num_prefix_tokens:]).squeeze(-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        prefix, patches = x[:, : self.num_prefix_tokens], x[:, self.num_prefix_tokens:]
        k = self.keep_for(patches.shape[1])
        scores = self.scorer(patches).squeeze(-1)
        if self.training:
            indices, gate = gumbel_topk(scores, k, self.tau, noise=True)
        elif self.eval_noise:
            indices, gate = gumbel_topk(scores.detach(), k, self.tau, noise=True)
            gate = gate.detach()
        else:
            indices, gate = topk_sorted(scores.detach(), k), None
        if self.mode == "zero":
            if gate is None:
                gate = torch.zeros_like(scores).scatter_(1, indices, 1.0)
            kept = patches * gate.unsqueeze(-1).to(patches.dtype)
        else:
            kept = patches.gather(1, indices.unsqueeze(-1).expand(-1, -1, patches.shape[-1]))
            if self.training:
                # Value 1.0 at every kept token; carries the straight-through gradient.
                kept = kept * gate.gather(1, indices).unsqueeze(-1).to(kept.dtype)
        return torch.cat((prefix, kept), dim=1)


# ----------------------------------------------------------------------------- installing


def resolve_keep_tokens(
    num_patches: int, *, keep_ratio: float | None = None, keep_tokens: int | None = None
) -> int:
    """``k`` from exactly one of ``keep_ratio`` (``round(ratio * N)``) or ``keep_tokens``."""
    if (keep_ratio is None) == (keep_tokens is None):
        raise ConfigError("tokens", "give exactly one of keep_ratio and keep_tokens")
    if keep_tokens is not None:
        if isinstance(keep_tokens, bool) or not 1 <= keep_tokens <= num_patches:
            raise ConfigError("tokens.keep_tokens", f"{keep_tokens!r} is not in 1..{num_patches} patches")
        return int(keep_tokens)
    if not 0.0 < keep_ratio <= 1.0:  # type: ignore[operator]
        raise ConfigError("tokens.keep_ratio", f"{keep_ratio!r} must be in (0, 1]")
    return max(1, round(keep_ratio * num_patches))  # type: ignore[operator]


def install_token_selector(
    model: nn.Module,
    *,
    keep_ratio: float | None = None,
    keep_tokens: int | None = None,
    mode: Mode = "gather",
    eval_noise: bool = False,
) -> TokenSelector:
    """Put a :class:`TokenSelector` at ``model.patch_drop`` of a timm ``VisionTransformer``.

    ``keep_tokens`` is the number of *patch* tokens kept (``k``); ``keep_ratio`` gives
    ``k = round(keep_ratio * N_patches)``. The prefix tokens (``model.num_prefix_tokens``)
    are kept on top. The scorer is created on the device and dtype of ``model.pos_embed``.
    Install before building the optimizer (so the scorer is trained) and before weight-mask
    engines (which then find the scorer's name outside their targets).
    """
    model = _unwrap(model)
    for attr in ("patch_drop", "patch_embed", "num_prefix_tokens", "embed_dim"):
        if not hasattr(model, attr):
            raise UserInputError(
                f"{type(model).__name__} has no `{attr}`: token selection needs a timm VisionTransformer"
            )
    current = model.patch_drop
    if isinstance(current, TokenSelector):
        raise UserInputError("the model already has a token selector (uninstall it first)")
    if not isinstance(current, nn.Identity):
        raise UserInputError(
            f"model.patch_drop is a {type(current).__name__} (timm patch dropout); build the "
            "model with patch_drop_rate=0 to use the learnable token selector"
        )
    num_patches = int(model.patch_embed.num_patches)
    k = resolve_keep_tokens(num_patches, keep_ratio=keep_ratio, keep_tokens=keep_tokens)
    if mode not in MODES:
        raise ConfigError("tokens.mode", f"{mode!r} is not one of {', '.join(MODES)}")
    selector = TokenSelector(
        int(model.embed_dim),
        num_patches,
        k,
        num_prefix_tokens=int(model.num_prefix_tokens),
        keep_ratio=keep_ratio,
        mode=mode,
        eval_noise=eval_noise,
    )
    reference = getattr(model, "pos_embed", None)
    if not isinstance(reference, torch.Tensor):
        reference = next(model.parameters())
    selector.to(device=reference.device, dtype=reference.dtype)
    selector.train(model.training)
    model.patch_drop = selector
    return selector


def find_token_selector(model: nn.Module) -> TokenSelector | None:
    """The model's token selector, or ``None`` when it has none (also through DDP wrappers)."""
    selector = getattr(_unwrap(model), "patch_drop", None)
    return selector if isinstance(selector, TokenSelector) else None


def uninstall_token_selector(model: nn.Module) -> TokenSelector | None:
    """Remove the selector (``patch_drop`` becomes ``nn.Identity`` again) and return it."""
    selector = find_token_selector(model)
    if selector is not None:
        _unwrap(model).patch_drop = nn.Identity()
    return selector


def kept_patch_tokens(model: nn.Module, *, nominal: bool = False) -> int | None:
    """Patch tokens the blocks process, for ``vit_macs(model, tokens=...)``; ``None`` without
    a selector (all patches).

    In ``zero`` mode the blocks still process every patch, so the honest count is
    ``N_patches``; ``nominal=True`` returns the selected count ``k`` instead (the accounting
    of the paper's tables).
    """
    selector = find_token_selector(model)
    if selector is None:
        return None
    if selector.mode == "zero" and not nominal:
        return selector.num_patches
    return selector.keep_tokens


def preset_options(preset: str) -> dict[str, object]:
    """Selector options of a config preset: ``reference`` is the authors' behaviour (zero
    masking, noise at evaluation), ``default`` gathers tokens and evaluates deterministically."""
    if preset == "reference":
        return {"mode": "zero", "eval_noise": True}
    if preset == "default":
        return {"mode": "gather", "eval_noise": False}
    raise ConfigError("preset", f"{preset!r} is not one of default, reference")
