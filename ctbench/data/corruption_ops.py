"""Image operations behind the corruption suites (``ctbench.data.corruptions``), in numpy and torch only.

Replacements for the scipy / scikit-image / OpenCV / ImageMagick calls of the reference generators
(MNIST-C ``corruptions.py``, Mu & Gilmer 2019; CIFAR-10-C ``make_cifar_c.py``, Hendrycks & Dietterich
2019). Each follows the library function it replaces (named in its docstring) closely but not bit-exactly.

Images: float64 numpy arrays (B, C, H, W) in [0, 1]; per-image random quantities come from a
``numpy.random.Generator``. Coordinates: column = x, row = y, as in scikit-image.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

#: ITU-R 709 luminance weights of ``skimage.color.rgb2gray``.
GRAY = np.array([0.2125, 0.7154, 0.0721])


def correlate(x: np.ndarray, kernel: np.ndarray, mode: str) -> np.ndarray:
    """Same-size 2-D correlation of every channel with ``kernel`` (kh, kw), odd sizes. ``mode``: "edge"
    (scipy "nearest"), "reflect" (OpenCV's default BORDER_REFLECT_101), "symmetric" (scipy / skimage
    "reflect": d c b a | a b c d) or "constant" (zeros)."""
    B, C, H, W = x.shape
    kh, kw = kernel.shape
    if mode == "symmetric":  # torch has no half-sample symmetric padding: pad in numpy
        x = np.pad(x, [(0, 0), (0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2)], mode="symmetric")
        t = _f32(x).reshape(B * C, 1, H + kh - 1, W + kw - 1)
    else:
        t = _f32(x).reshape(B * C, 1, H, W)
        pad = (kw // 2, kw // 2, kh // 2, kh // 2)
        t = F.pad(t, pad, mode={"edge": "replicate", "reflect": "reflect", "constant": "constant"}[mode])
    k = _f32(kernel).reshape(1, 1, kh, kw)
    return F.conv2d(t, k).reshape(B, C, H, W).double().numpy()


def _f32(a: np.ndarray) -> torch.Tensor:
    """float32 torch tensor of ``a`` (filters in float32: PyTorch's float64 convolutions are slow on CPU,
    and the results are quantized to 8 bits anyway)."""
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


def gaussian_kernel1d(sigma: float, truncate: float = 4.0) -> np.ndarray:
    """``scipy.ndimage.gaussian_filter1d``'s kernel: radius int(truncate·σ + 0.5), normalized."""
    radius = int(truncate * sigma + 0.5)
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def gaussian(x: np.ndarray, sigma: float, mode: str = "edge", truncate: float = 4.0) -> np.ndarray:
    """``skimage.filters.gaussian`` per channel (default mode "nearest", truncate 4): separable blur."""
    k = gaussian_kernel1d(sigma, truncate)
    return correlate(correlate(x, k[None, :], mode), k[:, None], mode)


def disk(radius: float, alias_blur: float) -> np.ndarray:
    """The reference generators' anti-aliased disk kernel (a disk blurred by ``cv2.GaussianBlur``)."""
    L = np.arange(-8, 9) if radius <= 8 else np.arange(-math.ceil(radius), math.ceil(radius) + 1)
    X, Y = np.meshgrid(L, L)
    d = ((X**2 + Y**2) <= radius**2).astype(np.float64)
    d /= d.sum()
    size = 3 if radius <= 8 else 5
    t = np.arange(size) - size // 2
    g = np.exp(-(t**2) / (2 * alias_blur**2))
    g /= g.sum()
    return correlate(d[None, None], np.outer(g, g), "reflect")[0, 0]


def rgb_to_hsv(rgb: np.ndarray) -> np.ndarray:
    """``skimage.color.rgb2hsv`` on (B, 3, H, W): returns (B, 3, H, W) = (h, s, v), each in [0, 1]."""
    r, g, b = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    v = rgb.max(1)
    delta = v - rgb.min(1)
    s = np.where(v > 0, delta / np.where(v > 0, v, 1), 0.0)
    d = np.where(delta > 0, delta, 1)
    h = np.where(v == r, (g - b) / d, np.where(v == g, 2 + (b - r) / d, 4 + (r - g) / d))
    h = np.where(delta > 0, (h / 6) % 1.0, 0.0)
    return np.stack([h, s, v], 1)


