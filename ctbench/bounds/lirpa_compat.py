"""Version-detected compatibility fixes that let auto_LiRPA 0.3 run on current torch and numpy.

Used only by :mod:`ctbench.bounds.lirpa` (the one module that imports auto_LiRPA), lazily, on first
use of the auto_LiRPA backend: nothing here runs at import time. Each fix is applied only when its
problem is detected (a missing module or attribute, not a version number), returns True when it
changed something, and is idempotent. Facts measured in /work/shared/reference/auto_lirpa.md.

a. numpy>=2 removed ``numpy.lib.arraysetops`` (imported by ``auto_LiRPA.operators.base`` for ``isin``)
   → register a stand-in module of that name exposing ``np.isin``.
b. torch>=2.9 removed ``torch.onnx.symbolic_helper._set_opset_version`` (called by
   ``auto_LiRPA.parse_graph``) → provide a function that sets the TorchScript exporter's global opset
   (``GLOBALS.export_onnx_opset_version``).
c. ``torch._C.Node`` is no longer subscriptable (``node['value']`` in ``parse_graph``) → give it a
   ``__getitem__`` that calls ``symbolic_helper._node_get``.
d. ``BoundedModule._named_members`` lacks torch 2's ``remove_duplicate`` keyword, so
   ``.parameters()`` fails (CROWN, alpha-CROWN, optimizers) → wrap it to accept and drop the keyword.
e. SOUNDNESS. On torch>=2.9 the ONNX symbolic functions of opsets 7-20 are registered lazily (inside
   ``torch.onnx.export`` only); auto_LiRPA lowers graphs without them, so ops get the wrong (old
   opset) rules: loss fusion fails ("onnx::OneHot") and for ``pow`` CROWN silently returns an unsound
   bound → call ``torch.onnx.utils._trigger_symbolic_function_registration()`` before every
   ``BoundedModule`` is built.
f. Current torch gives ``clamp`` a zero gradient at the clamp bounds (torch 1.x passed it through).
   auto_LiRPA 0.3 starts alpha-CROWN's slopes at the adaptive CROWN values, exactly 0 or 1, and clamps
   them to [0, 1] in ``BoundRelu._relu_mask_alpha``: every alpha gradient is then zero and
   "alpha-CROWN" silently returns the CROWN bound (measured on torch 2.14: identical to CROWN on a
   2-layer MLP and on a trained ``cnn_small``) → replace that static method by the same masking with a
   clamp whose gradient is 1 on the closed interval [0, 1].
"""

from __future__ import annotations

import importlib
import inspect
import sys
import types

import torch
from torch import nn


def fix_numpy_arraysetops() -> bool:
    """Fix (a): provide ``numpy.lib.arraysetops.isin`` on numpy>=2. Returns True if applied."""
    import numpy as np

    try:
        importlib.import_module("numpy.lib.arraysetops")
        return False
    except ImportError:
        pass
    shim = types.ModuleType("numpy.lib.arraysetops")
    shim.isin = np.isin
    sys.modules["numpy.lib.arraysetops"] = shim
    return True


def fix_set_opset_version() -> bool:
    """Fix (b): provide ``torch.onnx.symbolic_helper._set_opset_version`` when torch removed it."""
    # ``from torch.onnx import symbolic_helper`` may give the internal module torch.onnx re-exports;
    # auto_LiRPA imports the public module path, so patch that one.
    symbolic_helper = importlib.import_module("torch.onnx.symbolic_helper")
    if hasattr(symbolic_helper, "_set_opset_version"):
        return False
    try:
        from torch.onnx._internal.torchscript_exporter._globals import GLOBALS
    except ImportError:  # torch 2.0-2.8 layout
        from torch.onnx._globals import GLOBALS  # type: ignore[no-redef]

    def _set_opset_version(opset_version: int) -> None:
        GLOBALS.export_onnx_opset_version = opset_version

    symbolic_helper._set_opset_version = _set_opset_version
    return True


def fix_node_getitem() -> bool:
    """Fix (c): make ``torch._C.Node`` subscriptable (``node['value']``) again."""
    if hasattr(torch._C.Node, "__getitem__"):
        return False
    symbolic_helper = importlib.import_module("torch.onnx.symbolic_helper")

    def __getitem__(self, key):  # noqa: N807
        return symbolic_helper._node_get(self, key)

    torch._C.Node.__getitem__ = __getitem__
    return True


def fix_named_members(bounded_module_cls: type) -> bool:
    """Fix (d): let ``BoundedModule._named_members`` accept torch 2's ``remove_duplicate`` keyword."""
    original = bounded_module_cls._named_members
    if getattr(original, "_ctbench_fixed", False):
        return False
    if "remove_duplicate" in inspect.signature(original).parameters:
        return False
    if "remove_duplicate" not in inspect.signature(nn.Module._named_members).parameters:
        return False

    def _named_members(self, get_members_fn, prefix="", recurse=True, remove_duplicate=True):
        return original(self, get_members_fn, prefix=prefix, recurse=recurse)

    _named_members._ctbench_fixed = True
    bounded_module_cls._named_members = _named_members
    return True


def trigger_symbolic_registration() -> bool:
    """Fix (e): register the ONNX symbolic functions of all opsets (lazy since torch 2.9).

    Must run before any ``BoundedModule`` is built; cheap and idempotent (it imports modules).
    """
    from torch.onnx import utils as onnx_utils

    trigger = getattr(onnx_utils, "_trigger_symbolic_function_registration", None)
    if trigger is None:
        return False
    trigger()
    return True


def clamp_gradient_vanishes_at_bounds() -> bool:
    """True when ``torch.clamp`` has a zero gradient at its bounds (the problem of fix f)."""
    a = torch.zeros(1, requires_grad=True)
    with torch.enable_grad():
        a.clamp(0.0, 1.0).sum().backward()
    return float(a.grad) == 0.0


def _clamp_closed(t: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """``t.clamp(lo, hi)`` with gradient 1 on the closed interval [lo, hi] (torch 1.x's clamp)."""
    return torch.where((t >= lo) & (t <= hi), t, t.clamp(lo, hi))


def fix_relu_alpha_clamp(bound_relu_cls: type) -> bool:
    """Fix (f): let alpha-CROWN's ReLU slopes move away from their initial 0/1 values.

    Replaces ``BoundRelu._relu_mask_alpha`` (auto_LiRPA 0.3: clamp the slopes to [0, 1], zero them on
    inactive and set them to 1 on active neurons) by the same computation with :func:`_clamp_closed`.
    Any slope in [0, 1] gives a sound lower relaxation, so only the optimisation changes.
    """
    original = bound_relu_cls.__dict__.get("_relu_mask_alpha")
    if original is None or getattr(original.__func__, "_ctbench_fixed", False):
        return False
    if not clamp_gradient_vanishes_at_bounds():
        return False

    def _relu_mask_alpha(lower, upper, lb_lower_d, ub_lower_d):
        lower_mask = (lower >= 0).to(lower.dtype)
        upper_mask = upper <= 0
        no_mask = (1.0 - lower_mask) * (1.0 - upper_mask.to(upper.dtype))
        if lb_lower_d is not None:
            lb_lower_d = _clamp_closed(lb_lower_d, 0.0, 1.0) * no_mask + lower_mask
        if ub_lower_d is not None:
            ub_lower_d = _clamp_closed(ub_lower_d, 0.0, 1.0) * no_mask + lower_mask
        return lb_lower_d, ub_lower_d, upper_mask.all()

    _relu_mask_alpha._ctbench_fixed = True
    bound_relu_cls._relu_mask_alpha = staticmethod(_relu_mask_alpha)
    return True
