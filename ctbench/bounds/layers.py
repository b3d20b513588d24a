"""Affine views of the supported layers, shared by IBP (``ibp.py``) and back-substitution (``linear.py``).

A model is an ``nn.Sequential`` (nested Sequentials are flattened) of ``Normalization``, ``Conv2d``,
``Linear``, ``BatchNorm1d``/``BatchNorm2d``, ``ReLU``, ``Flatten`` (and ``Identity``). Each layer is
wrapped in a small object with

* ``ibp(c, r)``: centre/radius interval propagation (Gowal et al. 2018): affine layers map the centre
  through ``W`` and the radius through ``|W|``; shapes (B, *in) → (B, *out);
* ``back(A)``: back-substitution through an affine layer (Zhang et al. 2018, CROWN): given the
  coefficients ``A`` (B, S, *out) of a linear function of the layer's output, return ``(A', d)`` with
  ``A'`` (B, S, *in) the coefficients w.r.t. the layer's input and ``d`` (B, S) the constant term, so
  that ``A·layer(x) = A'·x + d``.

Per-channel affine layers (Normalization, BatchNorm) are one class, :class:`ChannelAffine`; BatchNorm
reads its statistics through :func:`ctbench.bounds.batchnorm.bn_affine` (clean-batch or running).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ctbench.bounds.batchnorm import bn_affine
from ctbench.errors import CTBenchError
from ctbench.nn import Normalization


def batch_dot(A: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(B, S, *shape) · (B, *shape) → (B, S)."""
    return torch.bmm(A.flatten(2), v.flatten(1).unsqueeze(-1)).squeeze(-1)


class LinearLayer:
    """``nn.Linear``: y = x Wᵀ + b, (B, in) → (B, out)."""

    def __init__(self, m: nn.Linear):
        self.module = m

    def forward(self, x):
        return self.module(x)

    def ibp(self, c, r):
        m = self.module
        return F.linear(c, m.weight, m.bias), F.linear(r, m.weight.abs())

    def back(self, A):
        m = self.module
        d = A @ m.bias if m.bias is not None else None
        return A @ m.weight, d

    def folded(self, C):
        """Spec folded into the layer: W' = C·W (B, S, in), b' = C·b (B, S) (final-layer elision)."""
        m = self.module
        if C.shape[-1] != m.out_features:
            raise CTBenchError(
                f"C has K={C.shape[-1]} columns but the last layer has {m.out_features} outputs"
            )
        W = torch.matmul(C, m.weight)
        b = torch.matmul(C, m.bias) if m.bias is not None else None
        return W, b


class ChannelAffine:
    """Per-channel affine y = scale·x + shift: ``Normalization`` and ``BatchNorm1d/2d`` (channel dim 1)."""

    def __init__(self, m: nn.Module):
        self.module = m

    def affine(self):
        m = self.module
        if isinstance(m, Normalization):
            inv = 1.0 / m.std.flatten()
            return inv, -m.mean.flatten() * inv
        return bn_affine(m)

    def forward(self, x):
        return self.module(x)

    @staticmethod
    def _view(t, ndim_from_channel):
        return t.reshape((-1,) + (1,) * (ndim_from_channel - 1))

    def ibp(self, c, r):
        scale, shift = self.affine()
        k = c.dim() - 1
        s = self._view(scale, k)
        return c * s + self._view(shift, k), r * s.abs()

    def back(self, A):
        scale, shift = self.affine()
        k = A.dim() - 2
        Anew = A * self._view(scale, k)
        Ac = A.sum(dim=tuple(range(3, A.dim()))) if A.dim() > 3 else A
        return Anew, Ac @ shift