def hsv_to_rgb(hsv: np.ndarray) -> np.ndarray:
    """``skimage.color.hsv2rgb`` on (B, 3, H, W)."""
    h, s, v = hsv[:, 0], hsv[:, 1], hsv[:, 2]
    i = np.floor(h * 6)
    f = h * 6 - i
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    i = i.astype(int) % 6
    choices = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    return np.stack([np.choose(i, [c[ch] for c in choices]) for ch in range(3)], 1)


def via_rgb(x: np.ndarray, fn) -> np.ndarray:
    """Apply a colour operation ``fn`` (on (B, 3, H, W)) to grey images through gray2rgb / rgb2gray."""
    if x.shape[1] == 3:
        return fn(x)
    out = fn(np.repeat(x, 3, axis=1))
    return np.einsum("bchw,c->bhw", out, GRAY)[:, None]


def warp_affine(x: np.ndarray, M: np.ndarray) -> np.ndarray:
    """``skimage.transform.warp(x, inverse_map=M)`` with order 1 and zero fill: output pixel (col, row)
    takes the bilinear value of the input at ``M @ (col, row, 1)``. ``M``: (B, 3, 3) or (3, 3)."""
    B, C, H, W = x.shape
    M = np.broadcast_to(M, (B, 3, 3))
    rows, cols = np.meshgrid(np.arange(H, dtype=np.float64), np.arange(W, dtype=np.float64), indexing="ij")
    src_c = M[:, 0, 0, None, None] * cols + M[:, 0, 1, None, None] * rows + M[:, 0, 2, None, None]
    src_r = M[:, 1, 0, None, None] * cols + M[:, 1, 1, None, None] * rows + M[:, 1, 2, None, None]
    grid = np.stack([2 * src_c / (W - 1) - 1, 2 * src_r / (H - 1) - 1], -1)
    out = F.grid_sample(_f32(x), _f32(grid), mode="bilinear", padding_mode="zeros", align_corners=True)
    return out.double().numpy()


def warp_about_center(x: np.ndarray, make, rng: np.random.Generator) -> np.ndarray:
    """Warp each image with the 2×2 matrix ``make(rng)`` (drawn per image) about its centre, as MNIST-C's
    ``skimage.transform.AffineTransform`` plus the translation that keeps the centre fixed."""
    B, C, H, W = x.shape
    cx, cy = (W - 1) / 2, (H - 1) / 2
    M = np.zeros((B, 3, 3))
    for b in range(B):
        A = make(rng)
        M[b, :2, :2] = A
        M[b, :2, 2] = [cx - A[0, 0] * cx - A[0, 1] * cy, cy - A[1, 0] * cx - A[1, 1] * cy]
        M[b, 2, 2] = 1
    return warp_affine(x, M)


def zoom_center(x: np.ndarray, z: float) -> np.ndarray:
    """The reference ``clipped_zoom``: crop the central ceil(H/z) square, zoom it by ``z`` (linear,
    corner-aligned like ``scipy.ndimage.zoom``), trim back to (H, W)."""
    B, C, H, W = x.shape
    ch = math.ceil(H / z)
    top = (H - ch) // 2
    crop = _f32(x[:, :, top:top + ch, top:top + ch])
    size = round(ch * z)
    big = F.interpolate(crop, size=(size, size), mode="bilinear", align_corners=True).double().numpy()
    trim = (size - H) // 2
    return big[:, :, trim:trim + H, trim:trim + W]


