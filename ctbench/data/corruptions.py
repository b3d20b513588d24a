"""Common corruptions for the out-of-distribution analysis (CTBench paper §5.5, Fig. 6 and 11), generated
locally because MNIST-C and CIFAR-10-C cannot be downloaded here (reference/datasets.md).

Two suites, named after the published sets they imitate:

* ``mnist_c`` — the 15 corruptions of MNIST-C (Mu & Gilmer 2019) used by the paper, each at MNIST-C's
  single fixed level (the default severity of its ``corruptions.py``; ``severity`` is always 1 here);
* ``cifar10_c`` — CIFAR-10-C (Hendrycks & Dietterich 2019), severities 1-5 with the constants of
  ``make_cifar_c.py``: 17 of the 18 the paper uses (Fig. 11). Not generated: frost, which blends in the
  published frost photographs (:data:`NOT_GENERATED`) — read it from the published set
  (``ctbench.data.corruption_sets``; the corruption analysis does so when the files are there).

These are re-implementations in numpy/torch (``ctbench.data.corruption_ops``), not bit-identical to the
published files: results computed on them are labelled ``source = "generated"`` ("locally generated").
Like the published files, outputs are quantized to 8 bits (here rounded; the originals truncate).

API: :func:`corrupt` ``(x (B, C, H, W) float in [0, 1], name, severity, suite=..., seed=...)`` → a tensor of
the same shape, dtype and device, in [0, 1]; deterministic given (seed, suite, name, severity).
Every corruption works on any (C, H, W); sizes are scaled from the reference's 28 or 32 pixels.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ctbench.data import corruption_ops as ops
from ctbench.errors import CTBenchError

Fn = Callable[[np.ndarray, object, np.random.Generator], np.ndarray]


@dataclass(frozen=True)
class Corruption:
    name: str
    fn: Fn  # (x (B, C, H, W) float64 in [0, 1], level parameters, rng) -> same shape
    levels: tuple  # parameters per severity (index 0 = severity 1)


# ------------------------------------------------------------------------------------------ noise

def _gaussian_noise(x, sigma, rng):
    return x + rng.normal(size=x.shape, scale=sigma)


def _shot_noise(x, lam, rng):
    return rng.poisson(x * lam) / float(lam)


def _impulse_noise(x, amount, rng):  # skimage random_noise(mode="s&p"), salt_vs_pepper 0.5
    flipped = rng.random(x.shape) < amount
    salted = rng.random(x.shape) < 0.5
    return np.where(flipped, salted.astype(np.float64), x)


def _speckle_noise(x, sigma, rng):
    return x + x * rng.normal(size=x.shape, scale=sigma)


# ------------------------------------------------------------------------------------------- blur

def _gaussian_blur(x, sigma, rng):
    return ops.gaussian(x, sigma)


def _glass_blur(x, p, rng):
    """(σ, max shift δ, iterations, coin): blur, locally swap pixels (shifts in [−δ, δ)), blur again;
    MNIST-C swaps each position only with probability 1/2 (``coin``)."""
    sigma, delta, iterations, coin = p
    B, C, H, W = x.shape
    img = np.floor(np.clip(ops.gaussian(x, sigma), 0, 1) * 255)  # np.uint8 truncation, as the reference
    b = np.arange(B)
    for _ in range(iterations):
        for h in range(H - delta, delta, -1):
            for w in range(W - delta, delta, -1):
                d = rng.integers(-delta, delta, size=(B, 2))
                move = rng.random(B) < 0.5 if coin else np.ones(B, bool)
                h2, w2 = h + d[:, 1], w + d[:, 0]
                here, there = img[b, :, h, w].copy(), img[b, :, h2, w2].copy()
                img[b[move], :, h, w] = there[move]
                img[b[move], :, h2[move], w2[move]] = here[move]
    return ops.gaussian(img / 255.0, sigma)


def _defocus_blur(x, p, rng):
    return ops.correlate(x, ops.disk(*p), "reflect")


def _motion_blur(x, p, rng):
    return ops.motion_blur(x, p[0], p[1], rng.uniform(-45, 45, size=x.shape[0]))


def _zoom_blur(x, zooms, rng):
    return (x + sum(ops.zoom_center(x, z) for z in zooms)) / (len(zooms) + 1)


# ---------------------------------------------------------------------------- weather and colour

def _fog(x, p, rng):
    strength, decay, mapsize = p
    B, C, H, W = x.shape
    size = max(mapsize, 1 << (max(H, W) - 1).bit_length())
    fractal = np.concatenate([ops.plasma_fractal(min(64, B - i), size, decay, rng)[:, :H, :W] for i in range(0, B, 64)])
    peak = x.max(axis=(1, 2, 3), keepdims=True)
    return (x + strength * fractal[:, None]) * peak / (peak + strength)


def _spatter_mud(x, p, rng):
    """MNIST-C's spatter (its "mud" branch): thresholded blurred noise blobs of grey 63/255."""
    loc, scale, sigma, threshold, sigma2 = p
    B, C, H, W = x.shape
    liquid = ops.gaussian(rng.normal(size=(B, 1, H, W), loc=loc, scale=scale), sigma)
    mask = ops.gaussian((liquid > threshold).astype(np.float64), sigma2)
    mask[mask < 0.8] = 0
    return x * (1 - mask) + 63 / 255.0 * mask


