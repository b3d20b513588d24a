"""The grid analyses (ctbench/analysis: shared_mistakes, verifier_agreement, complete_gain, cost, seeds,
tradeoff) on small hand-made certify.h5 / attack.h5 / metrics.json / benchmark files."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from ctbench.analysis import cells as C
from ctbench.analysis import complete_gain, cost, seeds, shared_mistakes, verifier_agreement
from ctbench.certify import hdf5
from ctbench.certify.status import STATUS_MAPPING
from ctbench.cli import main as cli_main
from ctbench.errors import CTBenchError

ROOT = Path(__file__).resolve().parents[1]
LITERATURE = ROOT / "config" / "literature.yaml"
PAPER = [p / "reference" / "ctbench-paper.txt" for p in (ROOT / "shared", ROOT.parent / "shared")]

# -- hand-made files in the exact format of ctbench/certify/cascade.py's writer --------------------------------

KINDS = {"IBP": "lower_bound", "CROWN-IBP": "lower_bound", "CROWN": "lower_bound", "alpha-CROWN": "lower_bound",
         "PGD": "attack", "BaB": "complete", "MILP": "complete", "abCROWN": "complete", "Marabou": "complete"}
CERTIFYING_STAGE = {"certified_ibp": "IBP", "certified_crown_ibp": "CROWN-IBP", "certified_crown": "CROWN",
                    "certified_alpha_crown": "alpha-CROWN", "certified_bab": "BaB", "certified_milp": "MILP",
                    "certified_abcrown": "abCROWN", "certified_marabou": "Marabou"}
CASCADE = ("IBP", "CROWN-IBP", "PGD", "BaB")


def _decider(status: str, stages) -> int:
    if status in CERTIFYING_STAGE:
        return list(stages).index(CERTIFYING_STAGE[status])
    if status == "falsified":
        return next(j for j, s in enumerate(stages) if KINDS[s] in ("attack", "complete"))
    if status == "timeout":
        return next(j for j, s in enumerate(stages) if KINDS[s] == "complete")
    return -1  # incorrect (clean check) or unknown


def write_certify(path, statuses, *, dataset="mnist", eps="0.1", model="cnn7", method="ibp", variant="", seed=0,
                  stages=CASCADE, sample_index=None, cell_attr=True, extra_attrs=None) -> Path:
    """A certify.h5 with the datasets and root attributes of the cascade writer; ``statuses`` by name."""
    n, s = len(statuses), len(stages)
    code = np.array([STATUS_MAPPING[x] for x in statuses], np.uint8)
    label = np.arange(n, dtype=np.int16) % 10
    nat = np.array([x != "incorrect" for x in statuses])
    by = np.array([_decider(x, stages) for x in statuses], np.int8)
    margins = np.full((n, s), np.nan, np.float32)
    for i, j in enumerate(by):
        if j >= 0:
            margins[i, j] = 1.0 if statuses[i].startswith("certified") else -1.0
    datasets = {
        "sample_index": np.arange(n, dtype=np.int64) if sample_index is None else np.asarray(sample_index, np.int64),
        "label": label, "pred": np.where(nat, label, (label + 1) % 10).astype(np.int16), "nat_correct": nat,
        "status": code, "decided_by": by, "stage_margins": margins,
        "margin_lb": np.where([x.startswith("certified") for x in statuses], 1.0, np.nan).astype(np.float32),
        "time_s": np.full(n, 0.5, np.float32), "stage_time_s": np.arange(1, s + 1, dtype=np.float64) * 10.0,
        "stage_samples": np.full(s, n, np.int64),
    }
    attrs = {"format": hdf5.CERTIFY_FORMAT, "ctbench_version": "test", "created_utc": "2025-01-01T00:00:00+00:00",
             "model": model, "model_sha256": f"{model}-{method}-{variant}-{seed}", "dataset": dataset, "split": "test",
             "method": method, "seed": str(seed), "eps": eps,
             "eps_float": C.eps_value(eps), "stages": list(stages), "stage_margin_kinds": [KINDS[x] for x in stages],
             "status_enum": STATUS_MAPPING, "n": n, "device": "cpu", "external_skipped": [], "wall_time_s": 1.0}
    if cell_attr:
        attrs["cell"] = {"dataset": dataset, "eps": eps, "model": model, "method": method, "variant": variant,
                         "seed": seed}
    attrs.update(extra_attrs or {})
    path = Path(path)
    hdf5.write_h5(path, datasets, attrs, dataset_attrs={"status": {"mapping": STATUS_MAPPING}})
    return path


def write_attack(path, broken, nat_correct, **cell) -> Path:
    n = len(broken)
    cell = {"dataset": "mnist", "eps": "0.1", "model": "cnn7", "method": "ibp", "variant": "", "seed": 0, **cell}
    datasets = {"sample_index": np.arange(n, dtype=np.int64), "nat_correct": np.asarray(nat_correct, bool),
                "attack_broken": np.asarray(broken, bool)}
    sha = "{model}-{method}-{variant}-{seed}".format(**cell)  # the certify.h5 helper's: the same model
    hdf5.write_h5(path, datasets, {"format": hdf5.ATTACK_FORMAT, "cell": cell, **cell, "seed": str(cell["seed"]),
                                   "model_sha256": sha})
    return Path(path)


def write_metrics(path, nat, cert, adv, *, dataset="mnist", eps="0.1", model="cnn7", method="ibp", seed=0) -> Path:
    """metrics.json as `ctbench summarize` writes it (fractions) with the new ``cell`` key."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cell = {"dataset": dataset, "eps": eps, "model": model, "method": method, "variant": "", "seed": seed}
    path.write_text(json.dumps({**cell, "seed": str(seed), "cell": cell, "nat_acc": nat, "cert_acc": cert,
                                "adv_acc": adv}))
    return path


