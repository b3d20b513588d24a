"""The certification cascade on a small CNN trained by ctbench (mnist_mini): soundness, monotonicity,
counts, HDF5 layout, kill-and-resume, bad input."""

import json

import h5py
import numpy as np
import pytest
import torch
from _certify_helpers import EPS, run_cli, trained_model_path

from ctbench.attacks import pgd_attack
from ctbench.certify import Status, certify_file
from ctbench.certify.cascade import boxes, state_path
from ctbench.certify.hdf5 import TIMING_ATTRS, TIMING_DATASETS, read_certificates, read_h5
from ctbench.certify.stages import min_margin
from ctbench.certify.status import CERTIFIED_VALUES, STATUS_MAPPING
from ctbench.data import load_dataset
from ctbench.errors import CTBenchError
from ctbench.modelfile import load_model

N = 40
FAST = dict(
    pgd_steps=10, pgd_restarts=1, alpha_iterations=5, bab_max_domains=8, bab_batch=8, timeout=30, device="cpu"
)


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Small CPU problems on a shared machine run faster on one torch thread; restored afterwards."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    return trained_model_path(tmp_path_factory)


@pytest.fixture(scope="module")
def full_run(model_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("full") / "certify.h5"
    counts = certify_file(
        model_path,
        out,
        eps=str(EPS),
        n=N,
        batch_size=16,
        stages=("IBP", "CROWN-IBP", "CROWN", "alpha-CROWN", "PGD", "BaB"),
        **FAST,
    )
    return out, counts


def _xy(n, start=0):
    ds = load_dataset("mnist_mini", "test")
    xs, ys = zip(*(ds[i] for i in range(start, start + n)), strict=True)
    return torch.stack(xs), torch.tensor(ys)


def test_certified_samples_resist_strong_pgd(full_run, model_path):
    out, counts = full_run
    df, _ = read_certificates(out)
    cert = df.status.isin([k for k, v in STATUS_MAPPING.items() if v in CERTIFIED_VALUES]).to_numpy()
    assert cert.sum() >= 5, counts  # the test is meaningful: several samples are certified
    model, _ = load_model(model_path)
    x, y = _xy(N)
    keep = torch.from_numpy(cert.copy())
    x, y = x[keep], y[keep]
    _, _, _, _, lo_in, hi_in = boxes(x, EPS)
    torch.manual_seed(0)
    for loss in ("ce", "margin"):
        x_adv = pgd_attack(model, x, y, lo_in, hi_in, steps=40, restarts=6, loss=loss)
        with torch.no_grad():
            assert bool((min_margin(model(x_adv), y) > 0).all()), f"a certified sample was broken ({loss})"


def test_counts_add_up_and_layout(full_run):
    out, counts = full_run
    assert sum(v for k, v in counts.items() if k not in ("n", "decided_by")) == N
    assert sum(counts["decided_by"].values()) == N
    with h5py.File(out) as f:
        for name in (
            "sample_index",
            "label",
            "pred",
            "nat_correct",
            "status",
            "decided_by",
            "margin_lb",
            "time_s",
        ):
            assert f[name].shape == (N,), name
        assert f["stage_margins"].shape == (N, 6)
        assert f["status"].dtype == np.uint8 and h5py.check_enum_dtype(f["status"].dtype) == STATUS_MAPPING
        assert f["margin_lb"].dtype == np.float32 and f["sample_index"].dtype == np.int64
        a = f.attrs
        assert json.loads(a["status_enum"]) == STATUS_MAPPING
        assert a["eps"] == "0.1" and a["eps_float"] == 0.1 and len(a["model_sha256"]) == 64
        for key in (
            "ctbench_version",
            "torch_version",
            "settings",
            "config",
            "config_hash",
            "created_utc",
            "dataset",
            "split",
            "method",
            "seed",
            "device",
            "stages",
        ):
            assert key in a, key
        assert json.loads(a["settings"])["stages"] == json.loads(a["stages"])
    df, attrs = read_certificates(out)
    assert (df.sample_index == np.arange(N)).all()
    # certified ⇒ a positive sound margin; incorrect ⇒ nothing computed
    cert = df.status.str.startswith("certified")
    assert (df.margin_lb[cert] > 0).all()
    assert df[df.status == "incorrect"].margin_lb.isna().all()
    assert (~df.nat_correct == (df.status == "incorrect")).all()


def test_each_stage_only_shrinks_the_undecided_set(full_run, model_path, tmp_path):
    """Prefixes of the cascade: decided samples keep their decision; the undecided set only shrinks."""
    out, _ = full_run
    full = read_h5(out)[0]
    stages = ["IBP", "CROWN-IBP", "CROWN", "alpha-CROWN", "PGD", "BaB"]
    prev = None
    for k in range(1, 4):
        p = tmp_path / f"c{k}.h5"
        certify_file(model_path, p, eps=EPS, n=N, batch_size=16, stages=tuple(stages[:k]), **FAST)
        st = read_h5(p)[0]["status"]
        undecided = st == int(Status.UNKNOWN)
        decided = ~undecided
        assert (full["status"][decided] == st[decided]).all()  # later stages never change a decided sample
        if prev is not None:
            prev_st, prev_und = prev
            assert (undecided <= prev_und).all()  # shrinks
            assert (st[~prev_und] == prev_st[~prev_und]).all()
        prev = (st, undecided)
    # within one run: a sample is processed by stage j only if undecided before it
    sm, by = full["stage_margins"], full["decided_by"]
    for j in range(len(stages)):
        done_before = (by >= 0) & (by < j) | (full["status"] == int(Status.INCORRECT))
        assert np.isnan(sm[done_before, j]).all()


def _strip_timing(path):
    data, attrs = read_h5(path)
    for k in TIMING_DATASETS:
        data.pop(k)
    for k in TIMING_ATTRS:
        attrs.pop(k)
    return data, attrs


class _Kill(Exception):
    pass


def test_kill_and_resume_gives_identical_file(model_path, tmp_path):
    kw = dict(eps=EPS, n=16, start=8, batch_size=8, stages=("IBP", "CROWN-IBP", "PGD", "BaB"), **FAST)
    ref = tmp_path / "ref" / "certify.h5"
    certify_file(model_path, ref, **kw)
    out = tmp_path / "run" / "certify.h5"
    events = []

    def kill_after(n_batches):
        def hook(event, info):
            events.append(event)
            if events.count("batch") >= n_batches:
                raise _Kill

        return hook

    with pytest.raises(_Kill):
        certify_file(model_path, out, hook=kill_after(1), **kw)
    assert not out.exists() and state_path(out).exists()

    # second kill inside the per-sample (complete) stage, if any sample reaches it
    def kill_in_sample(event, info):
        if event == "sample":
            raise _Kill

    with pytest.raises(_Kill):  # samples 8..23 include one that reaches BaB (sample 15)
        certify_file(model_path, out, hook=kill_in_sample, **kw)
    assert not out.exists() and state_path(out).exists()
    certify_file(model_path, out, **kw)
    assert out.exists() and not state_path(out).exists()
    a, b = _strip_timing(ref), _strip_timing(out)
    assert a[1] == b[1]
    assert a[0].keys() == b[0].keys()
    for k in a[0]:
        np.testing.assert_array_equal(a[0][k], b[0][k], err_msg=k)

    # a corrupt state file is ignored (with a warning): the run starts over and gives the same result
    out2 = tmp_path / "run2" / "certify.h5"
    out2.parent.mkdir()
    state_path(out2).write_bytes(b"PK\x03\x04 truncated")
    certify_file(model_path, out2, **kw)
    c = _strip_timing(out2)
    for k in a[0]:
        np.testing.assert_array_equal(a[0][k], c[0][k], err_msg=k)


def test_float64_recheck_decides_near_zero(model_path):
    """A certificate near zero is only kept if the float64 bound agrees (sabotaged float64 model here)."""
    from ctbench.certify.cascade import CertifySettings
    from ctbench.certify.stages import CERTIFY_STAGES, Batch, Context

    model, _ = load_model(model_path)
    x, y = _xy(16)
    s = CertifySettings(eps=EPS, eps_str="0.1", stages=("IBP",), recheck_threshold=float("inf"))
    ctx = Context(model, 10, s, torch.device("cpu"))
    b = Batch(x, y, *boxes(x, EPS), sample_index=np.arange(16))
    honest = CERTIFY_STAGES.get("IBP").run(ctx, b)
    assert (honest.decision == int(Status.CERTIFIED_IBP)).sum() >= 1
    import copy

    bad = copy.deepcopy(model).double()
    with torch.no_grad():
        bad[-1].weight.zero_()
        bad[-1].bias.zero_()  # every margin is exactly 0 in float64
    ctx._model64 = bad
    res = CERTIFY_STAGES.get("IBP").run(ctx, b)
    assert (res.decision == -1).all()


@pytest.mark.parametrize(
    "case", ["missing", "corrupt", "eps_negative", "eps_big", "wrong_dataset", "unwritable"]
)
def test_bad_input_one_clear_error_no_partial_file(case, model_path, tmp_path, capsys):
    out = tmp_path / "out" / "certify.h5"
    model, eps, extra = str(model_path), "0.1", []
    if case == "missing":
        model = str(tmp_path / "nope.pt")
    elif case == "corrupt":
        bad = tmp_path / "bad.pt"
        bad.write_bytes(b"\x00garbage" * 50)
        model = str(bad)
    elif case == "eps_negative":
        eps = "-0.1"
    elif case == "eps_big":
        eps = "3/2"
    elif case == "wrong_dataset":
        extra = ["--dataset", "cifar10"]
    elif case == "unwritable":
        blocker = tmp_path / "file"
        blocker.write_text("x")
        out = blocker / "certify.h5"  # parent is a file
    rc = run_cli(
        ["certify", "--model", model, "--eps", eps, "--n", "4", "--out", str(out), "--device", "cpu", *extra]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("ctbench: error: "), err
    assert "Traceback" not in "\n".join(err)
    parent = out.parent
    if parent.is_dir():
        assert list(parent.iterdir()) == [], list(parent.iterdir())


def test_certify_cli_end_to_end(model_path, tmp_path, capsys):
    out = tmp_path / "c.h5"
    argv = [
        "certify",
        "--model",
        str(model_path),
        "--eps",
        "1/10",
        "--n",
        "8",
        "--start",
        "3",
        "--stages",
        "IBP,CROWN-IBP,PGD",
        "--pgd-steps",
        "5",
        "--pgd-restarts",
        "1",
        "--out",
        str(out),
        "--device",
        "cpu",
    ]
    assert run_cli(argv) == 0
    df, attrs = read_certificates(out)
    assert (
        list(df.sample_index) == list(range(3, 11)) and attrs["eps"] == "1/10" and attrs["eps_float"] == 0.1
    )
    assert json.loads(capsys.readouterr().out.split("\nwrote")[0])["n"] == 8


def test_eps_parsing():
    from ctbench.certify import parse_eps

    assert parse_eps("2/255") == (2 / 255, "2/255")
    assert parse_eps("0.1") == (0.1, "0.1")
    for bad in ("-0.1", "1.5", "abc", "1/0", "nan"):
        with pytest.raises(CTBenchError):
            parse_eps(bad)


def test_benchmark_script_smoke(model_path):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    argv = [
        sys.executable,
        str(root / "benchmarks" / "certify.py"),
        "--model",
        str(model_path),
        "--n",
        "8",
        "--stages",
        "IBP,CROWN-IBP,PGD",
        "--pgd-steps",
        "5",
        "--pgd-restarts",
        "1",
        "--threads",
        "1",
        "--json",
    ]
    proc = subprocess.run(argv, cwd=root, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(proc.stdout)
    assert [r["stage"] for r in res["stages"]] == ["IBP", "CROWN-IBP", "PGD"]
    assert res["counts"]["n"] == 8
    assert (
        sum(r["decided"] for r in res["stages"]) + res["counts"]["incorrect"] + res["counts"]["unknown"] == 8
    )


def test_complete_limit_sends_only_the_first_samples_to_the_complete_stage(model_path, tmp_path):
    """Paper Table 1's rule for PGD/EDAC models (†): with complete_limit k only the first k samples may reach
    BaB; later undecided samples stay unknown. Recorded in the file's settings and in the summary."""
    from ctbench.certify.summarize import summarize

    eps = "0.15"  # large enough that IBP leaves samples undecided for BaB
    full = certify_file(model_path, tmp_path / "full.h5", eps=eps, n=N, batch_size=16, stages=("IBP", "BaB"), **FAST)
    limited = certify_file(model_path, tmp_path / "lim.h5", eps=eps, n=N, batch_size=16, stages=("IBP", "BaB"),
                           complete_limit=5, **FAST)
    data, attrs = read_h5(tmp_path / "lim.h5")
    ref, _ = read_h5(tmp_path / "full.h5")
    assert attrs["settings"]["complete_limit"] == 5
    bab = list(attrs["stages"]).index("BaB")
    assert data["stage_samples"][bab] <= 5 < ref["stage_samples"][bab]
    assert np.array_equal(data["status"][:5], ref["status"][:5])  # the first 5 are decided exactly as before
    later = data["status"][5:]
    assert set(later.tolist()) <= {int(Status.INCORRECT), int(Status.CERTIFIED_IBP), int(Status.UNKNOWN)}
    assert limited["unknown"] > full["unknown"]
    assert summarize(tmp_path / "lim.h5")["complete_limit"] == 5