def affine_from_points(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """``cv2.getAffineTransform`` per image: the (B, 2, 3) affine maps taking the three points ``src``
    (B, 3, 2) as (col, row) onto ``dst`` (B, 3, 2 or 3, 2), i.e. ``dst = A @ (col, row, 1)``."""
    src = np.asarray(src, dtype=np.float64)
    P = np.concatenate([src, np.ones(src.shape[:-1] + (1,))], -1)  # (B, 3, 3)
    dst = np.broadcast_to(np.asarray(dst, dtype=np.float64), src.shape)
    return np.linalg.solve(P, dst).transpose(0, 2, 1)


def _fold(coord: np.ndarray, n: int, mode: str) -> np.ndarray:
    """Map sample coordinates outside [0, n−1] back inside, as the border ``mode`` extends the image:
    "reflect" (OpenCV BORDER_REFLECT_101, mirror about pixel 0) or "symmetric" (scipy "reflect", mirror
    about −0.5; values in [−0.5, 0) then read pixel 0 after clamping)."""
    if n == 1:
        return np.zeros_like(coord)
    if mode == "reflect":
        c = np.mod(coord, 2 * (n - 1))
        return np.where(c > n - 1, 2 * (n - 1) - c, c)
    if mode == "symmetric":
        c = np.mod(coord + 0.5, 2 * n) - 0.5
        return np.where(c > n - 0.5, 2 * n - 1 - c, c)
    raise ValueError(f"unknown border mode {mode!r}")


def sample_bilinear(x: np.ndarray, rows: np.ndarray, cols: np.ndarray, mode: str) -> np.ndarray:
    """Bilinear resampling (``scipy.ndimage.map_coordinates`` order 1, ``cv2.remap`` INTER_LINEAR):
    output (b, c, i, j) = ``x`` (B, C, H, W) at the real position (``rows`` [b, i, j], ``cols`` [b, i, j]),
    coordinates (B, H, W) or (H, W); outside the image the border ``mode`` of :func:`_fold` applies."""
    B, C, H, W = x.shape
    r = np.clip(_fold(np.broadcast_to(rows, (B, H, W)), H, mode), 0, H - 1)
    c = np.clip(_fold(np.broadcast_to(cols, (B, H, W)), W, mode), 0, W - 1)
    r0, c0 = np.floor(r).astype(int), np.floor(c).astype(int)
    r1, c1 = np.minimum(r0 + 1, H - 1), np.minimum(c0 + 1, W - 1)
    fr, fc = (r - r0)[:, None], (c - c0)[:, None]
    b = np.arange(B)[:, None, None]

    def at(rr, cc):  # (B, C, H, W): the pixels at integer positions rr, cc (B, H, W)
        return x[b, :, rr, cc].transpose(0, 3, 1, 2)

    top = at(r0, c0) * (1 - fc) + at(r0, c1) * fc
    bottom = at(r1, c0) * (1 - fc) + at(r1, c1) * fc
    return top * (1 - fr) + bottom * fr


def motion_kernel_offsets(radius: float, sigma: float, angle_deg: float):
    """ImageMagick ``MotionBlurImage``: weights exp(−i²/2σ²) for i < 2·ceil(radius) + 1 (normalized) at
    integer offsets (round(i·cos a), round(i·sin a)) along the direction ``a``."""
    width = 2 * math.ceil(radius) + 1
    i = np.arange(width, dtype=np.float64)
    w = np.exp(-(i**2) / (2 * sigma**2))
    a = math.radians(angle_deg)
    return w / w.sum(), np.rint(i * math.cos(a)).astype(int), np.rint(i * math.sin(a)).astype(int)


def motion_blur(x: np.ndarray, radius: float, sigma: float, angles) -> np.ndarray:
    """One-sided motion blur per image (angle in degrees per image), edge pixels repeated outside."""
    B, C, H, W = x.shape
    rows, cols = np.arange(H)[:, None], np.arange(W)[None, :]
    out = np.zeros_like(x)
    for b in range(B):
        weights, dc, dr = motion_kernel_offsets(radius, sigma, float(angles[b]))
        for w, oc, orow in zip(weights, dc, dr, strict=True):
            out[b] += w * x[b][:, np.clip(rows + orow, 0, H - 1), np.clip(cols + oc, 0, W - 1)]
    return out


def plasma_fractal(batch: int, mapsize: int, decay: float, rng: np.random.Generator) -> np.ndarray:
    """The reference generators' diamond-square height map (B, mapsize, mapsize) in [0, 1] per map
    (float32)."""
    assert mapsize & (mapsize - 1) == 0, "mapsize must be a power of two"
    a = np.zeros((batch, mapsize, mapsize), dtype=np.float32)  # float32: the map is only a texture
    step, wibble = mapsize, 100.0

    def wibbled_mean(v):
        noise = rng.random(v.shape, dtype=np.float32)
        return v / 4 + np.float32(wibble) * (noise * np.float32(2 * wibble) - np.float32(wibble))

    while step >= 2:
        half = step // 2
        corners = a[:, 0:mapsize:step, 0:mapsize:step]
        sq = corners + np.roll(corners, -1, axis=1)
        sq = sq + np.roll(sq, -1, axis=2)
        a[:, half:mapsize:step, half:mapsize:step] = wibbled_mean(sq)
        dr = a[:, half:mapsize:step, half:mapsize:step]
        ul = a[:, 0:mapsize:step, 0:mapsize:step]
        a[:, 0:mapsize:step, half:mapsize:step] = wibbled_mean(dr + np.roll(dr, 1, 1) + ul + np.roll(ul, -1, 2))
        a[:, half:mapsize:step, 0:mapsize:step] = wibbled_mean(dr + np.roll(dr, 1, 2) + ul + np.roll(ul, -1, 1))
        step //= 2
        wibble /= decay
    a -= a.min(axis=(1, 2), keepdims=True)
    return a / a.max(axis=(1, 2), keepdims=True)


def line_from_points(c0, r0, c1, r1, H: int, W: int) -> np.ndarray:
    """MNIST-C's anti-aliased line (H, W) between columns c0..c1: intensity log(1 − d/2.3) + 1 at
    vertical distance d from the line, zero outside [floor(c0), ceil(c1))."""
    if c1 == c0:
        return np.zeros((H, W))
    cc, rr = np.meshgrid(np.arange(W, dtype=np.float64), np.arange(H, dtype=np.float64), sparse=True)
    m = (r1 - r0) / (c1 - c0)
    dist = np.clip(np.abs(rr - (m * (cc - c0) + r0)), 0, 2.3 - 1e-10)
    line = np.clip(np.log(1 - dist / 2.3) + 1, 0, 1)
    line[:, : int(math.floor(c0))] = 0
    line[:, int(math.ceil(c1)):] = 0
    return line


def pil_roundtrip(x: np.ndarray, fn) -> np.ndarray:
    """Apply ``fn`` (PIL image → PIL image or array) to each image as 8-bit grey or RGB (JPEG, resizing)."""
    from PIL import Image

    u8 = np.rint(np.clip(x, 0, 1) * 255).astype(np.uint8).transpose(0, 2, 3, 1)
    out = []
    for img in u8:
        pil = Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)
        arr = np.asarray(fn(pil), dtype=np.float64)
        out.append(arr[..., None] if arr.ndim == 2 else arr)
    return np.stack(out).transpose(0, 3, 1, 2) / 255.0


