"""Model registry: the paper's architectures as plain ``nn.Sequential`` networks.

Every network starts with :class:`~ctbench.nn.Normalization` (inputs and ε live in [0, 1] pixel space,
paper App. C.1) and puts BatchNorm + ReLU after every layer but the last (paper App. C.2, following
Shi et al. 2021). Plain ``nn.Sequential`` of Normalization / Conv2d / Linear / BatchNorm / ReLU / Flatten
is exactly what the bound engine (``ctbench.bounds``) and the certifiers accept.

Architectures (all convolutions 3×3 with padding 1 unless stated; d = input side length):

* ``cnn7`` — CNN7 (``cnn_7layer_bn``): Conv(c→64) Conv(64→64) Conv(64→128, s2) Conv(128→128) Conv(128→128)
  Flatten Linear((d/2)²·128 → 512) Linear(512 → K). MNIST: 25,088 → 512; CIFAR-10: 32,768 → 512.
  For TinyImageNet the fifth convolution has stride 2 (paper App. C.2): Linear((64/4)²·128 = 32,768 → 512).
* ``cnn5`` — CNN5 (``cnn_5layer_bn``, De Palma et al. 2024 / paper Table 18): Conv(c→16, 3×3, s1, p1)
  Conv(16→16, 4×4, s2, p1) Conv(16→32, 4×4, s2, p1) Flatten Linear((d/4)²·32 → 512) Linear(512 → K).
* ``cnn_small`` — a small CNN for CPU work (demo, tests): Conv(c→16, 4×4, s2, p1) Conv(16→32, 4×4, s2, p1)
  Flatten Linear((d/4)²·32 → 100) Linear(100 → K), same BN+ReLU placement.

Initialisation (paper §4.1, App. C.2): certified methods use the IBP initialisation of Shi et al. 2021
(:func:`ibp_init`); adversarial training uses Kaiming uniform (:func:`kaiming_uniform_init`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ctbench.nn import Normalization
from ctbench.registry import Registry


@dataclass(frozen=True)
class InputSpec:
    """What a model needs to know about its data: shape (C, H, W), class count and normalisation."""

    shape: tuple[int, int, int]
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    name: str = ""


ModelFactory = Callable[[InputSpec], nn.Sequential]
MODELS: Registry[ModelFactory] = Registry("model")


def build(layers: list, spec: InputSpec) -> nn.Sequential:
    """The network of a layer plan (``ctbench.architectures``): Normalization, then each weighted layer
    followed by BatchNorm + ReLU except the last, with Flatten before the first dense layer."""
    from ctbench.architectures import Conv

    modules: list[nn.Module] = [Normalization(spec.mean, spec.std)]
    for i, layer in enumerate(layers):
        last = i == len(layers) - 1
        if isinstance(layer, Conv):
            modules.append(nn.Conv2d(layer.c_in, layer.c_out, layer.kernel, stride=layer.stride,
                                     padding=layer.padding))
            modules += [] if last else [nn.BatchNorm2d(layer.c_out), nn.ReLU()]
        else:
            if i == 0 or isinstance(layers[i - 1], Conv):
                modules.append(nn.Flatten())
            modules.append(nn.Linear(layer.n_in, layer.n_out))
            modules += [] if last else [nn.BatchNorm1d(layer.n_out), nn.ReLU()]
    return nn.Sequential(*modules)


def _registered(name: str) -> ModelFactory:
    from ctbench import architectures

    def factory(spec: InputSpec, **kwargs) -> nn.Sequential:
        return build(architectures.plan(name, spec.shape, spec.num_classes, **kwargs), spec)

    factory.__name__ = name
    factory.__doc__ = getattr(architectures, name).__doc__
    return MODELS.register(name)(factory)


#: CNN7 with BN (paper App. C.2), CNN5 (App. D.2), cnn_small (CPU work): see ``ctbench.architectures``.
cnn7, cnn5, cnn_small = (_registered(name) for name in ("cnn7", "cnn5", "cnn_small"))


# ---------------------------------------------------------------------------------------------------
# Initialisation registry
# ---------------------------------------------------------------------------------------------------

INITS: Registry[Callable[[nn.Sequential], None]] = Registry("initialisation")


def _weighted_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]


def ibp_init_std(layer: nn.Conv2d | nn.Linear) -> float:
    """σ = sqrt(2π) / fan_in (Shi et al. 2021, Eq. 8; CTBench ``ibp_fast_init``).

    fan_in = in_features for Linear, in_channels · k_h · k_w for Conv2d.
    """
    fan_in = layer.weight[0].numel()
    return math.sqrt(2 * math.pi) / fan_in


@INITS.register("ibp")
@torch.no_grad()
def ibp_init(model: nn.Sequential) -> None:
    """IBP initialisation (Shi et al. 2021): W ~ N(0, σ²), σ = sqrt(2π)/fan_in, for every Conv/Linear
    weight except the last layer. Biases, BN parameters and the last layer keep PyTorch's defaults
    (as in CTBench's ``ibp_fast_init``). Keeps IBP bound growth constant across layers at init."""
    for layer in _weighted_layers(model)[:-1]:
        layer.weight.normal_(0.0, ibp_init_std(layer))


@INITS.register("kaiming_uniform")
@torch.no_grad()
def kaiming_uniform_init(model: nn.Sequential) -> None:
    """Kaiming uniform (He et al. 2015) on every Conv/Linear weight, used for adversarial training."""
    for layer in _weighted_layers(model):
        nn.init.kaiming_uniform_(layer.weight)


@INITS.register("default")
def default_init(model: nn.Sequential) -> None:
    """PyTorch's default initialisation (left unchanged)."""


def create_model(
    name: str,
    spec: InputSpec | str,
    *,
    init: str = "default",
    seed: int | None = None,
    **kwargs,
) -> nn.Sequential:
    """Build a registered architecture for a dataset and initialise it.

    ``spec`` is an :class:`InputSpec` or a dataset name from ``ctbench.data`` (e.g. ``"mnist"``).
    ``init`` ∈ :data:`INITS` (``ibp``, ``kaiming_uniform``, ``default``). ``seed`` makes the weights
    reproducible without touching the global RNG.
    """
    if isinstance(spec, str):
        spec = input_spec_for(spec)
    factory = MODELS.get(name)
    initialise = INITS.get(init)
    with torch.random.fork_rng(devices=[], enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(seed)
        model = factory(spec, **kwargs)
        initialise(model)
    return model


def input_spec_for(dataset: str) -> InputSpec:
    """The :class:`InputSpec` of a registered dataset (``ctbench.data``)."""
    from ctbench.data import get_spec

    ds = get_spec(dataset)
    # mnist_mini shares MNIST's geometry and statistics.
    return InputSpec(tuple(ds.shape), ds.num_classes, tuple(ds.mean), tuple(ds.std), name=ds.name)