def cert_status(bits: str) -> list[str]:
    """``"1100"`` → certified_ibp, certified_ibp, falsified, falsified."""
    return ["certified_ibp" if b == "1" else "falsified" for b in bits]


# -- the Poisson-binomial expectation ----------------------------------------------------------------------------


def test_expected_histogram_two_models_by_hand():
    p1, p2 = 0.9, 0.8
    want = [(1 - p1) * (1 - p2), p1 * (1 - p2) + (1 - p1) * p2, p1 * p2]  # 0.02, 0.26, 0.72
    assert np.allclose(shared_mistakes.poisson_binomial([p1, p2]), want)
    assert np.allclose(want, [0.02, 0.26, 0.72])
    # the paper's example: two models with 90% certified accuracy certify 81% of the inputs together
    assert shared_mistakes.poisson_binomial([0.9, 0.9])[2] == pytest.approx(0.81)


def test_expected_histogram_three_models_by_hand():
    a, b, c = 0.5, 0.8, 0.9
    want = [
        (1 - a) * (1 - b) * (1 - c),
        a * (1 - b) * (1 - c) + (1 - a) * b * (1 - c) + (1 - a) * (1 - b) * c,
        a * b * (1 - c) + a * (1 - b) * c + (1 - a) * b * c,
        a * b * c,
    ]
    assert np.allclose(want, [0.01, 0.14, 0.49, 0.36])
    assert np.allclose(shared_mistakes.poisson_binomial([a, b, c]), want)
    # n · pmf from a (k, n) matrix whose rows have those accuracies (n = 10)
    certified = np.array([[1] * 5 + [0] * 5, [1] * 8 + [0] * 2, [1] * 9 + [0]], bool)
    assert np.allclose(shared_mistakes.expected_histogram(certified), 10 * np.array(want))


def test_poisson_binomial_matches_enumeration_for_six_models():
    """The original Utility/analyze_cert_cor.py enumerated the 2^6 outcomes; the convolution agrees."""
    p = np.random.default_rng(0).uniform(size=6)
    brute = np.zeros(7)
    for outcome in itertools.product((0, 1), repeat=6):
        brute[sum(outcome)] += np.prod([q if o else 1 - q for q, o in zip(p, outcome, strict=True)])
    assert np.allclose(shared_mistakes.poisson_binomial(p), brute)
    with pytest.raises(ValueError):
        shared_mistakes.poisson_binomial([1.5])


