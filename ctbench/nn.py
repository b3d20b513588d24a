"""Layers shared by the models and the bound engine.

CTBench keeps inputs and ε in [0, 1] pixel space and puts the per-channel normalization inside the
network as its first layer (paper App. C.1; original code ``Normalization``), so an ε-box in pixel
space is exactly the perturbation set that is certified.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class Normalization(nn.Module):
    """``(x - mean) / std`` per channel. Input (B, C, H, W) → output (B, C, H, W).

    ``mean``/``std`` are buffers (not parameters): the optimizer never touches them.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        mean_t = torch.as_tensor(mean, dtype=torch.float32).reshape(1, -1, 1, 1)
        std_t = torch.as_tensor(std, dtype=torch.float32).reshape(1, -1, 1, 1)
        if torch.any(std_t <= 0):
            raise ValueError("Normalization std must be positive")
        self.register_buffer("mean", mean_t)
        self.register_buffer("std", std_t)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"
