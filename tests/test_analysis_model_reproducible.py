"""Per-model analyses (issue 28): every random draw depends only on (seed, ε, sample), the analyses
default to the whole test split, every table and figure states n and the data source, and Fig. 5's
y-axis is the certification cascade's certified accuracy (``ctbench figure tightness --metrics``).

Models here are untrained (random ``cnn_small`` on ``mnist_mini``, or a random MLP on 7×7 inputs): the
tests are about bookkeeping, not about what training does.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from ctbench.analysis import style
from ctbench.analysis.fragmentation import fragmentation
from ctbench.analysis.tables import read_table, with_certification
from ctbench.analysis.tightness import figure as tightness_figure
from ctbench.analysis.tightness import tightness
from ctbench.cli import main
from ctbench.data import load_dataset
from ctbench.errors import CTBenchError
from ctbench.io import sha256_file


def _inputs(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` mnist_mini test digits shrunk to 7×7 (float64), with their labels."""
    ds = load_dataset("mnist_mini", "test")
    x = torch.nn.functional.interpolate(ds.images[:n].double() / 255, size=(7, 7), mode="bilinear",
                                        align_corners=False)
    return x, ds.labels[:n]


def _mlp(seed: int = 1) -> nn.Sequential:
    g = torch.Generator().manual_seed(seed)
    net = nn.Sequential(nn.Flatten(), nn.Linear(49, 20), nn.ReLU(), nn.Linear(20, 20), nn.ReLU(),
                        nn.Linear(20, 10)).double().eval()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) * 0.4)
    return net


# ------------------------------------------------------------------------------- determinism (item 1)

def test_fragmentation_at_one_eps_does_not_depend_on_the_other_eps_requested():
    x, y = _inputs(6)
    net = _mlp()
    alone = fragmentation(net, (x, y), ["0.3"], samples=12, seed=4, batch=6)
    both = fragmentation(net, (x, y), ["0.1", "0.3"], samples=12, seed=4, batch=6)
    both = both[both["eval_eps_str"] == "0.3"].reset_index(drop=True)
    assert alone["unstable_lower_pct"].tolist() == both["unstable_lower_pct"].tolist()  # exact
    assert alone.equals(both)
    # nor on the batch size, the chunking or the order of the radii
    other = fragmentation(net, (x, y), ["0.3", "0.1"], samples=12, seed=4, batch=4, chunk=5)
    other = other[other["eval_eps_str"] == "0.3"].reset_index(drop=True)
    assert alone["unstable_lower_pct"].tolist() == other["unstable_lower_pct"].tolist()
    # the seed matters: another seed gives other noise (some input sees another unstable set)
    reseeded = fragmentation(net, (x, y), ["0.3"], samples=12, seed=5, batch=6)
    assert alone["unstable_lower_pct"].tolist() != reseeded["unstable_lower_pct"].tolist()


def test_sampled_estimate_of_an_input_does_not_depend_on_the_inputs_after_it():
    x, y = _inputs(6)
    net = _mlp()
    full = fragmentation(net, (x, y), ["0.3"], samples=12, seed=4, batch=6)
    head = fragmentation(net, (x[:3], y[:3]), ["0.3"], samples=12, seed=4, batch=2)  # like --n 3
    assert head["unstable_lower_pct"].tolist() == full["unstable_lower_pct"][:3].tolist()


def test_tightness_margin_subsets_do_not_depend_on_batching_or_other_eps():
    x, y = _inputs(5)
    net = _mlp(2)
    a = tightness(net, (x, y), ["0.3"], max_margins=3, seed=1, batch=5)
    b = tightness(net, (x, y), ["0.1", "0.3"], max_margins=3, seed=1, batch=5)
    b = b[b["eval_eps_str"] == "0.3"].reset_index(drop=True)
    assert a["tightness"].tolist() == b["tightness"].tolist()  # exact
    # other batches: the same margins per input (equal up to the float arithmetic of other batch shapes)
    c = tightness(net, (x, y), ["0.3"], max_margins=3, seed=1, batch=2)
    np.testing.assert_allclose(c["tightness"], a["tightness"], rtol=1e-12, atol=0)
    d = tightness(net, (x, y), ["0.3"], max_margins=3, seed=2, batch=5)
    assert not np.allclose(d["tightness"], a["tightness"], rtol=1e-6)  # the seed picks the margins


