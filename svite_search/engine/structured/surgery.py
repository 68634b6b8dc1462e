"""Physical slimming: turn a structurally sparse ViT into a genuinely smaller timm ViT.

Masking saves nothing at run time; the paper's speed-ups need the inactive heads and neurons
removed. :func:`slim_model` keeps, per block, the q/k/v rows and ``attn.proj`` input columns of
the active heads and the ``fc1`` rows / ``fc2`` columns of the active neurons, and sets the
block's head count. What an inactive unit still contributed is folded away exactly:

* an inactive head has zero q/k/v rows but keeps its q/k/v biases, so its attention is uniform
  over identical values and it emits the constant ``b_v``; ``proj`` maps that to the constant
  ``W_proj[:, head] @ b_v``, which is added to ``proj.bias``;
* an inactive neuron has a zero ``fc2`` column, so it contributes nothing whatever its ``fc1``
  row computes.

The result is a ``timm`` :class:`~timm.models.vision_transformer.VisionTransformer` whose blocks
hold a :class:`SlimAttention` (any number of heads of the original width, fused
``scaled_dot_product_attention``; timm's own ``Attention`` has reshaped its output with the input
width in some releases) and narrower MLPs. ``vit_macs`` and any timm tooling read the real
per-block widths from it. Whatever module sits at ``model.patch_drop`` (the SViTE+ token
selector, timm's PatchDropout) is carried over unchanged.

:func:`save_slim` writes architecture and weights in one file (atomically) so that
:func:`load_slim` rebuilds the model without the training config, through the safe
``torch.load(weights_only=True)``.

Example::

    from svite_search.engine.structured import S2ViTE, S2ViTEConfig

    engine = S2ViTE(model, optimizer, S2ViTEConfig(total_steps=100, head_density=0.5, mlp_density=0.5))
    slim = slim_model(model, engine)          # an S2ViTE, or a list of BlockMask; checks the outputs
    save_slim(slim, "slim.pt")
    same = load_slim("slim.pt")
    assert [b.attn.num_heads for b in same.blocks] == [h for h, _ in engine.structure()]
"""
from __future__ import annotations

import copy
import inspect
import os
import warnings
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..._torchvision_guard import ensure_torchvision
from ...errors import UserInputError
from ..._io import atomic_torch_save, load_torch_file
from ._structured import S2ViTE
from ._units import BlockMask, check_block_masks, masks_from_weights, unwrap_model, vit_blocks

ensure_torchvision()  # the timm imports below (in functions) import torchvision

FORMAT = "svite-search/slim-vit"
FORMAT_VERSION = 1


class SlimMismatchError(RuntimeError):
    """The slim model does not reproduce the masked model's outputs."""


