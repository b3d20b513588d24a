"""Per-model analyses of the paper's §5 (ctbench.analysis.{utilization,fragmentation,tightness,corruption}),
the corruption suites (ctbench.data.corruptions) and the published corruption sets (ctbench.data.corruption_sets).

Hand-built networks have hand-computed answers (written out below); random networks check the
inequalities the definitions imply; a tiny trained model runs every analysis and figure through the CLI.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from ctbench.analysis import relu
from ctbench.analysis.corruption import corruption_robustness
from ctbench.analysis.fragmentation import fragmentation
from ctbench.analysis.tables import read_table
from ctbench.analysis.tightness import tightness, tightness_batch
from ctbench.analysis.utilization import utilization
from ctbench.cli import main
from ctbench.data import corruption_sets, corruptions, load_dataset
from ctbench.errors import CTBenchError
from ctbench.nn import Normalization

MODEL_ANALYSES = ("utilization", "fragmentation", "tightness", "corruption")


def _set(layer: nn.Linear, W, b):
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(W, dtype=torch.float64))
        layer.bias.copy_(torch.tensor(b, dtype=torch.float64))


# ---------------------------------------------------------------------------------------- utilization

def hand_net() -> nn.Sequential:
    """x (B, 1, 1, 2) → z1 = W1 x + b1 (4 ReLUs) → z2 = W2 relu(z1) + b2 (2 ReLUs) → 2 logits."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 2), nn.ReLU(), nn.Linear(2, 2))
    net = net.double().eval()
    _set(net[1], [[1, 0], [0, 1], [-1, 0], [0, -1]], [0.5, -0.25, -1.0, 0.125])
    _set(net[3], [[1, 1, 0, 0], [0, 0, 1, 1]], [0.0, -0.5])
    _set(net[5], [[1, 0], [0, 1]], [0.0, 0.0])
    return net


def test_utilization_and_relu_status_of_a_hand_built_net():
    # xa = (0.5, 0.5):    z1 = (1, .25, -1.5, -.375) → 2 of 4 active; z2 = (1.25, -.5) → 1 of 2.
    # xb = (.125, .125):  z1 = (.625, -.125, -1.125, 0) → 1 of 4 (z = 0 is not active); z2 = (.625, -.5) → 1 of 2.
    # ε = .25, boxes clipped to [0, 1]:
    #   xa: z1 ∈ [.75,1.25] act, [0,.5] act (l = 0), [-1.75,-1.25] dead, [-.625,-.125] dead;
    #       z2 ∈ [.75,1.75] act, [-.5,-.5] dead.
    #   xb: x ∈ [0,.375]²: z1 ∈ [.5,.875] act, [-.25,.125] unst, [-1.375,-1] dead, [-.25,.125] unst;
    #       z2 ∈ [.5,1] act, [-.5,-.375] dead.
    x = torch.tensor([[0.5, 0.5], [0.125, 0.125]], dtype=torch.float64).reshape(2, 1, 1, 2)
    y = torch.tensor([0, 1])
    df = utilization(hand_net(), (x, y), [0.25], batch=1).set_index("layer")
    expected = {  # layer: utilization, dead, active, unstable (percent)
        "relu1": (3 / 8, 3 / 8, 3 / 8, 2 / 8),
        "relu2": (2 / 4, 2 / 4, 2 / 4, 0.0),
        "all": (5 / 12, 5 / 12, 5 / 12, 2 / 12),
    }
    for layer, values in expected.items():
        got = df.loc[layer, ["utilization_pct", "dead_pct", "active_pct", "unstable_pct"]].to_numpy(float)
        np.testing.assert_allclose(got, 100 * np.array(values), rtol=0, atol=1e-12)
    assert list(df["n_neurons"]) == [4, 2, 6] and set(df["n_inputs"]) == {2}
    # at ε = 0 the box fractions are the clean pattern (dead = not active on the clean input)
    zero = utilization(hand_net(), (x, y), [0.0]).set_index("layer")
    np.testing.assert_allclose(zero["active_pct"], zero["utilization_pct"], atol=1e-12)
    np.testing.assert_allclose(zero["unstable_pct"], 0.0)


