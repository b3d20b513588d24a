"""Shared fixtures for the certification tests: a small CNN IBP-trained by ctbench on mnist_mini."""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

import torch

from ctbench.errors import CTBenchError
from ctbench.training import train_ibp_model

EPS = 0.1


def trained_model_path(tmp_path_factory) -> Path:
    """Train once per session (cached under the session's base temp dir): cnn_small, IBP, ε = 0.1."""
    path = tmp_path_factory.getbasetemp() / "certify_model" / "model.pt"
    if path.exists():
        return path
    return train_ibp_model(path.parent, train_samples=6000, epochs=3, eps=EPS)


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