def _spatter_layer(shape, p, rng):
    """CIFAR-10-C's spatter layer for images of ``shape`` (B, C, H, W) and level ``p`` = (loc, scale, σ,
    threshold, strength, mud): blobs where Gaussian_σ(N(loc, scale²) noise) ≥ threshold. Returns
    ``(m (B, 1, H, W) in [0, 1], colour (C, 1, 1), mud)``: the image changes only where m > 0.

    * liquid (mud = 0): the blobs' 8-bit values × an embossed map of their distance to their edges (Canny
      50/150, distance truncated at 20, 3×3 blur, histogram equalization, emboss kernel, 3×3 blur),
      scaled to max ``strength``; pale turquoise (175, 238, 238);
    * mud (mud = 1): the blob mask blurred with σ = ``strength``, kept where ≥ 0.8; mud brown (63, 42, 20).

    Colours are RGB; grey images get their luminance. Where the reference casts values above 1 to 8 bits
    (which wraps around), they are clipped here."""
    loc, scale, sigma, threshold, strength, mud = p
    B, C, H, W = shape
    liquid = ops.gaussian(rng.normal(size=(B, 1, H, W), loc=loc, scale=scale), sigma)
    liquid[liquid < threshold] = 0
    if mud:
        m = ops.gaussian((liquid > threshold).astype(np.float64), strength)
        m[m < 0.8] = 0
        rgb = np.array([63.0, 42.0, 20.0])
    else:
        u8 = np.clip(np.floor(liquid * 255), 0, 255)
        box = np.full((3, 3), 1 / 9)
        dist = ops.distance_to(ops.canny_u8(u8, 50, 150)[:, 0], 20)[:, None]
        dist = np.floor(ops.correlate(dist, box, "reflect") + 1e-4)  # float blur, then cast to 8 bits
        dist = ops.equalize_hist_u8(dist[:, 0])[:, None]
        dist = ops.filter_u8(ops.filter_u8(dist, SPATTER_EMBOSS), box)
        m = u8 * dist
        peak = m.max(axis=(2, 3), keepdims=True)
        m = strength * m / np.where(peak > 0, peak, 1)
        rgb = np.array([175.0, 238.0, 238.0])
    colour = rgb / 255 if C == 3 else np.full(C, ops.GRAY @ rgb / 255)
    return m, colour[:, None, None], bool(mud)