class _ConvBack(torch.autograd.Function):
    """``conv_transpose2d(A, W)`` (the adjoint of the convolution) with an explicit backward.

    Backward: ``∂/∂A = conv2d(g, W)`` and ``∂/∂W = conv2d_weight(g, W.shape, A)``. Equivalent to
    autograd's, but avoids PyTorch's very slow float64 ``slow_conv_transpose2d`` backward on CPU.
    """

    @staticmethod
    def forward(ctx, A, W, stride, padding, output_padding, groups, dilation):
        ctx.save_for_backward(A, W)
        ctx.conf = (stride, padding, dilation, groups)
        return F.conv_transpose2d(A, W, None, stride, padding, output_padding, groups, dilation)

    @staticmethod
    def backward(ctx, g):
        A, W = ctx.saved_tensors
        stride, padding, dilation, groups = ctx.conf
        gA = gW = None
        if ctx.needs_input_grad[0]:
            gA = F.conv2d(g, W, None, stride, padding, dilation, groups)
        if ctx.needs_input_grad[1]:
            gW = torch.nn.grad.conv2d_weight(g, W.shape, A, stride, padding, dilation, groups)
        return gA, gW, None, None, None, None, None


class ConvLayer:
    """``nn.Conv2d`` (zero padding): (B, Cin, H, W) → (B, Cout, H', W'); back-substitution: conv_transpose2d.

    ``post``: an optional per-channel affine layer (BatchNorm2d, clean-batch or running statistics)
    that follows the convolution and is fused into it (``W' = s·W``, ``b' = s·b + t``), which saves
    elementwise passes over the activations in IBP and back-substitution; exact and differentiable.
    """

    def __init__(self, m: nn.Conv2d, post: ChannelAffine | None = None):
        if m.padding_mode != "zeros":
            raise CTBenchError(f"unsupported layer {m}: only padding_mode='zeros' is supported")
        if isinstance(m.padding, str):
            if m.padding != "valid":
                raise CTBenchError(
                    f"unsupported layer {m}: padding={m.padding!r}; use explicit integer padding"
                )
            self.padding = (0, 0)
        else:
            self.padding = tuple(m.padding)
        self.module = m
        self.post = post
        self.in_shape: tuple[int, ...] | None = None  # (Cin, H, W), set by the first forward/ibp call

    def weight_bias(self):
        m = self.module
        W, b = m.weight, m.bias
        if self.post is not None:
            s, t = self.post.affine()
            W = W * s.reshape(-1, 1, 1, 1)
            b = t if b is None else b * s + t
        return W, b

    def _conv(self, x, W, b):
        m = self.module
        return F.conv2d(x, W, b, m.stride, self.padding, m.dilation, m.groups)

    def forward(self, x):
        self.in_shape = tuple(x.shape[1:])
        W, b = self.weight_bias()
        return self._conv(x, W, b)

    def ibp(self, c, r):
        self.in_shape = tuple(c.shape[1:])
        W, b = self.weight_bias()
        return self._conv(c, W, b), self._conv(r, W.abs(), None)

    def back(self, A):
        m = self.module
        W, b = self.weight_bias()
        B, S = A.shape[:2]
        out_c, oh, ow = A.shape[2:]
        if self.in_shape is None:
            raise RuntimeError("ConvLayer.back needs the input shape: run a forward/ibp pass first")
        _, ih, iw = self.in_shape
        kh, kw = m.kernel_size
        (sh, sw), (ph, pw), (dh, dw) = m.stride, self.padding, m.dilation
        op_h = ih - ((oh - 1) * sh - 2 * ph + dh * (kh - 1) + 1)
        op_w = iw - ((ow - 1) * sw - 2 * pw + dw * (kw - 1) + 1)
        A2 = A.reshape(B * S, out_c, oh, ow)
        Ain = _ConvBack.apply(A2, W, m.stride, self.padding, (op_h, op_w), m.groups, m.dilation)
        d = A.sum(dim=(3, 4)) @ b if b is not None else None
        return Ain.reshape(B, S, *self.in_shape), d


