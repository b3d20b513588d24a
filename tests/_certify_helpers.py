"""Shared fixtures for the certification tests: a small CNN IBP-trained by ctbench on mnist_mini."""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import Subset

from ctbench.bounds import (
    clean_forward_and_freeze_bn,
    ibp_bounds,
    margin_spec,
    robust_ce_from_margin_bounds,
    unfreeze_bn,
)
from ctbench.data import load_dataset, make_loader
from ctbench.errors import CTBenchError
from ctbench.modelfile import save_model
from ctbench.models import create_model

EPS = 0.1


def train_ibp(
    model,
    dataset,
    eps: float,
    epochs: int = 2,
    ramp_epochs: int = 1,
    batch_size: int = 128,
    lr: float = 1e-3,
    robust_weight: float = 0.5,
    seed: int = 0,
) -> None:
    """Plain IBP certified training (Gowal et al. 2018) with ctbench's bound engine and CTBench's BN
    semantics (clean-batch statistics set once per step), linear ε ramp."""
    loader = make_loader(dataset, batch_size, shuffle=True, seed=seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    ramp, step = ramp_epochs * len(loader), 0
    K = int(model[-1].out_features)
    for _ in range(epochs):
        model.train()
        for x, y in loader:
            e = eps if ramp == 0 else eps * min(1.0, step / ramp)
            logits = clean_forward_and_freeze_bn(model, x)
            lb, _ = ibp_bounds(model, (x - e).clamp(0, 1), (x + e).clamp(0, 1), margin_spec(y, K))
            loss = (1 - robust_weight) * F.cross_entropy(
                logits, y
            ) + robust_weight * robust_ce_from_margin_bounds(lb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            opt.step()
            unfreeze_bn(model)
            step += 1
    model.eval()


def trained_model_path(tmp_path_factory) -> Path:
    """Train once per session (cached under the session's base temp dir): cnn_small, IBP, ε = 0.1."""
    path = tmp_path_factory.getbasetemp() / "certify_model" / "model.pt"
    if path.exists():
        return path
    torch.manual_seed(0)
    train = Subset(load_dataset("mnist_mini", "train"), range(2000))
    model = create_model("cnn_small", "mnist_mini", init="ibp", seed=0)
    train_ibp(model, train, EPS)
    save_model(
        path,
        model,
        model_name="cnn_small",
        dataset="mnist_mini",
        config={"method": "ibp", "eps": EPS, "seed": 0},
    )
    return path


def tiny_relu_net(seed: int, n_in: int = 4, hidden=(10, 10), n_out: int = 3) -> torch.nn.Sequential:
    """A random float64 MLP (Flatten, Linear, ReLU, ..., Linear) with N(0, 1) weights."""
    g = torch.Generator().manual_seed(seed)
    layers, d = [torch.nn.Flatten()], n_in
    for h in hidden:
        layers += [torch.nn.Linear(d, h), torch.nn.ReLU()]
        d = h
    layers.append(torch.nn.Linear(d, n_out))
    net = torch.nn.Sequential(*layers).double().eval()
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
            p.requires_grad_(False)
    return net


def run_cli(argv: list[str]) -> int:
    """``ctbench`` main() when every subcommand imports; else the same error handling on our commands only."""
    try:
        from ctbench.cli import main

        return main(argv)
    except ModuleNotFoundError:
        pass
    from ctbench.logs import setup_logging

    parser = argparse.ArgumentParser(prog="ctbench")
    sub = parser.add_subparsers(dest="command")
    for name in ("certify", "attack", "summarize"):
        importlib.import_module(f"ctbench.commands.{name}").add_parser(sub)
    args = parser.parse_args(argv)
    setup_logging(0)
    try:
        return int(args.func(args) or 0)
    except CTBenchError as e:
        print(f"ctbench: error: {e}", file=sys.stderr)
        return 2