#: the emboss kernel of CIFAR-10-C's liquid spatter
SPATTER_EMBOSS = np.array([[-2.0, -1.0, 0.0], [-1.0, 1.0, 1.0], [0.0, 1.0, 2.0]])


def _spatter(x, p, rng):
    """CIFAR-10-C's spatter (severities 1-3 liquid: added on top; 4-5 mud: covers the image)."""
    m, colour, mud = _spatter_layer(x.shape, p, rng)
    return x * (1 - m) + m * colour if mud else x + m * colour


def _contrast(x, c, rng):
    means = x.mean(axis=(2, 3), keepdims=True)
    return (x - means) * c + means


def _brightness(x, c, rng):
    def shift(rgb):
        hsv = ops.rgb_to_hsv(rgb)
        hsv[:, 2] = np.clip(hsv[:, 2] + c, 0, 1)
        return ops.hsv_to_rgb(hsv)

    return ops.via_rgb(x, shift)


def _saturate(x, p, rng):
    def scale(rgb):
        hsv = ops.rgb_to_hsv(rgb)
        hsv[:, 1] = np.clip(hsv[:, 1] * p[0] + p[1], 0, 1)
        return ops.hsv_to_rgb(hsv)

    return ops.via_rgb(x, scale)


# ----------------------------------------------------------------------------------------- digital

def _jpeg(x, quality, rng):
    from PIL import Image

    def roundtrip(pil):
        buf = io.BytesIO()
        pil.save(buf, "JPEG", quality=quality)
        return Image.open(io.BytesIO(buf.getvalue()))

    return ops.pil_roundtrip(x, roundtrip)


def _pixelate(x, c, rng):
    from PIL import Image

    def box(pil):
        w, h = pil.size
        return pil.resize((int(w * c), int(h * c)), Image.BOX).resize((w, h), Image.BOX)

    return ops.pil_roundtrip(x, box)


def _elastic(x, p, rng):
    """CIFAR-10-C's elastic_transform (Simard et al. 2003, as in ``make_cifar_c.py``); ``p`` = (α, σ,
    jitter) in units of the image side (32 for CIFAR-10).

    1. Random affine: the points (c+s, r+s), (c+s, r−s), (c−s, r−s) about the centre (c, r) = (W//2, H//2),
       s = side//3, each move by U(−jitter, jitter) per coordinate; the image is warped by the affine map
       taking the points to their moved positions (bilinear, border mirrored about the edge pixel).
    2. Displacement: dx, dy = α · Gaussian_σ(U(−1, 1) noise (H, W)) (border mirrored about the edge,
       truncate 3); output (r, c) = the warped image at (r + dy, c + dx), bilinear, same border.
    """
    B, C, H, W = x.shape
    side = min(H, W)
    alpha, sigma, jitter = (v * side for v in p)
    cx, cy, s = W // 2, H // 2, side // 3
    points = np.array([[cx + s, cy + s], [cx + s, cy - s], [cx - s, cy - s]], dtype=np.float64)
    moved = points + rng.uniform(-jitter, jitter, size=(B, 3, 2))
    inv = ops.affine_from_points(moved, points)  # output position -> input position (B, 2, 3)
    rows, cols = np.meshgrid(np.arange(H, dtype=np.float64), np.arange(W, dtype=np.float64), indexing="ij")
    src_c, src_r = (inv[:, i, 0, None, None] * cols + inv[:, i, 1, None, None] * rows + inv[:, i, 2, None, None]
                    for i in (0, 1))
    out = ops.sample_bilinear(x, src_r, src_c, "reflect")
    if alpha > 0 and sigma > 0:
        dx, dy = (alpha * ops.gaussian(rng.uniform(-1, 1, size=(B, 1, H, W)), sigma, "symmetric", 3.0)[:, 0]
                  for _ in range(2))
        out = ops.sample_bilinear(out, rows + dy, cols + dx, "symmetric")
    return out


# ------------------------------------------------------------------------------ MNIST-C geometry