# ----------------------------------------------------------------------------- whole split (item 3)

def test_per_model_analyses_default_to_the_whole_split_and_explicit_n_keeps_its_settings():
    from ctbench.core import config_default
    from ctbench.fingerprint import stage_fingerprint
    from ctbench.grid import Grid, load_yaml

    assert config_default("analysis.n") is None
    cfg = load_yaml("config/ci.yaml")
    grid = Grid(cfg)
    cell = grid.table1_cells()[0]
    settings = grid.analysis_settings(cell, "fragmentation")
    # what an explicit n hashes is exactly what it hashed before the default changed: n, seed, eps
    assert settings == {"n": 100, "seed": 0, "eps": grid.dataset_eps(cell.dataset)}
    assert grid.analysis_fingerprint(cell, "fragmentation") == stage_fingerprint(
        "analysis_fragmentation", 1, {"select": grid.fingerprints(cell)["select"]}, settings)
    assert Grid(load_yaml("config/demo.yaml")).analysis()["n"] == 500
    del cfg["analysis"]["n"]
    unset = Grid(cfg)
    assert unset.analysis_settings(cell, "fragmentation")["n"] is None
    assert unset.analysis_fingerprint(cell, "fragmentation") != grid.analysis_fingerprint(cell, "fragmentation")


# ------------------------------------------------------------------ n and data source (item 4), Fig. 5

@pytest.fixture(scope="module")
def random_model(tmp_path_factory):
    """An untrained cnn_small on mnist_mini stored as a ctbench model file (training ε 0.1)."""
    from ctbench.modelfile import save_model
    from ctbench.models import create_model

    path = tmp_path_factory.mktemp("random_model") / "model.pt"
    model = create_model("cnn_small", "mnist_mini", seed=0)
    save_model(path, model, model_name="cnn_small", dataset="mnist_mini",
               config={"eps_str": "0.1", "eps": 0.1, "method": "ibp", "seed": 0})
    return path


def _png_note(path) -> str:
    from PIL import Image

    with Image.open(path) as im:
        return im.text.get("Description", "")


@pytest.mark.parametrize("name", ["fragmentation", "utilization", "tightness"])
def test_tables_and_figures_state_n_and_the_data_source(name, random_model, tmp_path):
    out = tmp_path / f"{name}.parquet"
    argv = ["analyze", name, "--model", str(random_model), "--n", "7", "--batch", "4", "--device", "cpu",
            "--eps", "0.1", "--out", str(out)]
    if name == "fragmentation":
        argv += ["--samples", "3"]
    assert main(argv) == 0
    df, prov = read_table(out)
    assert set(df["eval_n"]) == {7} and set(df["eval_split"]) == {"test"} and set(df["eval_dataset"]) == {"mnist_mini"}
    (source,) = set(df["eval_source"])
    assert source.startswith("mnist_mini test split: shipped in the package") and "mnist_mini.npz" in source
    assert prov["n"] == 7 and prov["split"] == "test" and prov["data_source"] == source
    assert prov["data_location"].endswith("mnist_mini.npz")
    stem = tmp_path / name
    assert main(["figure", name, str(out), "--out", str(stem)]) == 0
    note = _png_note(stem.with_suffix(".png"))
    assert note.startswith("n = 7 test samples per model; data: mnist_mini test split: shipped")
    assert stem.with_suffix(".pdf").read_bytes()[:5] == b"%PDF-"


def test_data_note_of_old_tables_and_of_mixed_n():
    import pandas as pd

    assert "not recorded" in style.data_note(pd.DataFrame({"method": ["ibp"]}))
    df = pd.DataFrame({"eval_split": ["test"] * 2, "eval_n": [500, 10000], "eval_source": ["mnist"] * 2})
    assert style.data_note(df) == "n = 500–10,000 test samples per model; data: mnist"


def _tightness_table(model, tmp_path):
    out = tmp_path / "tightness.parquet"
    assert main(["analyze", "tightness", "--model", str(model), "--n", "6", "--batch", "6", "--device", "cpu",
                 "--eps", "0.1", "0.3", "--out", str(out)]) == 0
    return out


def _write_metrics(path, model, cert_acc: float, n: int = 6):
    path.write_text(json.dumps({"model_sha256": sha256_file(model), "cert_acc": cert_acc, "n": n}))
    return path