def test_relu_status_edges():
    l = torch.tensor([[-1.0, 0.0, -1.0, 0.0, 1.0, -2.0]])
    u = torch.tensor([[1.0, 1.0, 0.0, 0.0, 2.0, -1.0]])
    dead, active, unstable = relu.status(l, u)
    assert (int(dead), int(active), int(unstable)) == (3, 2, 1)  # u ≤ 0: 3; l ≥ 0 < u: 2; l < 0 < u: 1


# ---------------------------------------------------------------------------------------- tightness

def two_layer_net(normalize: bool = False, b1=(0.0, 0.0)) -> nn.Sequential:
    """x (B, 1, 1, 2) → W1 = [[1, 2], [3, -1]] → ReLU → W2 = [[1, -1], [2, 1], [0, 3]] (K = 3)."""
    layers = [Normalization([0.0], [0.25])] if normalize else []  # x ↦ 4x: same ReLU pattern
    net = nn.Sequential(*layers, nn.Flatten(), nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 3)).double().eval()
    _set(net[-3], [[1, 2], [3, -1]], list(b1))
    _set(net[-1], [[1, -1], [2, 1], [0, 3]], [0.1, -0.2, 0.3])
    return net


@pytest.mark.parametrize("normalize", [False, True])
def test_tightness_equals_the_hand_computation(normalize):
    # x = (.5, .5), b1 = 0: z1 = (1.5, 1.0), both active (D = I); ε = .1, no clipping: ε̃ = (.1, .1).
    # y = 0, margins c1 = e0 − e1, c2 = e0 − e2:
    #   c1 W2 = (−1, −2): c1 W2 W1 = (−7, 0)  → r* = 7ε̃;  |c1 W2| |W1| = (1, 2)[[1, 2], [3, 1]] = (7, 4) → r = 11ε̃
    #   c2 W2 = (1, −4):  c2 W2 W1 = (−11, 6) → r* = 17ε̃; |c2 W2| |W1| = (1, 4)[[1, 2], [3, 1]] = (13, 6) → r = 19ε̃
    # τ = (7/11 + 17/19) / 2. The normalization (1/σ on both) does not change it.
    x = torch.tensor([[0.5, 0.5]], dtype=torch.float64).reshape(1, 1, 1, 2)
    y = torch.tensor([0])
    df = tightness(two_layer_net(normalize), (x, y), 0.1, max_margins=0)
    assert df["tightness"].iloc[0] == pytest.approx((7 / 11 + 17 / 19) / 2, abs=1e-12)
    assert df["n_margins"].iloc[0] == 2
    # one pixel clipped: x = (.5, .05), ε = .1 → ε̃ = (.1, .075); z1 = (.6, 1.45) still active:
    #   τ1 = 7·.1 / (7·.1 + 4·.075), τ2 = (11·.1 + 6·.075) / (13·.1 + 6·.075)
    x2 = torch.tensor([[0.5, 0.05]], dtype=torch.float64).reshape(1, 1, 1, 2)
    tau = tightness_batch(two_layer_net(normalize), x2, y, 0.1)
    np.testing.assert_allclose(tau[0].numpy(), [0.7 / 1.0, (1.1 + 0.45) / (1.3 + 0.45)], atol=1e-12)


def test_tightness_with_an_inactive_neuron_and_without_cancellation_is_one():
    # b1 = (0, −2): z1 = (1.5, −1) → D = diag(1, 0): only the path through neuron 1 remains, with one
    # weight per input (W1's first row), so |c W2 D W1| = |c W2| D |W1| and τ = 1 for every margin.
    x = torch.tensor([[0.5, 0.5]], dtype=torch.float64).reshape(1, 1, 1, 2)
    tau = tightness_batch(two_layer_net(b1=(0.0, -2.0)), x, torch.tensor([1]), 0.1)
    assert torch.equal(tau, torch.ones_like(tau))


