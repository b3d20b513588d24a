"""External complete verifiers (abCROWN, Marabou) through ONNX + VNNLIB: the exported files mean what
the model means, the verifiers agree with our exact MILP, and a verifier's counterexample is never
trusted without a re-check.

alpha-beta-CROWN is not installable here: the adapter runs against ``tests/vnncomp/abcrown_like.py``
(its command line and configuration keys, Marabou behind them). ``test_real_abcrown_agrees_with_milp``
runs the real one when ``CTBENCH_ABCROWN`` points at a checkout."""

import os
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from _certify_helpers import run_cli

from ctbench.bounds import margin_spec
from ctbench.certify import Status
from ctbench.certify.cascade import CertifySettings, certify_model
from ctbench.certify.external import Workspace, abcrown_config, locate_abcrown, verify_many
from ctbench.certify.hdf5 import read_h5
from ctbench.certify.milp import milp_verify
from ctbench.certify.vnncomp import (
    export_onnx,
    normalized_box,
    parse_answer,
    robustness_vnnlib,
    split_normalization,
    to_pixel_space,
)
from ctbench.errors import CTBenchError
from ctbench.models import create_model
from ctbench.nn import Normalization

pytest.importorskip("maraboupy", reason="Marabou (maraboupy) is a test dependency: pip install -e '.[test]'")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime is a test dependency: pip install -e '.[test]'")

ABCROWN_LIKE = Path(__file__).parent / "vnncomp" / "abcrown_like.py"
IN_SHAPE = (1, 2, 3)
CLASSES = 3


def _randomize_bn(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm1d | torch.nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.3)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.2)
    return model.eval()


def tiny_model(seed: int) -> torch.nn.Sequential:
    """Normalization → MLP with BatchNorm, float32, on (1, 2, 3) inputs, 3 classes."""
    g = torch.Generator().manual_seed(seed)
    model = torch.nn.Sequential(
        Normalization([0.4], [0.3]),
        torch.nn.Flatten(),
        torch.nn.Linear(6, 10),
        torch.nn.BatchNorm1d(10),
        torch.nn.ReLU(),
        torch.nn.Linear(10, 10),
        torch.nn.ReLU(),
        torch.nn.Linear(10, CLASSES),
    )
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return _randomize_bn(model, seed)


def tiny_conv_model(seed: int) -> torch.nn.Sequential:
    """Normalization → Conv (zero padding) → BatchNorm2d → ReLU → Linear, on (1, 4, 4) inputs."""
    g = torch.Generator().manual_seed(seed)
    model = torch.nn.Sequential(
        Normalization([0.5], [0.25]),
        torch.nn.Conv2d(1, 3, 3, stride=1, padding=1),
        torch.nn.BatchNorm2d(3),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(48, CLASSES),
    )
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    return _randomize_bn(model, seed)


def tiny_dataset(model, n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    xs = torch.rand(n, *IN_SHAPE, generator=g)
    with torch.no_grad():
        ys = model(xs).argmax(1)
    ys[::7] = (ys[::7] + 1) % CLASSES  # a few misclassified samples
    return [(xs[i], int(ys[i])) for i in range(n)]


def _run(model, data, stages, tmp_path, name, eps=0.08, **kw):
    s = CertifySettings(eps=eps, eps_str=str(eps), stages=stages, **{"timeout": 60, **kw})
    out = tmp_path / f"{name}.h5"
    counts = certify_model(model, data, range(len(data)), s, out, num_classes=CLASSES)
    data, attrs = read_h5(out)
    return counts, data["status"], data["decided_by"], attrs


@pytest.fixture
def abcrown_like(monkeypatch):
    monkeypatch.setenv("CTBENCH_ABCROWN", str(ABCROWN_LIKE))
    monkeypatch.setenv("CTBENCH_ABCROWN_PYTHON", sys.executable)  # the stand-in runs in this environment
    monkeypatch.delenv("ABCROWN_LIKE_MODE", raising=False)
    return ABCROWN_LIKE


# -- the exported files ------------------------------------------------------------------------------


@pytest.mark.parametrize("arch,dataset", [("cnn_small", "mnist"), ("cnn_small", "cifar10"), ("cnn5", "mnist")])
def test_onnx_export_computes_the_model(arch, dataset, tmp_path):
    model = _randomize_bn(create_model(arch, dataset, seed=3), 3)
    x = torch.rand(4, *model_input_shape(dataset))
    norm, _ = split_normalization(model)
    path = export_onnx(model, tuple(x.shape[1:]), tmp_path / "m.onnx")
    sess = ort.InferenceSession(str(path))
    got = np.concatenate([sess.run(None, {"input": norm(x[i : i + 1]).numpy()})[0] for i in range(4)])
    with torch.no_grad():
        want = model(x).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
    assert not list(tmp_path.glob(".*tmp"))  # written atomically


def model_input_shape(dataset):
    from ctbench.data import get_spec

    return tuple(get_spec(dataset).shape)


def test_export_refuses_layers_it_cannot_translate(tmp_path):
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))
    with pytest.raises(CTBenchError, match="Tanh"):
        export_onnx(model, (4,), tmp_path / "m.onnx")
    assert not (tmp_path / "m.onnx").exists()