class SlimAttention(nn.Module):
    """Multi-head self-attention with ``num_heads`` heads of width ``head_dim``, where
    ``num_heads · head_dim`` need not equal the embedding width.

    Parameter names match timm's ``Attention`` (``qkv``, ``q_norm``, ``k_norm``, ``proj``), so a
    slim block's state dict reads like a timm one. ``num_heads = 0`` is allowed: the block's
    attention is then the constant ``proj.bias``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        head_dim: int,
        *,
        qkv_bias: bool = True,
        proj_bias: bool = True,
        qk_norm_eps: float | None = None,
        dim_out: int | None = None,
        device: Any = None,
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.attn_dim = num_heads * head_dim
        self.scale = head_dim**-0.5
        self.qkv = nn.Linear(dim, 3 * self.attn_dim, bias=qkv_bias, device=device)
        if qk_norm_eps is None:
            self.q_norm: nn.Module = nn.Identity()
            self.k_norm: nn.Module = nn.Identity()
        else:
            self.q_norm = nn.LayerNorm(head_dim, eps=qk_norm_eps, device=device)
            self.k_norm = nn.LayerNorm(head_dim, eps=qk_norm_eps, device=device)
        self.attn_drop = nn.Dropout(0.0)
        self.proj = nn.Linear(self.attn_dim, dim_out or dim, bias=proj_bias, device=device)
        self.proj_drop = nn.Dropout(0.0)

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}, head_dim={self.head_dim}"

    def forward(
        self, x: torch.Tensor, attn_mask: torch.Tensor | None = None, is_causal: bool = False
    ) -> torch.Tensor:
        batch, tokens, _ = x.shape
        if self.num_heads == 0:
            return self.proj_drop(self.proj(x.new_zeros(batch, tokens, 0)))
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = self.q_norm(q), self.k_norm(k)
        x = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=attn_mask,
            dropout_p=self.attn_drop.p if self.training else 0.0,
            is_causal=is_causal,
        )
        x = x.transpose(1, 2).reshape(batch, tokens, self.attn_dim)
        return self.proj_drop(self.proj(x))


# ----------------------------------------------------------------------------- describing


def _timm_vit_classes() -> tuple[type, type, type, type]:
    from timm.layers import Mlp
    from timm.layers.attention import Attention
    from timm.models.vision_transformer import Block, VisionTransformer

    return VisionTransformer, Block, Attention, Mlp


#: The MLP activations a slim model file can name: each is rebuilt by timm's public
#: ``get_act_layer(name)``, and an activation is recognised by the class that call returns.
SLIM_ACTIVATIONS: tuple[str, ...] = (
    "gelu", "gelu_tanh", "quick_gelu", "relu", "relu6", "leaky_relu", "elu", "celu", "selu", "prelu",
    "silu", "swish", "mish", "hard_swish", "hard_sigmoid", "hard_mish", "sigmoid", "tanh", "identity",
)


def _act_name(act: nn.Module) -> str:
    """A name that rebuilds ``act`` through :func:`_act_layer`."""
    if type(act) is nn.GELU:
        return "gelu" if act.approximate == "none" else "gelu_tanh"
    from timm.layers import get_act_layer

    for name in SLIM_ACTIVATIONS:
        try:
            layer = get_act_layer(name)
        except KeyError:  # a timm release without this activation
            continue
        if type(act) is layer:
            return name
    raise UserInputError(f"cannot slim a ViT whose MLP activation is {type(act).__name__}")


def _act_layer(name: str) -> Any:
    if name == "gelu":
        return nn.GELU
    if name == "gelu_tanh":
        return partial(nn.GELU, approximate="tanh")
    from timm.layers import get_act_layer

    return get_act_layer(name)


def _layer_norm_eps(module: nn.Module, where: str) -> float:
    if not isinstance(module, nn.LayerNorm):
        raise UserInputError(f"cannot slim a ViT whose {where} is {type(module).__name__} (LayerNorm only)")
    return float(module.eps)


def _check_supported(model: nn.Module) -> None:
    VisionTransformer, Block, Attention, Mlp = _timm_vit_classes()
    if type(model) is not VisionTransformer:
        raise UserInputError(
            f"cannot slim a {type(model).__name__}: a timm VisionTransformer is needed"
        )
    if getattr(model, "attn_pool", None) is not None:
        raise UserInputError(f"cannot slim a ViT with global_pool={model.global_pool!r}")
    if not isinstance(model.patch_embed.norm, nn.Identity):
        raise UserInputError("cannot slim a ViT with a normalised patch embedding")
    for i, block in enumerate(vit_blocks(model)):
        attn, mlp = block.attn, block.mlp
        if type(block) is not Block or type(mlp) is not Mlp or type(attn) not in (Attention, SlimAttention):
            raise UserInputError(f"blocks.{i}: only timm's Block/Attention/Mlp can be slimmed")
        if not isinstance(getattr(attn, "norm", nn.Identity()), nn.Identity) or getattr(attn, "gate", None) is not None:
            raise UserInputError(f"blocks.{i}: attention output norm or gate cannot be slimmed")
        if not isinstance(mlp.norm, nn.Identity):
            raise UserInputError(f"blocks.{i}: an MLP hidden norm cannot be slimmed")


def _vit_spec(model: nn.Module) -> dict[str, Any]:
    """Constructor arguments of the non-block part of a timm VisionTransformer."""
    pe = model.patch_embed
    use_fc_norm = not isinstance(model.fc_norm, nn.Identity)
    norm = model.norm if not isinstance(model.norm, nn.Identity) else vit_blocks(model)[0].norm1
    return {
        "img_size": list(pe.img_size) if pe.img_size is not None else None,
        "patch_size": list(pe.patch_size),
        "in_chans": int(pe.proj.in_channels),
        "num_classes": int(model.num_classes),
        "global_pool": str(model.global_pool),
        "embed_dim": int(model.embed_dim),
        "class_token": model.cls_token is not None,
        "pos_embed": "learn" if model.pos_embed is not None else "none",
        "no_embed_class": bool(model.no_embed_class),
        "reg_tokens": int(model.num_reg_tokens),
        "pre_norm": not isinstance(model.norm_pre, nn.Identity),
        "final_norm": use_fc_norm or not isinstance(model.norm, nn.Identity),
        "fc_norm": use_fc_norm,
        "pool_include_prefix": bool(getattr(model, "pool_include_prefix", False)),
        "dynamic_img_size": bool(model.dynamic_img_size),
        "dynamic_img_pad": bool(getattr(pe, "dynamic_img_pad", False)),
        "norm_eps": _layer_norm_eps(norm, "norm layer"),
    }


def _block_spec(block: nn.Module, heads: int, neurons: int, proj_bias: bool) -> dict[str, Any]:
    attn, mlp = block.attn, block.mlp
    qk_norm = None if isinstance(attn.q_norm, nn.Identity) else _layer_norm_eps(attn.q_norm, "q_norm")
    return {
        "num_heads": int(heads),
        "head_dim": int(attn.head_dim),
        "mlp_hidden": int(neurons),
        "qkv_bias": attn.qkv.bias is not None,
        "proj_bias": bool(proj_bias),
        "qk_norm_eps": qk_norm,
        "fc1_bias": mlp.fc1.bias is not None,
        "fc2_bias": mlp.fc2.bias is not None,
        "act": _act_name(mlp.act),
        "layer_scale": not isinstance(block.ls1, nn.Identity),
        "norm_eps": _layer_norm_eps(block.norm1, "block norm"),
    }


def _patch_drop_spec(module: nn.Module) -> dict[str, Any] | None:
    """How to rebuild ``model.patch_drop`` (its weights travel in the state dict)."""
    if isinstance(module, nn.Identity):
        return None
    from timm.layers import PatchDropout

    if type(module) is PatchDropout:
        return {
            "kind": "timm.PatchDropout",
            "kwargs": {"prob": module.prob, "num_prefix_tokens": module.num_prefix_tokens, "ordered": module.ordered},
        }
    from ..tokens import TokenSelector

    if type(module) is TokenSelector:
        # Constructor arguments are read back from the attributes of the same name; the
        # embedding width is the scorer's input width.
        kwargs: dict[str, Any] = {}
        for name, param in inspect.signature(TokenSelector.__init__).parameters.items():
            if name == "self":
                continue
            if name == "embed_dim":
                kwargs[name] = int(module.scorer.in_features)
            elif hasattr(module, name):
                kwargs[name] = getattr(module, name)
            elif param.default is inspect.Parameter.empty:
                raise UserInputError(f"cannot describe the token selector: no attribute {name!r}")
        return {"kind": "svite_search.TokenSelector", "kwargs": kwargs}
    raise UserInputError(
        f"cannot save a model whose patch_drop is a {type(module).__name__} "
        "(supported: none, timm PatchDropout, the SViTE+ TokenSelector)"
    )


def _build_patch_drop(spec: dict[str, Any] | None) -> nn.Module:
    if spec is None:
        return nn.Identity()
    if spec["kind"] == "timm.PatchDropout":
        from timm.layers import PatchDropout

        return PatchDropout(**spec["kwargs"])
    if spec["kind"] == "svite_search.TokenSelector":
        from ..tokens import TokenSelector

        return TokenSelector(**spec["kwargs"])
    raise UserInputError(f"unknown patch_drop kind {spec['kind']!r}")


# ----------------------------------------------------------------------------- building


def _build_block(spec: dict[str, Any], dim: int, device: Any) -> nn.Module:
    """One slim timm ``Block`` of the widths in ``spec``."""
    _, Block, _, _ = _timm_vit_classes()
    block = Block(
        dim,
        num_heads=1,
        mlp_ratio=1.0,
        qkv_bias=spec["qkv_bias"],
        init_values=1.0 if spec["layer_scale"] else None,
        norm_layer=partial(nn.LayerNorm, eps=spec["norm_eps"]),
        act_layer=_act_layer(spec["act"]),
        device=device,
    )
    block.attn = SlimAttention(
        dim,
        spec["num_heads"],
        spec["head_dim"],
        qkv_bias=spec["qkv_bias"],
        proj_bias=spec["proj_bias"],
        qk_norm_eps=spec["qk_norm_eps"],
        device=device,
    )
    block.mlp.fc1 = nn.Linear(dim, spec["mlp_hidden"], bias=spec["fc1_bias"], device=device)
    block.mlp.fc2 = nn.Linear(spec["mlp_hidden"], dim, bias=spec["fc2_bias"], device=device)
    return block


def build_slim_vit(arch: dict[str, Any], *, device: Any = "meta") -> nn.Module:
    """An uninitialised slim ViT of architecture ``arch`` (load its weights with
    ``load_state_dict(..., assign=True)`` when built on the ``meta`` device)."""
    VisionTransformer, _, _, _ = _timm_vit_classes()
    vit = dict(arch["vit"])
    eps = vit.pop("norm_eps")
    for key in ("img_size", "patch_size"):
        if vit[key] is not None:
            vit[key] = tuple(vit[key])
    model = VisionTransformer(
        **vit,
        depth=0,
        num_heads=1,
        weight_init="skip",
        norm_layer=partial(nn.LayerNorm, eps=eps),
        device=device,
    )
    blocks = []
    dim = model.embed_dim
    with warnings.catch_warnings():  # a block may keep no head or neuron: zero-size weights
        warnings.filterwarnings("ignore", message="Initializing zero-element tensors")
        for spec in arch["blocks"]:
            blocks.append(_build_block(spec, dim, device))
    model.blocks = nn.Sequential(*blocks)
    reduction = model.patch_embed.feat_ratio() if hasattr(model.patch_embed, "feat_ratio") else vit["patch_size"]
    model.feature_info = [
        dict(module=f"blocks.{i}", num_chs=dim, reduction=reduction) for i in range(len(blocks))
    ]
    model.patch_drop = _build_patch_drop(arch.get("patch_drop"))
    return model


@torch.no_grad()
def _slim_block_state(block: nn.Module, mask: BlockMask) -> tuple[dict[str, torch.Tensor], bool]:
    """The slim block's tensors (names relative to the block) and whether it needs a proj bias."""
    attn, mlp = block.attn, block.mlp
    heads, head_dim = int(attn.num_heads), int(attn.head_dim)
    keep_h = mask.heads.to(attn.qkv.weight.device)
    keep_n = mask.neurons.to(mlp.fc1.weight.device)
    state = {k: v.detach().clone() for k, v in block.state_dict().items()}
    dim_in = attn.qkv.in_features
    qkv_w = attn.qkv.weight.detach().reshape(3, heads, head_dim, dim_in)
    state["attn.qkv.weight"] = qkv_w[:, keep_h].reshape(-1, dim_in).clone()
    proj_w = attn.proj.weight.detach().reshape(attn.proj.out_features, heads, head_dim)
    state["attn.proj.weight"] = proj_w[:, keep_h].reshape(attn.proj.out_features, -1).clone()
    fold = None
    if attn.qkv.bias is not None:
        qkv_b = attn.qkv.bias.detach().reshape(3, heads, head_dim)
        state["attn.qkv.bias"] = qkv_b[:, keep_h].reshape(-1).clone()
        off = ~keep_h
        if bool(off.any()):
            # Each inactive head outputs its value bias b_v for every token.
            b_v = qkv_b[2, off].double()
            fold = torch.einsum("ohd,hd->o", proj_w[:, off].double(), b_v)
    proj_bias = attn.proj.bias is not None or fold is not None
    if proj_bias:
        bias = attn.proj.bias.detach().double() if attn.proj.bias is not None else 0.0
        if fold is not None:
            bias = bias + fold
        state["attn.proj.bias"] = torch.as_tensor(bias).to(attn.proj.weight.dtype).clone()
    state["mlp.fc1.weight"] = mlp.fc1.weight.detach()[keep_n].clone()
    if mlp.fc1.bias is not None:
        state["mlp.fc1.bias"] = mlp.fc1.bias.detach()[keep_n].clone()
    state["mlp.fc2.weight"] = mlp.fc2.weight.detach()[:, keep_n].clone()
    return state, proj_bias


