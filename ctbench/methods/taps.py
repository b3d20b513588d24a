"""TAPS (Mao, Müller, Fischer & Vechev, "Connecting Certified and Adversarial Training", NeurIPS 2023);
CTBench's ``TAPSModelWrapper`` (``--use-taps-training``), paper §3.2.

The network is split at a block boundary into a feature extractor ``f`` (IBP) and a classifier ``g``
(PGD) holding the last ``classifier_size`` ReLU layers (:func:`split_classifier`; ``classifier_size``
0 = only the affine layers after the last ReLU).

1. IBP through ``f``: the latent box ``[l̂, û]`` (b, *latent).
2. Under ``no_grad``, one PGD search per margin ``m_j = z_y − z_j`` (j ≠ y), all batched
   (:func:`latent_pivots`): uniform random start in the latent box, ``attack_steps`` sign steps of
   ``lr·(û − l̂)`` with ``lr₀ = max(0.2, 2/steps)`` (×0.2 at 70 % for 10-50 steps, at 40/70 % for
   51-80, at 30/60/80 % beyond), ``attack_restarts`` restarts; per margin the point with the smallest
   margin is kept → pivots ``p`` (b, K−1, *latent).
3. Gradient link (:class:`RectifiedLinearLink`, original ``_RectifiedLinearGradientLink``, c = 0.5):
   the forward value is ``p``; backward gives no gradient to ``p`` itself and sends ``∂L/∂p`` to
   ``û`` with weight ``(p − (û − c(û − l̂)))/(c(û − l̂))`` where ``p ≥ û − c(û − l̂)`` (a ramp from 0 to 1
   as the pivot approaches the bound), symmetrically to ``l̂``, summed over the K−1 pivots. So the
   features are trained as if the pivots were (soft) functions of the IBP box.
4. TAPS estimate of the margin bounds ``ê_j = m_j(g(p_j))`` (differentiable in ``g``'s parameters and,
   through the link, in ``f``'s) → ``L_TAPS = CE([0, −ê], 0)``; ``L_IBP`` = the IBP loss of the whole
   network (the box of ``f`` through ``g``).
5. ``L_rob = s_w(mean_i L_TAPS,i) · mean_i L_IBP,i`` — the original's product of the two **batch
   means** (``_GradExpander(CE_taps) · CE_box``), for which the TAPS gradient scales of Tables 6–10
   were tuned; ``s_w`` is the identity forward and multiplies the gradient by the **TAPS gradient
   scale** w (original ``_GradExpander``). Config ``taps_loss: per_sample`` gives
   ``mean_i s_w(L_TAPS,i) · L_IBP,i`` instead. ``ibp_multiplier = False`` (class/instance attribute,
   the original ``--no-ibp-multiplier``) gives ``s_w(mean_i L_TAPS,i)`` (both forms agree then).
   The batch-mean product is not a per-sample mean, so the method is not ``separable``: under
   gradient accumulation the base class computes its robust loss on the full batch
   (:meth:`~ctbench.methods.base.TrainingMethod.step`); the per-sample form accumulates exactly.

While ε ramps up (``self.ramp_active``) TAPS trains (and validates) with plain IBP, as the original
(``disable_TAPS`` during annealing). Robust-accuracy estimate: all TAPS-estimated margins > 0 (not sound).
Warm-up regularizer: the IBP bounds of ``f`` and ``g`` together (= the whole network's IBP bounds).

Hyperparameters (``config/hparams.yaml``): ``classifier_size``, ``taps_grad_scale`` (w),
``attack_steps`` / ``attack_restarts`` (latent search; ``attack_step_size`` is not used here),
``relu_shrink`` (IBP part, training only), ``train_eps``, ``w_rob``, ``l1``, ``fast_reg``,
``grad_accu_batch``. Not implemented: the original ``--estimation-batch`` chunking of the search.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from ctbench.bounds import certified_from_margin_bounds, ibp_bounds, margin_spec, robust_ce_from_margin_bounds
from ctbench.errors import CTBenchError
from ctbench.methods import METHODS
from ctbench.methods.ibp import IBP, num_classes

logger = logging.getLogger(__name__)


def _flat_layers(model: nn.Module) -> list[nn.Module]:
    out = []
    for m in model.children() if isinstance(model, nn.Sequential) else [model]:
        out += _flat_layers(m) if isinstance(m, nn.Sequential) else [m]
    return out


def split_classifier(model: nn.Module, classifier_size: int) -> tuple[nn.Sequential, nn.Sequential]:
    """(feature extractor, classifier) sharing ``model``'s modules; the classifier holds the last
    ``classifier_size`` ReLU layers and starts right after the preceding ReLU (Flatten goes to the
    feature extractor, as in the original "17 4" split of CNN7)."""
    layers = _flat_layers(model)
    relus = [i for i, m in enumerate(layers) if isinstance(m, nn.ReLU)]
    if not 0 <= classifier_size <= len(relus):
        raise CTBenchError(f"classifier_size must lie in [0, {len(relus)}], got {classifier_size}")
    start = relus[-(classifier_size + 1)] + 1 if classifier_size < len(relus) else 0
    while start < len(layers) - 1 and isinstance(layers[start], nn.Flatten):
        start += 1
    return nn.Sequential(*layers[:start]), nn.Sequential(*layers[start:])


def margins(classifier: nn.Module, pts: torch.Tensor, C: torch.Tensor) -> torch.Tensor:
    """Pivot j's own margin ``C_j · g(p_j)``: pts (b, S, *latent), C (b, S, K) → (b, S)."""
    b, S = pts.shape[:2]
    z = classifier(pts.reshape(b * S, *pts.shape[2:])).reshape(b, S, -1)
    return (C * z).sum(-1)


