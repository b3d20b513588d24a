"""Issue 29 (3) and issue 28: the cost table (Table 12) gives the training's real total time after a resumed,
retried or restored training run — not the last job's benchmark seconds — says where each number comes
from, and writes no absolute path of the machine."""

from __future__ import annotations

import math
import time
from pathlib import Path

import pandas as pd
import pytest
from test_analysis_grid import _tsv, cert_status, write_certify, write_metrics

from ctbench import cli
from ctbench.analysis import cost

# `ctbench train` as the workflow's train rule runs it (--no-select --on-config-change restart), tiny
TRAIN = ["train", "--dataset", "mnist_mini", "--eps", "0.1", "--method", "standard", "--model", "cnn_small",
         "--scale-schedule", "0.03", "--max-steps", "1", "--subset", "32", "--set", "batch_size=32",
         "--device", "cpu", "--no-select", "--on-config-change", "restart"]


def _job(out: Path, *extra: str) -> float:
    """One train job; returns its wall seconds (what Snakemake's benchmark file of that job would hold)."""
    t0 = time.monotonic()
    assert cli.main([*TRAIN, *extra, "--out", str(out)]) == 0
    return time.monotonic() - t0


def test_restored_checkpoint_cost_is_all_attempts_not_the_restore_job(tmp_path, monkeypatch):
    """The demo's story: the training is killed and resumed, then a config edit and its revert — the revert's
    job restores the finished checkpoint from train/stale/ and only re-writes the candidates."""
    monkeypatch.chdir(tmp_path)
    cell = Path("results/mnist_mini/0.1/cnn_small/standard/seed0")
    _job(cell, "--max-epochs", "1")  # killed after epoch 1 (a time limit)
    _job(cell)  # the retry resumes and finishes
    _job(cell, "--set", "l1=1e-5")  # the edit: another run, the finished checkpoint goes to train/stale/
    restore_s = _job(cell)  # the revert: restored, nothing left to train
    history = pd.read_csv(cell / "train/history.csv")
    attempts = pd.read_csv(cell / "train/attempts.csv")
    epochs = len(history)
    assert epochs >= 2 and list(attempts.attempt) == [1, 2, 3]
    assert list(zip(attempts.start_epoch, attempts.end_epoch, strict=True)) == [(0, 1), (1, epochs), (epochs, epochs)]
    assert attempts.wall_s.sum() >= history.time_s.sum()  # each attempt's epochs plus its set-up

    bench = _tsv(cell / "benchmarks/train.tsv", restore_s)  # Snakemake kept the last job's seconds only
    metrics = write_metrics(cell / "metrics.json", 0.9, 0.5, 0.6, dataset="mnist_mini", model="cnn_small",
                            method="standard")
    out = Path("results/analysis")
    assert cli.main(["analyze", "cost", "--benchmarks", str(bench), "--metrics", str(metrics),
                     "--out-dir", str(out)]) == 0
    row = pd.read_csv(out / "cost.csv").iloc[0]
    assert row.train_s == pytest.approx(attempts.wall_s.sum(), abs=0.01) and row.total_s == row.train_s
    assert row.train_s != pytest.approx(restore_s, abs=0.01)
    assert row.timing == "train: train/attempts.csv, 3 attempts"
    assert row.cell_dir == "results/mnist_mini/0.1/cnn_small/standard/seed0"
    md, tex = (out / "cost.md").read_text(), (out / "cost.tex").read_text()
    assert "train/attempts.csv, 3 attempts" in md and "last attempt" in md and "benchmark files" in tex
    for text in ((out / "cost.csv").read_text(), md, tex):
        assert str(tmp_path) not in text and str(tmp_path.resolve()) not in text


def _history(cell: Path, times) -> None:
    (cell / "train").mkdir(parents=True, exist_ok=True)
    rows = "".join(f"{k + 1},{'' if t is None else t}\n" for k, t in enumerate(times))
    (cell / "train/history.csv").write_text("epoch,time_s\n" + rows)