def dotted_line(H: int, W: int, rng: np.random.Generator) -> np.ndarray:
    """MNIST-C's ``dotted_line``: a line across the image between random rows, every other pair of
    columns blanked. Returns the (H, W) overlay."""
    r0, r1 = rng.integers(0, W - 1, size=2)
    line = line_from_points(0, r0, W - 1, r1, H, W)
    for i in range(0, W + 2, 4):
        line[:, i:i + 2] = 0
    return line


def zigzag(H: int, W: int, rng: np.random.Generator) -> np.ndarray:
    """MNIST-C's ``zigzag``: a zigzag of segment length and amplitude 2 along a random slanted line,
    summed segment by segment with clipping. Returns the (H, W) overlay in [0, 1]."""
    a = b = 2.0
    c0, c1 = 2, W - 3
    r0 = rng.integers(0, W - 1)
    r1 = r0 + rng.integers(-5, 5)
    theta = np.arctan((r1 - r0) / (c1 - c0))
    d = (c1 - c0) / np.cos(theta)
    pts = [(0.0, 0.0)]
    for i in range(int((d - a) // (2 * a)) + 1):
        r_i = (-1) ** i * b
        pts.append(((2 * i + 1) * a, r_i))
    max_c = (2 * a) * (d // (2 * a))
    if d != max_c:
        pts.append((d, r_i / (2 * (d - max_c))))
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    cs, rs = rot @ np.array(pts).T
    cs, rs = cs + c0, rs + r0
    out = np.zeros((H, W))
    for i in range(1, len(cs)):
        out = np.clip(out + line_from_points(cs[i - 1], rs[i - 1], cs[i], rs[i], H, W), 0, 1)
    return out


def canny(x: np.ndarray, sigma: float = 1.0, low: float = 0.1, high: float = 0.2) -> np.ndarray:
    """``skimage.feature.canny`` per channel (binary (B, C, H, W)): Gaussian smoothing normalized at the
    border, Sobel gradients, non-maximum suppression over 4 directions, hysteresis (8-connected)."""
    ones = np.ones((1, 1) + x.shape[2:])
    smooth = gaussian(x, sigma, "constant") / gaussian(ones, sigma, "constant")
    sob = np.array([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]])
    gc = -correlate(smooth, sob, "edge")  # d/dcol
    gr = -correlate(smooth, sob.T, "edge")  # d/drow
    mag = np.hypot(gc, gr)
    inner = np.zeros_like(mag, dtype=bool)
    inner[..., 1:-1, 1:-1] = True
    weak = _local_max(mag, gc, gr) & inner & (mag >= low)
    return _hysteresis(weak, weak & (mag >= high)).astype(np.float64)


def _local_max(mag: np.ndarray, gc: np.ndarray, gr: np.ndarray) -> np.ndarray:
    """Canny's non-maximum suppression over 4 gradient directions (bool (B, C, H, W)); zeros outside."""
    angle = (np.rad2deg(np.arctan2(gr, gc)) + 180.0) % 180.0
    sector = np.digitize(angle, [22.5, 67.5, 112.5, 157.5]) % 4  # 0: horizontal gradient, 1: 45°, 2: vertical, 3: 135°
    p = np.pad(mag, [(0, 0), (0, 0), (1, 1), (1, 1)])
    H, W = mag.shape[2:]

    def at(dr, dc):
        return p[..., 1 + dr:1 + dr + H, 1 + dc:1 + dc + W]

    pairs = [((0, 1), (0, -1)), ((1, 1), (-1, -1)), ((1, 0), (-1, 0)), ((1, -1), (-1, 1))]
    local_max = np.zeros(mag.shape, dtype=bool)
    for s, (a, b) in enumerate(pairs):
        local_max |= (sector == s) & (mag >= at(*a)) & (mag >= at(*b))
    return local_max


def _hysteresis(weak: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Grow the strong ``edges`` (bool (..., H, W)) through 8-connected ``weak`` pixels (bool)."""
    H, W = edges.shape[-2:]
    while True:
        grown = np.pad(edges, [(0, 0), (0, 0), (1, 1), (1, 1)])
        dil = np.zeros_like(edges)
        for dr in (-1, 0, 1):
            for dc in (-1, 0, 1):
                dil |= grown[..., 1 + dr:1 + dr + H, 1 + dc:1 + dc + W]
        new = dil & weak
        if (new == edges).all():
            return edges
        edges = new


def canny_u8(x: np.ndarray, low: float, high: float) -> np.ndarray:
    """``cv2.Canny(img, low, high)`` on 8-bit values (B, C, H, W) (float holding 0..255): 3×3 Sobel
    (edge pixels repeated), L1 gradient magnitude, no pre-smoothing, non-maximum suppression, hysteresis
    (strong > ``high``, weak > ``low``). Returns the binary edge map (bool, same shape)."""
    sob = np.array([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
    gc, gr = correlate(x, sob, "edge"), correlate(x, sob.T, "edge")
    mag = np.abs(gc) + np.abs(gr)
    weak = _local_max(mag, gc, gr) & (mag > low)
    return _hysteresis(weak, weak & (mag > high))


def distance_to(mask: np.ndarray, cap: float) -> np.ndarray:
    """``cv2.distanceTransform`` of the complement of ``mask`` (bool (B, H, W)), truncated at ``cap``
    (``cv2.threshold(…, THRESH_TRUNC)``): the Euclidean distance (B, H, W) of each pixel to the nearest
    ``True`` pixel of its image (exact, where OpenCV uses a 5×5 approximation); ``cap`` if there is none."""
    B, H, W = mask.shape
    grid = np.stack(np.meshgrid(np.arange(H), np.arange(W), indexing="ij"), -1).reshape(-1, 2).astype(np.float64)
    out = np.full((B, H * W), float(cap))
    for b in range(B):
        pts = grid[mask[b].reshape(-1)]
        if len(pts):
            d = np.sqrt(((grid[:, None, :] - pts[None, :, :]) ** 2).sum(-1)).min(1)
            out[b] = np.minimum(d, cap)
    return out.reshape(B, H, W)


def equalize_hist_u8(x: np.ndarray) -> np.ndarray:
    """``cv2.equalizeHist`` per image of 8-bit values (B, H, W) (integers 0..255 as float): the lowest
    occupied level maps to 0, level v to round(255 · #{pixels in (lowest, v]} / #{pixels above lowest})."""
    out = np.empty_like(x, dtype=np.float64)
    for b in range(x.shape[0]):
        v = x[b].astype(np.int64)
        hist = np.bincount(v.reshape(-1), minlength=256)
        lowest = int(np.flatnonzero(hist)[0])
        rest = v.size - hist[lowest]
        if rest == 0:  # a single level: OpenCV returns it unchanged
            out[b] = lowest
            continue
        lut = (np.cumsum(hist) - hist[lowest]) * 255.0 / rest
        lut[:lowest] = 0
        out[b] = np.rint(lut)[v]
    return out


def filter_u8(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """``cv2.filter2D`` / ``cv2.blur`` on 8-bit images (B, C, H, W) with an 8-bit result: correlation
    with BORDER_REFLECT_101, rounded and saturated to 0..255."""
    return np.clip(np.rint(correlate(x, kernel, "reflect")), 0, 255)
