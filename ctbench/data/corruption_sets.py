"""The published corruption benchmarks as local files: MNIST-C (Mu & Gilmer 2019) and CIFAR-10-C
(Hendrycks & Dietterich 2019), for the out-of-distribution analysis (CTBench paper §5.5, Fig. 6 and 11).

They cannot be downloaded here; a user who has them points the data root (or a source directory to stage
from) at the published ``.npy`` files, in the published layout:

* ``<root>/mnist_c/<corruption>/test_images.npy`` (uint8 (N, 28, 28, 1)) + ``test_labels.npy`` (N,);
* ``<root>/CIFAR-10-C/<corruption>.npy`` (uint8 (5·N, 32, 32, 3), severities 1-5 stacked, N each) +
  ``labels.npy`` (5·N,).

The corruptions required are those the original evaluates (``get_stat.run_mnist_corrupted`` /
``run_cifar10_corrupted``: 15 for MNIST-C, 18 for CIFAR-10-C — snow is not used). Other files are ignored.

Integrity, as for the other datasets (``ctbench.data.integrity``): a prepared folder carries a
``.ctbench-verified.json`` marker with each file's MD5 and size, checked cheaply on every load; staging
from ``source_dir`` copies atomically. No published checksums of these files are available offline, so
the MD5s are **computed at first staging (trust on first use)** and recorded with
``checksum_source`` saying so; later loads detect changed or truncated files against them. Fill
:data:`PUBLISHED_MD5` to verify against published values instead.

This is a registry of its own (:data:`CORRUPTION_SETS`), beside ``ctbench.data.DATASETS``: these sets
have no train split and are indexed by (corruption, severity), so they are not ordinary datasets.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ctbench.data.integrity import MARKER, copy_atomic, md5_of, write_marker_best_effort
from ctbench.data.spec import require_dir, resolve_root, resolve_source
from ctbench.data.tensors import TensorImageDataset
from ctbench.errors import CTBenchError
from ctbench.registry import Registry

logger = logging.getLogger(__name__)

TOFU_NOTE = "computed at first staging (no published checksums available offline; trust on first use)"


@dataclass(frozen=True)
class CorruptionSetSpec:
    name: str  # registry name; also the suite name in ctbench.data.corruptions
    folder: str  # folder under the data root, as published
    dataset: str  # the clean dataset it corrupts
    shape: tuple[int, int, int]  # (C, H, W)
    corruptions: tuple[str, ...]
    severities: int  # 1 (MNIST-C) or 5 (CIFAR-10-C, stacked in one file)
    url: str

    def images(self, corruption: str) -> str:
        return f"{corruption}/test_images.npy" if self.severities == 1 else f"{corruption}.npy"

    def labels(self, corruption: str) -> str:
        return f"{corruption}/test_labels.npy" if self.severities == 1 else "labels.npy"

    def files(self) -> list[str]:
        return list(dict.fromkeys(f for c in self.corruptions for f in (self.images(c), self.labels(c))))


CORRUPTION_SETS: Registry[CorruptionSetSpec] = Registry("corruption set")
CORRUPTION_SETS.register("mnist_c")(CorruptionSetSpec(
    "mnist_c", "mnist_c", "mnist", (1, 28, 28),
    ("brightness", "canny_edges", "dotted_line", "fog", "glass_blur", "impulse_noise", "motion_blur", "rotate",
     "scale", "shear", "shot_noise", "spatter", "stripe", "translate", "zigzag"),
    1, "https://zenodo.org/record/3239543 (mnist_c.zip)"))
CORRUPTION_SETS.register("cifar10_c")(CorruptionSetSpec(
    "cifar10_c", "CIFAR-10-C", "cifar10", (3, 32, 32),
    ("brightness", "contrast", "defocus_blur", "elastic_transform", "fog", "frost", "gaussian_blur",
     "gaussian_noise", "glass_blur", "impulse_noise", "jpeg_compression", "motion_blur", "pixelate", "saturate",
     "shot_noise", "spatter", "speckle_noise", "zoom_blur"),
    5, "https://zenodo.org/record/2535967 (CIFAR-10-C.tar)"))

#: Published MD5 per set and file (relative path); none are known offline — see the module docstring.
PUBLISHED_MD5: dict[str, dict[str, str]] = {"mnist_c": {}, "cifar10_c": {}}


def _recorded(directory: Path) -> dict:
    try:
        return json.loads((directory / MARKER).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def _verify(directory: Path, spec: CorruptionSetSpec) -> None:
    """Check ``directory`` against its marker (cheap: sizes) or hash it and record the MD5s (first use)."""
    files = spec.files()
    recorded = _recorded(directory)
    if all(f in recorded and (directory / f).stat().st_size == recorded[f]["size"] for f in files):
        return
    published = PUBLISHED_MD5.get(spec.name, {})
    logger.info("hashing %d files of %s in %s", len(files), spec.name, directory)
    md5s = {}
    for f in files:
        md5s[f] = md5_of(directory / f)
        expected = published.get(f) or recorded.get(f, {}).get("md5")
        if expected and md5s[f] != expected:
            raise CTBenchError(f"checksum mismatch for {directory / f}: expected MD5 {expected}, got {md5s[f]}; "
                               "the file changed since it was first staged or is not the published one — replace it")
    source = "published MD5s" if all(f in published for f in files) else TOFU_NOTE
    write_marker_best_effort(directory, md5s, checksum_source=source)


def prepare_corruption_set(name: str, root: str | os.PathLike | None = None, *,
                           source_dir: str | os.PathLike | None = None) -> Path:
    """Make ``<root>/<folder>`` hold the set's files, verified; stage them from ``source_dir`` (the
    folder itself or its parent) if the root lacks them. Returns the folder."""
    spec = CORRUPTION_SETS.get(name)
    final = resolve_root(root) / spec.folder
    files = spec.files()
    if all((final / f).is_file() for f in files):
        _verify(final, spec)
        return final
    source = resolve_source(source_dir)
    places = [final]
    if source is not None:
        require_dir(source)
        for folder in (source / spec.folder, source):
            if all((folder / f).is_file() for f in files):
                for f in files:
                    copy_atomic(folder / f, final / f)
                _verify(final, spec)
                logger.info("staged %s from %s into %s", name, folder, final)
                return final
        places += [source / spec.folder, source]
    missing = [f for f in files if not (final / f).is_file()]
    raise CTBenchError(
        f"{name} not found: {len(missing)} of {len(files)} files missing in {', '.join(map(str, places))} "
        f"(e.g. {missing[0]}); it cannot be downloaded by ctbench — get it from {spec.url}, unpack it so that "
        f"{spec.folder}/{files[0]} exists under the data root (or under --source-dir), or use the locally "
        "generated corruptions (source 'generated')")


def available(name: str, root: str | os.PathLike | None = None, *,
              source_dir: str | os.PathLike | None = None) -> bool:
    """Whether :func:`prepare_corruption_set` would find all of the set's files (in ``<root>/<folder>`` or
    in ``source_dir`` / its ``<folder>``), without hashing or copying anything."""
    spec = CORRUPTION_SETS.get(name)
    source = resolve_source(source_dir)
    folders = [resolve_root(root) / spec.folder] + ([source / spec.folder, source] if source is not None else [])
    return any(all((folder / f).is_file() for f in spec.files()) for folder in folders)


def load_corruption_set(name: str, corruption: str, severity: int = 1, root: str | os.PathLike | None = None, *,
                        source_dir: str | os.PathLike | None = None, n: int | None = None,
                        indices=None) -> TensorImageDataset:
    """One corruption at one severity as a dataset of ``(float (C, H, W) in [0, 1], int)``: the first ``n``
    images (all if None), or the images at ``indices`` (positions in the official test set, e.g. the
    ``indices`` of ``mnist_mini``). Image i corrupts official clean test image i."""
    spec = CORRUPTION_SETS.get(name)
    if corruption not in spec.corruptions:
        raise CTBenchError(f"unknown corruption {corruption!r} in {name}; known: {', '.join(spec.corruptions)}")
    if not 1 <= severity <= spec.severities:
        raise CTBenchError(f"{name} has severities 1..{spec.severities}, got {severity}")
    folder = prepare_corruption_set(name, root, source_dir=source_dir)
    images = np.load(folder / spec.images(corruption), mmap_mode="r")
    labels = np.load(folder / spec.labels(corruption), mmap_mode="r")
    C, H, W = spec.shape
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (H, W, C) or len(labels) != len(images):
        raise CTBenchError(f"{folder / spec.images(corruption)}: expected uint8 images (N, {H}, {W}, {C}) with "
                           f"one label each, got {images.dtype} {images.shape} and {len(labels)} labels")
    block = len(images) // spec.severities
    start = (severity - 1) * block
    rows = np.arange(start, start + (block if n is None else min(n, block)))
    if indices is not None:
        rows = start + np.asarray(indices, dtype=np.int64)
        if len(rows) and (rows.min() < start or rows.max() >= start + block):
            raise CTBenchError(f"{name}/{corruption}: indices outside the {block} images of a severity")
    x = torch.from_numpy(np.array(images[rows])).permute(0, 3, 1, 2).contiguous()
    y = torch.from_numpy(np.asarray(labels[rows], dtype=np.int64))
    return TensorImageDataset(x, y)