def _attempts(cell: Path, *rows) -> None:
    (cell / "train").mkdir(parents=True, exist_ok=True)
    lines = "".join(f"{k + 1},{a},{b},{w}\n" for k, (a, b, w) in enumerate(rows))
    (cell / "train/attempts.csv").write_text("attempt,start_epoch,end_epoch,wall_s\n" + lines)


def test_train_time_sources_in_order_and_unknown_stays_unknown(tmp_path):
    cells = {name: tmp_path / "results" / name / "seed0" for name in ("attempts", "gap", "history", "none", "bad")}
    for c in cells.values():
        _tsv(c / "benchmarks/train.tsv", 5.8)
    _history(cells["attempts"], [10.0, 12.0, 11.0])
    _attempts(cells["attempts"], (0, 2, 25.0), (2, 3, 14.0))
    _history(cells["gap"], [10.0, 12.0, 11.0])  # resumed from a checkpoint older than attempts.csv
    _attempts(cells["gap"], (2, 3, 14.0))
    _history(cells["history"], [10.0, 12.0, 11.0])
    _history(cells["bad"], [10.0, None, 11.0])
    _tsv(cells["bad"] / "benchmarks/attack.tsv", 3.0)
    tsvs = sorted(tmp_path.glob("results/*/seed0/benchmarks/*.tsv"))
    df = cost.cost_table(tsvs).set_index("cell_dir")
    assert df.loc["results/attempts/seed0", "train_s"] == 39.0
    assert df.loc["results/attempts/seed0", "timing"] == "train: train/attempts.csv, 2 attempts"
    for name in ("gap", "history"):
        assert df.loc[f"results/{name}/seed0", "train_s"] == 33.0
        assert df.loc[f"results/{name}/seed0", "timing"] == "train: train/history.csv, 3 epochs, set-up not counted"
    assert df.loc["results/none/seed0", "train_s"] == 5.8
    assert df.loc["results/none/seed0", "timing"] == "train: benchmark, last job only, earlier attempts not summed"
    bad = df.loc["results/bad/seed0"]
    assert math.isnan(bad.train_s) and math.isnan(bad.total_s) and bad.attack_s == 3.0  # no partial total
    assert bad.timing == ("train: unknown: train/history.csv lacks epoch times; "
                          "attack: benchmark, last attempt only, earlier attempts not summed")


def test_resumed_certify_job_is_recognised_from_certify_h5(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    tsvs = [_tsv(a / "benchmarks/certify.tsv", 4.0), _tsv(b / "benchmarks/certify.tsv", 40.0)]
    # 20 samples x 0.5 s of cascade time (kept across resumes) > the job's 4 s: it resumed
    certs = [write_certify(a / "certify.h5", cert_status("10" * 10), method="ibp"),
             write_certify(b / "certify.h5", cert_status("10" * 10), method="sabr")]
    df = cost.cost_table(tsvs, certs).set_index("method")
    assert df.loc["ibp", "certify_s"] == pytest.approx(10.0)
    assert df.loc["ibp", "timing"] == ("certify: certify.h5 per-sample times "
                                       "(resumed job: all attempts, set-up not counted)")
    assert (df.loc["sabr", "certify_s"], df.loc["sabr", "timing"]) == (
        40.0, "certify: benchmark, last attempt only, earlier attempts not summed")
    assert set(df.cell_dir) == {"a", "b"}  # outside the working directory and without results/: from tmp_path


def test_relative_dirs_never_absolute(tmp_path):
    inside = Path.cwd().resolve() / "results/mnist/0.1/cnn7/ibp/seed0"
    elsewhere = tmp_path.resolve() / "x/results/cifar10/2_255/cnn7/sabr/seed1"
    plain = tmp_path.resolve() / "runs/a"
    shown = cost.relative_dirs([inside, elsewhere, plain])
    assert shown[inside] == "results/mnist/0.1/cnn7/ibp/seed0"
    assert shown[elsewhere] == "results/cifar10/2_255/cnn7/sabr/seed1"
    assert shown[plain] == "a"  # the one such folder: by its name