def _scatter_points(monkeypatch, frames, tmp_path):
    """Draw Fig. 5 from ``frames``; return {(panel title, filled): [(x, y), ...]} and the note."""
    seen = {}

    def capture(fig, out_stem, note=None):
        seen["fig"], seen["note"] = fig, note
        return []

    monkeypatch.setattr(style, "save", capture)
    tightness_figure(frames, tmp_path / "fig")
    points = {}
    for ax in seen["fig"].axes:
        for coll in ax.collections:
            filled = coll.get_facecolors().shape[0] > 0 and coll.get_facecolors()[0][3] > 0
            points.setdefault((ax.get_title(), bool(filled)), []).extend(map(tuple, coll.get_offsets()))
    return points, seen["note"], [ax.get_ylabel() for ax in seen["fig"].axes]


def test_tightness_figure_plots_the_cascades_certified_accuracy(random_model, tmp_path, monkeypatch):
    table = _tightness_table(random_model, tmp_path)
    metrics = _write_metrics(tmp_path / "metrics.json", random_model, 0.625)
    df, prov = read_table(table)
    (frame,) = with_certification([(df, prov)], [metrics])
    assert set(frame["cert_acc"]) == {62.5} and set(frame["cert_n"]) == {6}
    points, note, ylabels = _scatter_points(monkeypatch, [frame], tmp_path)
    # at the training ε (0.1): the cascade's 62.5 %, filled; at 0.3: IBP-certified on the samples, hollow
    assert [y for _, y in points[("mnist_mini, ε = 0.1", True)]] == [62.5]
    ibp = 100.0 * df[df["eval_eps_str"] == "0.3"]["ibp_certified"].mean()
    assert [y for _, y in points[("mnist_mini, ε = 0.3", False)]] == [pytest.approx(ibp)]
    assert ("mnist_mini, ε = 0.1", False) not in points
    assert "certification cascade" in note and "n = 6 certified test samples" in note and "hollow: IBP" in note
    assert note.startswith("n = 6 test samples per model")
    assert set(ylabels) == {"certified accuracy [%]"}


def test_tightness_figure_without_certification_says_ibp(random_model, tmp_path, monkeypatch):
    df, _ = read_table(_tightness_table(random_model, tmp_path))
    points, note, ylabels = _scatter_points(monkeypatch, [df], tmp_path)
    assert all(not filled for _, filled in points)
    assert set(ylabels) == {"IBP-certified accuracy [%]"} and "y: IBP-certified" in note


def test_figure_cli_joins_metrics_by_the_models_sha256(random_model, tmp_path, capsys):
    table = _tightness_table(random_model, tmp_path)
    metrics = _write_metrics(tmp_path / "metrics.json", random_model, 0.5)
    stem = tmp_path / "fig5"
    assert main(["figure", "tightness", str(table), "--metrics", str(metrics), "--out", str(stem)]) == 0
    assert "certification cascade" in _png_note(stem.with_suffix(".png"))
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"model_sha256": "0" * 64, "cert_acc": 0.5, "n": 6}))
    capsys.readouterr()
    assert main(["figure", "tightness", str(table), "--metrics", str(other), "--out", str(stem)]) == 2
    err = capsys.readouterr().err.strip()
    assert "no table was computed on" in err and "\n" not in err
    assert main(["figure", "utilization", str(table), "--metrics", str(metrics), "--out", str(stem)]) == 2
    assert "does not use --metrics" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(CTBenchError, match="cannot read the certified accuracy"):
        with_certification([read_table(table)], [bad])


def test_noise_is_the_same_on_every_batch_composition():
    from ctbench.analysis.relu import per_sample_noise, stable_seed

    seeds = [stable_seed(0, 0.3, i) for i in range(4)]
    all4 = per_sample_noise(seeds, 5, (1, 2, 2))
    assert all4.shape == (5, 4, 1, 2, 2)
    np.testing.assert_array_equal(per_sample_noise(seeds[2:], 5, (1, 2, 2)), all4[:, 2:])
    assert stable_seed(0, 0.3, 1) == stable_seed(0, 3 / 10, 1) != stable_seed(0, 0.1, 1)
    assert 0 <= stable_seed(0, 0.3, 1) < 2**63
