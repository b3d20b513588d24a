"""Training: methods' steps, gradient accumulation with full-batch BN statistics, BN semantics,
population statistics, SWA / selection, kill-and-resume determinism and the ``ctbench train`` CLI."""

from __future__ import annotations

import copy
import importlib.util
import json
import math

import pytest
import torch
import yaml

from ctbench import cli
from ctbench.config import config_hash, resolve
from ctbench.data import load_dataset, make_loader
from ctbench.methods import create_method, get_method, method_names
from ctbench.models import create_model
from ctbench.swa import population_bn_stats
from ctbench.training import HISTORY_COLUMNS, TrainOptions, train

FAST = {"attack_steps": 2, "attack_restarts": 1}


@pytest.fixture(scope="module")
def batch():
    ds = load_dataset("mnist_mini", "train")
    x, y = next(iter(make_loader(ds, 48, shuffle=True, seed=0)))
    return x, y


def _setup(method, overrides=None, dtype=torch.float32, seed=0):
    cfg = resolve(("mnist_mini", "0.1"), method, {**FAST, **(overrides or {})}, seed=seed)
    model = create_model("cnn_small", "mnist_mini", init=cfg["init"], seed=seed).to(dtype)
    return cfg, model, create_method(cfg)


@pytest.mark.parametrize("name", ["standard", "pgd", "edac"])
def test_method_steps_finite_and_robust_loss_decreases(batch, name):
    x, y = batch
    cfg, model, method = _setup(name)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    torch.manual_seed(0)
    eps = 0.1 if name != "standard" else 0.0
    losses = []
    for _ in range(8):
        opt.zero_grad(set_to_none=True)
        out = method.step(model, x, y, eps, optimizer=opt)
        assert all(math.isfinite(v) for v in (out.loss, out.nat_loss, out.rob_loss, out.reg_loss))
        assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())
        torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
        opt.step()
        losses.append(out.rob_loss)
    assert losses[-1] < losses[0], losses


def _grads(model):
    return [
        p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p) for p in model.parameters()
    ]


