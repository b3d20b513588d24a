"""Datasets for certified training (CTBench, App. C.1): MNIST, CIFAR-10, TinyImageNet and ``mnist_mini``.

Every item is ``(float tensor (C, H, W) in [0, 1], int label)``: inputs and ε live in [0, 1] pixel space,
and the per-channel ``mean``/``std`` of a :class:`DatasetSpec` go into the model's normalization layer.

Obtaining data (``prepare_dataset``), in this order:

1. an already prepared root (``root``, else ``$CTBENCH_DATA_ROOT``, else ``./data``), verified cheaply
   through a ``.ctbench-verified.json`` marker (full MD5 check when the marker is missing);
2. staging from a local directory (``source_dir``, else ``$CTBENCH_DATA_SOURCE``), every file MD5-verified
   before anything is written into the root;
3. the real download (``download=True``), staged the same way.

A bad checksum or missing data raises one :class:`~ctbench.errors.CTBenchError` that says what and how to fix.

Example::

    ds = load_dataset("mnist_mini", "train")            # shipped; no files needed
    loader = make_loader(ds, batch_size=256, shuffle=True, seed=0)
    x, y = next(iter(loader))                           # (256, 1, 28, 28) float, (256,) int64

Importing this package (the registry, ``prepare_dataset``, the ``present`` checks) does not import torch,
torchvision or numpy, so ``ctbench data list`` starts fast; they are imported when a dataset is built.
The torch-backed names (:class:`TensorImageDataset`, :func:`make_loader`, :func:`dataset_stats`) come
from ``ctbench.data.tensors`` on first access.
"""

from __future__ import annotations

import importlib
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from ctbench.data import cifar, mnist, mnist_mini, tinyimagenet  # noqa: F401  (register the specs)
from ctbench.data.spec import (
    DATASETS,
    SPLITS,
    DatasetSpec,
    check_split,
    get_spec,
    resolve_root,
    resolve_source,
)
from ctbench.data.tinyimagenet import reorganize_val as reorganize_tinyimagenet_val

if TYPE_CHECKING:
    from torch.utils.data import Dataset

    from ctbench.data.tensors import TensorImageDataset, dataset_stats, make_loader

__all__ = [
    "DATASETS",
    "SPLITS",
    "DatasetSpec",
    "TensorImageDataset",
    "dataset_stats",
    "get_spec",
    "load_dataset",
    "make_loader",
    "prepare_dataset",
    "reorganize_tinyimagenet_val",
    "resolve_root",
]

logger = logging.getLogger(__name__)

#: Public names imported from a torch-backed module on first access (PEP 562).
_LAZY = {
    "TensorImageDataset": "ctbench.data.tensors",
    "dataset_stats": "ctbench.data.tensors",
    "make_loader": "ctbench.data.tensors",
}


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # later lookups are plain attribute hits
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


def prepare_dataset(
    name: str,
    root: str | os.PathLike | None = None,
    *,
    source_dir: str | os.PathLike | None = None,
    download: bool = False,
) -> Path:
    """Make dataset ``name`` present and verified under ``root``; return its location (idempotent).

    The location is ``<root>/MNIST/raw``, ``<root>/cifar-10-batches-py``, ``<root>/tiny-imagenet-200`` or,
    for ``mnist_mini``, the shipped ``.npz`` (``root`` unused).
    """
    spec = get_spec(name)
    return spec.prepare(resolve_root(root), resolve_source(source_dir), download)


def load_dataset(
    name: str,
    split: str,
    root: str | os.PathLike | None = None,
    *,
    source_dir: str | os.PathLike | None = None,
    download: bool = False,
    augment: bool | None = None,
) -> Dataset:
    """Split ``train`` or ``test`` of dataset ``name`` (prepared on demand, see :func:`prepare_dataset`).

    Items are ``(float tensor spec.shape in [0, 1], int)``. ``augment`` defaults to ``True`` for ``train``
    and ``False`` for ``test``; datasets without augmentation (MNIST) ignore it. TinyImageNet's ``test`` is
    the official validation set (App. C.1).
    """
    spec = get_spec(name)
    check_split(split)
    location = prepare_dataset(name, root, source_dir=source_dir, download=download)
    if augment is None:
        augment = split == "train"
    dataset = spec.build(location, split, bool(augment))
    logger.debug("loaded %s/%s from %s: %d samples", name, split, location, len(dataset))
    return dataset
