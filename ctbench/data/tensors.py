"""In-memory uint8 datasets, seeded loaders and per-channel statistics.

MNIST-sized splits live in memory as one uint8 tensor ``(N, C, H, W)`` and are converted to float in
[0, 1] per *batch*: :func:`make_loader` hands a whole list of indices to :class:`TensorImageDataset`, so a
batch costs one gather and one division instead of N Python-level item fetches.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import torch
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

logger = logging.getLogger(__name__)


class TensorImageDataset(Dataset):
    """Images kept as uint8, served as float in [0, 1].

    Args:
        images: uint8 tensor ``(N, C, H, W)``.
        labels: integer tensor ``(N,)``.
        transform: optional per-sample transform applied to the float ``(C, H, W)`` tensor.
        classes: optional class names (length = number of classes).

    ``ds[i]`` gives ``(float tensor (C, H, W), int)``; ``ds[list_of_indices]`` (or a 1-D index tensor) gives a
    batch ``(float tensor (B, C, H, W), int64 tensor (B,))``.
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
        classes: Sequence[str] | None = None,
    ):
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"images must be uint8 (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        if labels.shape != (images.shape[0],):
            raise ValueError(f"labels must have shape ({images.shape[0]},), got {tuple(labels.shape)}")
        self.images = images
        self.labels = labels.to(torch.int64)
        self.transform = transform
        self.classes = list(classes) if classes is not None else None

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index):
        if isinstance(index, (list, tuple, torch.Tensor)) and not (
            isinstance(index, torch.Tensor) and index.dim() == 0
        ):
            return self._batch(torch.as_tensor(index, dtype=torch.int64))
        x = self.images[index].float().div_(255)
        if self.transform is not None:
            x = self.transform(x)
        return x, int(self.labels[index])

    def _batch(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.images.index_select(0, idx).float().div_(255)
        if self.transform is not None:
            x = torch.stack([self.transform(xi) for xi in x])
        return x, self.labels.index_select(0, idx)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool,
    seed: int,
    num_workers: int = 0,
    *,
    drop_last: bool = False,
    pin_memory: bool = False,
) -> DataLoader:
    """A ``DataLoader`` whose order depends only on ``seed`` (a seeded ``torch.Generator``).

    Batches are ``(float tensor (B, C, H, W) in [0, 1], int64 tensor (B,))``. The generator advances each
    epoch, so epochs differ from each other but the whole sequence is reproducible; worker seeds derive from
    it too. With ``num_workers=0`` random augmentations draw from the global torch RNG (seed it with
    ``torch.manual_seed``). A :class:`TensorImageDataset` is fetched batch-at-a-time; the order is the same
    as the per-item path would give.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    generator = torch.Generator().manual_seed(int(seed))
    common = dict(num_workers=num_workers, pin_memory=pin_memory, generator=generator)
    if num_workers > 0:
        common["persistent_workers"] = False
    if isinstance(dataset, TensorImageDataset):
        sampler = RandomSampler(dataset, generator=generator) if shuffle else SequentialSampler(dataset)
        batches = BatchSampler(sampler, batch_size=batch_size, drop_last=drop_last)
        return DataLoader(dataset, sampler=batches, batch_size=None, **common)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last, **common)


def dataset_stats(dataset: Dataset, batch_size: int = 1000) -> tuple[int, torch.Tensor, torch.Tensor]:
    """``(N, mean (C,), std (C,))`` of a dataset's inputs, per channel over all pixels (float64, ddof 0)."""
    n, total, total_sq, pixels = 0, None, None, 0
    for x, _ in make_loader(dataset, batch_size, shuffle=False, seed=0):
        x = x.to(torch.float64)
        s, sq = x.sum(dim=(0, 2, 3)), x.square().sum(dim=(0, 2, 3))
        total = s if total is None else total + s
        total_sq = sq if total_sq is None else total_sq + sq
        n += x.shape[0]
        pixels += x.shape[0] * x.shape[2] * x.shape[3]
    if n == 0:
        raise ValueError("empty dataset")
    mean = total / pixels
    std = (total_sq / pixels - mean.square()).clamp_min(0).sqrt()
    return n, mean, std
