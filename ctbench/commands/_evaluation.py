"""Arguments shared by the per-sample evaluation commands (``ctbench certify``, ``ctbench attack``)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_evaluation_args(p: argparse.ArgumentParser, out_default: str) -> None:
    """Model, ε, which samples, data root, device and output file."""
    p.add_argument("--model", type=Path, required=True, help="model file (model.pt)")
    p.add_argument("--eps", required=True, help="L∞ radius in [0,1] pixel space, e.g. 0.1 or 2/255")
    p.add_argument("--dataset", help="dataset (default: the model's)")
    p.add_argument("--split", default="test", help="split (default: %(default)s)")
    p.add_argument("--n", type=int, help="number of samples (default: all)")
    p.add_argument("--start", type=int, default=0, help="first sample index (default: 0)")
    p.add_argument("--seed", type=int, default=0, help="attack seed (default 0)")
    p.add_argument("--data-root", type=Path, help="prepared data root (default: $CTBENCH_DATA_ROOT or ./data)")
    p.add_argument("--out", type=Path, default=Path(out_default), help="output file (default: %(default)s)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