# -- observed histograms and grouping ---------------------------------------------------------------------------


@pytest.fixture
def three_methods(tmp_path):
    # samples:          0123456789
    bits = {"ibp": "1111100000", "sabr": "1111111000", "taps": "1110000001"}
    return [write_certify(tmp_path / f"{m}.h5", cert_status(b), method=m) for m, b in bits.items()]


def test_observed_histogram_on_hand_made_vectors(three_methods):
    items = C.read_all(three_methods)
    # per sample, # certifying: 3,3,3,2,2,1,1,0,0,1 → 0:2, 1:3, 2:2, 3:3
    assert shared_mistakes.observed_histogram(C.certified_matrix(items)).tolist() == [2, 3, 2, 3]
    hist, unc = shared_mistakes.shared_mistakes(items, ["methods"])
    row = hist.iloc[0]
    assert [row[f"obs_{j}"] for j in range(4)] == [2, 3, 2, 3]
    a, b, c = 0.5, 0.7, 0.4
    exp0, exp3 = 10 * (1 - a) * (1 - b) * (1 - c), 10 * a * b * c
    assert (row.exp_0, row.exp_3) == (pytest.approx(exp0), pytest.approx(exp3))
    assert row.members == "IBP, SABR, TAPS" and row.method == "*" and row.k == 3 and row.n == 10
    # Table 21: per model and for the group, samples certified by none
    none = unc.set_index("models")
    assert none.loc["cnn7 IBP seed0", "observed"] == 5 and none.loc["cnn7 TAPS seed0", "observed"] == 6
    assert none.loc["IBP, SABR, TAPS", "observed"] == 2
    assert none.loc["IBP, SABR, TAPS", "expected"] == pytest.approx(exp0)


def test_seed_and_architecture_groups(tmp_path):
    files = [write_certify(tmp_path / "s0.h5", cert_status("1100"), seed=0),
             write_certify(tmp_path / "s1.h5", cert_status("1010"), seed=1),
             write_certify(tmp_path / "c5.h5", cert_status("0001"), seed=0, model="cnn5")]
    hist, _ = shared_mistakes.shared_mistakes(C.read_all(files))
    by = {r.comparison: r for r in hist.itertuples()}
    assert set(by) == {"seeds", "architectures"}  # one method only: no method comparison
    assert (by["seeds"].obs_0, by["seeds"].obs_1, by["seeds"].obs_2) == (1, 2, 1)
    assert by["seeds"].members == "seed0, seed1" and by["seeds"].seed == "*"
    assert (by["architectures"].obs_0, by["architectures"].obs_1, by["architectures"].obs_2) == (1, 3, 0)
    assert by["architectures"].members == "cnn5, cnn7"


def test_files_covering_different_samples_are_refused_or_intersected(tmp_path):
    a = write_certify(tmp_path / "a.h5", cert_status("1100"), method="ibp")
    b = write_certify(tmp_path / "b.h5", cert_status("101"), method="sabr", sample_index=[1, 2, 3])
    items = C.read_all([a, b])
    with pytest.raises(CTBenchError, match=r"different samples: .*a\.h5 has 4 samples.*b\.h5 has 3.*--intersect"):
        shared_mistakes.shared_mistakes(items)
    hist, _ = shared_mistakes.shared_mistakes(items, intersect=True)
    # common samples 1, 2, 3: ibp 1,0,0; sabr 1,0,1 → # certifying 2, 0, 1
    assert (hist.iloc[0].n, hist.iloc[0].obs_0, hist.iloc[0].obs_1, hist.iloc[0].obs_2) == (3, 1, 1, 1)


def test_cell_attribute_preferred_over_individual_attributes(tmp_path):
    new = write_certify(tmp_path / "new.h5", cert_status("10"), method="sabr", variant="wide", seed=3)
    old = write_certify(tmp_path / "old.h5", cert_status("10"), method="sabr", seed=3, cell_attr=False)
    assert C.read_certificates(new).cell == C.Cell("mnist", "0.1", "cnn7", "sabr", "wide", 3)
    assert C.read_certificates(new).cell.label == "sabr+wide"
    assert C.read_certificates(old).cell == C.Cell("mnist", "0.1", "cnn7", "sabr", "", 3)
    token = write_certify(tmp_path / "t.h5", cert_status("10"), eps="2_255", dataset="cifar10", cell_attr=False)
    assert C.read_certificates(token).cell.eps == "2/255"  # the results-path token and the CLI's ε are one ε