def test_normalized_box_contains_the_exact_image_of_the_pixel_box():
    g = torch.Generator().manual_seed(0)
    mean, std = [0.4914, 0.4822, 0.4465], [0.2023, 0.1994, 0.2010]  # CIFAR-10's, as float32 buffers
    norm = Normalization(mean, std)
    x = torch.rand(1, 3, 4, 4, generator=g, dtype=torch.float64)
    lo, hi = (x - 2 / 255).clamp(0, 1), (x + 2 / 255).clamp(0, 1)
    zlo, zhi = normalized_box(norm, lo, hi)
    m = norm.mean.double().expand_as(x).flatten().tolist()
    s = norm.std.double().expand_as(x).flatten().tolist()
    for i, (a, b) in enumerate(zip(lo.flatten().tolist(), hi.flatten().tolist(), strict=True)):
        exact_lo = (Fraction(a) - Fraction(m[i])) / Fraction(s[i])
        exact_hi = (Fraction(b) - Fraction(m[i])) / Fraction(s[i])
        assert Fraction(float(zlo[i])) <= exact_lo and exact_hi <= Fraction(float(zhi[i]))
    assert np.all(zhi - zlo < (hi - lo).flatten().numpy() / 0.19 + 1e-12)  # and not wider than needed
    back = to_pixel_space(norm, (zlo + zhi) / 2, (3, 4, 4))
    assert torch.allclose(back, (lo + hi) / 2, atol=1e-12)


def test_vnnlib_states_the_negation_of_robustness():
    text = robustness_vnnlib(np.array([0.0, 0.25]), np.array([0.5, 1.0]), 1, 3)
    assert "(assert (>= X_1 0.25))" in text and "(assert (<= X_0 0.5))" in text
    assert "(and (>= Y_0 Y_1))" in text and "(and (>= Y_2 Y_1))" in text and "Y_1 Y_1" not in text
    assert text.count("(declare-const X_") == 2 and text.count("(declare-const Y_") == 3
    with pytest.raises(CTBenchError):
        robustness_vnnlib(np.array([0.0]), np.array([1.0]), 3, 3)
    with pytest.raises(CTBenchError):
        robustness_vnnlib(np.array([0.6]), np.array([0.5]), 0, 3)


@pytest.mark.parametrize(
    "text,verdict",
    [
        ("unsat\n", "unsat"),
        ("safe\n", "unsat"),
        ("safe-incomplete", "unsat"),
        ("holds", "unsat"),
        ("  \nsat\n((X_0 0.5)\n (X_1 -1e-3)\n (Y_0 2.0))", "sat"),
        ("unsafe-pgd\n", "sat"),
        ("violated", "sat"),
        ("timeout", "timeout"),
        ("unknown", "unknown"),
        ("Traceback (most recent call last):", "unknown"),
        ("", "unknown"),
    ],
)
def test_parse_answer(text, verdict):
    v, values = parse_answer(text)
    assert v == verdict
    if verdict == "sat" and "X_0" in text:
        assert values["X"] == {0: 0.5, 1: -1e-3} and values["Y"] == {0: 2.0}


# -- the verifiers agree with the exact MILP ------------------------------------------------------------


