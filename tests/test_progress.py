"""Progress that reaches log files: without a terminal, train / certify / attack write periodic lines with
rate and ETA (ctbench.logs.LogProgress); a terminal gets tqdm."""

import os
import re
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


def test_certify_start_line_states_the_worst_case_and_long_stages_report_while_they_run(tmp_path_factory, tmp_path):
    """Issue 29 (1): `ctbench certify` with a complete stage was silent for minutes in a log file. The start line
    names the samples, stages and the worst case the settings allow (n × timeout); while one stage works on a
    sample (here branch and bound at ε = 0.3 on an ε = 0.1 model, 1 s each), heartbeat lines say which stage,
    which sample, how much is decided and the worst case left."""
    model = trained_model_path(tmp_path_factory)
    text = _run(["certify", "--model", str(model), "--eps", "0.3", "--n", "3", "--stages", "IBP,BaB", "--timeout",
                 "1", "--out", str(tmp_path / "c.h5")], tmp_path / "certify.log", CTBENCH_PROGRESS_INTERVAL="0.1")
    assert "certify c.h5: 3 samples, ε = 0.3, stages IBP → BaB; budget 1 s per sample: worst case 3 × 1 s = 3s" in text
    beats = [ln for ln in text.splitlines() if "certify c.h5: batch 1/1, stage BaB on sample " in ln]
    assert beats, text[-3000:]
    assert re.search(r"stage BaB on sample \d+ \(row \d/3, budget \d+s\) \(running \d+s\), decided \d/3 "
                     r"\(certified \d, falsified \d\), elapsed \d+s, worst case left \d+s", beats[0]), beats[0]


def test_heartbeat_reports_during_a_slow_batch_stage_and_stops_with_the_run(tmp_path_factory, tmp_path, monkeypatch,
                                                                               caplog):
    """A batch stage that takes longer than the interval is reported while it runs (stage, sample count, time);
    without complete stages no worst case is claimed; no line comes after the run has ended."""
    import dataclasses
    import time

    from ctbench.certify.cascade import CertifySettings, certify_model
    from ctbench.certify.stages import CERTIFY_STAGES
    from ctbench.data import load_dataset
    from ctbench.modelfile import load_model

    ibp = CERTIFY_STAGES.get("IBP")

    def slow(ctx, batch):
        time.sleep(0.6)
        return ibp.run(ctx, batch)

    monkeypatch.setitem(CERTIFY_STAGES._items, "IBP", dataclasses.replace(ibp, run=slow))
    monkeypatch.setenv("CTBENCH_PROGRESS_INTERVAL", "0.1")
    caplog.set_level("INFO")
    net, _ = load_model(trained_model_path(tmp_path_factory))
    ds = load_dataset("mnist_mini", "test", augment=False)
    certify_model(net, ds, range(6), CertifySettings(eps=0.1, eps_str="0.1", stages=("IBP",), batch_size=3),
                  tmp_path / "c.h5", num_classes=10)
    lines = [r.getMessage() for r in caplog.records]
    assert "certify c.h5: 6 samples, ε = 0.1, stages IBP; no complete stage (no per-sample budget)" in lines
    beats = [ln for ln in lines if ", stage IBP on " in ln]
    assert any(ln.startswith("certify c.h5: batch 1/2, stage IBP on ") for ln in beats), lines
    assert any(ln.startswith("certify c.h5: batch 2/2, stage IBP on ") for ln in beats), lines
    assert not any("worst case" in ln for ln in beats)
    n = len(caplog.records)
    time.sleep(0.4)
    assert len(caplog.records) == n  # the heartbeat ended with the run


def test_cli_log_lines_follow_sys_stderr(monkeypatch):
    """The CLI's handler writes to the stderr of the moment: a stream swapped in and closed later (pytest's
    capture between tests) gives no "Logging error" traceback on the next line, and lines reach the new one."""
    import io
    import logging

    from ctbench.logs import setup_logging

    first, second = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    try:
        setup_logging(0)
        logging.getLogger("ctbench.test").info("to the first")
        first.close()
        monkeypatch.setattr(sys, "stderr", second)
        logging.getLogger("ctbench.test").info("to the second")
        assert "to the second" in second.getvalue() and "Logging error" not in second.getvalue()
    finally:
        logging.basicConfig(force=True, handlers=[logging.NullHandler()])