# -- Table 22 ---------------------------------------------------------------------------------------------------


def test_complete_gain_columns_on_hand_made_file(tmp_path):
    statuses = (["incorrect"] * 2 + ["certified_ibp"] * 3 + ["certified_crown_ibp"] * 2
                + ["certified_bab", "falsified", "timeout"])
    path = write_certify(tmp_path / "c.h5", statuses, method="sabr")
    broken = [False] * 9 + [True]  # the attack also breaks the sample BaB timed out on
    attack = write_attack(tmp_path / "a.h5", broken, [s != "incorrect" for s in statuses], method="sabr")
    df = complete_gain.complete_gain([path], [attack])
    r = df.iloc[0]
    assert (r.nat, r.ibp, r.crown_ibp, r.cascade) == (80.0, 30.0, 50.0, 60.0)
    assert r.adv == pytest.approx(60.0)  # 8 correct − 1 falsified − 1 broken by the attack
    assert (r.gain_ibp, r.gain_crown_ibp) == (30.0, 10.0)
    assert (r.complete_stages, r.undecided, r.method, r.n) == ("BaB", 1, "sabr", 10)
    assert np.isnan(complete_gain.complete_gain([path]).iloc[0].adv)  # no attack file: no Adv column value
    other = write_attack(tmp_path / "o.h5", broken, [True] * 10, method="taps")
    with pytest.raises(CTBenchError, match="without a certify.h5 of the same cell"):
        complete_gain.complete_gain([path], [attack, other])


# -- seeds (Tables 13-17) ---------------------------------------------------------------------------------------


def test_seed_table_flags_a_shifted_cell_only(tmp_path):
    files = []
    # IBP, MNIST 0.1: the paper's 98.86 ± 0.06 (nat), 98.25 ± 0.03 (cert) reproduced: not flagged
    for seed, (nat, cert) in enumerate([(0.9880, 0.9822), (0.9886, 0.9825), (0.9892, 0.9828)]):
        files.append(write_metrics(tmp_path / f"ibp{seed}/metrics.json", nat, cert, cert + 0.0002, seed=seed))
    # SABR: natural accuracy 1 point below the paper's 99.15 ± 0.08 — flagged
    for seed, nat in enumerate([0.9810, 0.9815, 0.9820]):
        files.append(write_metrics(tmp_path / f"sabr{seed}/metrics.json", nat, 0.9842, 0.9847, method="sabr",
                                   seed=seed))
    rows = C.read_metrics(files)
    df = seeds.seed_table(rows, C.load_literature(LITERATURE)).set_index("method")
    ibp, sabr = df.loc["ibp"], df.loc["sabr"]
    assert ibp.nat_mean == pytest.approx(98.86) and ibp.nat_std == pytest.approx(0.06)  # ddof = 1
    assert (ibp.nat_paper, ibp.nat_paper_std, ibp.nat_source) == (98.86, 0.06, "Tables 13-17")
    assert not ibp.flagged and abs(ibp.nat_z) < 1e-6
    assert sabr.nat_flag and sabr.flagged and not sabr.cert_flag
    # σ = max(ours 0.05, paper 0.08): z = (98.15 − 99.15) / 0.08
    assert sabr.nat_sigma == pytest.approx(0.08) and sabr.nat_z == pytest.approx(-12.5)
    # adv has no Tables 13-17 value: Table 1's single-seed 98.47, σ = our std
    assert sabr.adv_source == "Table 1" and sabr.adv_paper == 98.47 and np.isnan(sabr.adv_paper_std)