def _as_masks(model: nn.Module, units: Any) -> list[BlockMask]:
    if units is None:
        masks = masks_from_weights(model)
    elif isinstance(units, S2ViTE):
        masks = units.unit_masks()
    else:
        masks = [m if isinstance(m, BlockMask) else BlockMask(*m) for m in units]
    masks = [BlockMask(m.heads.detach().cpu().bool(), m.neurons.detach().cpu().bool()) for m in masks]
    check_block_masks(model, masks)
    return masks


def slim_model(
    model: nn.Module,
    units: Any = None,
    *,
    verify: bool = True,
) -> nn.Module:
    """A smaller timm ViT that computes what the masked ``model`` computes.

    ``units`` names the active heads and neurons: an :class:`S2ViTE` component, a list of
    :class:`BlockMask` (or ``(heads, neurons)`` boolean pairs) per block, or ``None`` to read
    them off the zeroed weights. ``model`` must already be masked with them (S²ViTE keeps it
    so). With ``verify`` (default), both models run on a random batch in eval mode and a
    :class:`SlimMismatchError` is raised unless the outputs agree to float tolerance, which
    also catches a model that was not masked with ``units``.
    """
    src = unwrap_model(model)
    _check_supported(src)
    masks = _as_masks(src, units)
    state = {k: v.detach().clone() for k, v in src.state_dict().items() if not k.startswith("blocks.")}
    block_specs = []
    for i, (block, mask) in enumerate(zip(vit_blocks(src), masks)):
        block_state, proj_bias = _slim_block_state(block, mask)
        state.update({f"blocks.{i}.{k}": v for k, v in block_state.items()})
        block_specs.append(_block_spec(block, int(mask.heads.sum()), int(mask.neurons.sum()), proj_bias))
    arch = {"vit": _vit_spec(src), "blocks": block_specs}
    slim = build_slim_vit(arch)
    slim.patch_drop = copy.deepcopy(src.patch_drop)
    slim.load_state_dict(state, strict=True, assign=True)
    reference = next(src.parameters())
    slim.to(device=reference.device, dtype=reference.dtype)
    slim.train(src.training)
    if verify:
        check_same_outputs(src, slim)
    return slim