def test_tightness_is_one_where_every_relu_is_active_and_paths_do_not_cancel():
    # Diagonal hidden layers (each neuron reads one input) with biases that keep every ReLU active on
    # the box: the linear replacement has one path per input, IBP is exact, τ = 1 exactly.
    net = nn.Sequential(nn.Flatten(), nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 4))
    net = net.double().eval()
    _set(net[1], np.diag([2.0, -1.0, 0.5]), [1.0, 3.0, 1.0])
    _set(net[3], np.diag([-1.5, 1.0, 3.0]), [10.0, 0.0, 0.0])
    _set(net[5], [[1, -1, 0], [0, 0, 1], [1, 1, 1], [0, 1, 0]], np.zeros(4))
    x = torch.rand(5, 1, 1, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert all((l > 0).all() for l, _ in relu.ibp_preactivation_bounds(net, x, 0.2))  # all active on the box
    tau = tightness_batch(net, x, torch.tensor([0, 1, 2, 3, 0]), 0.2)
    assert torch.allclose(tau, torch.ones_like(tau), atol=1e-12, rtol=0)
    # neuron 1 also reads input 2: two paths from it, of opposite signs for margin e0 − e1 (c W3 = (1, −1, −1))
    _set(net[1], [[2.0, 1.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 0.5]], [1.0, 3.0, 1.0])
    assert (tightness_batch(net, x, torch.tensor([0, 1, 2, 3, 0]), 0.2) < 1 - 1e-6).any()


def random_conv_net(seed: int) -> nn.Sequential:
    """Conv + BN2d + Linear + BN1d with random weights and random running statistics (float64)."""
    g = torch.Generator().manual_seed(seed)
    net = nn.Sequential(Normalization([0.1307], [0.3081]), nn.Conv2d(1, 4, 3, stride=2, padding=1),
                        nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 6, 3, stride=2, padding=1), nn.ReLU(),
                        nn.Flatten(), nn.Linear(6 * 4 * 4, 12), nn.BatchNorm1d(12), nn.ReLU(), nn.Linear(12, 10))
    net = net.double().eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.copy_(torch.randn(m.weight.shape, generator=g, dtype=torch.float64) * 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g, dtype=torch.float64) * 0.1)
            elif isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g, dtype=torch.float64) * 0.2)
                m.running_var.copy_(torch.rand(m.num_features, generator=g, dtype=torch.float64) + 0.5)
                m.weight.copy_(torch.randn(m.num_features, generator=g, dtype=torch.float64))
    return net


def random_mlp(seed: int) -> nn.Sequential:
    g = torch.Generator().manual_seed(seed)
    net = nn.Sequential(nn.Flatten(), nn.Linear(49, 20), nn.BatchNorm1d(20), nn.ReLU(), nn.Linear(20, 20),
                        nn.ReLU(), nn.Linear(20, 10)).double().eval()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) * 0.4)
    return net


def _mnist_inputs(n: int, side: int = 28) -> tuple[torch.Tensor, torch.Tensor]:
    ds = load_dataset("mnist_mini", "test")
    x = ds.images[:n].double() / 255
    if side != 28:
        x = torch.nn.functional.interpolate(x, size=(side, side), mode="bilinear", align_corners=False)
    return x, ds.labels[:n]


@pytest.mark.parametrize("seed", [0, 1])
def test_tightness_lies_in_zero_one_on_random_nets(seed):
    x, y = _mnist_inputs(6, side=16)
    df = tightness(random_conv_net(seed), (x, y), [0.05, 0.3], max_margins=0)
    assert ((df["tightness"] > 0) & (df["tightness"] <= 1 + 1e-12)).all()
    assert (df["tightness"] < 1 - 1e-6).any()  # random nets are not IBP-exact


# ---------------------------------------------------------------------------------------- fragmentation

@pytest.mark.parametrize("make, seed, side", [(random_conv_net, 0, 16), (random_conv_net, 3, 16),
                                              (random_mlp, 1, 7), (random_mlp, 2, 7)])
def test_sampled_unstable_ratio_is_at_most_the_ibp_ratio(make, seed, side):
    x, y = _mnist_inputs(8, side=side)
    df = fragmentation(make(seed), (x, y), [0.02, 0.1, 0.3], samples=20, seed=seed, batch=5, chunk=7)
    assert len(df) == 8 * 3 and list(df["index"][:8]) == list(range(8))
    assert (df["unstable_lower_pct"] <= df["unstable_ibp_pct"]).all()
    assert (df["unstable_lower_pct"] > 0).any()  # the estimate sees something at these radii
    means = df.groupby("eval_eps")["unstable_ibp_pct"].mean()
    assert means.is_monotonic_increasing  # larger boxes, more IBP-unstable neurons


