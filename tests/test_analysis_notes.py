"""Every grid analysis states the sample count and data source of its tables and figures (issue 28): the
actual n read from the certify.h5 / verifiers / metrics.json inputs, the dataset and split, and which
samples (``ctbench.analysis.gridtables.samples_note``), on tiny hand-made inputs."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image
from test_analysis_grid import LITERATURE, _tsv, cert_status, write_certify, write_metrics

from ctbench.analysis import cost
from ctbench.analysis.gridtables import samples_note
from ctbench.cli import main as cli_main


def _metrics(path, n: int, *, method: str = "ibp", seed: int = 0, split: str | None = "test"):
    """metrics.json with the ``n`` and ``split`` that `ctbench summarize` records."""
    path = write_metrics(path, 0.99, 0.98, 0.985, method=method, seed=seed)
    data = json.loads(path.read_text())
    data.update({"n": n, **({"split": split} if split else {})})
    path.write_text(json.dumps(data))
    return path


def _texts(out, stem: str) -> tuple[str, str]:
    return (out / f"{stem}.md").read_text(), (out / f"{stem}.tex").read_text()


def test_samples_note_says_n_dataset_split_and_which_samples():
    first = samples_note([("mnist", "test", np.arange(6)), ("mnist", "test", np.arange(6))],
                         unit="certified samples", source="certify.h5")
    assert first == ("Samples (certify.h5): n = 6 certified samples per cell — MNIST test split, the first 6 "
                     "(sample_index 0–5).")
    later = samples_note([("cifar10", "test", np.arange(100, 105))], unit="certified samples", source="certify.h5")
    assert "n = 5 certified samples per cell — CIFAR-10 test split, sample_index 100–104" in later
    mixed = samples_note([("mnist", "test", np.arange(4)), ("mnist", "test", np.arange(6))], unit="x", source="s")
    assert "n = 4–6 x per cell" in mixed and "differs between cells" in mixed
    counts = samples_note([("mnist", "test", 1000), ("mnist", None, 10)], unit="x", source="metrics.json")
    assert "n = 1,000 x per cell — MNIST test split, sample positions not recorded" in counts
    assert "n = 10 x per cell — MNIST, split not recorded" in counts


def test_shared_mistakes_tables_and_figure_state_n(tmp_path):
    files = [write_certify(tmp_path / f"{m}/certify.h5", cert_status(bits), method=m)
             for m, bits in (("ibp", "110100"), ("sabr", "111000"), ("taps", "100100"))]
    out = tmp_path / "out"
    assert cli_main(["analyze", "shared_mistakes", "--certify", *map(str, files), "--out-dir", str(out)]) == 0
    expected = ("Samples (certify.h5): n = 6 certified samples per model — MNIST test split, the first 6 "
                "(sample_index 0–5). Each histogram counts n = 6 samples")
    for stem in ("shared_mistakes", "shared_mistakes_uncertified"):
        md, tex = _texts(out, stem)
        assert expected in md and f"% {expected}" in tex
    assert expected in Image.open(out / "shared_mistakes.png").info["Description"]
    # files of different samples compared on the common ones: the counted n is the intersection's
    short = write_certify(tmp_path / "crown_ibp/certify.h5", cert_status("1101"), method="crown_ibp",
                          sample_index=[2, 3, 4, 5])
    assert cli_main(["analyze", "shared_mistakes", "--certify", *map(str, files), str(short), "--intersect",
                     "--out-dir", str(out), "--no-figure"]) == 0
    md, _ = _texts(out, "shared_mistakes")
    assert "n = 4–6 certified samples per model" in md and "Each histogram counts n = 4 samples" in md


def test_verifier_agreement_states_n(tmp_path):
    files = [write_certify(tmp_path / f"verifiers/{v}.h5", [f"certified_{v.lower()}"] * 3 + ["timeout"] * 7,
                           stages=(v,)) for v in ("BaB", "MILP")]
    out = tmp_path / "out"
    assert cli_main(["analyze", "verifier_agreement", "--verifiers", *map(str, files), "--out-dir", str(out),
                     "--no-figure"]) == 0
    for stem in ("verifier_agreement", "verifier_agreement_pairs"):
        md, tex = _texts(out, stem)
        assert "Samples (verifiers/<V>.h5): n = 10 certified samples per verifier file — MNIST test split" in md
        assert "Each histogram counts n = 10 samples" in tex


def test_complete_gain_states_n_and_positions(tmp_path):
    path = write_certify(tmp_path / "c/certify.h5", cert_status("10110"), sample_index=range(100, 105))
    out = tmp_path / "out"
    assert cli_main(["analyze", "complete_gain", "--certify", str(path), "--out-dir", str(out)]) == 0
    md, tex = _texts(out, "complete_gain")
    note = "n = 5 certified samples per cell — MNIST test split, sample_index 100–104"
    assert note in md and note in tex and note in Image.open(out / "complete_gain.png").info["Description"]


def test_cost_states_the_certified_n_of_its_cells(tmp_path):
    a, b, c = (tmp_path / "results" / x for x in ("a", "b", "c"))
    tsvs = [_tsv(d / "benchmarks/certify.tsv", 3.0) for d in (a, b, c)]
    cert = write_certify(a / "certify.h5", cert_status("10"), method="ibp")
    metrics = _metrics(b / "metrics.json", 7, method="sabr")
    df = cost.cost_table(tsvs, [cert], [metrics])
    note = df.attrs["data_note"]
    assert note.startswith("Samples (certify.h5, metrics.json): n = 2–7 certified samples per cell — MNIST test split")
    assert "1 cell(s) without certify.h5/metrics.json: n unknown" in note
    out = tmp_path / "out"
    assert cli_main(["analyze", "cost", "--benchmarks", *map(str, tsvs), "--certify", str(cert), "--metrics",
                     str(metrics), "--out-dir", str(out), "--no-figure"]) == 0
    md, tex = _texts(out, "cost")
    assert "n = 2–7 certified samples per cell" in md and "n = 2–7 certified samples per cell" in tex


def test_seeds_and_tradeoff_state_the_metrics_n(tmp_path):
    files = [_metrics(tmp_path / f"m{k}/metrics.json", 50, method=m, seed=k)
             for k, m in enumerate(["ibp", "ibp", "sabr"])]
    files.append(_metrics(tmp_path / "pgd/metrics.json", 99, method="pgd"))  # not certified training
    out = tmp_path / "out"
    for name in ("seeds", "tradeoff"):
        assert cli_main(["analyze", name, "--metrics", *map(str, files), "--literature", str(LITERATURE),
                         "--out-dir", str(out)]) == 0
        md, tex = _texts(out, name)
        assert "Samples (metrics.json): n = " in md and "MNIST test split, sample positions not recorded" in tex
        assert "as published (config/literature.yaml)" in md
        assert "Samples (metrics.json)" in Image.open(out / f"{name}.png").info["Description"]
    seeds_md, _ = _texts(out, "seeds")
    trade_md, _ = _texts(out, "tradeoff")
    assert "n = 50–99 evaluated samples per cell" in seeds_md  # seeds lists every method
    assert "n = 50 evaluated samples per cell" in trade_md  # tradeoff leaves PGD out, and its n with it
