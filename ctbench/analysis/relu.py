"""ReLU pre-activations of a stored model, concrete and on IBP boxes — shared by the per-model analyses.

The model is read through the bound engine's view of it (:func:`ctbench.bounds.layers.parse_model`:
BatchNorm2d fused into the preceding convolution, eval-mode running statistics), so the concrete
pre-activations here and the IBP boxes of :func:`ctbench.bounds.ibp_bounds` belong to the same network.

Conventions (paper §5.1, §5.3; original ``get_stat.relu_loop`` and ``run_unstable_relu_lower_bound``):

* a neuron with pre-activation interval [l, u] is **dead** if u ≤ 0, **active** if l ≥ 0 and u > 0, and
  **unstable** if l < 0 < u. The three partition all neurons; a neuron whose interval only touches 0
  is stable (its ReLU is linear on the box). The original counts dead as u < 0 and active as l > 0 and
  calls the rest unstable, which differs only for intervals ending exactly at 0.
* on a clean input (zero-width box) a neuron is active iff its pre-activation z > 0; model utilization
  (paper §5.3) is the fraction of active neurons.

Shapes: inputs ``x`` (B, C, H, W) in [0, 1]; each ReLU layer's pre-activations (B, *shape), returned
flattened to (B, n_k); "all neurons" means all ReLU neurons of all layers, n = Σ n_k.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch

from ctbench.bounds import ibp_bounds
from ctbench.bounds.layers import ReLULayer, parse_model
from ctbench.errors import CTBenchError


def input_box(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The L∞ ball of radius ``eps`` around ``x`` clipped to [0, 1]: ``(lower, upper)``, each like ``x``."""
    return (x - eps).clamp(min=0.0), (x + eps).clamp(max=1.0)


def relu_count(model: torch.nn.Module) -> int:
    """Number of ReLU layers of ``model`` (CTBenchError if it has none: nothing to analyse)."""
    count = sum(isinstance(layer, ReLULayer) for layer in parse_model(model))
    if count == 0:
        raise CTBenchError("the model has no ReLU layers; ReLU statistics are undefined")
    return count


@torch.no_grad()
def preactivations(model: torch.nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Concrete pre-activations of every ReLU layer for inputs ``x``: a list of (B, n_k), in layer order."""
    out = []
    for layer in parse_model(model):
        if isinstance(layer, ReLULayer):
            out.append(x.flatten(1))
        x = layer.forward(x)
    return out


@torch.no_grad()
def ibp_preactivation_bounds(model: torch.nn.Module, x: torch.Tensor, eps: float) -> list[tuple[torch.Tensor, ...]]:
    """IBP bounds ``(l, u)`` (each (B, n_k)) of every ReLU's pre-activation over :func:`input_box`."""
    lower, upper = input_box(x, eps)
    _, _, bounds = ibp_bounds(model, lower, upper, store_intermediate=True)
    return [(l.flatten(1), u.flatten(1)) for l, u in bounds[1:]]


def status(l: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-input counts (B,) of dead (u ≤ 0), active (l ≥ 0 < u) and unstable (l < 0 < u) neurons."""
    dead = (u <= 0).sum(1)
    unstable = ((l < 0) & (u > 0)).sum(1)
    return dead, (u > 0).sum(1) - unstable, unstable


def stable_seed(*parts) -> int:
    """A 63-bit seed from ``parts`` (e.g. the analysis seed, ε, a sample's position in its split): the same
    on every run, process and machine (sha256 of their ``repr``s; floats by ``repr(float)``, so the ε
    strings "0.3" and "3/10" give one seed). Seeds every random draw of the per-model analyses, so a
    sample's value depends on nothing else (not on the other ε requested, the batch size or order)."""
    text = "|".join(repr(float(p)) if isinstance(p, float) else repr(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def per_sample_noise(seeds: Sequence[int], k: int, shape, *, dtype=torch.float32) -> torch.Tensor:
    """``N(0, 1)`` noise (k, B, *shape) on the CPU, column b drawn at once from a generator seeded with
    ``seeds[b]`` (B ints): the same values on every device and for every batch composition."""
    gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
    return torch.stack([torch.randn((k, *shape), generator=g, dtype=dtype) for g in gens], 1)


@torch.no_grad()
def sampled_unstable(model: torch.nn.Module, x: torch.Tensor, eps: float, samples: int,
                     seeds: Sequence[int], chunk: int = 10) -> list[torch.Tensor]:
    """Neurons seen both negative and positive over ``samples`` random points of the ε-box (paper §5.1).

    Points: ``clamp(x + eps · clamp(N(0, 1), −1, 1), 0, 1)`` (original ``run_unstable_relu_lower_bound``;
    the clean input itself is not among them); input b's ``samples`` noise draws come from its own CPU
    generator seeded with ``seeds[b]`` (B ints, e.g. :func:`stable_seed` of (seed, ε, position)), so its
    result does not depend on the other inputs of the batch, on ``chunk`` or on the device. ``chunk``
    points per input go through the network in one batch of ``chunk · B`` inputs. Returns one bool tensor
    (B, n_k) per ReLU layer. Every point lies in the box, so this set is contained in IBP's unstable set:
    a lower estimate of the true ratio.
    """
    if samples < 1:
        raise CTBenchError(f"the number of samples must be >= 1, got {samples}")
    B = x.shape[0]
    if len(seeds) != B:
        raise CTBenchError(f"sampled_unstable needs one seed per input ({B}), got {len(seeds)}")
    neg = pos = None
    noise_all = per_sample_noise(seeds, samples, x.shape[1:], dtype=x.dtype)  # (samples, B, C, H, W)
    for start in range(0, samples, chunk):
        k = min(chunk, samples - start)
        noise = noise_all[start:start + k].to(x.device)
        points = (x.unsqueeze(0) + eps * noise.clamp(-1, 1)).clamp(0, 1).flatten(0, 1)  # (k·B, C, H, W)
        pre = [z.reshape(k, B, -1) for z in preactivations(model, points)]
        seen_neg = [(z < 0).any(0) for z in pre]
        seen_pos = [(z > 0).any(0) for z in pre]
        neg = seen_neg if neg is None else [a | b for a, b in zip(neg, seen_neg, strict=True)]
        pos = seen_pos if pos is None else [a | b for a, b in zip(pos, seen_pos, strict=True)]
    return [a & b for a, b in zip(neg, pos, strict=True)]