def test_fragmentation_is_deterministic_and_zero_at_eps_zero():
    x, y = _mnist_inputs(4, side=16)
    net = random_conv_net(5)
    a = fragmentation(net, (x, y), [0.0, 0.1], samples=10, seed=7)
    b = fragmentation(net, (x, y), [0.0, 0.1], samples=10, seed=7, batch=3, chunk=4)
    np.testing.assert_array_equal(a[a.eval_eps == 0]["unstable_ibp_pct"], 0.0)
    np.testing.assert_array_equal(a[a.eval_eps == 0]["unstable_lower_pct"], 0.0)
    assert a.equals(fragmentation(net, (x, y), [0.0, 0.1], samples=10, seed=7))
    assert len(b) == len(a)


# ---------------------------------------------------------------------------------------- corruptions

def _images(shape) -> torch.Tensor:
    """Four real MNIST digits, as (1, 28, 28) or coloured and resized to (3, 32, 32)."""
    x = load_dataset("mnist_mini", "test").images[:4].float() / 255
    if shape[0] == 3:
        x = torch.cat([0.9 * x, 0.5 * x + 0.3 * (1 - x), 0.6 * (1 - x)], 1)
    return torch.nn.functional.interpolate(x, size=shape[1:], mode="bilinear", align_corners=False).clamp(0, 1)


CASES = [(suite, name, s) for suite, table in corruptions.SUITES.items() for name in table
         for s in corruptions.severities(suite, name)]


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)])
def test_every_corruption_is_deterministic_and_keeps_shape_dtype_range(shape):
    x = _images(shape)
    for dtype in (torch.float32, torch.float64):
        xd = x.to(dtype)
        for suite, name, severity in CASES:
            out = corruptions.corrupt(xd, name, severity, suite=suite, seed=3)
            what = f"{suite}/{name}/{severity} on {shape} {dtype}"
            assert out.shape == xd.shape and out.dtype == dtype, what
            assert out.min() >= 0 and out.max() <= 1, what
            assert torch.equal(out, corruptions.corrupt(xd, name, severity, suite=suite, seed=3)), what
            if not (name == "saturate" and shape[0] == 1 and severity <= 3):  # grey stays grey: S' = 0.3·0
                assert not torch.equal(out, (xd * 255).round() / 255), f"{what} left the images unchanged"
            np.testing.assert_allclose((out * 255).double(), (out * 255).double().round(), atol=1e-3)


def test_random_corruptions_depend_on_the_seed():
    x = _images((1, 28, 28))
    for name in ("shot_noise", "impulse_noise", "glass_blur", "fog", "zigzag"):
        a, b = (corruptions.corrupt(x, name, suite="mnist_c", seed=s) for s in (0, 1))
        assert not torch.equal(a, b), name


def test_corruption_errors_are_one_line():
    x = _images((1, 28, 28))
    with pytest.raises(CTBenchError, match="severities"):
        corruptions.corrupt(x, "fog", 2, suite="mnist_c")
    with pytest.raises(CTBenchError, match="unknown corruption 'snow'"):
        corruptions.corrupt(x, "snow", suite="cifar10_c")
    with pytest.raises(CTBenchError, match="no corruption suite"):
        corruptions.suite_for("tinyimagenet")


# ---------------------------------------------------------------------------------- published sets

def write_fake_mnist_c(folder, n: int = 6) -> dict:
    rng = np.random.default_rng(0)
    arrays = {}
    for c in corruption_sets.CORRUPTION_SETS.get("mnist_c").corruptions:
        (folder / c).mkdir(parents=True)
        arrays[c] = rng.integers(0, 256, size=(n, 28, 28, 1), dtype=np.uint8)
        np.save(folder / c / "test_images.npy", arrays[c])
        np.save(folder / c / "test_labels.npy", np.arange(n, dtype=np.uint8) % 10)
    return arrays