def slim_architecture(model: nn.Module) -> dict[str, Any]:
    """The architecture record of a (slim or dense) timm ViT as it stands."""
    src = unwrap_model(model)
    _check_supported(src)
    return {
        "vit": _vit_spec(src),
        "blocks": [
            _block_spec(b, int(b.attn.num_heads), int(b.mlp.fc1.out_features), b.attn.proj.bias is not None)
            for b in vit_blocks(src)
        ],
        "patch_drop": _patch_drop_spec(src.patch_drop),
    }


# ----------------------------------------------------------------------------- checking


@torch.no_grad()
def check_same_outputs(
    reference: nn.Module, candidate: nn.Module, *, batch_size: int = 2, seed: int = 0
) -> float:
    """Run both models in eval mode on one seeded random batch; return the largest absolute
    difference, or raise :class:`SlimMismatchError` beyond float tolerance. Random draws
    inside the models (noise at evaluation) are seeded identically for both."""
    ref, cand = unwrap_model(reference), unwrap_model(candidate)
    param = next(ref.parameters())
    chans = ref.patch_embed.proj.in_channels
    height, width = ref.patch_embed.img_size
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(batch_size, chans, height, width, generator=generator)
    images = images.to(device=param.device, dtype=param.dtype)
    outputs = []
    for module in (ref, cand):
        was_training = module.training
        module.eval()
        try:
            with torch.random.fork_rng(devices=[param.device] if param.device.type == "cuda" else []):
                torch.manual_seed(seed)
                outputs.append(module(images).float())
        finally:
            module.train(was_training)
    a, b = outputs
    diff = float((a - b).abs().max()) if a.numel() else 0.0
    scale = max(1.0, float(a.abs().max()) if a.numel() else 1.0)
    rtol = 1e-4 if param.dtype in (torch.float32, torch.float64) else 2e-2
    if a.shape != b.shape or not diff <= rtol * scale:
        raise SlimMismatchError(
            f"slim model differs from the masked model (max |difference| {diff:.3g} at output "
            f"scale {scale:.3g}); is the model masked with these unit sets?"
        )
    return diff


