"""``ctbench attack`` / ``ctbench summarize``: adversarial accuracy, certificates consistency, tables."""

import json

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from _certify_helpers import EPS, run_cli, trained_model_path

from ctbench.certify import certify_file
from ctbench.certify.attack import attack_file
from ctbench.certify.hdf5 import read_h5
from ctbench.certify.summarize import summarize

N = 32


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    model = trained_model_path(tmp_path_factory)
    d = tmp_path_factory.mktemp("attack")
    cert = d / "certify.h5"
    certify_file(
        model,
        cert,
        eps=EPS,
        n=N,
        batch_size=16,
        stages=("IBP", "CROWN-IBP", "PGD"),
        pgd_steps=10,
        pgd_restarts=1,
        device="cpu",
    )
    return model, d, cert


def test_pgd_attack_file_and_consistency_with_certificates(files):
    model, d, cert = files
    out = d / "attack.h5"
    res = attack_file(
        model,
        out,
        eps=EPS,
        attack="pgd",
        steps=30,
        restarts=3,
        n=N,
        batch_size=16,
        certificates=cert,
        device="cpu",
    )
    assert res["certified_but_attacked"] == 0  # certified ⇒ not attackable
    data, attrs = read_h5(out)
    for k in (
        "sample_index",
        "nat_correct",
        "adv_correct",
        "adv_margin",
        "attack_broken",
        "verifier_falsified",
    ):
        assert data[k].shape == (N,), k
    assert attrs["attack"] == "pgd" and attrs["attack_settings"]["steps"] == 30 and attrs["eps"] == "0.1"
    assert (data["adv_correct"] <= data["nat_correct"]).all()
    assert (data["adv_margin"][data["attack_broken"]] < 0).all()
    # adversarial accuracy: a verifier counterexample counts even if this attack missed it
    assert not (data["adv_correct"] & data["verifier_falsified"]).any()
    c, _ = read_h5(cert)
    assert (c["sample_index"] == data["sample_index"]).all()
    assert (c["nat_correct"] == data["nat_correct"]).all()


def test_summarize_table_and_metrics(files, tmp_path):
    model, d, cert = files
    att = d / "attack_s.h5"
    attack_file(model, att, eps=EPS, steps=10, restarts=1, n=N, device="cpu")
    row = summarize(cert, att)
    assert row["n"] == N
    assert sum(row[k] for k in row if k.startswith("count_")) == N
    assert sum(row[k] for k in row if k.startswith("decided_by_")) == N
    assert 0 <= row["cert_acc"] <= row["adv_acc"] <= row["nat_acc"] <= 1
    assert row["ibp_acc"] <= row["crown_ibp_acc"] <= row["cert_acc"]
    assert row["certified_but_attacked"] == 0
    out = tmp_path / "cell.parquet"
    assert run_cli(["summarize", "--certify", str(cert), "--attack", str(att), "--out", str(out)]) == 0
    df = pd.read_parquet(out)
    assert len(df) == 1 and df.loc[0, "n"] == N and df.loc[0, "cert_acc"] == row["cert_acc"]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["nat_acc"] == row["nat_acc"]
    csv = tmp_path / "cell.csv"
    assert run_cli(["summarize", "--certify", str(cert), "--out", str(csv)]) == 0
    assert pd.read_csv(csv).loc[0, "n"] == N


def test_attack_cli_bad_input(files, tmp_path, capsys):
    model, _, _ = files
    out = tmp_path / "o" / "attack.h5"
    assert run_cli(["attack", "--model", str(model), "--eps", "-1", "--out", str(out)]) == 2
    assert (
        run_cli(["attack", "--model", str(tmp_path / "missing.pt"), "--eps", "0.1", "--out", str(out)]) == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(e.startswith("ctbench: error: ") for e in err)
    assert not out.exists()


def test_autoattack_tiny(files, tmp_path):
    """AutoAttack (standard, via torchattacks) on a few samples: never breaks a certified sample."""
    model, d, cert = files
    out = tmp_path / "aa.h5"
    res = attack_file(
        model,
        out,
        eps=EPS,
        attack="pgd,autoattack",
        steps=5,
        restarts=1,
        n=6,
        batch_size=6,
        certificates=cert,
        device="cpu",
    )
    assert res["certified_but_attacked"] == 0
    with h5py.File(out) as f:
        assert f.attrs["attack"] == "pgd,autoattack"
        assert f["adv_correct"].shape == (6,)
        assert np.all(f["adv_correct"][()] <= f["nat_correct"][()])
        by_pgd, by_aa = f["broken_by_pgd"][()], f["broken_by_autoattack"][()]
        assert not (by_pgd & by_aa).any() and ((by_pgd | by_aa) == f["attack_broken"][()]).all()


class _Kill(Exception):
    pass


def test_attack_kill_and_resume_gives_identical_file(files, tmp_path):
    from ctbench.certify.resume import state_path

    model, _, _ = files
    kw = dict(eps=EPS, attack="pgd", steps=10, restarts=2, n=24, start=4, batch_size=8, device="cpu")
    ref = tmp_path / "ref" / "attack.h5"
    attack_file(model, ref, **kw)
    out = tmp_path / "run" / "attack.h5"
    seen = []

    def kill_after_first_batch(event, info):
        seen.append(info["batch"])
        if len(seen) == 1:
            raise _Kill

    with pytest.raises(_Kill):
        attack_file(model, out, hook=kill_after_first_batch, **kw)
    assert not out.exists() and state_path(out).exists()
    attack_file(model, out, hook=kill_after_first_batch, **kw)
    assert seen == [0, 1, 2]  # the resumed run started at the second batch
    assert out.exists() and not state_path(out).exists()
    (a, a_attrs), (b, b_attrs) = read_h5(ref), read_h5(out)
    assert a.keys() == b.keys()
    for k in a:
        if k != "time_s":
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    for k in ("created_utc", "wall_time_s"):
        a_attrs.pop(k), b_attrs.pop(k)
    assert a_attrs == b_attrs

    # other settings: the old state is not used (and the result equals a fresh run with those settings)
    with pytest.raises(_Kill):
        attack_file(model, out.with_name("x.h5"), hook=lambda e, i: (_ for _ in ()).throw(_Kill()), **kw)
    kw2 = {**kw, "steps": 5}
    attack_file(model, out.with_name("x.h5"), **kw2)
    fresh = tmp_path / "fresh.h5"
    attack_file(model, fresh, **kw2)
    np.testing.assert_array_equal(read_h5(fresh)[0]["adv_margin"], read_h5(out.with_name("x.h5"))[0]["adv_margin"])
