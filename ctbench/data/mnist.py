"""MNIST (LeCun et al., 2010): 1×28×28 grey images, 10 classes, 60,000 train / 10,000 test.

CTBench App. C.1: "For MNIST, we do not apply any preprocessing" — no augmentation; the model normalizes
with mean 0.1307, std 0.3081. Layout of a prepared root is torchvision's: ``<root>/MNIST/raw/`` holds the
four uncompressed IDX files (so ``torchvision.datasets.MNIST(root)`` also works on it).

Obtaining the files, in order: an already prepared root; a local source directory holding the four IDX files
gzipped or not (directly or under ``MNIST/raw/``), verified by the MD5 of their uncompressed content;
torchvision's download (into a staging folder, then staged the same way).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

from ctbench.data.integrity import (
    copy_atomic,
    ensure_verified,
    marker_ok,
    missing_error,
    staging_dir,
    verify_md5,
    write_marker,
)
from ctbench.data.spec import DATASETS, DatasetSpec, require_dir
from ctbench.errors import CTBenchError

if TYPE_CHECKING:  # torch and torchvision are imported where used: the registry stays light
    import torch

    from ctbench.data.tensors import TensorImageDataset

logger = logging.getLogger(__name__)

#: MD5 of the UNCOMPRESSED official IDX files (reference/datasets.md).
MNIST_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
MNIST_CLASSES = [str(i) for i in range(10)]
_PREFIX = {"train": "train", "test": "t10k"}


def raw_dir(root: Path) -> Path:
    """Where a prepared root keeps the IDX files: ``<root>/MNIST/raw``."""
    return Path(root) / "MNIST" / "raw"


def find_source_files(source: Path) -> dict[str, Path]:
    """Map each IDX name found in ``source`` (or ``source/MNIST/raw``), plain or ``.gz``, to its path."""
    found = {}
    for name in MNIST_MD5:
        for folder in (source, raw_dir(source)):
            for candidate in (folder / name, folder / f"{name}.gz"):
                if candidate.is_file():
                    found[name] = candidate
                    break
            if name in found:
                break
    return found


def stage_mnist(source: Path, root: Path) -> Path:
    """Verify all four files in ``source``, then copy/decompress them into ``<root>/MNIST/raw``.

    Every file is verified before anything is written, so a bad or missing file leaves ``root`` untouched.
    """
    found = find_source_files(require_dir(source))
    missing = [n for n in MNIST_MD5 if n not in found]
    if missing:
        raise missing_error(
            "mnist",
            [f"{n}[.gz]" for n in MNIST_MD5],
            [raw_dir(root), source, raw_dir(source)],
            hint=f" (missing: {', '.join(missing)})",
        )
    for name, path in found.items():
        verify_md5(path, MNIST_MD5[name], uncompressed=path.suffix == ".gz")
    dest = raw_dir(root)
    for name, path in found.items():
        copy_atomic(path, dest / name, decompress=path.suffix == ".gz")
    write_marker(dest, MNIST_MD5)
    logger.info("staged MNIST from %s into %s", source, dest)
    return dest


def prepare_mnist(root: Path, source: Path | None, download: bool) -> Path:
    """Make ``<root>/MNIST/raw`` hold the verified IDX files; return that folder (idempotent)."""
    dest = raw_dir(root)
    if ensure_verified(dest, MNIST_MD5):
        return dest
    if source is not None and (not download or len(find_source_files(source)) == len(MNIST_MD5)):
        return stage_mnist(source, root)
    if download:
        from torchvision.datasets import MNIST

        with staging_dir(root) as tmp:
            logger.info("downloading MNIST with torchvision into %s", tmp)
            try:
                MNIST(tmp, train=True, download=True)
            except (OSError, RuntimeError) as e:
                raise CTBenchError(f"MNIST download failed: {e}") from None
            return stage_mnist(tmp, root)
    raise missing_error("mnist", [f"{n}[.gz]" for n in MNIST_MD5], [dest])


def read_mnist_split(location: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The raw split from a prepared ``MNIST/raw`` folder: uint8 images (N, 28, 28), int64 labels (N,)."""
    import torch
    from torchvision.datasets.mnist import read_image_file, read_label_file

    prefix = _PREFIX[split]
    images = read_image_file(str(location / f"{prefix}-images-idx3-ubyte"))
    labels = read_label_file(str(location / f"{prefix}-labels-idx1-ubyte"))
    return images, labels.to(torch.int64)


def build_mnist(location: Path, split: str, augment: bool) -> TensorImageDataset:
    """The whole split in memory: items ``(float (1, 28, 28) in [0, 1], int)``; no augmentation (C.1)."""
    from ctbench.data.tensors import TensorImageDataset

    images, labels = read_mnist_split(location, split)
    return TensorImageDataset(images.unsqueeze(1), labels, classes=MNIST_CLASSES)


MNIST_SPEC = DATASETS.register("mnist")(
    DatasetSpec(
        name="mnist",
        shape=(1, 28, 28),
        num_classes=10,
        mean=MNIST_MEAN,
        std=MNIST_STD,
        train_augmentation="none",
        source="IDX files: --source-dir (md5-verified) or torchvision download",
        files=tuple(f"MNIST/raw/{n}" for n in MNIST_MD5),
        prepare=prepare_mnist,
        build=build_mnist,
        present=lambda root: marker_ok(raw_dir(root), MNIST_MD5),
    )
)