def test_seed_table_single_seed_and_zero_std(tmp_path):
    lit = C.load_literature(LITERATURE)
    # one seed: σ = the paper's std (TAPS nat 99.20 ± 0.05): +0.08 is 1.6σ, +0.2 is 4σ
    near = write_metrics(tmp_path / "a/metrics.json", 0.9928, 0.9850, 0.9858, method="taps")
    far = write_metrics(tmp_path / "b/metrics.json", 0.9940, 0.9850, 0.9858, method="taps", eps="0.1", seed=1,
                        model="cnn7x")
    r = seeds.seed_table(C.read_metrics([near]), lit).iloc[0]
    assert np.isnan(r.nat_std) and r.nat_sigma == pytest.approx(0.05) and not r.nat_flag
    assert np.isnan(r.adv_z) and not r.adv_flag  # one seed, no paper std: not judged
    r = seeds.seed_table(C.read_metrics([far]), lit, paper_model="any").iloc[0]
    assert r.nat_flag and r.nat_z == pytest.approx(4.0)
    assert not seeds.seed_table(C.read_metrics([far]), lit).iloc[0].flagged  # cnn7x is not the paper's CNN7
    # identical seeds (std 0) on adv: σ = --min-std
    same = [write_metrics(tmp_path / f"s{k}/metrics.json", 0.9916, 0.9850, 0.9900, method="taps", seed=k)
            for k in range(2)]
    r = seeds.seed_table(C.read_metrics(same), lit, min_std=0.05).iloc[0]
    assert r.adv_std == 0 and r.adv_sigma == 0.05 and r.adv_z == pytest.approx((99.00 - 98.58) / 0.05)


PAPER_SEEDS = {  # re-read from the paper's Tables 13-17 ("This work" rows)
    ("mnist_0.1", "taps"): {"nat": [99.20, 0.05], "cert": [98.50, 0.04]},  # Table 13: 98.5 ± 0.04
    ("mnist_0.3", "mtl_ibp"): {"nat": [98.75, 0.02], "cert": [93.82, 0.21]},  # Table 14
    ("cifar10_2_255", "ibp"): {"nat": [66.85, 0.72], "cert": [55.32, 0.68]},  # Table 15
    ("cifar10_8_255", "crown_ibp"): {"nat": [48.24, 0.09], "cert": [32.49, 0.18]},  # Table 16
    ("tinyimagenet_1_255", "sabr"): {"nat": [30.96, 0.41], "cert": [21.14, 0.20]},  # Table 17: 21.14 ± 0.2
}


def test_literature_seed_values_match_the_paper():
    table = yaml.safe_load(LITERATURE.read_text())["seeds"]
    for (setting, method), want in PAPER_SEEDS.items():
        assert table[setting][method] == want
    assert all(set(v) == {"nat", "cert"} for s in table.values() for v in s.values())
    assert sum(len(s) for s in table.values()) == 30  # 5 tables × 6 methods
    paper = next((p for p in PAPER if p.is_file()), None)
    if paper is None:
        return
    # all 30 "This work" rows of App. D.1 in document order: nat and cert as "mean \pm std" or "mean ± std"
    text = paper.read_text()
    section = text[text.index("D.1. Result Significance"):text.index("D.2. Architecture Generalization")]
    pairs = [re.findall(r"(\d+(?:\.\d+)?)\s*(?:\\pm|±)\s*(\d+(?:\.\d+)?)", line)
             for line in section.splitlines() if "Literature This work" in line]
    ours = [[table[s][m][k] for k in ("nat", "cert")] for s in table for m in table[s]]
    assert [[[float(a), float(b)] for a, b in p] for p in pairs] == ours


# -- verifier agreement (Table 19) ------------------------------------------------------------------------------


