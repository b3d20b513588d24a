"""CIFAR-10-C's elastic_transform and spatter generated locally, frost read from the published files
(ctbench.data.corruptions / corruption_ops / corruption_sets; the corruption analysis, paper Fig. 11).

Tiny inputs: four real MNIST digits coloured and resized to 3 × 32 × 32.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from ctbench.analysis import corruption as analysis
from ctbench.data import corruption_ops as ops
from ctbench.data import corruption_sets, corruptions, load_dataset
from ctbench.errors import CTBenchError

NEW = ("elastic_transform", "spatter")


def _images(n: int = 4) -> torch.Tensor:
    x = load_dataset("mnist_mini", "test").images[:n].float() / 255
    x = torch.cat([0.9 * x, 0.5 * x + 0.3 * (1 - x), 0.6 * (1 - x)], 1)
    return torch.nn.functional.interpolate(x, size=(32, 32), mode="bilinear", align_corners=False).clamp(0, 1)


def _change(name: str, severity: int, seed: int = 0) -> float:
    x = _images()
    return float((corruptions.corrupt(x, name, severity, suite="cifar10_c", seed=seed) - (x * 255).round() / 255)
                 .abs().mean())


def test_new_corruptions_keep_shape_dtype_range_and_are_deterministic():
    x = _images()
    for name in NEW:
        assert list(corruptions.severities("cifar10_c", name)) == [1, 2, 3, 4, 5]
        for severity in range(1, 6):
            out = corruptions.corrupt(x, name, severity, suite="cifar10_c", seed=3)
            assert out.shape == x.shape and out.dtype == x.dtype and 0 <= out.min() and out.max() <= 1
            assert torch.equal(out, corruptions.corrupt(x, name, severity, suite="cifar10_c", seed=3))
            assert not torch.equal(out, corruptions.corrupt(x, name, severity, suite="cifar10_c", seed=4))
            np.testing.assert_allclose((out * 255).double(), (out * 255).double().round(), atol=1e-3)


def test_spatter_grows_with_severity_within_each_branch():
    # make_cifar_c.py: severities 1-3 are liquid (added), 4-5 mud (covering); the tables are not
    # comparable across the two branches, so the mean change grows within each of them
    for seed in (0, 1):
        liquid = [_change("spatter", s, seed) for s in (1, 2, 3)]
        mud = [_change("spatter", s, seed) for s in (4, 5)]
        assert liquid == sorted(liquid) and mud == sorted(mud) and min(liquid + mud) > 0, (liquid, mud)


def test_elastic_displacement_grows_with_severity_and_affine_jitter_shrinks():
    # the published table pairs a growing displacement field (α, σ) with a shrinking affine jitter
    x = _images().double().numpy()
    levels = corruptions.get("cifar10_c", "elastic_transform").levels
    displaced = [np.abs(corruptions._elastic(x, (a, s, 0), np.random.default_rng(0)) - x).mean() for a, s, _ in levels]
    jittered = [np.abs(corruptions._elastic(x, (0, 0, j), np.random.default_rng(0)) - x).mean() for _, _, j in levels]
    assert displaced[0] == 0 and displaced == sorted(displaced) and displaced[-1] > 0.01
    assert jittered == sorted(jittered, reverse=True) and jittered[-1] > 0


def test_elastic_without_jitter_or_displacement_is_the_identity():
    x = _images().double().numpy()
    np.testing.assert_allclose(corruptions._elastic(x, (0, 0, 0), np.random.default_rng(0)), x, atol=1e-12)


def test_bilinear_sampling_and_affine_points_by_hand():
    x = np.arange(6.0).reshape(1, 1, 2, 3)  # rows [0 1 2], [3 4 5]
    rows, cols = np.zeros((2, 3)), np.array([[0.5, -0.5, 2.5], [1.25, -1.0, 3.0]])
    # "symmetric" (scipy reflect, mirror about −0.5): −1 reads pixel 0; "reflect" (OpenCV 101): −1 reads pixel 1
    np.testing.assert_allclose(ops.sample_bilinear(x, rows, cols, "symmetric")[0, 0], [[0.5, 0, 2], [1.25, 0, 2]])
    np.testing.assert_allclose(ops.sample_bilinear(x, rows, cols, "reflect")[0, 0], [[0.5, 0.5, 1.5], [1.25, 1, 1]])
    np.testing.assert_allclose(ops.sample_bilinear(x, np.full((2, 3), 0.5), np.ones((2, 3)), "reflect")[0, 0], 2.5)
    points = np.array([[[26.0, 26.0], [26.0, 6.0], [6.0, 6.0]]])
    A = ops.affine_from_points(points + [1.0, -2.0], points)  # moved → original: a shift by (−1, +2)
    np.testing.assert_allclose(A[0], [[1, 0, -1], [0, 1, 2]], atol=1e-12)


def test_spatter_leaves_the_image_unchanged_where_its_mask_is_zero():
    x = (_images().double().numpy() * 255).round() / 255
    spatter = corruptions.get("cifar10_c", "spatter")
    for severity, level in enumerate(spatter.levels, 1):
        m, colour, mud = corruptions._spatter_layer(x.shape, level, np.random.default_rng(severity))
        out = spatter.fn(x, level, np.random.default_rng(severity))
        assert m.shape == (4, 1, 32, 32) and colour.shape == (3, 1, 1) and mud == (severity >= 4)
        assert (m == 0).any() and (m > 0).any(), severity
        zero = np.broadcast_to(m == 0, x.shape)
        np.testing.assert_array_equal(out[zero], x[zero])
        assert np.abs(out - x)[~zero].min() > 0


def test_opencv_style_helpers_by_hand():
    v = np.array([[0, 0, 1, 1], [2, 2, 2, 5]], float)[None]
    np.testing.assert_array_equal(ops.equalize_hist_u8(v)[0], [[0, 0, 85, 85], [212, 212, 212, 255]])
    np.testing.assert_array_equal(ops.equalize_hist_u8(np.full((1, 2, 2), 7.0))[0], 7)
    mask = np.zeros((1, 3, 4), bool)
    mask[0, 1, 1] = True
    np.testing.assert_allclose(ops.distance_to(mask, 2.0)[0], [[2**0.5, 1, 2**0.5, 2], [1, 0, 1, 2],
                                                              [2**0.5, 1, 2**0.5, 2]])
    np.testing.assert_array_equal(ops.distance_to(np.zeros((1, 2, 2), bool), 20.0), 20.0)
    step = np.zeros((1, 1, 8, 8))
    step[..., 4:] = 255
    edges = ops.canny_u8(step, 50, 150)[0, 0]
    assert edges[:, 3:5].any(axis=1).all() and not edges[:, :2].any() and not edges[:, 6:].any()


# ------------------------------------------------------------------------------------------ analysis

def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10)).eval()


def _fake_cifar10_c(folder, n: int = 4) -> np.ndarray:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for c in corruption_sets.CORRUPTION_SETS.get("cifar10_c").corruptions:
        np.save(folder / f"{c}.npy", rng.integers(0, 256, size=(5 * n, 32, 32, 3), dtype=np.uint8))
    np.save(folder / "labels.npy", np.tile(np.arange(n, dtype=np.uint8), 5))
    return np.load(folder / "frost.npy")


def test_analysis_generates_17_and_says_frost_is_missing(tmp_path):
    plan = analysis._plan("cifar10_c", "generated", None, None)
    names = list(dict.fromkeys(c for c, _, _ in plan))
    assert len(names) == 17 and {"elastic_transform", "spatter"} <= set(names) and "frost" not in names
    assert {src for _, _, src in plan} == {"generated"}
    x, y = _images(), torch.arange(4)
    df = analysis.corruption_robustness(_net(), (x, y), suite="cifar10_c", corruptions=list(NEW), severities=[1, 5],
                                        root=tmp_path)
    assert list(df["corruption"]) == ["elastic_transform"] * 2 + ["spatter"] * 2 and (df["n"] == 4).all()
    note = analysis.coverage_note(df)
    assert "generated locally: elastic_transform, spatter" in note and "files: none" in note
    assert ("frost: not generated, needs the published frost images; read from CIFAR-10-C .npy when available"
            in note)
    with pytest.raises(CTBenchError, match="frost: not generated"):
        analysis.corruption_robustness(_net(), (x, y), suite="cifar10_c", corruptions=["frost"], root=tmp_path)


def test_analysis_reads_frost_from_the_published_files(tmp_path):
    frost = _fake_cifar10_c(tmp_path / "CIFAR-10-C")
    assert corruption_sets.available("cifar10_c", tmp_path)
    assert not corruption_sets.available("cifar10_c", tmp_path / "elsewhere")
    x, y = _images(), torch.arange(4)
    df = analysis.corruption_robustness(_net(), (x, y), suite="cifar10_c", corruptions=["spatter", "frost"],
                                        severities=[2], root=tmp_path)
    assert list(zip(df["corruption"], df["source"], strict=True)) == [("spatter", "generated"), ("frost", "published")]
    net = _net()
    expected = float((net(torch.from_numpy(frost[4:8]).permute(0, 3, 1, 2).float() / 255).argmax(1) == y)
                     .float().mean())
    assert df["corrupted_acc"].iloc[1] == pytest.approx(expected)
    note = analysis.coverage_note(df)
    assert "read from the published CIFAR-10-C .npy files: frost" in note and "missing" not in note
    full = analysis._plan("cifar10_c", "generated", None, None, read_missing=True)
    assert len(dict.fromkeys(c for c, _, _ in full)) == 18


def test_corruption_figure_states_what_was_generated_read_and_missing(tmp_path):
    from PIL import Image

    x, y = _images(), torch.arange(4)
    df = analysis.corruption_robustness(_net(), (x, y), suite="cifar10_c", corruptions=["spatter"], severities=[1],
                                        root=tmp_path)
    df.insert(0, "method", "ibp")
    df.insert(1, "eps", "2/255")
    paths = analysis.figure([df], tmp_path / "fig11")
    text = Image.open(paths[0]).info["Description"]
    assert "generated locally: spatter" in text and "frost: not generated" in text