@pytest.mark.parametrize("verifier", ["Marabou", "abCROWN"])
def test_external_verifier_agrees_with_milp(verifier, abcrown_like, tmp_path):
    agree = {"unsat": 0, "sat": 0}
    for seed in range(10):
        model = tiny_model(seed)
        model64 = torch.nn.Sequential(*model).double().eval()
        x = torch.rand(1, *IN_SHAPE, generator=torch.Generator().manual_seed(100 + seed), dtype=torch.float64)
        eps = (0.03, 0.1, 0.25)[seed % 3]
        lo, hi = (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)
        y = int(model64(x).argmax(1))
        exact = milp_verify(model64, lo, hi, margin_spec(torch.tensor([y]), CLASSES, dtype=torch.float64),
                            deadline=time.monotonic() + 60)  # fmt: skip
        ws = Workspace(model, IN_SHAPE)
        (ans,) = verify_many(verifier, ws, [(lo, hi)], [y], [60.0], CLASSES)
        assert (exact.status, ans.verdict) in (("verified", "unsat"), ("falsified", "sat")), (seed, exact, ans)
        agree[ans.verdict] += 1
        if ans.verdict == "sat":  # the reported point is a real counterexample of the model
            xc = to_pixel_space(ws.norm, ans.z, IN_SHAPE).clamp(lo, hi)
            out = model64(xc)[0].detach()
            assert float(out[y] - torch.cat([out[:y], out[y + 1 :]]).max()) <= 1e-6
    assert agree["unsat"] >= 2 and agree["sat"] >= 2  # both answers were exercised


@pytest.mark.parametrize("verifier", ["Marabou", "abCROWN"])
def test_cascade_stage_matches_the_milp_stage(verifier, abcrown_like, tmp_path):
    model = tiny_model(7)
    data = tiny_dataset(model, 20, seed=7)
    c_ext, st_ext, by_ext, attrs = _run(model, data, (verifier,), tmp_path, "ext")
    c_milp, st_milp, _, _ = _run(model, data, ("MILP",), tmp_path, "milp")
    certified = {Status.CERTIFIED_MARABOU if verifier == "Marabou" else Status.CERTIFIED_ABCROWN}
    assert np.array_equal(np.isin(st_ext, [int(s) for s in certified]), st_milp == int(Status.CERTIFIED_MILP))
    assert np.array_equal(st_ext == int(Status.FALSIFIED), st_milp == int(Status.FALSIFIED))
    assert c_ext["incorrect"] == c_milp["incorrect"] >= 1
    assert sum(c_ext[k] for k in ("incorrect", "falsified", "timeout", "unknown")) + c_ext[
        "certified_marabou" if verifier == "Marabou" else "certified_abcrown"
    ] == len(data)
    assert 0 < c_ext["decided_by"][verifier] < len(data)
    assert list(attrs["stages"]) == [verifier]


def test_external_stage_after_the_bound_stages_only_sees_undecided_samples(tmp_path):
    model = tiny_model(3)
    data = tiny_dataset(model, 20, seed=3)
    counts, status, by, _ = _run(model, data, ("IBP", "CROWN", "Marabou"), tmp_path, "mix", eps=0.05)
    assert counts["decided_by"]["IBP"] + counts["decided_by"]["CROWN"] >= 1
    assert counts["decided_by"]["IBP"] + counts["decided_by"]["CROWN"] + counts["decided_by"]["Marabou"] + counts[
        "incorrect"
    ] + counts["decided_by"]["none"] == len(data)
    assert np.all(status[by == 2] != int(Status.CERTIFIED_IBP))


# -- a verifier is not trusted with counterexamples, and failures stay undecided -----------------------