def test_verifier_agreement_counts_and_soundness_alarm(tmp_path, capsys):
    vdir = tmp_path / "verifiers"
    bab = ["certified_bab"] * 4 + ["falsified"] * 3 + ["timeout", "incorrect", "certified_bab"]
    abc = ["certified_abcrown"] * 3 + ["falsified"] * 4 + ["certified_abcrown", "incorrect", "falsified"]
    files = [write_certify(vdir / "BaB.h5", bab, stages=("BaB",)),
             write_certify(vdir / "abCROWN.h5", abc, stages=("abCROWN",))]
    hist, pairs = verifier_agreement.verifier_agreement(C.read_all(files, "verifier"))
    # certified: BaB 0,1,2,3,9; abCROWN 0,1,2,7 → both 3, one 3 (3, 7, 9), neither 4
    assert [hist.iloc[0][f"obs_{j}"] for j in range(3)] == [4, 3, 3]
    assert hist.iloc[0].exp_2 == pytest.approx(10 * 0.5 * 0.4)
    p = pairs.iloc[0]
    assert (p.verifier_a, p.verifier_b, p.both, p.only_a, p.only_b, p.neither) == ("BaB", "abCROWN", 3, 2, 1, 4)
    # sample 3: BaB certified, abCROWN falsified; sample 9: abCROWN falsified what BaB certified too
    assert (p.a_cert_b_falsified, p.b_cert_a_falsified, p.alarm) == (2, 0, True)
    out = tmp_path / "out"
    argv = ["analyze", "verifier_agreement", "--verifiers", *map(str, files), "--out-dir", str(out), "--no-figure"]
    assert cli_main(argv) == 0
    assert "SOUNDNESS ALARM" in capsys.readouterr().err
    assert "SOUNDNESS ALARM" in (out / "verifier_agreement_pairs.md").read_text()
    assert "neither certify & one certifies & both certify" in (out / "verifier_agreement.tex").read_text()
    assert cli_main([*argv, "--fail-on-alarm"]) == 1


def test_verifier_agreement_without_alarm(tmp_path, capsys):
    files = [write_certify(tmp_path / f"{v}.h5", ["certified_bab", "timeout"] if v == "BaB" else
                           ["certified_milp", "falsified"], stages=(v,)) for v in ("BaB", "MILP")]
    _, pairs = verifier_agreement.verifier_agreement(C.read_all(files))
    assert not pairs.iloc[0].alarm  # certified vs timeout / falsified vs timeout is no contradiction
    assert cli_main(["analyze", "verifier_agreement", "--verifiers", *map(str, files), "--out-dir",
                     str(tmp_path / "o"), "--no-figure", "--fail-on-alarm"]) == 0
    assert "ALARM" not in capsys.readouterr().err


# -- cost (Table 12) --------------------------------------------------------------------------------------------

HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def _tsv(path: Path, *seconds) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = "".join(f"{s:.4f}\t0:00:{int(s):02d}\t512.5\t900\t400\t420\t1.0\t2.0\t95.0\t{s:.2f}\n" for s in seconds)
    path.write_text(HEADER + rows)
    return path


def test_cost_table_from_hand_made_benchmarks(tmp_path):
    a, b = tmp_path / "cellA", tmp_path / "cellB"
    tsvs = [_tsv(a / "benchmarks/train.tsv", 100.0, 120.0), _tsv(a / "benchmarks/certify.tsv", 30.0),
            _tsv(b / "benchmarks/train.tsv", 50.0), _tsv(b / "benchmarks/attack.tsv", 5.0)]
    certify = write_certify(a / "certify.h5", cert_status("10"), method="sabr", extra_attrs={"hardware": "H200"})
    metrics = write_metrics(b / "metrics.json", 0.99, 0.98, 0.985, method="ibp")
    df = cost.cost_table(tsvs, [certify], [metrics]).set_index("method")
    assert df.loc["sabr", "train_s"] == 110.0  # mean of the two repeats
    assert (df.loc["sabr", "certify_s"], df.loc["sabr", "total_s"]) == (30.0, 140.0)
    assert np.isnan(df.loc["sabr", "attack_s"]) and df.loc["ibp", "attack_s"] == 5.0
    assert df.loc["sabr", "stage_IBP_s"] == 10.0 and df.loc["sabr", "stage_BaB_s"] == 40.0  # stage_time_s
    assert (df.loc["sabr", "hardware"], df.loc["ibp", "hardware"]) == ("H200", "unknown")
    assert df.loc["sabr", "max_rss_mb"] == 512.5
    assert list(df.reset_index().method) == ["ibp", "sabr"]  # the paper's method order
    out = tmp_path / "out"
    assert cli_main(["analyze", "cost", "--benchmarks", *map(str, tsvs), "--certify", str(certify),
                     "--hardware", "2x RTX 2080 Ti", "--out-dir", str(out)]) == 0
    written = pd.read_csv(out / "cost.csv")
    assert set(written.hardware) == {"2x RTX 2080 Ti"} and (out / "cost.png").is_file()
    assert r"$1.1\times10^{2}$" in (out / "cost.tex").read_text()
    bad = tmp_path / "bad/benchmarks/train.tsv"
    bad.parent.mkdir(parents=True)
    bad.write_text("seconds\n1\n")
    with pytest.raises(CTBenchError, match="not a Snakemake benchmark file"):
        cost.cost_table([bad])


