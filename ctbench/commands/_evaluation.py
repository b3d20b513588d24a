"""Arguments shared by the per-sample evaluation commands (``ctbench certify``, ``ctbench attack``)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

#: What argparse should take for a negative number (its default, ``-1`` and ``-0.5`` only, makes
#: ``--eps -2/255`` or ``--eps -1e-3`` "expected one argument"); Python 3.13 uses the same pattern.
_NEGATIVE_NUMBER = re.compile(r"^-\.?\d")


def accept_negative_numbers(p: argparse.ArgumentParser) -> None:
    """Let values such as ``-0.1``, ``-2/255`` or ``-1e-3`` reach the option they follow (so that ``--eps -2/255``
    gets the ε range check's message, not argparse's "expected one argument"). ``p`` has no option that looks
    like a negative number, so this takes nothing away."""
    p._negative_number_matcher = _NEGATIVE_NUMBER


#: the options of :func:`add_evaluation_args` that a stage settings file replaces (``--settings``)
EVALUATION_FLAGS = ("eps", "dataset", "split", "n", "start", "seed")


def add_evaluation_args(p: argparse.ArgumentParser, out_default: str) -> None:
    """Model, ε, which samples, data root, device and output file."""
    accept_negative_numbers(p)
    p.add_argument("--model", type=Path, required=True, help="model file (model.pt)")
    p.add_argument("--eps", help="L∞ radius in [0,1] pixel space, e.g. 0.1 or 2/255 (required unless --settings)")
    p.add_argument("--dataset", help="dataset (default: the model's)")
    p.add_argument("--split", default="test", help="split (default: %(default)s)")
    p.add_argument("--n", type=int, help="number of samples (default: all)")
    p.add_argument("--start", type=int, default=0, help="first sample index (default: 0)")
    p.add_argument("--seed", type=int, default=0, help="attack seed (default 0)")
    p.add_argument("--data-root", type=Path, help="prepared data root (default: $CTBENCH_DATA_ROOT or ./data)")
    p.add_argument("--out", type=Path, default=Path(out_default), help="output file (default: %(default)s)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