# ----------------------------------------------------------------------------- files


def save_slim(model: nn.Module, path: str | os.PathLike[str], *, verify: bool = True) -> Path:
    """Write ``model`` (a slim or dense timm ViT) with its architecture to ``path``.

    The file is a plain dict of tensors and Python values, readable by
    ``torch.load(weights_only=True)``; it is written to a temporary file in the same directory
    and renamed, so an interrupted save leaves no half-written file. With ``verify``, the
    written architecture is rebuilt and must reproduce the model's outputs.
    """
    path = Path(path)
    src = unwrap_model(model)
    arch = slim_architecture(src)
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in src.state_dict().items()}
    payload = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "arch": arch,
        "dtype": str(next(src.parameters()).dtype).removeprefix("torch."),
        "state_dict": state,
    }
    if verify:
        rebuilt = _from_payload(payload, str(path))
        check_same_outputs(copy_to_cpu_float(src), rebuilt)
    atomic_torch_save(payload, path)
    return path


def copy_to_cpu_float(model: nn.Module) -> nn.Module:
    """The model itself when it already lives on the CPU in float32, else a CPU float32 copy
    (without its hooks' state being shared)."""
    param = next(model.parameters())
    if param.device.type == "cpu" and param.dtype == torch.float32:
        return model
    return copy.deepcopy(model).to(device="cpu", dtype=torch.float32)


def _from_payload(payload: Any, source: str) -> nn.Module:
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UserInputError(f"{source}: not a slim model file (no {FORMAT!r} header)")
    if payload.get("version") != FORMAT_VERSION:
        raise UserInputError(f"{source}: slim format version {payload.get('version')!r} is not {FORMAT_VERSION}")
    try:
        model = build_slim_vit(payload["arch"])
        model.load_state_dict(payload["state_dict"], strict=True, assign=True)
    except (KeyError, TypeError, RuntimeError) as err:
        raise UserInputError(f"{source}: slim model does not rebuild ({type(err).__name__}: {err})") from None
    return model.eval()


def load_slim(path: str | os.PathLike[str], *, map_location: Any = "cpu") -> nn.Module:
    """Rebuild a model written by :func:`save_slim` (in eval mode). A missing, damaged or
    foreign file is a :class:`UserInputError` naming the path, as for a training checkpoint."""
    path = Path(path)
    return _from_payload(load_torch_file(path, "slim model file", map_location=map_location), str(path))