def _lr_factor(it: int, steps: int) -> float:
    if 10 <= steps <= 50:
        fractions = (0.7,)
    elif 50 < steps <= 80:
        fractions = (0.4, 0.7)
    elif steps > 80:
        fractions = (0.3, 0.6, 0.8)
    else:
        fractions = ()
    return 0.2 ** sum(it >= int(steps * f) for f in fractions)


def latent_pivots(classifier, lower, upper, C, steps: int, restarts: int) -> torch.Tensor:
    """Per margin j, the point of the latent box ``[lower, upper]`` (b, *latent) with the smallest margin
    ``C_j·g(p)`` found by PGD; returns (b, S, *latent), detached. Uses the classifier's current mode."""
    b, S = C.shape[:2]
    lo = lower.detach().unsqueeze(1).expand(b, S, *lower.shape[1:])
    hi = upper.detach().unsqueeze(1).expand(b, S, *upper.shape[1:])
    width = hi - lo
    lr0 = max(0.2, 2.0 / max(steps, 1))
    best = torch.full((b, S), float("inf"), dtype=lower.dtype, device=lower.device)
    best_pts = lo.clone(memory_format=torch.contiguous_format)
    params = list(classifier.parameters())
    flags = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(False)
        for _ in range(restarts):
            pts = lo + width * torch.rand_like(lo)
            for it in range(steps + 1):
                pts.requires_grad_(it < steps)
                with torch.set_grad_enabled(it < steps):
                    m = margins(classifier, pts, C)
                better = m.detach() < best
                best = torch.where(better, m.detach(), best)
                best_pts[better] = pts.detach()[better]
                if it == steps:
                    break
                with torch.enable_grad():
                    (grad,) = torch.autograd.grad(m.sum(), pts)
                with torch.no_grad():
                    pts = pts.detach() - (lr0 * _lr_factor(it, steps)) * width * grad.sign()
                    pts = torch.minimum(torch.maximum(pts, lo), hi)
    finally:
        for p, flag in zip(params, flags, strict=True):
            p.requires_grad_(flag)
    return best_pts


class RectifiedLinearLink(torch.autograd.Function):
    """Identity on the pivots (b, S, *latent); backward routes their gradient to the bounds (b, *latent)."""

    @staticmethod
    def forward(ctx, lower, upper, pts, c: float = 0.5, tol: float = 1e-5):
        ctx.save_for_backward(lower, upper, pts)
        ctx.c, ctx.tol = c, tol
        return pts.clone()

    @staticmethod
    def backward(ctx, grad):
        lower, upper, x = ctx.saved_tensors
        lo, hi = lower.unsqueeze(1), upper.unsqueeze(1)
        slack = ctx.c * (hi - lo)
        denom = slack.clamp(min=ctx.tol)
        thr_u, thr_l = hi - slack, lo + slack
        g_up = ((x >= thr_u) * grad * (x - thr_u).clamp(min=0.5 * ctx.tol) / denom).sum(1)
        g_lo = ((x <= thr_l) * grad * (thr_l - x).clamp(min=0.5 * ctx.tol) / denom).sum(1)
        return g_lo, g_up, None, None, None