def write_fake_cifar10_c(folder, n: int = 3) -> dict:
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True)
    arrays = {}
    for c in corruption_sets.CORRUPTION_SETS.get("cifar10_c").corruptions:
        arrays[c] = rng.integers(0, 256, size=(5 * n, 32, 32, 3), dtype=np.uint8)
        np.save(folder / f"{c}.npy", arrays[c])
    np.save(folder / "labels.npy", np.tile(np.arange(n, dtype=np.uint8), 5))
    return arrays


def test_published_mnist_c_layout_loads_through_the_registry(tmp_path):
    arrays = write_fake_mnist_c(tmp_path / "root" / "mnist_c")
    ds = corruption_sets.load_corruption_set("mnist_c", "fog", root=tmp_path / "root")
    x, y = ds[list(range(len(ds)))]
    assert x.shape == (6, 1, 28, 28) and y.tolist() == [0, 1, 2, 3, 4, 5]
    np.testing.assert_allclose(x.numpy(), arrays["fog"].transpose(0, 3, 1, 2) / 255, atol=1e-7)
    marker = json.loads((tmp_path / "root" / "mnist_c" / ".ctbench-verified.json").read_text())
    assert "first staging" in marker["checksum_source"] and "fog/test_images.npy" in marker["files"]
    assert len(corruption_sets.load_corruption_set("mnist_c", "stripe", root=tmp_path / "root", n=2)) == 2
    # mnist_mini's images sit at `indices` in the official test set: rows are picked by position
    picked = corruption_sets.load_corruption_set("mnist_c", "fog", root=tmp_path / "root", indices=[4, 1])
    np.testing.assert_allclose(picked.images.numpy(), arrays["fog"][[4, 1]].transpose(0, 3, 1, 2))
    assert picked.labels.tolist() == [4, 1]
    with pytest.raises(CTBenchError, match="indices outside"):
        corruption_sets.load_corruption_set("mnist_c", "fog", root=tmp_path / "root", indices=[6])
    # a file that changed since it was first staged is refused
    np.save(tmp_path / "root" / "mnist_c" / "fog" / "test_images.npy", arrays["fog"][:3])
    with pytest.raises(CTBenchError, match="checksum mismatch"):
        corruption_sets.load_corruption_set("mnist_c", "fog", root=tmp_path / "root")


def test_first_n_keeps_the_official_indices_of_mnist_mini():
    from ctbench.analysis._model_cli import first_n

    ds = load_dataset("mnist_mini", "test")
    sub = first_n(ds, 5)
    assert len(sub) == 5 and torch.equal(sub.indices, ds.indices[:5]) and torch.equal(sub.images, ds.images[:5])


def test_published_cifar10_c_is_staged_from_a_source_dir(tmp_path):
    arrays = write_fake_cifar10_c(tmp_path / "src" / "CIFAR-10-C")
    with pytest.raises(CTBenchError, match="cannot be downloaded"):
        corruption_sets.load_corruption_set("cifar10_c", "fog", 3, root=tmp_path / "root")
    ds = corruption_sets.load_corruption_set("cifar10_c", "fog", 3, root=tmp_path / "root", source_dir=tmp_path / "src")
    x, y = ds[[0, 1, 2]]
    np.testing.assert_allclose(x.numpy(), arrays["fog"][6:9].transpose(0, 3, 1, 2) / 255, atol=1e-7)
    assert y.tolist() == [0, 1, 2] and (tmp_path / "root" / "CIFAR-10-C" / "labels.npy").is_file()


def test_corruption_robustness_on_published_and_generated_sets(tmp_path):
    write_fake_mnist_c(tmp_path / "root" / "mnist_c")
    pooled = nn.Sequential(nn.AvgPool2d(4), random_mlp(0).float())  # 28 × 28 → the MLP's 7 × 7
    x28, y = _mnist_inputs(6)
    df = corruption_robustness(pooled, (x28.float(), y), suite="mnist_c", source="published", root=tmp_path / "root",
                               corruptions=["fog", "stripe"])
    assert list(df["corruption"]) == ["fog", "stripe"] and set(df["source"]) == {"published"}
    gen = corruption_robustness(pooled, (x28.float(), y), suite="mnist_c", seed=1)
    assert len(gen) == 15 and set(gen["source"]) == {"generated"} and (gen["n"] == 6).all()
    clean = float((pooled(x28.float()).argmax(1) == y).float().mean())
    assert gen["clean_acc"].iloc[0] == pytest.approx(clean)
    if clean > 0:
        np.testing.assert_allclose(gen["relative_acc"], gen["corrupted_acc"] / clean)


