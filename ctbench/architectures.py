"""Layer plans of the registered architectures in plain Python (no torch): what ``ctbench.models`` builds,
and what ``ctbench models list`` counts without building anything.

A plan is the list of weighted layers, in order; every layer but the last is followed by BatchNorm + ReLU
(paper App. C.2), the first by the Normalization layer's input. Shapes follow PyTorch's arithmetic::

    plan("cnn7", (1, 28, 28), 10)   # [Conv(1, 64, 3, 1, 1), ..., Dense(25088, 512), Dense(512, 10)]
    parameter_count(plan("cnn7", (3, 32, 32), 10))   # 17,192,650
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Conv:
    c_in: int
    c_out: int
    kernel: int
    stride: int
    padding: int


@dataclass(frozen=True)
class Dense:
    n_in: int
    n_out: int


Plan = list  # list[Conv | Dense]


def _side(side: int, kernel: int, stride: int, padding: int) -> int:
    return (side + 2 * padding - kernel) // stride + 1


def _convs_then_dense(shape, convs, linear: int, num_classes: int) -> Plan:
    c, h, w = shape
    layers: Plan = []
    for c_out, k, s, p in convs:
        layers.append(Conv(c, c_out, k, s, p))
        c, h, w = c_out, _side(h, k, s, p), _side(w, k, s, p)
    return [*layers, Dense(c * h * w, linear), Dense(linear, num_classes)]


def cnn7(shape, num_classes: int, width: int = 64, linear: int = 512, last_stride: int | None = None) -> Plan:
    """CNN7 (``cnn_7layer_bn``): five 3×3 convolutions (stride 2 at the third; at the fifth too for inputs of
    side ≥ 64, TinyImageNet, paper App. C.2), then Linear → 512 → K."""
    if last_stride is None:
        last_stride = 2 if shape[1] >= 64 else 1
    convs = [(width, 3, 1, 1), (width, 3, 1, 1), (2 * width, 3, 2, 1), (2 * width, 3, 1, 1),
             (2 * width, 3, last_stride, 1)]
    return _convs_then_dense(shape, convs, linear, num_classes)


def cnn5(shape, num_classes: int, width: int = 16, linear: int = 512) -> Plan:
    """CNN5 (``cnn_5layer_bn``, De Palma et al. 2024; paper App. D.2, Table 18)."""
    return _convs_then_dense(shape, [(width, 3, 1, 1), (width, 4, 2, 1), (2 * width, 4, 2, 1)], linear, num_classes)


def cnn_small(shape, num_classes: int, width: int = 16, linear: int = 100) -> Plan:
    """A small CNN for CPU work (demo, tests): two 4×4 stride-2 convolutions, Linear → 100 → K."""
    return _convs_then_dense(shape, [(width, 4, 2, 1), (2 * width, 4, 2, 1)], linear, num_classes)


PLANS: dict[str, Callable[..., Plan]] = {"cnn7": cnn7, "cnn5": cnn5, "cnn_small": cnn_small}


def plan(name: str, shape, num_classes: int, **kwargs) -> Plan:
    from ctbench.errors import CTBenchError

    if name not in PLANS:
        raise CTBenchError(f"unknown model {name!r}; known: {', '.join(sorted(PLANS))}")
    return PLANS[name](tuple(shape), num_classes, **kwargs)


def parameter_count(layers: Plan) -> int:
    """Trainable parameters: weights and biases, and BatchNorm's scale and shift after all but the last."""
    total = 0
    for i, layer in enumerate(layers):
        if isinstance(layer, Conv):
            total += layer.c_out * (layer.c_in * layer.kernel**2 + 1)
            width = layer.c_out
        else:
            total += layer.n_out * (layer.n_in + 1)
            width = layer.n_out
        if i < len(layers) - 1:
            total += 2 * width
    return total