class GradScale(torch.autograd.Function):
    """Identity forward; backward multiplies the gradient by ``w`` (original ``_GradExpander``)."""

    @staticmethod
    def forward(ctx, x, w: float):
        ctx.w = w
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.w, None


@METHODS.register("taps")
class TAPS(IBP):
    name = "taps"
    #: Multiply the TAPS loss by the IBP loss (the original default; ``--no-ibp-multiplier`` = False).
    ibp_multiplier: bool = True
    #: Soft threshold c of the rectified linear gradient link (original ``--soft-thre`` 0.5).
    link_threshold: float = 0.5

    #: Default form (batch-mean product): not a per-sample mean; an instance with ``taps_loss: per_sample``
    #: (or without the IBP multiplier) is separable.
    separable = False
    #: ``taps_loss`` values: the original's product of batch means, or the per-sample product.
    LOSS_FORMS = ("batch_mean", "per_sample")

    def __init__(self, config: dict):
        super().__init__(config)
        form = self.config.get("taps_loss") or "batch_mean"
        if form not in self.LOSS_FORMS:
            raise CTBenchError(f"taps_loss must be one of {', '.join(self.LOSS_FORMS)}, got {form!r}")
        self.loss_form = form
        self.separable = form == "per_sample" or not self.ibp_multiplier
        size, scale = self.config.get("classifier_size"), self.config.get("taps_grad_scale")
        if size is None:
            raise CTBenchError(f"method {self.name!r} needs classifier_size in its config")
        self.classifier_size = int(size)
        self.grad_scale = float(scale) if scale is not None else 1.0
        self._warned_whole_network = False

    def taps_loss(self, model, lower, upper, y):
        """(mean robust loss, robust_correct (b,)) of TAPS over ``[lower, upper]`` (module docstring)."""
        if self.ramp_active:
            return self.ibp_loss(model, lower, upper, y)
        features, classifier = split_classifier(model, self.classifier_size)
        C = margin_spec(y, num_classes(model), dtype=lower.dtype)
        shrink = self.shrink(model)
        opts = {"store_intermediate": True, "relu_shrinkage": shrink}
        if len(features):
            lat_l, lat_u, fb = ibp_bounds(features, lower, upper, **opts)
        else:
            lat_l, lat_u, fb = lower, upper, []
            if not self._warned_whole_network:
                self._warned_whole_network = True
                logger.warning("%s: classifier_size %d puts every ReLU layer of the model in the classifier: the "
                               "TAPS estimate is a PGD attack on the input box (no IBP part); Tables 6-10's sizes "
                               "are CNN7's (6 ReLU layers)", self.name, self.classifier_size)
        lb_ibp, _, cb = ibp_bounds(classifier, lat_l, lat_u, C, **opts)
        if model.training:
            self.store_bounds(fb + cb[1:] if fb else cb)
        pts = latent_pivots(classifier, lat_l, lat_u, C, self.attack_steps, self.attack_restarts)
        linked = RectifiedLinearLink.apply(lat_l, lat_u, pts, self.link_threshold, 1e-5)
        est = margins(classifier, linked, C)
        taps_ce = robust_ce_from_margin_bounds(est, reduction="none")  # (b,)
        ibp_ce = robust_ce_from_margin_bounds(lb_ibp, reduction="none")  # (b,)
        return self.combine(taps_ce, ibp_ce), certified_from_margin_bounds(est.detach())

    def combine(self, taps_ce: torch.Tensor, ibp_ce: torch.Tensor) -> torch.Tensor:
        """The robust loss from the per-sample TAPS and IBP cross-entropies (b,), module docstring step 5."""
        if not self.ibp_multiplier:
            return GradScale.apply(taps_ce.mean(), self.grad_scale)
        if self.loss_form == "per_sample":
            return (GradScale.apply(taps_ce, self.grad_scale) * ibp_ce).mean()
        return GradScale.apply(taps_ce.mean(), self.grad_scale) * ibp_ce.mean()

    def robust_loss(self, model, x, y, eps, lower, upper):
        return self.taps_loss(model, lower, upper, y)