class FlattenLayer:
    """``nn.Flatten(start_dim=1)``: (B, *in) → (B, prod(in))."""

    def __init__(self, m: nn.Flatten):
        if m.start_dim != 1 or m.end_dim != -1:
            raise CTBenchError(f"unsupported layer {m}: only Flatten(start_dim=1, end_dim=-1) is supported")
        self.module = m
        self.in_shape: tuple[int, ...] | None = None

    def forward(self, x):
        self.in_shape = tuple(x.shape[1:])
        return x.flatten(1)

    def ibp(self, c, r):
        self.in_shape = tuple(c.shape[1:])
        return c.flatten(1), r.flatten(1)

    def back(self, A):
        return A.reshape(A.shape[0], A.shape[1], *self.in_shape), None


class ReLULayer:
    """``nn.ReLU``: the only non-linear layer; relaxed in ``ibp.py`` / ``linear.py``."""

    def __init__(self, m: nn.ReLU):
        self.module = m

    def forward(self, x):
        return torch.relu(x)


def _flat_modules(model):
    for m in model:
        if isinstance(m, nn.Sequential):
            yield from _flat_modules(m)
        else:
            yield m


def parse_model(model: nn.Module) -> list:
    """Wrap every layer of a (nested) ``nn.Sequential``; unsupported layers raise :class:`CTBenchError`."""
    if not isinstance(model, nn.Sequential):
        raise CTBenchError(f"bound propagation needs an nn.Sequential model, got {type(model).__name__}")
    out = []
    for m in _flat_modules(model):
        if isinstance(m, nn.BatchNorm2d) and out and isinstance(out[-1], ConvLayer) and out[-1].post is None:
            out[-1].post = ChannelAffine(m)  # fused: exact, saves elementwise passes
            continue
        if isinstance(m, nn.Identity):
            continue
        elif isinstance(m, nn.Linear):
            out.append(LinearLayer(m))
        elif isinstance(m, nn.Conv2d):
            out.append(ConvLayer(m))
        elif isinstance(m, (Normalization, nn.BatchNorm1d, nn.BatchNorm2d)):
            out.append(ChannelAffine(m))
        elif isinstance(m, nn.Flatten):
            out.append(FlattenLayer(m))
        elif isinstance(m, nn.ReLU):
            out.append(ReLULayer(m))
        else:
            raise CTBenchError(
                f"unsupported layer {m.__class__.__name__} ({m}) for bound propagation; supported: "
                "Normalization, "
                "Conv2d, Linear, BatchNorm1d, BatchNorm2d, ReLU, Flatten"
            )
    return out


def check_box(lower: torch.Tensor, upper: torch.Tensor) -> None:
    """Validate an input box: same shape, a batch dimension, finite, lower ≤ upper."""
    if not isinstance(lower, torch.Tensor) or not isinstance(upper, torch.Tensor):
        raise CTBenchError("lower and upper must be torch tensors")
    if lower.shape != upper.shape:
        raise CTBenchError(f"lower and upper shapes differ: {tuple(lower.shape)} vs {tuple(upper.shape)}")
    if lower.dim() < 2:
        raise CTBenchError(f"input box needs a batch dimension (B, ...), got shape {tuple(lower.shape)}")
    if lower.dtype != upper.dtype or not lower.is_floating_point():
        raise CTBenchError(
            f"lower/upper must be floating point of one dtype, got {lower.dtype}, {upper.dtype}"
        )
    if not (torch.isfinite(lower).all() and torch.isfinite(upper).all()):
        raise CTBenchError("input box contains NaN or infinite values")
    if bool((lower > upper).any()):
        raise CTBenchError("invalid input box: lower > upper somewhere (need lower <= upper elementwise)")


def check_spec(C: torch.Tensor | None, batch: int, num_outputs: int | None = None) -> None:
    """Validate a specification matrix C (B, S, K)."""
    if C is None:
        return
    if C.dim() != 3 or C.shape[0] != batch:
        raise CTBenchError(f"C must have shape (B={batch}, S, K), got {tuple(C.shape)}")
    if num_outputs is not None and C.shape[2] != num_outputs:
        raise CTBenchError(f"C has K={C.shape[2]} columns but the model has {num_outputs} outputs")