def _shear(x, c, rng):
    def shear(r):
        s = c * r.choice([-1, 1])
        return np.array([[1, -np.sin(s)], [0, np.cos(s)]])

    return ops.warp_about_center(x, shear, rng)


def _rotate(x, c, rng):
    def rot(r):
        a = c * r.choice([-1, 1])
        return np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])

    return ops.warp_about_center(x, rot, rng)


def _scale(x, c, rng):
    return ops.warp_about_center(x, lambda r: np.diag([c, c]), rng)


def _translate(x, c, rng):
    shifts = c * rng.choice([-1, 1], size=(x.shape[0], 2))
    M = np.tile(np.eye(3), (x.shape[0], 1, 1))
    M[:, :2, 2] = shifts
    return ops.warp_affine(x, M)


def _stripe(x, p, rng):
    W = x.shape[3]
    out = x.copy()
    out[..., : W // 4] = 1 - out[..., : W // 4]
    out[..., W - W // 4:] = 1 - out[..., W - W // 4:]
    return out


def _dotted_line(x, p, rng):
    B, C, H, W = x.shape
    return x + np.stack([ops.dotted_line(H, W, rng) for _ in range(B)])[:, None]


def _zigzag(x, p, rng):
    B, C, H, W = x.shape
    return x + np.stack([ops.zigzag(H, W, rng) for _ in range(B)])[:, None]


def _canny_edges(x, p, rng):
    return ops.canny(x)


def _suite(*items) -> dict[str, Corruption]:
    return {c.name: c for c in items}


#: suite → corruption name → Corruption. MNIST-C: its default levels (shot 5, impulse 4, glass 1,
#: motion 1, shear 2, scale 3, rotate 2, brightness 5, translate 3, fog 5, spatter 4).
SUITES: dict[str, dict[str, Corruption]] = {
    "mnist_c": _suite(
        Corruption("shot_noise", _shot_noise, (3,)),
        Corruption("impulse_noise", _impulse_noise, (0.17,)),
        Corruption("glass_blur", _glass_blur, ((0.7, 1, 2, True),)),
        Corruption("motion_blur", _motion_blur, ((10, 3),)),
        Corruption("shear", _shear, (0.4,)),
        Corruption("scale", _scale, (1 / 0.7,)),
        Corruption("rotate", _rotate, (0.4,)),
        Corruption("brightness", _brightness, (0.5,)),
        Corruption("translate", _translate, (3,)),
        Corruption("stripe", _stripe, (None,)),
        Corruption("fog", _fog, ((3.0, 1.4, 256),)),
        Corruption("spatter", _spatter_mud, ((0.65, 0.3, 1, 0.65, 1.5),)),
        Corruption("dotted_line", _dotted_line, (None,)),
        Corruption("zigzag", _zigzag, (None,)),
        Corruption("canny_edges", _canny_edges, (None,)),
    ),
    "cifar10_c": _suite(
        Corruption("gaussian_noise", _gaussian_noise, (0.04, 0.06, 0.08, 0.09, 0.10)),
        Corruption("shot_noise", _shot_noise, (500, 250, 100, 75, 50)),
        Corruption("impulse_noise", _impulse_noise, (0.01, 0.02, 0.03, 0.05, 0.07)),
        Corruption("speckle_noise", _speckle_noise, (0.06, 0.1, 0.12, 0.16, 0.2)),
        Corruption("gaussian_blur", _gaussian_blur, (0.4, 0.6, 0.7, 0.8, 1.0)),
        Corruption("glass_blur", _glass_blur, tuple((s, 1, n, False) for s, n in
                                                    ((0.05, 1), (0.25, 1), (0.4, 1), (0.25, 2), (0.4, 2)))),
        Corruption("defocus_blur", _defocus_blur, ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1))),
        Corruption("motion_blur", _motion_blur, ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5))),
        Corruption("zoom_blur", _zoom_blur,
                   tuple(tuple(np.arange(1, end, 0.01)) for end in (1.06, 1.11, 1.16, 1.21, 1.26))),
        Corruption("fog", _fog, ((0.2, 3, 32), (0.5, 3, 32), (0.75, 2.5, 32), (1, 2, 32), (1.5, 1.75, 32))),
        Corruption("contrast", _contrast, (0.75, 0.5, 0.4, 0.3, 0.15)),
        Corruption("brightness", _brightness, (0.05, 0.1, 0.15, 0.2, 0.3)),
        Corruption("saturate", _saturate, ((0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2))),
        Corruption("jpeg_compression", _jpeg, (80, 65, 58, 50, 40)),
        Corruption("pixelate", _pixelate, (0.95, 0.9, 0.85, 0.75, 0.65)),
        Corruption("elastic_transform", _elastic, ((0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06),
                                                   (0.1, 0.04, 0.05), (0.1, 0.03, 0.03))),
        Corruption("spatter", _spatter, ((0.62, 0.1, 0.7, 0.7, 0.5, 0), (0.65, 0.1, 0.8, 0.7, 0.5, 0),
                                         (0.65, 0.3, 1, 0.69, 0.5, 0), (0.65, 0.1, 0.7, 0.69, 0.6, 1),
                                         (0.65, 0.1, 0.5, 0.68, 0.6, 1))),
    ),
}
#: suite → corruption of the published set that is not generated here → why (read it from the published
#: ``.npy`` files instead: ``ctbench.data.corruption_sets``).
NOT_GENERATED = {"mnist_c": {},
                 "cifar10_c": {"frost": "needs the published frost images"}}  # frost1.png … frost6.png
