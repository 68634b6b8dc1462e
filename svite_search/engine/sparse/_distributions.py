"""How a global weight density is spread over layers: ERK, ER and uniform.

ERK (Erdős–Rényi–Kernel, from RigL) gives each layer a density proportional to
``sum(shape) / prod(shape)``, so small layers (``attn.proj``) keep more of their weights than
large ones (``mlp.fc1``). Layers whose density would exceed 1 are made dense and the remaining
budget is re-solved over the others (the "dense-layer loop"). ER uses the 2-D formula
``(n_out + n_in) / (n_out · n_in)`` for every layer, ignoring a convolution's kernel size; uniform
gives every layer the global density.

Densities are real numbers; :func:`layer_counts` turns them into exact integer counts of active
weights so that every mask of a run has exactly the same number of active entries.

Sanity point (DeiT-Small, ERK, d = 0.5): ``attn.qkv`` ≈ 0.504, ``attn.proj`` ≈ 0.756; at
d = 0.7 every ``attn.proj`` is dense.
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

from ...errors import ConfigError

#: The distribution names understood by :func:`layer_densities`.
DISTRIBUTIONS: tuple[str, ...] = ("erk", "er", "uniform")


def check_density(density: float, field: str = "density") -> float:
    """A global density must lie in (0, 1]; anything else is a configuration error."""
    if isinstance(density, bool) or not isinstance(density, (int, float)) or not 0.0 < density <= 1.0:
        raise ConfigError(field, f"{density!r} must be in (0, 1]")
    return float(density)


def check_distribution(distribution: str, field: str = "distribution") -> str:
    """Reject unknown names (the reference code silently produced all-zero masks for them)."""
    if distribution not in DISTRIBUTIONS:
        raise ConfigError(field, f"{distribution!r} is not one of {', '.join(DISTRIBUTIONS)}")
    return distribution


def _raw_score(shape: Sequence[int], distribution: str) -> float:
    if distribution == "erk":
        return sum(shape) / math.prod(shape)
    n_out, n_in = shape[0], shape[1]  # er: the 2-D formula, whatever the kernel
    return (n_out + n_in) / (n_out * n_in)


def layer_densities(
    shapes: Mapping[str, Sequence[int]], density: float, distribution: str = "erk"
) -> dict[str, float]:
    """Per-layer densities whose size-weighted mean is ``density``.

    Args:
        shapes: weight name -> shape (2-D linear or 4-D convolution weights).
        density: global density over all the given weights, in (0, 1].
        distribution: ``erk``, ``er`` or ``uniform``.

    Example::

        from svite_search.engine.sparse import masked_parameters

        model = timm.create_model("deit_small_patch16_224")
        shapes = {n: p.shape for n, p in masked_parameters(model).items()}
        densities = layer_densities(shapes, 0.5, "erk")
        assert round(densities["blocks.0.attn.proj.weight"], 3) == 0.756
        assert round(densities["blocks.0.attn.qkv.weight"], 3) == 0.504
    """
    density = check_density(density)
    check_distribution(distribution)
    if distribution == "uniform":
        return {name: density for name in shapes}
    sizes = {name: math.prod(shape) for name, shape in shapes.items()}
    raw = {name: _raw_score(shape, distribution) for name, shape in shapes.items()}
    dense: set[str] = set()
    while True:
        sparse = [name for name in shapes if name not in dense]
        if not sparse:
            break
        # Σ_sparse ε·r_l·n_l = d·Σ_sparse n_l − (1 − d)·Σ_dense n_l
        rhs = density * sum(sizes[n] for n in sparse) - (1.0 - density) * sum(sizes[n] for n in dense)
        divisor = sum(raw[n] * sizes[n] for n in sparse)
        epsilon = rhs / divisor
        top = max(raw[n] for n in sparse)
        if epsilon * top <= 1.0:
            break
        dense.update(n for n in sparse if raw[n] == top)
    return {name: 1.0 if name in dense else epsilon * raw[name] for name in shapes}


def layer_counts(shapes: Mapping[str, Sequence[int]], densities: Mapping[str, float]) -> dict[str, int]:
    """Exact numbers of active weights per layer for the given per-layer densities.

    Each layer gets ``density_l · n_l`` rounded down or up; the layers with the largest fractional
    parts are rounded up, just enough for the total to be ``round(Σ density_l · n_l)``. So each
    count is within one weight of its density, and the global density is exact.
    """
    sizes = {name: math.prod(shape) for name, shape in shapes.items()}
    wanted = {name: min(max(densities[name], 0.0), 1.0) * sizes[name] for name in shapes}
    counts = {name: min(int(math.floor(w)), sizes[name]) for name, w in wanted.items()}
    missing = round(sum(wanted.values())) - sum(counts.values())
    by_fraction = sorted(
        (name for name in shapes if counts[name] < sizes[name]),
        key=lambda name: wanted[name] - counts[name],
        reverse=True,
    )
    for name in by_fraction[: max(missing, 0)]:
        counts[name] += 1
    return counts
