"""Convolution-local back-substitution for CROWN's intermediate bounds (auto_LiRPA's "patches" mode,
Xu et al. 2020): what makes full CROWN affordable on CNN7.

Bounding a pre-activation neuron ``(c, y, x)`` of a convolutional layer by back-substitution
(``linear.crown_tighten``) starts from a one-hot row; the dense path carries it as a whole map of every
layer below, although it is non-zero only on the neuron's receptive field. Here each row is carried as a
*crop* of each layer: ``A`` (B, M, C, h, w) with its top-left corner at ``(y·S − P, x·S − P)`` in that
layer's map, where ``S`` and ``P`` are the cumulative stride and padding from the layer up to the
neuron's — the same for every channel and every row of one position, so the crops of the pre-activation
bounds ``l, u`` and of the input box are one ``unfold`` per layer, gathered per row. Through a
convolution the crop grows to ``(h − 1)·s + k`` (``conv_transpose2d`` without padding: the padding moves
the corner instead), coefficients that fall outside the map (the zero padding, no neuron) are dropped,
through a per-channel affine layer they are scaled, and at a ReLU they are relaxed exactly as in
``linear.relu_back`` (adaptive CROWN slopes); at the input they are concretized over the box crops.
The bounds are those of the dense path up to floating-point summation order (tests/test_bounds_patches.py).

Supported below the neuron: ``ConvLayer`` (2-D, groups 1, dilation 1, a fused BatchNorm allowed),
``ChannelAffine`` and ``ReLULayer`` on (C, H, W) maps — every layer under CNN7's, CNN5's and
``cnn_small``'s convolutional ReLUs; elsewhere (a Linear or Flatten below) the dense path is used.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ctbench.bounds.layers import ChannelAffine, ConvLayer, ReLULayer


def supported(layers, upto: int, shape) -> bool:
    """Whether the neurons of shape ``shape`` (C, H, W) output by ``layers[upto-1]`` can use crops."""
    if len(shape) != 3:
        return False
    for layer in layers[:upto]:
        if isinstance(layer, ConvLayer):
            m = layer.module
            if m.groups != 1 or tuple(m.dilation) != (1, 1) or layer.in_shape is None or len(layer.in_shape) != 3:
                return False
        elif not isinstance(layer, (ChannelAffine, ReLULayer)):
            return False
    return True


def _geometry(layers, upto: int) -> dict:
    """Boundary k (the input of ``layers[k]``; ``upto``: the neuron's map) → ``(Sh, Sw, Ph, Pw, h, w)``:
    cumulative strides and paddings from there up to the neuron's map, and the crop size."""
    at = {upto: (1, 1, 0, 0, 1, 1)}
    Sh, Sw, Ph, Pw, h, w = at[upto]
    for j in range(upto - 1, -1, -1):
        layer = layers[j]
        if isinstance(layer, ConvLayer):
            m = layer.module
            (sh, sw), (ph, pw), (kh, kw) = m.stride, layer.padding, m.kernel_size
            Ph, Pw = Ph * sh + ph, Pw * sw + pw
            Sh, Sw, h, w = Sh * sh, Sw * sw, (h - 1) * sh + kh, (w - 1) * sw + kw
        at[j] = (Sh, Sw, Ph, Pw, h, w)
    return at


def _crops(t, geometry, H: int, W: int, pos, cache: dict | None = None, key=None):
    """The crops of map ``t`` (B, C, Hj, Wj) for the rows at positions ``pos`` (B, M) (flat y·W + x in the
    neuron's H × W map): (B, M, C, h, w), zero outside the map. Row (y, x)'s crop starts at
    ``(y·Sh − Ph, x·Sw − Pw)``; padding the map by (Ph, Pw) before moves every start to (y·Sh, x·Sw)."""
    Sh, Sw, Ph, Pw, h, w = geometry
    B, C, Hj, Wj = t.shape
    if cache is not None and key in cache:
        unf, nx = cache[key]
    else:
        bottom = max(0, (H - 1) * Sh + h - Ph - Hj)
        right = max(0, (W - 1) * Sw + w - Pw - Wj)
        padded = F.pad(t, (Pw, right, Ph, bottom))
        unf = F.unfold(padded, (h, w), stride=(Sh, Sw))  # (B, C·h·w, L): windows in row-major order
        nx = (padded.shape[3] - w) // Sw + 1
        if cache is not None:
            cache[key] = unf, nx
    window = (pos // W) * nx + pos % W  # (B, M)
    out = unf.gather(2, window.unsqueeze(1).expand(B, unf.shape[1], window.shape[1]))
    return out.permute(0, 2, 1).reshape(B, window.shape[1], C, h, w)


def _inside(geometry, H: int, W: int, Hj: int, Wj: int, pos):
    """(B, M, 1, h, w) mask of the crop positions that lie inside the Hj × Wj map."""
    Sh, Sw, Ph, Pw, h, w = geometry
    ys, xs = (pos // W) * Sh - Ph, (pos % W) * Sw - Pw  # (B, M) top-left corners
    ry = ys.unsqueeze(-1) + torch.arange(h, device=pos.device)
    rx = xs.unsqueeze(-1) + torch.arange(w, device=pos.device)
    my = (ry >= 0) & (ry < Hj)
    mx = (rx >= 0) & (rx < Wj)
    return (my.unsqueeze(-1) & mx.unsqueeze(-2)).unsqueeze(2)


def crop_elements(layers, upto: int) -> int:
    """The largest per-row crop (C·h·w elements) below the neurons of ``layers[upto-1]`` (chunk sizing)."""
    geo = _geometry(layers, upto)
    sizes = [layer.in_shape[0] * geo[j][4] * geo[j][5] for j, layer in enumerate(layers[:upto])
             if isinstance(layer, ConvLayer)]
    return max(sizes or [1])


def lower_bounds(layers, upto: int, rows, signs, relu_bounds, c_in, r_in, shape, cache: dict | None = None):
    """Lower bounds (B, M) of ``sign · z[row]`` for the neurons ``rows`` (B, M) (flat indices into
    ``shape`` = (C, H, W), the output of ``layers[upto-1]``), ``signs`` (M,) of ±1; ``relu_bounds`` as in
    ``linear.backsub_lower``; ``c_in``/``r_in`` the input box (B, C0, H0, W0). ``cache``: a dict kept across
    calls for the same neurons' layer and bounds (chunks of rows): the unfolded maps are computed once."""
    from ctbench.bounds.linear import relu_relaxation

    C, H, W = shape
    B, M = rows.shape
    geo = _geometry(layers, upto)
    pos = rows % (H * W)
    A = torch.zeros(B, M, C, 1, 1, dtype=c_in.dtype, device=c_in.device)
    one = signs.to(A.device, A.dtype).view(1, M, 1, 1, 1).expand(B, M, 1, 1, 1)
    A.scatter_(2, (rows // (H * W)).view(B, M, 1, 1, 1), one)
    d = torch.zeros(B, M, dtype=c_in.dtype, device=c_in.device)
    for j in range(upto - 1, -1, -1):
        layer = layers[j]
        if isinstance(layer, ReLULayer):
            l, u = relu_bounds[j]
            lc, uc = _crops(l, geo[j], H, W, pos, cache, ("l", j)), _crops(u, geo[j], H, W, pos, cache, ("u", j))
            up_slope, up_icpt, lo_slope = relu_relaxation(lc, uc)
            A_neg = A.clamp(max=0)
            d = d + (A_neg * up_icpt).flatten(2).sum(2)
            A = (A - A_neg) * lo_slope + A_neg * up_slope
        elif isinstance(layer, ChannelAffine):
            scale, shift = layer.affine()
            d = d + A.sum(dim=(3, 4)) @ shift
            A = A * scale.view(1, 1, -1, 1, 1)
        else:  # ConvLayer
            Wt, b = layer.weight_bias()
            if b is not None:
                d = d + A.sum(dim=(3, 4)) @ b
            h, w = A.shape[3:]
            A = F.conv_transpose2d(A.reshape(B * M, A.shape[2], h, w), Wt, None, layer.module.stride)
            A = A.reshape(B, M, *A.shape[1:])
            _, Hj, Wj = layer.in_shape
            A = A * _inside(geo[j], H, W, Hj, Wj, pos)
    cc, rc = _crops(c_in, geo[0], H, W, pos, cache, ("c", 0)), _crops(r_in, geo[0], H, W, pos, cache, ("r", 0))
    return (A * cc).flatten(2).sum(2) - (A.abs() * rc).flatten(2).sum(2) + d
