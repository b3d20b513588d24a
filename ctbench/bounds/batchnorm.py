"""Clean-batch BatchNorm statistics, set once per training step (CTBench paper §4.1).

CTBench computes the BatchNorm statistics of every training step from the **clean** batch and then
uses them — frozen, but differentiable — in every later forward pass and bound computation of that
step (PGD attacks, SABR's box search, TAPS's latent search, IBP / CROWN-IBP bounds). Running
statistics are updated exactly once per step, by the clean batch, as ordinary BatchNorm would.
(Original code: ``AIDomains`` ``_BatchNorm.update_stat`` / ``current_mean`` / ``current_var``,
``compute_nat_loss_and_set_BN``; see reference/original-implementation.md §3 "Batch norm".)

Mechanism (no model classes are edited, no flag is threaded through callers):

* :func:`clean_forward_and_freeze_bn` runs the clean forward pass. Every BatchNorm layer in
  training mode runs its ordinary forward (batch statistics, running statistics updated once by
  PyTorch itself) and records the batch mean / biased variance of its input **without detaching**
  (``torch.var_mean``). Afterwards the layer
  keeps them "frozen": the statistics go into a weakly keyed registry (module → (mean, var)) and
  the layer's ``forward`` is replaced *on the instance* (``module.forward``) by a function that
  normalizes with the registered statistics and never touches the running statistics.
* The bound engine reads every BatchNorm through :func:`bn_affine`, which returns the per-channel
  affine map ``y = scale * x + shift`` with exactly the statistics the concrete forward uses:
  recorded clean-batch statistics while frozen and in training mode, running statistics in eval mode.
* :func:`unfreeze_bn` restores ordinary behaviour; :func:`bn_stats_from` is the same as a context
  manager. A new :func:`clean_forward_and_freeze_bn` call (next step) replaces the old statistics.

The freeze lasts until :func:`unfreeze_bn` or the next :func:`clean_forward_and_freeze_bn`: a
training loop calls the latter at the start of every step (or uses ``with bn_stats_from(...)``);
after ``backward()`` the recorded statistics' graph is freed, so a frozen model must not be used
for further differentiable passes of a *new* step without a new clean pass. ``copy.deepcopy`` of a
frozen model (e.g. SWA's ``AveragedModel``) yields an ordinary, unfrozen model.

A BatchNorm layer in training mode *without* recorded statistics has no fixed affine map (its
output depends on the whole batch it sees), so bound propagation refuses it with a
:class:`~ctbench.errors.CTBenchError` instead of silently using some batch's statistics.
"""

from __future__ import annotations

import contextlib
import types
import weakref
from collections.abc import Iterator

import torch
from torch import nn

from ctbench.errors import CTBenchError

_BN = nn.modules.batchnorm._BatchNorm
#: Frozen clean-batch statistics, BatchNorm module → (mean, var), each (C,) and differentiable. Kept
#: outside the module (weakly keyed) so that deepcopy / state_dict / SWA copies never see graph tensors;
#: a copy of a frozen model behaves as ordinary BatchNorm.
_FROZEN: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
#: Instance attribute mirroring the registry for code that reads ``bn.__dict__[_ATTR]`` (the auto_LiRPA
#: adapter); prefer :func:`frozen_stats`. Its value vanishes on deepcopy / pickling (see :class:`_Stats`).
_ATTR = "_ctbench_frozen_stats"


class _Stats(tuple):
    """(mean, var) whose copies are None: a copied / pickled model never carries graph tensors."""

    def __deepcopy__(self, memo):
        return None

    def __reduce__(self):
        return (type(None), ())


def frozen_stats(bn: nn.Module) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The recorded clean-batch ``(mean, var)`` of a frozen BatchNorm layer (each (C,)), else None."""
    return _FROZEN.get(bn)


def _bn_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, _BN)]


def _channel_view(t: torch.Tensor, ndim: int) -> torch.Tensor:
    """(C,) → (C, 1, …) broadcastable against a (…, C, *spatial) tensor of ``ndim`` dims from C on."""
    return t.reshape((-1,) + (1,) * (ndim - 1))


def _normalize(bn: nn.Module, x: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    scale, shift = _affine_from_stats(bn, mean, var)
    return x * _channel_view(scale, x.dim() - 1) + _channel_view(shift, x.dim() - 1)


def _affine_from_stats(bn: nn.Module, mean: torch.Tensor, var: torch.Tensor):
    scale = torch.rsqrt(var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    shift = -mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    return scale, shift


def _frozen_forward(self: nn.Module, x: torch.Tensor) -> torch.Tensor:
    # Installed on the instance while frozen. In eval mode: ordinary (running statistics).
    stats = _FROZEN.get(self)
    if not self.training or stats is None:
        return type(self).forward(self, x)
    return _normalize(self, x, *stats)


# A pickled frozen layer re-binds ``forward`` by name on load, i.e. to the ordinary class forward.
_frozen_forward.__name__ = "forward"


def _batch_stats(bn: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Differentiable batch mean and biased variance per channel of ``x`` (B, C, *): each (C,)."""
    if x.dim() < 2:
        raise CTBenchError(
            f"{bn.__class__.__name__} expects an input (B, C, ...), got shape {tuple(x.shape)}"
        )
    dims = [0] + list(range(2, x.dim()))
    var, mean = torch.var_mean(x, dim=dims, unbiased=False)
    return mean, var


