"""Architectures (paper App. C.2) and initialisations (Shi et al. 2021; He et al. 2015)."""

import math

import pytest
import torch
from torch import nn

from ctbench.bounds.layers import parse_model
from ctbench.errors import CTBenchError
from ctbench.models import MODELS, InputSpec, create_model, ibp_init_std
from ctbench.nn import Normalization

MNIST = InputSpec((1, 28, 28), 10, (0.1307,), (0.3081,), "mnist")
CIFAR = InputSpec((3, 32, 32), 10, (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010), "cifar10")
TIN = InputSpec((3, 64, 64), 200, (0.4802, 0.4481, 0.3975), (0.2302, 0.2265, 0.2262), "tinyimagenet")

# Parameter counts derived by hand from the architecture tables (original-implementation.md §4):
# CNN7 MNIST: convs 640+36,928+73,856+147,584+147,584 = 406,592; BN2d 1,024; Linear 25,088·512+512 =
#   12,845,568; BN1d 1,024; Linear 512·10+10 = 5,130 → 13,259,338.
# CNN7 CIFAR: conv1 1,792 → convs 407,744; Linear 32,768·512+512 = 16,777,728 → 17,192,650.
# CNN7 TinyImageNet (5th conv stride 2): Linear 32,768 → 512, head 512·200+200 = 102,600 → 17,290,120.
# CNN5 MNIST: convs 160+4,112+8,224; BN2d 128; Linear 1,568·512+512 = 803,328; BN1d 1,024; head 5,130 → 822,106.
# CNN5 CIFAR: convs 448+4,112+8,224; BN2d 128; Linear 2,048·512+512 = 1,049,088; BN1d 1,024; head 5,130 → 1,068,154.
EXPECTED = [
    ("cnn7", MNIST, 13_259_338, 25_088),
    ("cnn7", CIFAR, 17_192_650, 32_768),
    ("cnn7", TIN, 17_290_120, 32_768),
    ("cnn5", MNIST, 822_106, 1_568),
    ("cnn5", CIFAR, 1_068_154, 2_048),
]


@pytest.mark.parametrize("name,spec,n_params,linear_in", EXPECTED, ids=lambda v: getattr(v, "name", v))
def test_parameter_counts_and_forward_shape(name, spec, n_params, linear_in):
    model = create_model(name, spec, seed=0)
    assert sum(p.numel() for p in model.parameters()) == n_params
    first_linear = next(m for m in model if isinstance(m, nn.Linear))
    assert first_linear.in_features == linear_in
    model.eval()
    out = model(torch.rand(2, *spec.shape))
    assert out.shape == (2, spec.num_classes)


@pytest.mark.parametrize("name", list(MODELS))
def test_bn_relu_after_every_layer_but_last(name):
    model = create_model(name, MNIST)
    assert isinstance(model[0], Normalization)
    layers = list(model)[1:]
    weighted = [i for i, m in enumerate(layers) if isinstance(m, nn.Conv2d | nn.Linear)]
    for i in weighted[:-1]:
        assert isinstance(layers[i + 1], nn.BatchNorm2d | nn.BatchNorm1d)
        assert isinstance(layers[i + 2], nn.ReLU)
    assert weighted[-1] == len(layers) - 1, "the last layer is a bare Linear (logits)"
    parse_model(model)  # every layer is one the bound engine supports


def test_ibp_init_std_statistical():
    """Each non-final weight ~ N(0, (sqrt(2π)/fan_in)²). The sample std of n ≥ 4,096 weights has relative
    standard error ≈ 1/sqrt(2n) ≤ 1.1%; we allow 5% (≈ 4.5 s.e.), far below the factor sqrt(fan_in) that
    e.g. sqrt(2π/fan_in) would give."""
    model = create_model("cnn5", CIFAR, init="ibp", seed=1)
    layers = [m for m in model if isinstance(m, nn.Conv2d | nn.Linear)]
    for layer in layers[:-1]:
        w = layer.weight.detach().double()
        fan_in = w[0].numel()
        sigma = math.sqrt(2 * math.pi) / fan_in
        assert ibp_init_std(layer) == pytest.approx(sigma)
        assert w.std().item() == pytest.approx(sigma, rel=0.05), layer
        assert abs(w.mean().item()) < 5 * sigma / math.sqrt(w.numel())
    # The last layer keeps PyTorch's default U(-1/sqrt(fan_in), 1/sqrt(fan_in)): std = 1/sqrt(3·fan_in).
    last = layers[-1].weight.detach().double()
    assert last.std().item() == pytest.approx(1 / math.sqrt(3 * last.shape[1]), rel=0.1)


def test_kaiming_uniform_init_range():
    model = create_model("cnn_small", MNIST, init="kaiming_uniform", seed=0)
    for layer in (m for m in model if isinstance(m, nn.Conv2d | nn.Linear)):
        fan_in = layer.weight[0].numel()
        bound = math.sqrt(2.0) * math.sqrt(3.0 / fan_in)  # gain sqrt(2) (a=0)
        w = layer.weight.detach()
        assert w.abs().max().item() <= bound + 1e-7
        assert w.abs().max().item() > 0.9 * bound  # fills the range
        assert w.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.1)


def test_seed_reproducible_and_global_rng_untouched():
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    a = create_model("cnn_small", MNIST, init="ibp", seed=7)
    assert torch.equal(torch.random.get_rng_state(), state)
    b = create_model("cnn_small", MNIST, init="ibp", seed=7)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_unknown_model_and_init():
    with pytest.raises(CTBenchError, match="unknown model 'resnet'.*cnn7"):
        create_model("resnet", MNIST)
    with pytest.raises(CTBenchError, match="unknown initialisation"):
        create_model("cnn7", MNIST, init="zero")


def test_the_bound_engine_rejects_other_layers():
    with pytest.raises(CTBenchError, match="Tanh"):
        parse_model(nn.Sequential(nn.Flatten(), nn.Linear(4, 2), nn.Tanh()))
