"""Dataset specifications and the dataset registry (CTBench, App. C.1 "Dataset").

A :class:`DatasetSpec` says what a dataset *is* (input shape, classes, per-channel mean/std used by the
model's ``Normalization`` layer — inputs and ε stay in [0, 1] pixel space) and how to obtain and open it
(three callables supplied by the dataset's module). Specs are registered by name in :data:`DATASETS`.

This module, like the registry as a whole (``ctbench.data``), imports neither torch nor torchvision, so
``ctbench data list`` starts fast: the dataset modules import them inside the functions that need them.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from ctbench.errors import CTBenchError
from ctbench.registry import Registry

if TYPE_CHECKING:
    from torch.utils.data import Dataset

logger = logging.getLogger(__name__)

#: The splits every dataset offers. ``test`` is the official test set; for TinyImageNet it is the official
#: validation set, as in the paper (App. C.1: "train on the train set and certify on the validation set").
SPLITS = ("train", "test")

#: Environment variables: the prepared data root and a local directory to stage from.
ENV_ROOT = "CTBENCH_DATA_ROOT"
ENV_SOURCE = "CTBENCH_DATA_SOURCE"

#: ``prepare(root, source_dir, download) -> Path``: make the data present and verified; return its location.
PrepareFn = Callable[[Path, "Path | None", bool], Path]
#: ``build(location, split, augment) -> Dataset`` of ``(float tensor (C, H, W) in [0, 1], int label)``.
BuildFn = Callable[[Path, str, bool], "Dataset"]
#: ``present(root) -> bool``: cheap check (no hashing) that ``prepare`` would find the data ready.
PresentFn = Callable[[Path], bool]


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset: shape, label space, normalization statistics and how to obtain/open it.

    Attributes:
        name: registry name (``mnist``, ``cifar10``, ``tinyimagenet``, ``mnist_mini``).
        shape: input shape ``(C, H, W)``.
        num_classes: size of the label space.
        mean, std: per-channel statistics (length ``C``) for the model's normalization layer.
        train_augmentation: human-readable description of the train-time augmentation ("none" if none).
        source: where the data comes from (shown by ``ctbench data list``).
        files: the files/folders looked for (shown in errors and by ``ctbench data list``).
    """

    name: str
    shape: tuple[int, int, int]
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    train_augmentation: str
    source: str
    files: tuple[str, ...]
    prepare: PrepareFn
    build: BuildFn
    present: PresentFn

    def __post_init__(self) -> None:
        if len(self.mean) != self.shape[0] or len(self.std) != self.shape[0]:
            raise ValueError(f"{self.name}: mean/std must have one entry per channel ({self.shape[0]})")


DATASETS: Registry[DatasetSpec] = Registry("dataset")


def get_spec(name: str) -> DatasetSpec:
    """The :class:`DatasetSpec` named ``name``; unknown names raise ``CTBenchError`` listing the known."""
    return DATASETS.get(name)


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise CTBenchError(f"unknown split {split!r}; known: {', '.join(SPLITS)}")
    return split


def resolve_root(root: str | os.PathLike | None = None) -> Path:
    """The prepared-data root: ``root`` if given, else ``$CTBENCH_DATA_ROOT``, else ``./data``."""
    if root is None:
        root = os.environ.get(ENV_ROOT) or "data"
    return Path(root).expanduser()


def resolve_source(source_dir: str | os.PathLike | None = None) -> Path | None:
    """The local staging directory: ``source_dir``, else ``$CTBENCH_DATA_SOURCE``, else ``None``."""
    if source_dir is None:
        source_dir = os.environ.get(ENV_SOURCE) or None
    if source_dir is None:
        return None
    return Path(source_dir).expanduser()


def require_dir(source: Path) -> Path:
    """``source`` if it is a directory, else ``CTBenchError`` (checked only when the root lacks the data)."""
    if not source.is_dir():
        raise CTBenchError(f"data source directory {source} does not exist or is not a directory")
    return source