def unfreeze_bn(model: nn.Module) -> None:
    """Forget recorded clean-batch statistics: every BatchNorm of ``model`` behaves ordinarily again."""
    for bn in _bn_layers(model):
        _FROZEN.pop(bn, None)
        bn.__dict__.pop(_ATTR, None)
        bn.__dict__.pop("forward", None)


def is_frozen(module: nn.Module) -> bool:
    """True if ``module`` (a BatchNorm) currently normalizes with recorded clean-batch statistics."""
    return module in _FROZEN


def clean_forward_and_freeze_bn(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Clean forward pass of a training step; returns the clean logits ``model(x)`` (B, K).

    Each BatchNorm in training mode normalizes with the statistics of its (clean) input, updates its
    running statistics exactly once, and from then on — until :func:`unfreeze_bn` or the next call —
    normalizes every input with those statistics (kept in the autograd graph, so gradients flow
    through them) and never updates running statistics again. BatchNorm layers in eval mode use
    their running statistics throughout and are not touched. Replaces any earlier frozen statistics.
    """
    unfreeze_bn(model)
    records: dict[nn.Module, tuple[torch.Tensor, torch.Tensor]] = {}

    def make_clean_forward(bn):
        def clean_forward(self, inp):
            if not self.training:
                return type(self).forward(self, inp)
            if self in records:
                raise CTBenchError(
                    f"{self.__class__.__name__} is called twice in one forward pass; clean-batch "
                    "statistics need each BatchNorm layer to be used once"
                )
            # Ordinary BatchNorm forward (batch statistics, one running-statistics update, PyTorch's
            # fused kernel); the same statistics are recorded differentiably for the frozen passes.
            out = type(self).forward(self, inp)
            records[self] = _batch_stats(self, inp)
            return out

        return types.MethodType(clean_forward, bn)

    bns = _bn_layers(model)
    try:
        for bn in bns:
            bn.forward = make_clean_forward(bn)
        logits = model(x)
    finally:
        for bn in bns:
            bn.__dict__.pop("forward", None)
    for bn, stats in records.items():
        _FROZEN[bn] = stats
        bn.__dict__[_ATTR] = _Stats(stats)
        bn.forward = types.MethodType(_frozen_forward, bn)
    return logits


@contextlib.contextmanager
def bn_stats_from(model: nn.Module, x_clean: torch.Tensor) -> Iterator[torch.Tensor]:
    """Context manager form: ``with bn_stats_from(model, x) as clean_logits: ...``.

    Inside the block every forward pass and bound computation uses the clean-batch statistics of
    ``x_clean`` (see :func:`clean_forward_and_freeze_bn`); on exit the model is unfrozen.
    """
    logits = clean_forward_and_freeze_bn(model, x_clean)
    try:
        yield logits
    finally:
        unfreeze_bn(model)


def bn_affine(bn: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel affine map of a BatchNorm layer as the bound engine sees it: ``(scale, shift)``, (C,) each.

    ``y = scale · x + shift`` with ``scale = γ / sqrt(var + eps)`` and ``shift = β − mean · scale``; the
    statistics are the recorded clean-batch ones (training mode, frozen; differentiable) or the running
    ones (eval mode). Raises :class:`CTBenchError` for a training-mode layer without recorded statistics.
    """
    if bn.training:
        if not is_frozen(bn):
            raise CTBenchError(
                f"{bn.__class__.__name__}({bn.num_features}) is in training mode but has no clean-batch "
                "statistics: call ctbench.bounds.clean_forward_and_freeze_bn(model, x_clean) first "
                "(or use model.eval() for running statistics)"
            )
        mean, var = _FROZEN[bn]
        return _affine_from_stats(bn, mean, var)
    if bn.running_mean is None or bn.running_var is None:
        raise CTBenchError(
            f"{bn.__class__.__name__}({bn.num_features}) has no running statistics "
            "(track_running_stats=False): its eval-mode output is not an affine map; not supported"
        )
    return _affine_from_stats(bn, bn.running_mean, bn.running_var)