def test_a_false_counterexample_does_not_falsify(abcrown_like, monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("ABCROWN_LIKE_MODE", "lie_sat")
    model = tiny_model(5)
    data = tiny_dataset(model, 8, seed=5)
    counts, status, _, _ = _run(model, data, ("abCROWN",), tmp_path, "liar", eps=0.01)
    exact, _, _, _ = _run(model, data, ("MILP",), tmp_path, "exact", eps=0.01)
    assert exact["certified_milp"] == counts["n"] - counts["incorrect"]  # so any "falsified" would be wrong
    # the point 0 (in network-input space) is far outside every ε-box: every sample stays undecided
    assert counts["falsified"] == 0 and counts["unknown"] == counts["n"] - counts["incorrect"]
    assert "does not hold on the model" in caplog.text


def test_a_crashing_verifier_leaves_samples_undecided(abcrown_like, monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("ABCROWN_LIKE_MODE", "crash")
    model = tiny_model(5)
    counts, _, _, _ = _run(model, tiny_dataset(model, 4, seed=5), ("abCROWN",), tmp_path, "crash")
    assert counts["unknown"] == counts["n"] - counts["incorrect"]
    assert "simulated crash" in caplog.text


def test_a_hanging_verifier_is_killed_and_times_out(abcrown_like, monkeypatch, tmp_path):
    import ctbench.certify.external as ext

    monkeypatch.setenv("ABCROWN_LIKE_MODE", "hang")
    monkeypatch.setattr(ext, "ABCROWN_GRACE_S", 1.0)
    model = tiny_model(5)
    s = CertifySettings(eps=0.05, eps_str="0.05", stages=("abCROWN",), timeout=2)
    data = [d for d in tiny_dataset(model, 6, seed=5) if int(model(d[0][None]).argmax()) == d[1]][:1]
    t0 = time.monotonic()
    counts = certify_model(model, data, range(1), s, tmp_path / "hang.h5", num_classes=CLASSES)
    assert counts["timeout"] == 1 and time.monotonic() - t0 < 30


# -- configuration and availability -----------------------------------------------------------------------


def test_marabou_on_a_convolutional_net_agrees_with_milp():
    """Conv with zero padding and BatchNorm2d after a normalization layer: the padding must see zeros
    of the *normalized* input, which is why the normalization is not folded into the convolution."""
    answers = set()
    for seed in range(6):
        model = tiny_conv_model(seed)
        model64 = torch.nn.Sequential(*model).double().eval()
        x = torch.rand(1, 1, 4, 4, generator=torch.Generator().manual_seed(200 + seed), dtype=torch.float64)
        y = int(model64(x).argmax(1))
        eps = (0.02, 0.08, 0.2)[seed % 3]
        lo, hi = (x - eps).clamp(0, 1), (x + eps).clamp(0, 1)
        exact = milp_verify(model64, lo, hi, margin_spec(torch.tensor([y]), CLASSES, dtype=torch.float64),
                            deadline=time.monotonic() + 60)  # fmt: skip
        (ans,) = verify_many("Marabou", Workspace(model, (1, 4, 4)), [(lo, hi)], [y], [60.0], CLASSES)
        assert (exact.status, ans.verdict) in (("verified", "unsat"), ("falsified", "sat")), (seed, exact, ans)
        answers.add(ans.verdict)
    assert answers == {"unsat", "sat"}


def test_abcrown_base_config_must_be_a_mapping(tmp_path):
    from ctbench.certify.external import load_base_config

    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(CTBenchError, match="mapping"):
        load_base_config(str(tmp_path / "list.yaml"))
    (tmp_path / "bad.yaml").write_text("a: [1,\n")
    with pytest.raises(CTBenchError, match="cannot read"):
        load_base_config(str(tmp_path / "bad.yaml"))
    assert load_base_config("") == {}
    with pytest.raises(CTBenchError, match="mapping"):  # rejected with the settings, before any work
        CertifySettings(eps=0.1, eps_str="0.1", stages=("abCROWN",), abcrown_config=str(tmp_path / "list.yaml"))


def test_abcrown_config_merges_the_user_base_under_the_generated_keys(tmp_path):
    base = {"solver": {"batch_size": 8}, "bab": {"timeout": 5, "branching": {"method": "fsb"}},
            "specification": {"vnnlib_path": "x.vnnlib"}, "model": {"cache_onnx_conversion": True}}
    cfg = abcrown_config(tmp_path / "rows.csv", 7, (1, 28, 28), tmp_path, "cuda", base)
    assert cfg["solver"] == {"batch_size": 8}
    assert cfg["bab"] == {"timeout": 5, "branching": {"method": "fsb"}}  # the CSV's third column wins per row
    # CSV mode (a vnnlib_path would silently switch it off), one conversion check per row (no cache)
    assert cfg["specification"] == {"vnnlib_path": None}
    assert cfg["model"] == {"onnx_path": None, "input_shape": [-1, 1, 28, 28], "cache_onnx_conversion": False}
    assert cfg["general"]["csv_name"] == "rows.csv" and cfg["general"]["root_path"] == str(tmp_path)
    assert cfg["data"] == {"start": 0, "end": 7}
    assert cfg["general"]["device"] == "cuda" and cfg["general"]["save_adv_example"] is True
    assert "abcrown_adv_saver.py" in cfg["attack"]["adv_saver"]
    assert base["bab"]["timeout"] == 5 and base["specification"]["vnnlib_path"] == "x.vnnlib"  # not modified


def test_locate_abcrown(monkeypatch, tmp_path):
    monkeypatch.setenv("CTBENCH_ABCROWN", str(ABCROWN_LIKE))
    assert locate_abcrown() == ABCROWN_LIKE.resolve()
    (tmp_path / "abcrown.py").write_text("")
    monkeypatch.setenv("CTBENCH_ABCROWN", str(tmp_path))
    assert locate_abcrown() == (tmp_path / "abcrown.py").resolve()
    monkeypatch.setenv("CTBENCH_ABCROWN", str(tmp_path / "nowhere"))
    with pytest.raises(CTBenchError, match="CTBENCH_ABCROWN"):
        locate_abcrown()


def test_unavailable_abcrown_is_skipped_with_a_warning(monkeypatch, tmp_path, caplog):
    monkeypatch.delenv("CTBENCH_ABCROWN", raising=False)
    if locate_abcrown() is not None:
        pytest.skip("alpha-beta-CROWN is importable here")
    model = tiny_model(1)
    counts, _, _, attrs = _run(model, tiny_dataset(model, 4, seed=1), ("IBP", "abCROWN"), tmp_path, "skip")
    assert list(attrs["stages"]) == ["IBP"] and "abCROWN" in caplog.text
    assert list(attrs["external_skipped"]) == ["abCROWN"]
    with pytest.raises(CTBenchError, match="no certification stage left"):
        _run(model, tiny_dataset(model, 4, seed=1), ("abCROWN",), tmp_path, "none")


def test_a_misconfigured_abcrown_location_is_an_error_not_a_skip(monkeypatch, tmp_path):
    monkeypatch.setenv("CTBENCH_ABCROWN", str(tmp_path / "nowhere" / "abcrown.py"))
    model = tiny_model(1)
    with pytest.raises(CTBenchError, match="CTBENCH_ABCROWN"):
        _run(model, tiny_dataset(model, 4, seed=1), ("IBP", "abCROWN"), tmp_path, "bad")
    assert not list(tmp_path.iterdir())


def test_cli_rejects_a_missing_abcrown_config(tmp_path, capsys):
    rc = run_cli(
        ["certify", "--model", str(tmp_path / "m.pt"), "--eps", "0.1", "--stages", "abCROWN",
         "--abcrown-config", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "c.h5")]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and "missing.yaml" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "c.h5").exists()


@pytest.mark.skipif(
    not os.environ.get("CTBENCH_ABCROWN") or Path(os.environ["CTBENCH_ABCROWN"]).resolve() == ABCROWN_LIKE.resolve(),
    reason="alpha-beta-CROWN is not installable from PyPI; set CTBENCH_ABCROWN to a checkout's "
    "complete_verifier/abcrown.py (and CTBENCH_ABCROWN_PYTHON to its interpreter) to run this",
)
def test_real_abcrown_agrees_with_milp(tmp_path):
    model = tiny_model(7)
    data = tiny_dataset(model, 12, seed=7)
    _, st_ext, _, _ = _run(model, data, ("abCROWN",), tmp_path, "real")
    _, st_milp, _, _ = _run(model, data, ("MILP",), tmp_path, "milp")
    assert np.array_equal(st_ext == int(Status.CERTIFIED_ABCROWN), st_milp == int(Status.CERTIFIED_MILP))
    assert np.array_equal(st_ext == int(Status.FALSIFIED), st_milp == int(Status.FALSIFIED))


@pytest.mark.parametrize("name", ["cpu", "gpu", "tinyimagenet"])
def test_shipped_abcrown_configs_merge_without_touching_the_generated_keys(name, tmp_path):
    from ctbench.certify.external import BUILTIN_BASE, load_base_config

    base = load_base_config(str(Path(__file__).parents[1] / "config" / "abcrown" / f"{name}.yaml"))
    if name in ("cpu", "gpu"):  # the files spell out what ctbench uses without --abcrown-config
        assert base == BUILTIN_BASE["cuda" if name == "gpu" else "cpu"]
    cfg = abcrown_config(tmp_path / "rows.csv", 3, (3, 64, 64), tmp_path, "cuda", base)
    assert cfg["solver"]["alpha-crown"]["iteration"] == {"cpu": 20, "gpu": 100, "tinyimagenet": 40}[name]
    assert cfg["bab"] == {"branching": {"method": "kfsb"}}
    # alpha-beta-CROWN's own attack is never the original's unbounded 30 x 100 before everything
    assert cfg["attack"]["pgd_order"] in ("after", "middle") and cfg["attack"].get("pgd_restarts", 0) <= 10
    assert cfg["attack"]["cex_path"].endswith("abcrown_cex.txt")
