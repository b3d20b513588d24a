"""alpha-CROWN (Xu et al. 2021, "Fast and Complete"): CROWN with optimized lower ReLU slopes.

For certification (no gradient to the model). Intermediate (pre-ReLU) bounds are CROWN bounds
(``linear.intermediate_bounds(mode="CROWN")``), computed once and fixed. For the final bound, every
unstable ReLU neuron gets a lower slope ``α ∈ [0, 1]`` per batch element and per specification row
(and separately for the lower and the upper bound: the rows are stacked ``[C; −C]``), shape
(B, 2S, *shape) per ReLU layer, initialized from CROWN's adaptive slope (1 if u ≥ −l else 0). Any
``α ∈ [0, 1]`` gives a sound lower line of the ReLU, so every iterate is a sound bound; Adam ascends
the sum of the lower bounds for ``iterations`` steps (projected to [0, 1]) and the elementwise best
bound seen is returned. The first iterate is exactly CROWN, so the result is never looser than CROWN.
"""

from __future__ import annotations

import torch

from ctbench.bounds.layers import check_box, parse_model
from ctbench.bounds.linear import (
    backsub_lower,
    intermediate_bounds,
    relu_relaxation,
    row_chunks,
    spec_rows,
    unstable_mask,
    widest_layer,
)

DEFAULT_ITERATIONS = 20
DEFAULT_LR = 0.5


def alpha_crown_bounds(
    model, lower, upper, C=None, *, iterations=DEFAULT_ITERATIONS, lr=DEFAULT_LR, bound_upper=True
):
    """alpha-CROWN bounds of ``C @ model(x)``: ``(lb, ub)`` each (B, S) (ub None if not ``bound_upper``).

    lower, upper: (B, *input); C: (B, S, K) or None (the K logits). ``iterations`` Adam steps on the
    slopes with learning rate ``lr``. Returned tensors are detached (certification use).

    The slopes of different specification rows never interact (the objective is a sum over rows and
    Adam acts elementwise), so rows are optimized in chunks when their slope tensors would exceed
    ``linear.MAX_SPEC_ELEMENTS`` (``linear.row_chunks``): the same result with bounded memory.
    """
    check_box(lower, upper)
    if iterations < 0:
        raise ValueError("iterations must be >= 0")
    layers = parse_model(model)
    c_in, r_in = (upper + lower).detach() * 0.5, (upper - lower).detach() * 0.5
    with torch.no_grad():
        relu_bounds, (c_out, _) = intermediate_bounds(layers, c_in, r_in, "CROWN")
        relu_bounds = {i: (l.detach(), u.detach()) for i, (l, u) in relu_bounds.items()}
        Cs = spec_rows(C, c_out).detach()
        S = Cs.shape[1]
        A = torch.cat([Cs, -Cs], 1) if bound_upper else Cs
    chunks = row_chunks(A.shape[0], A.shape[1], widest_layer(relu_bounds, c_in))
    best = torch.cat([_optimize_rows(layers, A[:, sl], relu_bounds, c_in, r_in, iterations, lr) for sl in chunks], 1)
    if not bound_upper:
        return best, None
    return best[:, :S], -best[:, S:]


def _optimize_rows(layers, A, relu_bounds, c_in, r_in, iterations, lr):
    """Best lower bound (B, rows) of ``A·f(x)`` over CROWN and ``iterations`` Adam steps on the slopes."""
    rows = A.shape[1]
    with torch.no_grad():
        best = backsub_lower(layers, len(layers), A, relu_bounds, c_in, r_in)  # plain CROWN
    alphas = {}
    for i, (l, u) in relu_bounds.items():
        adaptive = relu_relaxation(l, u)[2]
        if bool(unstable_mask(l, u).any()):
            alphas[i] = (
                adaptive.unsqueeze(1).expand(-1, rows, *adaptive.shape[1:]).clone().requires_grad_(True)
            )
    if alphas and iterations > 0:
        params = list(alphas.values())
        # Plain Adam (β = 0.9, 0.999), written out: torch.optim's first step imports torch._dynamo (seconds).
        m1 = [torch.zeros_like(p) for p in params]
        m2 = [torch.zeros_like(p) for p in params]
        b1, b2, eps = 0.9, 0.999, 1e-8
        with torch.enable_grad():
            for step in range(iterations + 1):
                lb = backsub_lower(layers, len(layers), A, relu_bounds, c_in, r_in, alphas)
                best = torch.maximum(best, lb.detach())
                if step == iterations:
                    break
                grads = torch.autograd.grad(-lb.sum(), params)
                with torch.no_grad():
                    t = step + 1
                    for p, g, v1, v2 in zip(params, grads, m1, m2, strict=True):
                        v1.mul_(b1).add_(g, alpha=1 - b1)
                        v2.mul_(b2).addcmul_(g, g, value=1 - b2)
                        denom = (v2 / (1 - b2**t)).sqrt_().add_(eps)
                        p.addcdiv_(v1, denom, value=-lr / (1 - b1**t))
                        p.clamp_(0.0, 1.0)
    return best
