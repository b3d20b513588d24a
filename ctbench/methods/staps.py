"""STAPS (Mao, Müller, Fischer & Vechev, "Connecting Certified and Adversarial Training", NeurIPS
2023): TAPS on SABR's small box; CTBench's ``STAPSModelWrapper(TAPSModelWrapper, SmallBoxModelWrapper)``,
paper §3.2 ("using the adversarial small box for TAPS training").

Per chunk: (1) SABR's input search under ``torch.no_grad`` — PGD in the ε-box, then the box of radius
``λ·(u − l)/2`` around the adversarial point shifted inside the ε-box
(:meth:`~ctbench.methods.sabr.SmallBoxMixin.adversarial_small_box`); (2) the TAPS loss on that box
(:meth:`~ctbench.methods.taps.TAPS.taps_loss`: IBP through the feature extractor, per-margin PGD
through the classifier, rectified-linear gradient link, the product of the batch means
``s_w(mean L_TAPS)·mean L_IBP``, or ``taps_loss: per_sample``). While ε
ramps up, the TAPS part falls back to IBP (on the small box, i.e. SABR), as in the original.
Robust-accuracy estimate: the TAPS estimate on the small box (not sound).

Hyperparameters (``config/hparams.yaml``): ``eps_shrink`` (λ), ``classifier_size`` (1 everywhere in
the paper), ``taps_grad_scale``, ``relu_shrink`` (CIFAR-10 2/255: 0.8), ``attack_steps`` /
``attack_restarts`` (both the input and the latent search, as in the original), ``attack_step_size``
(input search only), ``train_eps``, ``w_rob``, ``l1``, ``fast_reg``, ``grad_accu_batch``.

Shapes: ``x``, ``lower``, ``upper`` and the small box (b, *input); ``y`` (b,).
"""

from __future__ import annotations

from ctbench.methods import METHODS
from ctbench.methods.sabr import SmallBoxMixin
from ctbench.methods.taps import TAPS


@METHODS.register("staps")
class STAPS(SmallBoxMixin, TAPS):
    name = "staps"

    def __init__(self, config: dict):
        super().__init__(config)
        self.init_small_box()

    def robust_loss(self, model, x, y, eps, lower, upper):
        small_lower, small_upper = self.adversarial_small_box(model, x, y, lower, upper)
        return self.taps_loss(model, small_lower, small_upper, y)
