"""Margin specification, robust cross-entropy from margin bounds, and loss-fusion CROWN-IBP.

* :func:`margin_spec` — CTBench's ``construct_C``: rows ``e_y − e_i`` for ``i ≠ y`` (ascending i), so
  ``C @ z`` are the margins ``z_y − z_i`` (certified iff all lower bounds are > 0).
* :func:`robust_ce_from_margin_bounds` — CTBench's IBP / CROWN-IBP training loss: pseudo-logits
  ``[0, ub(z_i − z_y) = −lb(z_y − z_i) for i ≠ y]`` with label 0, then cross-entropy; an upper bound
  of the worst-case cross-entropy over the box (Wong & Kolter 2018; Gowal et al. 2018).
* :func:`loss_fusion_crown_ibp` — CROWN-IBP with loss fusion (Xu et al. 2020, auto_LiRPA §3.3; CTBench
  ``deeppoly_box_loss_fusion``): an upper bound of the worst-case cross-entropy obtained with a single
  back-substitution row instead of K−1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ctbench.bounds.ibp import ibp_forward
from ctbench.bounds.layers import check_box, parse_model
from ctbench.bounds.linear import backsub_lower
from ctbench.errors import CTBenchError


def margin_spec(y: torch.Tensor, num_classes: int, dtype=torch.float32) -> torch.Tensor:
    """Margin specification C (B, K−1, K): row j is ``e_y − e_i`` for the j-th class ``i ≠ y``.

    y: (B,) integer labels in [0, K).
    """
    if y.dim() != 1:
        raise CTBenchError(f"labels must have shape (B,), got {tuple(y.shape)}")
    if num_classes < 2:
        raise CTBenchError("margin specification needs at least 2 classes")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise CTBenchError(
            f"labels must lie in [0, {num_classes}), got range [{int(y.min())}, {int(y.max())}]"
        )
    B = y.shape[0]
    eye = torch.eye(num_classes, dtype=dtype, device=y.device)
    C = eye[y].unsqueeze(1) - eye.unsqueeze(0)  # (B, K, K): row i = e_y − e_i
    keep = ~torch.nn.functional.one_hot(y, num_classes).bool()  # (B, K)
    return C[keep].reshape(B, num_classes - 1, num_classes)


def pseudo_logits_from_margin_bounds(margin_lb: torch.Tensor) -> torch.Tensor:
    """(B, K−1) lower bounds of ``z_y − z_i`` → pseudo-logits (B, K) ``[0, −lb]`` (label 0)."""
    return F.pad(-margin_lb, (1, 0))


def robust_ce_from_margin_bounds(margin_lb: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of the pseudo-logits ``[0, −lb(z_y − z_i)]`` with label 0.

    margin_lb: (B, K−1) lower bounds of the margins, e.g. ``ibp_bounds(model, l, u, margin_spec(y, K))[0]``.
    Returns a scalar (``reduction`` "mean"/"sum") or (B,) ("none"): an upper bound of the worst-case
    cross-entropy over the box.
    """
    logits = pseudo_logits_from_margin_bounds(margin_lb)
    target = torch.zeros(margin_lb.shape[0], dtype=torch.long, device=margin_lb.device)
    return F.cross_entropy(logits, target, reduction=reduction)


def certified_from_margin_bounds(margin_lb: torch.Tensor) -> torch.Tensor:
    """(B,) bool: every margin lower bound is strictly positive (sound certification test)."""
    return (margin_lb > 0).all(dim=1)