# -- the command line: outputs and bad input --------------------------------------------------------------------


def test_cli_writes_tables_and_figures(tmp_path, three_methods):
    out = tmp_path / "out"
    assert cli_main(["analyze", "shared_mistakes", "--certify", *map(str, three_methods), "--out-dir", str(out)]) == 0
    for suffix in ("csv", "md", "tex", "png", "pdf"):
        assert (out / f"shared_mistakes.{suffix}").stat().st_size > 0
    md = (out / "shared_mistakes.md").read_text()
    assert "| methods | MNIST ε=0.1 | model cnn7, seed 0 | IBP, SABR, TAPS | 50.00, 70.00, 40.00 | obs. | 2 | 3 |" in md
    assert r"\multicolumn{4}{c}{\# models certifying}" in (out / "shared_mistakes.tex").read_text()
    assert (out / "shared_mistakes_uncertified.csv").is_file()
    assert cli_main(["analyze", "complete_gain", "--certify", *map(str, three_methods), "--out-dir", str(out)]) == 0
    assert list(pd.read_csv(out / "complete_gain.csv").method) == ["ibp", "sabr", "taps"]
    metrics = [write_metrics(tmp_path / f"m{k}/metrics.json", 0.99, 0.98, 0.985, method=m, seed=k)
               for k, m in enumerate(["ibp", "ibp", "sabr", "pgd"])]
    for name in ("seeds", "tradeoff"):
        argv = ["analyze", name, "--metrics", *map(str, metrics), "--literature", str(LITERATURE),
                "--out-dir", str(out)]
        assert cli_main(argv) == 0
        assert (out / f"{name}.pdf").is_file() and (out / f"{name}.tex").read_text().startswith("% CTBench")
    trade = pd.read_csv(out / "tradeoff.csv")
    assert "pgd" not in set(trade.method)  # not a certified-training method: left out by default
    sabr = trade[trade.method == "sabr"].set_index("source")
    assert (sabr.loc["literature", "cert"], sabr.loc["ctbench paper", "cert"], sabr.loc["ours", "cert"]) == (
        98.22, 98.40, 98.0)


@pytest.mark.parametrize("name, option, files, rule", [
    ("shared_mistakes", "--certify", ["a/certify.h5", "b/certify.h5"], "rule `certify` (`ctbench certify`)"),
    ("complete_gain", "--certify", ["c/certify.h5"], "rule `certify`"),
    ("verifier_agreement", "--verifiers", ["c/verifiers/BaB.h5"], "rule `certify_verifier`"),
    ("seeds", "--metrics", ["c/metrics.json"], "rule `summarize`"),
    ("tradeoff", "--metrics", ["c/metrics.json"], "rule `summarize`"),
    ("cost", "--benchmarks", ["c/benchmarks/train.tsv", "c/benchmarks/certify.tsv"], "rule `train`, `certify`"),
])
def test_missing_inputs_name_the_files_and_the_rule(tmp_path, capsys, name, option, files, rule):
    paths = [str(tmp_path / f) for f in files]
    assert cli_main(["analyze", name, option, *paths, "--out-dir", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("ctbench: error: missing")
    assert all(p in err for p in paths) and rule in err
    assert not (tmp_path / "out").exists()


def test_one_model_per_setting_is_a_clear_error(tmp_path, capsys):
    path = write_certify(tmp_path / "c.h5", cert_status("10"))
    assert cli_main(["analyze", "shared_mistakes", "--certify", str(path), "--out-dir", str(tmp_path)]) == 2
    assert "at least two models" in capsys.readouterr().err
