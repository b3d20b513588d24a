"""Population BatchNorm statistics ("precise BN") and stochastic weight averaging.

* :func:`population_bn_stats` — Wu & Johnson (2021), "Rethinking 'Batch' in BatchNorm" (paper App. C.3;
  original ``utils.reset_bn_to_population_statistics``): one no-grad pass over the training loader in
  train mode with BN momentum ``1/k`` for the k-th batch, i.e. running statistics become the cumulative
  average of the per-batch means / variances. Run after every epoch; evaluation then uses them
  (``model.eval()``).
* :class:`SWA` — Izmailov et al. (2018), via ``torch.optim.swa_utils.AveragedModel``: from epoch
  ``swa_start`` the weights are averaged every ``swa_freq`` steps (original ``--swa-freq 10``); at the
  end the averaged model gets population BN statistics (``update_bn``-equivalent) and becomes the final
  model (paper §4.1: SWA for methods without a model-selection metric, e.g. MTL-IBP).
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel

from ctbench.bounds import unfreeze_bn

_BN = nn.modules.batchnorm._BatchNorm


@torch.no_grad()
def population_bn_stats(
    model: nn.Module, loader, device: torch.device | str = "cpu", max_batches: int | None = None
) -> None:
    """Replace every BatchNorm's running statistics by the cumulative average over ``loader``'s batches.

    The model's train/eval mode and the BN momenta are restored afterwards; parameters are unchanged.
    """
    bns = [m for m in model.modules() if isinstance(m, _BN)]
    if not bns:
        return
    unfreeze_bn(model)
    was_training = model.training
    momenta = [bn.momentum for bn in bns]
    model.train()
    try:
        for k, (x, _) in enumerate(loader, 1):
            if max_batches is not None and k > max_batches:
                break
            for bn in bns:
                bn.momentum = 1.0 / k
            model(x.to(device))
    finally:
        for bn, m in zip(bns, momenta, strict=True):
            bn.momentum = m
        model.train(was_training)


class SWA:
    """Weight averaging of ``model`` from epoch ``start`` every ``freq`` training steps.

    ``state_dict`` / ``load_state_dict`` make it resumable; :meth:`final_model` returns a copy of the
    averaged network with population BN statistics (or a copy of ``model`` if nothing was averaged).
    """

    def __init__(self, model: nn.Module, start: int, freq: int = 10):
        unfreeze_bn(model)
        self.start, self.freq = int(start), int(freq)
        self.averaged = AveragedModel(model)

    def maybe_update(self, model: nn.Module, epoch: int, global_step: int) -> bool:
        """Average the current weights if ``epoch >= start`` and ``(global_step + 1) % freq == 0``."""
        if epoch >= self.start and (global_step + 1) % self.freq == 0:
            self.averaged.update_parameters(model)
            return True
        return False

    @property
    def n_averaged(self) -> int:
        return int(self.averaged.n_averaged)

    def state_dict(self) -> dict:
        return self.averaged.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.averaged.load_state_dict(state)

    def final_model(self, model: nn.Module, loader, device: torch.device | str = "cpu") -> nn.Module:
        """The averaged network (a copy) with population BN statistics from ``loader``."""
        if self.n_averaged == 0:
            final = copy.deepcopy(model)
        else:
            final = copy.deepcopy(self.averaged.module)
        population_bn_stats(final, loader, device)
        return final