#: The dataset each suite corrupts, by registry name.
SUITE_OF_DATASET = {"mnist": "mnist_c", "mnist_mini": "mnist_c", "cifar10": "cifar10_c"}


def suite_for(dataset: str) -> str:
    """The corruption suite of a dataset (CTBenchError if there is none)."""
    try:
        return SUITE_OF_DATASET[dataset]
    except KeyError:
        raise CTBenchError(f"no corruption suite for dataset {dataset!r}; known: "
                           f"{', '.join(f'{d} ({s})' for d, s in SUITE_OF_DATASET.items())}") from None


def get(suite: str, name: str) -> Corruption:
    if suite not in SUITES:
        raise CTBenchError(f"unknown corruption suite {suite!r}; known: {', '.join(SUITES)}")
    try:
        return SUITES[suite][name]
    except KeyError:
        raise CTBenchError(f"unknown corruption {name!r} in {suite}; known: {', '.join(SUITES[suite])}") from None


def severities(suite: str, name: str) -> range:
    return range(1, len(get(suite, name).levels) + 1)


def corrupt(x: torch.Tensor, name: str, severity: int = 1, *, suite: str,
            seed: int | Sequence[int] = 0) -> torch.Tensor:
    """Corrupt a batch ``x`` (B, C, H, W) in [0, 1]; returns the same shape, dtype and device, in [0, 1]
    on the 8-bit grid. Deterministic: the random stream depends only on (seed, suite, name, severity)."""
    c = get(suite, name)
    if severity not in severities(suite, name):
        raise CTBenchError(f"{suite}/{name} has severities {list(severities(suite, name))}, got {severity}")
    if x.dim() != 4:
        raise CTBenchError(f"corrupt expects images (B, C, H, W), got shape {tuple(x.shape)}")
    seeds = [int(s) for s in (seed if isinstance(seed, Sequence) else [seed])]
    rng = np.random.default_rng([*seeds, zlib.crc32(f"{suite}/{name}".encode()), severity])
    clean = np.rint(x.detach().cpu().double().clamp(0, 1).numpy() * 255) / 255.0
    out = c.fn(clean, c.levels[severity - 1], rng)
    out = np.rint(np.clip(out, 0, 1) * 255) / 255.0
    return torch.from_numpy(out).to(dtype=x.dtype, device=x.device)
