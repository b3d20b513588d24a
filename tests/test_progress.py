"""Progress that reaches log files: without a terminal, train / certify / attack write periodic lines with
rate and ETA (ctbench.logs.LogProgress); a terminal gets tqdm."""

import os
import subprocess
import sys

from _certify_helpers import trained_model_path

from ctbench.logs import LogProgress, progress


def test_log_progress_lines_have_rate_and_eta(caplog, monkeypatch):
    monkeypatch.setenv("CTBENCH_PROGRESS_INTERVAL", "0")
    caplog.set_level("INFO")
    bar = progress(total=4, desc="work", unit="sample")  # pytest's stderr is not a terminal
    assert isinstance(bar, LogProgress)
    clock = iter([12.0, 14.0, 14.0])
    bar._clock = lambda: next(clock)
    bar._t0 = bar._last = 10.0
    bar.update(1)
    bar.set_postfix(certified=1, refresh=False)
    bar.update(1)
    bar.close()
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "work: 1/4 sample (25%), 0.5 sample/s, elapsed 2s, ETA 6s"
    assert lines[1] == "work: 2/4 sample (50%), 0.5 sample/s, elapsed 4s, ETA 4s, certified=1"
    assert lines[-1].startswith("work: 2/4 sample (50%)")  # the closing line
    assert list(progress(range(3), disable=True)) == [0, 1, 2]


def _run(args, log, **env):
    with open(log, "w") as err:  # a file, not a terminal: what a SLURM job or a Snakemake log gets
        r = subprocess.run([sys.executable, "-m", "ctbench", *args], stdout=subprocess.DEVNULL, stderr=err,
                           env={**os.environ, "CTBENCH_PROGRESS_INTERVAL": "0", **env}, timeout=600)
    text = log.read_text()
    assert r.returncode == 0, text[-2000:]
    return text


def test_train_certify_attack_write_progress_lines_to_a_log_file(tmp_path_factory, tmp_path):
    text = _run(["train", "--dataset", "mnist_mini", "--eps", "0.1", "--method", "ibp", "--model", "cnn_small",
                 "--scale-schedule", "0.01", "--max-steps", "3", "--subset", "64", "--set", "batch_size=16",
                 "--out", str(tmp_path / "cell")], tmp_path / "train.log")
    assert "epoch 1/1: 2/3 step" in text and "step/s" in text and "ETA" in text
    assert " s/epoch, " in text and "steps/s, ETA 0s" in text  # the epoch line
    model = trained_model_path(tmp_path_factory)
    text = _run(["certify", "--model", str(model), "--eps", "0.1", "--n", "8", "--batch", "4", "--stages", "IBP,PGD",
                 "--pgd-steps", "2", "--out", str(tmp_path / "c.h5")], tmp_path / "certify.log")
    assert "certify c.h5: 4/8 sample (50%)" in text and "sample/s" in text and "ETA" in text
    text = _run(["attack", "--model", str(model), "--eps", "0.1", "--n", "8", "--batch", "4", "--steps", "2",
                 "--out", str(tmp_path / "a.h5")], tmp_path / "attack.log")
    assert "attack a.h5: 4/8 sample (50%)" in text and "ETA" in text