@pytest.mark.parametrize("name", method_names())
@pytest.mark.parametrize("chunk", [5])
def test_grad_accumulation_full_batch_stats_equals_full_batch(batch, name, chunk, monkeypatch):
    # A non-separable loss (TAPS's batch-mean product) is computed on the full batch under accumulation
    # (methods/base.py), so the same equality holds for it.
    # Random attack starts are drawn per chunk, so the global RNG stream would be consumed in a different
    # order; start every attack at the box centre instead (the method's computation is otherwise unchanged).
    monkeypatch.setattr(torch, "rand_like", lambda t, **kw: torch.full_like(t, 0.5, **kw))
    x, y = batch
    x, y = x[:12].double(), y[:12]
    cfg, model, method = _setup(name, {"fast_reg": 0.0}, dtype=torch.float64)
    twin = copy.deepcopy(model)
    results = []
    for m, accu in ((model, None), (twin, chunk)):
        opt = torch.optim.Adam(m.parameters(), lr=1e-3)
        torch.manual_seed(123)
        opt.zero_grad(set_to_none=True)
        out = method.step(m, x, y, 0.1, optimizer=opt, accumulation_batch=accu)
        results.append((out, _grads(m)))
    (full, g_full), (acc, g_acc) = results
    assert acc.rob_loss == pytest.approx(full.rob_loss, rel=1e-9) and acc.rob_correct == full.rob_correct
    for a, b in zip(g_full, g_acc, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    for a, b in zip(model.buffers(), twin.buffers(), strict=True):  # one clean-batch BN update each
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("name", method_names())
def test_running_stats_updated_once_by_clean_batch_only(batch, name):
    x, y = batch
    cfg, model, method = _setup(name, {"fast_reg": 0.5})
    before = {k: v.clone() for k, v in model.named_buffers()}
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    torch.manual_seed(0)
    opt.zero_grad(set_to_none=True)
    method.step(
        model, x, y, 0.1, optimizer=opt, warmup=True
    )  # no opt.step(): params = those of the clean pass
    reference = copy.deepcopy(model)
    with torch.no_grad():
        for k, v in reference.named_buffers():
            v.copy_(before[k])
        reference.train()
        reference(x)  # exactly one ordinary clean-batch BN update
    for (k, a), (_, b) in zip(model.named_buffers(), reference.named_buffers(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7, msg=k)


def test_eps_zero_is_standard_training(batch, monkeypatch):
    x, y = batch
    cfg, model, method = _setup("pgd")
    import ctbench.methods.base as base

    monkeypatch.setattr(
        base, "pgd_attack", lambda *a, **k: (_ for _ in ()).throw(AssertionError("attack at eps 0"))
    )
    out = method.step(model, x, y, 0.0)
    assert out.rob_loss == out.nat_loss and out.rob_correct == out.nat_correct


def test_warmup_regularizer_only_for_certified_methods_during_ramp(batch):
    x, y = batch
    cfg, model, _ = _setup("pgd", {"l1": 0.0, "fast_reg": 0.5})
    pgd_cls = get_method("pgd")

    class CertifiedPGD(pgd_cls):  # not registered: a certified method without stored bounds
        certified = True

    torch.manual_seed(0)
    assert pgd_cls(cfg).step(model, x, y, 0.1, warmup=True).reg_loss == 0.0
    on = CertifiedPGD(cfg).step(model, x, y, 0.1, warmup=True)
    off = CertifiedPGD(cfg).step(model, x, y, 0.1, warmup=False)
    assert on.reg_loss > 0.0 and off.reg_loss == 0.0
    at_zero = CertifiedPGD(cfg).step(model, x, y, 0.0, warmup=True)  # bounds at min_eps_reg
    assert at_zero.reg_loss > 0.0 and math.isfinite(at_zero.reg_loss)


def test_population_statistics_are_cumulative_batch_means():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    batches = [(torch.randn(10, 3) * (i + 1), torch.zeros(10)) for i in range(4)]
    population_bn_stats(model, batches)
    with torch.no_grad():
        means = torch.stack([model[0](b).mean(0) for b, _ in batches]).mean(0)
        varis = torch.stack([model[0](b).var(0, unbiased=True) for b, _ in batches]).mean(0)
    torch.testing.assert_close(model[1].running_mean, means)
    torch.testing.assert_close(model[1].running_var, varis)
    assert model[1].momentum == 0.1 and model.training


# ---------------------------------------------------------------------------------------------------
# the loop: checkpoints, resume, outputs
# ---------------------------------------------------------------------------------------------------

TINY = {
    "epochs": 3,
    "eps_end_epoch": 1,
    "lr_milestones": [2],
    "batch_size": 32,
    "test_batch_size": 64,
    "attack_steps": 1,
    "attack_restarts": 1,
    "model": "cnn_small",
}
TINY_OPTS = dict(max_steps=2, subset=64, show_progress=False)


def _cfg(method, **extra):
    return resolve(("mnist_mini", "0.1"), method, {**TINY, **extra}, seed=0)


def _model_state(path):
    return torch.load(path, weights_only=True)["state_dict"]


@pytest.mark.parametrize(
    "method, extra", [("pgd", {}), ("pgd", {"swa_start": 1, "swa_freq": 1, "model_selection": "last"})]
)
def test_kill_and_resume_is_bitwise_identical(tmp_path, method, extra):
    cfg = _cfg(method, **extra)
    full = train(cfg, tmp_path / "full", TrainOptions(**TINY_OPTS))
    assert full["status"] == "done"
    part = train(cfg, tmp_path / "resumed", TrainOptions(max_epochs=1, **TINY_OPTS))
    assert part["status"] == "interrupted" and not (tmp_path / "resumed" / "model.pt").exists()
    resumed = train(cfg, tmp_path / "resumed", TrainOptions(**TINY_OPTS))
    assert resumed["status"] == "done"
    a, b = _model_state(tmp_path / "full" / "model.pt"), _model_state(tmp_path / "resumed" / "model.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ca = torch.load(tmp_path / "full" / "train" / "checkpoint.pt", weights_only=True)
    cb = torch.load(tmp_path / "resumed" / "train" / "checkpoint.pt", weights_only=True)
    assert all(torch.equal(ca["model"][k], cb["model"][k]) for k in ca["model"])
    strip = [{k: v for k, v in r.items() if k != "time_s"} for r in ca["history"]]
    assert strip == [{k: v for k, v in r.items() if k != "time_s"} for r in cb["history"]]


def test_outputs_and_model_file(tmp_path):
    cfg = _cfg("standard")
    summary = train(cfg, tmp_path, TrainOptions(**TINY_OPTS))
    payload = torch.load(tmp_path / "model.pt", weights_only=True)
    assert set(payload) >= {"state_dict", "config", "provenance"}
    provenance = json.loads(payload["provenance"])
    assert provenance["method"] == "standard" and payload["dataset"] == "mnist_mini"
    assert provenance["selection"] == "robust_accu" and provenance["config_hash"] == config_hash(cfg)
    model = create_model("cnn_small", "mnist_mini")
    model.load_state_dict(payload["state_dict"])
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["method"] == "standard"
    lines = (tmp_path / "train" / "history.csv").read_text().splitlines()
    assert lines[0].split(",") == list(HISTORY_COLUMNS) and len(lines) == 1 + 3
    assert summary["selection"] == "robust_accu"
    # eligible: epochs whose last step is at the final eps (ramp ends after epoch 1 here) -> 2, 3
    hist = summary["history"]
    best = max((r for r in hist if r["epoch"] >= 2), key=lambda r: r["val_rob_acc"])
    assert summary["selected_epoch"] == best["epoch"]
    # a finished run re-run is a no-op resume; a different config refuses the checkpoint
    assert train(cfg, tmp_path, TrainOptions(**TINY_OPTS))["status"] == "done"
    from ctbench.errors import CTBenchError

    with pytest.raises(CTBenchError, match="different configuration"):
        train(_cfg("standard", l1=1e-3), tmp_path, TrainOptions(**TINY_OPTS))
    # ... unless asked to train afresh (the DAG after a hyperparameter edit)
    changed = train(_cfg("standard", l1=1e-3), tmp_path, TrainOptions(on_config_change="restart", **TINY_OPTS))
    assert changed["status"] == "done" and len(changed["history"]) == 3
    assert json.loads(torch.load(tmp_path / "model.pt", weights_only=True)["config"])["l1"] == 1e-3


def test_restart_keeps_other_checkpoints_aside_and_brings_back_its_own(tmp_path):
    """on_config_change="restart": another configuration's checkpoint moves to train/stale/ (never deleted);
    returning to a configuration whose checkpoint is there resumes it instead of training again."""
    a, b = _cfg("standard"), _cfg("standard", l1=1e-3)
    opts = TrainOptions(on_config_change="restart", **TINY_OPTS)
    first = train(a, tmp_path, TrainOptions(on_config_change="restart", max_epochs=2, **TINY_OPTS))
    assert first["status"] == "interrupted"
    fp_a, fp_b = opts.fingerprint(a), opts.fingerprint(b)
    train(b, tmp_path, opts)
    stale = tmp_path / "train" / "stale" / f"checkpoint-{fp_a[:12]}.pt"
    assert stale.is_file() and torch.load(stale, weights_only=True)["epoch"] == 2
    resumed = train(a, tmp_path, opts)  # a again: its own 2-epoch checkpoint comes back and training resumes
    assert resumed["status"] == "done" and [r["epoch"] for r in resumed["history"]] == [1, 2, 3]
    assert (tmp_path / "train" / "stale" / f"checkpoint-{fp_b[:12]}.pt").is_file() and not stale.exists()
    assert json.loads(torch.load(tmp_path / "model.pt", weights_only=True)["provenance"])["fingerprints"] == {
        "train": fp_a}
    # the run-length limits are part of a run: another subset is another run
    assert TrainOptions(max_steps=2, subset=32).fingerprint(a) != fp_a


def test_cli_no_select_and_cell_file(tmp_path, capsys):
    """`ctbench train --no-select` stops at candidates.pt (the DAG's select rule writes model.pt)."""
    rc = cli.main(["train", "--dataset", "mnist_mini", "--eps", "0.1", "--method", "standard", "--model",
                   "cnn_small", "--scale-schedule", "0.01", "--max-steps", "1", "--subset", "32", "--no-select",
                   "--out", str(tmp_path)])
    assert rc == 0 and (tmp_path / "train" / "candidates.pt").is_file() and not (tmp_path / "model.pt").exists()
    assert "select with `ctbench select`" in capsys.readouterr().out


def test_select_rules_and_no_select(tmp_path):
    """train(select=False) stops at candidates.pt; select_model applies the config's rule."""
    from ctbench.checkpoint import load_candidates
    from ctbench.modelfile import load_model
    from ctbench.select import choose, select_model

    cfg = _cfg("pgd", swa_start=1, swa_freq=1, model_selection="last")
    summary = train(cfg, tmp_path, TrainOptions(select=False, **TINY_OPTS))
    assert summary["status"] == "done" and not (tmp_path / "model.pt").exists()
    cands = load_candidates(tmp_path / "train" / "candidates.pt")
    assert cands["swa"]["n_averaged"] > 0
    assert choose(cands, cfg)[0].startswith("swa")
    assert choose(cands, {**cfg, "swa_start": None})[0] == "last"
    result = select_model(tmp_path / "train" / "candidates.pt", tmp_path / "model.pt")
    model, meta = load_model(tmp_path / "model.pt")
    swa_state = cands["swa"]["state_dict"]
    assert all(torch.equal(model.state_dict()[k], swa_state[k]) for k in swa_state)
    assert meta["provenance"]["selection"] == result["selection"]


# ---------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------


@pytest.fixture
def ctbench_main(monkeypatch):
    # Only the subcommands present in this checkout (others are developed in parallel).
    present = tuple(c for c in cli.COMMANDS if importlib.util.find_spec(f"ctbench.commands.{c}"))
    monkeypatch.setattr(cli, "COMMANDS", present)
    return cli.main


BASE_ARGS = [
    "train",
    "--dataset",
    "mnist_mini",
    "--eps",
    "0.1",
    "--method",
    "pgd",
    "--seed",
    "0",
    "--model",
    "cnn_small",
    "--scale-schedule",  # one epoch: the ramp and milestones shrink with it
    "0.01",
    "--max-steps",
    "2",
    "--subset",
    "64",
    "--set",
    "attack_steps=1",
    "--set",
    "attack_restarts=1",
    "--set",
    "batch_size=32",
]


def test_cli_train_end_to_end(tmp_path, ctbench_main, capsys):
    out = tmp_path / "cell"
    assert ctbench_main([*BASE_ARGS, "--out", str(out), "--device", "cpu"]) == 0
    for f in ("train/checkpoint.pt", "train/history.csv", "model.pt", "config.yaml"):
        assert (out / f).is_file(), f
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["epochs"] == 1 and cfg["attack_steps"] == 1 and cfg["setting"] == "mnist_0.1"
    assert "trained pgd" in capsys.readouterr().out


def test_device_is_resolved_by_core(tmp_path, ctbench_main, capsys, monkeypatch):
    """Training uses ``ctbench.core.resolve_device`` (one resolution for every stage): ``auto`` is the CPU
    without CUDA; ``--device cuda`` without CUDA and an unknown device are one line, before anything runs."""
    from ctbench import core, training
    from ctbench.errors import CTBenchError

    assert training.resolve_device is core.resolve_device
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert core.resolve_device("auto") == torch.device("cpu")
    with pytest.raises(CTBenchError, match="unknown device 'tpu'"):
        core.resolve_device("tpu")
    with pytest.raises(CTBenchError, match="CUDA is not available"):
        training.train({}, tmp_path / "direct", training.TrainOptions(device="cuda"))
    assert ctbench_main([*BASE_ARGS, "--out", str(tmp_path / "cell"), "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "ctbench: error: device cuda requested but CUDA is not available (use --device cpu or auto)"


@pytest.mark.parametrize(
    "change, message",
    [
        ({"--method": "nope"}, "unknown method"),
        ({"--dataset": "imagenet"}, "unknown dataset"),
        ({"--eps": "-0.1"}, "eps must lie in [0, 1] (pixel space), got -0.1"),
        ({"--eps": "0.25"}, "no hyperparameter setting"),
        ({"--set": "l1"}, "malformed --set"),
        ({"--set": "bogus=1"}, "unknown hyperparameter"),
    ],
)
def test_cli_bad_input(tmp_path, ctbench_main, capsys, change, message):
    args = list(BASE_ARGS)
    for flag, value in change.items():
        args[args.index(flag) + 1] = value
    out = tmp_path / "cell"
    assert ctbench_main([*args, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("ctbench: error:") and message in err and "\n" not in err
    assert not out.exists()


def test_cli_unwritable_out(tmp_path, ctbench_main, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert ctbench_main([*BASE_ARGS, "--out", str(blocker / "cell")]) == 2
    err = capsys.readouterr().err
    assert f"cannot write {blocker / 'cell'}: {blocker} is a file, not a directory" in err and err.count("\n") == 1