# ---------------------------------------------------------------------------------------- CLI, figures

@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from ctbench.training import train_ibp_model

    return train_ibp_model(tmp_path_factory.mktemp("analysis_model"), train_samples=600, epochs=1, eps=0.1)


@pytest.mark.parametrize("name", MODEL_ANALYSES)
def test_cli_analysis_table_and_figure(name, tiny_model, tmp_path):
    out = tmp_path / f"{name}.parquet"
    argv = ["analyze", name, "--model", str(tiny_model), "--n", "24", "--batch", "10", "--device", "cpu",
            "--out", str(out)]
    eps = ["0.1", "3/10"] if name != "corruption" else ["0.1"]
    extra = ["--eps", *eps] if name != "corruption" else ["--corruptions", "fog", "stripe", "canny_edges"]
    assert main(argv + extra) == 0
    df, prov = read_table(out)
    assert prov["analysis"] == name and prov["fingerprint"] == "" and len(prov["model_sha256"]) == 64  # by hand
    assert prov["model_config"]["method"] == "ibp" and prov["n"] == 24 and "settings" in prov
    assert {"dataset", "eps", "model", "method", "seed", "variant"} <= set(df.columns)
    assert set(df["method"]) == {"ibp"} and set(df["eps"]) == {"0.1"} and set(df["dataset"]) == {"mnist_mini"}
    if name != "corruption":
        assert set(df["eval_eps_str"]) == {"0.1", "3/10"}
    # the same from a stage settings file (as the workflow runs it): its fingerprint is recorded
    from ctbench import stagefile

    settings = {"n": 24, "seed": 0, "eps": eps}
    if name == "corruption":
        settings["corruption"] = {"source": "generated", "root": None}
    file = stagefile.make(f"analysis_{name}", {}, "0.1", 1, {}, settings)
    (tmp_path / "settings.json").write_text(json.dumps(file))
    second = tmp_path / "second.parquet"
    other = ["analyze", name, "--model", str(tiny_model), "--batch", "10", "--device", "cpu", "--settings",
             str(tmp_path / "settings.json"), "--out", str(second)]
    assert main(other + (extra if name == "corruption" else [])) == 0
    df2, prov2 = read_table(second)
    assert prov2["fingerprint"] == file["fingerprint"] and prov2["n"] == 24 and df2.equals(df)
    stem = tmp_path / "fig" / name
    assert main(["figure", name, str(out), str(second), "--out", str(stem)]) == 0
    png, pdf = stem.with_suffix(".png"), stem.with_suffix(".pdf")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and pdf.read_bytes()[:5] == b"%PDF-"


def test_cli_errors_are_one_line(tmp_path, capsys):
    bogus = tmp_path / "notes.pt"
    bogus.write_text("not a model")
    for name in MODEL_ANALYSES:
        assert main(["analyze", name, "--model", str(bogus), "--out", str(tmp_path / "x.parquet")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("ctbench: error:") and "\n" not in err and "Traceback" not in err
    assert main(["figure", "utilization", str(bogus), "--out", str(tmp_path / "f")]) == 2
    assert "\n" not in capsys.readouterr().err.strip()


def test_cli_rejects_bad_options(tiny_model, tmp_path, capsys):
    out = str(tmp_path / "x.parquet")
    assert main(["analyze", "tightness", "--model", str(tiny_model), "--eps", "0", "--n", "2", "--out", out]) == 2
    assert "eps > 0" in capsys.readouterr().err
    assert main(["analyze", "fragmentation", "--model", str(tiny_model), "--eps", "2", "--out", out]) == 2
    assert main(["analyze", "corruption", "--model", str(tiny_model), "--source", "published", "--n", "2",
                 "--corruption-root", str(tmp_path), "--out", out]) == 2
    assert "cannot be downloaded" in capsys.readouterr().err