def loss_fusion_terms(model, lower, upper, y, cut_points=True):
    """Loss-fusion CROWN-IBP per sample, with the IBP pass it is built on.

    Returns ``(loss (B,), margin_lb_ibp (B, K−1), bounds)`` where ``bounds`` are the IBP layer bounds of
    the same pass in the ``ibp_bounds(..., store_intermediate=True)`` format (input box after
    Normalization, then the pre-activation ``(l, u)`` of every ReLU) — reused by Shi et al.'s warm-up
    regularizer and the robust-accuracy estimate without another pass. See
    :func:`loss_fusion_crown_ibp` for the bound.

    ``cut_points`` (default, as CTBench's ``deeppoly_box_loss_fusion``): the back-substitution of
    ``C_lf`` is also concretized on every layer's IBP box and the tightest value kept
    (:func:`ctbench.bounds.linear.backsub_lower`); ``False`` gives auto_LiRPA's loss fusion.

    Overflow: the exponentials are rescaled by ``e^{−M}``, ``M = max(0, max_j −l_j)`` per sample (a
    constant): the chord slopes, the offset and — the CROWN lower bound being positively homogeneous
    in the specification row — the back-substituted bound all scale by ``e^{−M}``, so
    ``log(offset − lb) = M + log(õ − lb̃)`` exactly, without overflowing ``e^{−l_j}`` when the IBP
    margin bounds are below about −88 (float32; common at IBP initialisation). The ``1e-5`` floor of the
    original scales the same way.
    """
    check_box(lower, upper)
    layers = parse_model(model)
    c_in, r_in = (upper + lower) * 0.5, (upper - lower) * 0.5
    C = margin_spec(y, _num_outputs(layers), dtype=lower.dtype)
    c, r, relu_bounds, input_bounds = ibp_forward(layers, c_in, r_in, C, store=True)
    l, u = c - r, c + r  # (B, K-1) IBP bounds of the margins
    M = (-l).amax(1, keepdim=True).clamp(min=0).detach()  # (B, 1)
    el, eu = torch.exp(-l - M), torch.exp(-u - M)
    slope = (eu - el) / (u - l + 1e-10)  # the chord slopes times e^{-M}
    offset = torch.exp(-M.squeeze(1)) + (el - slope * l).sum(1)  # (B,) times e^{-M}
    C_lf = -(slope.unsqueeze(-1) * C).sum(1, keepdim=True)  # (B, 1, K)
    lb = backsub_lower(layers, len(layers), C_lf, relu_bounds, c_in, r_in, cut_points=cut_points).squeeze(1)
    floor = (1e-5 * torch.exp(-M.squeeze(1))).clamp(min=torch.finfo(lower.dtype).tiny)
    loss = M.squeeze(1) + torch.log(torch.maximum(offset - lb, floor))
    bounds = [input_bounds if input_bounds is not None else (lower, upper)]
    bounds += [relu_bounds[i] for i in sorted(relu_bounds)]
    return loss, l, bounds


def loss_fusion_crown_ibp(model, lower, upper, y, reduction: str = "mean", cut_points: bool = True) -> torch.Tensor:
    """Loss-fusion CROWN-IBP robust loss (Xu et al. 2020; CTBench ``deeppoly_box_loss_fusion``).

    1. IBP bounds ``[l_j, u_j]`` of the margins ``m_j = z_y − z_j`` (j ≠ y), (B, K−1), and IBP
       pre-activation bounds for every ReLU.
    2. Chord of the convex ``exp(−m)`` on ``[l_j, u_j]``:
       ``slope_j = (e^{−u_j} − e^{−l_j}) / (u_j − l_j + 1e-10)`` (≤ 0; the 1e-10 only flattens the line,
       which stays above the chord), so ``1 + Σ_j e^{−m_j} ≤ offset − C_lf·z`` with
       ``offset = 1 + Σ_j (e^{−l_j} − slope_j·l_j)`` (B,) and ``C_lf = −Σ_j slope_j·C_j`` (B, 1, K).
    3. Back-substitution (CROWN-IBP) gives ``lb ≤ C_lf·z``; since ``CE(z, y) = log(1 + Σ_j e^{−m_j})``,
       ``CE ≤ log(offset − lb)``. Loss = ``log(clip(offset − lb, min=1e-5))``, averaged (or summed /
       per sample with ``reduction``); computed overflow-free (:func:`loss_fusion_terms`).

    lower, upper: (B, *input); y: (B,). BatchNorm: eval or frozen clean-batch statistics. Differentiable.
    ``cut_points``: CTBench's cut points in step 3 (default; ``False``: auto_LiRPA's loss fusion).
    """
    loss = loss_fusion_terms(model, lower, upper, y, cut_points=cut_points)[0]
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ValueError(f"unknown reduction {reduction!r}")


def _num_outputs(layers) -> int:
    from ctbench.bounds.layers import LinearLayer

    for layer in reversed(layers):
        if isinstance(layer, LinearLayer):
            return layer.module.out_features
    raise CTBenchError("loss fusion needs a model whose last affine layer is nn.Linear (K logits)")
