#!/usr/bin/env python
"""Build ``ctbench/data/mnist_mini.npz`` from the official MNIST files (see ctbench/data/MNIST_MINI.md).

Usage::

    python scripts/make_mnist_mini.py --source ../shared/data/MNIST/raw --out ctbench/data/mnist_mini.npz

The source goes through the same staging/verification code as ``ctbench data prepare mnist`` (MD5 of the
uncompressed IDX files), into a temporary root. The selection is deterministic (the first 600 train / 100
test images of each digit in file order) and so is the file (fixed zip member order and timestamps).
Prints the file's SHA-256 (to put into ``ctbench/data/mnist_mini.py`` and MNIST_MINI.md), the content hash
and the size.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
from pathlib import Path

from ctbench.data import prepare_dataset
from ctbench.data.mnist_mini import build_arrays, content_sha256, write_npz
from ctbench.errors import CTBenchError
from ctbench.io import atomic_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--source", required=True, type=Path, help="folder with the 4 MNIST IDX files (.gz ok)"
    )
    parser.add_argument("--out", required=True, type=Path, help="output .npz")
    args = parser.parse_args(argv)
    try:
        with tempfile.TemporaryDirectory(prefix="mnist-mini-") as tmp:
            raw = prepare_dataset("mnist", Path(tmp) / "root", source_dir=args.source)
            arrays = build_arrays(raw)
        with atomic_path(args.out) as out:
            write_npz(arrays, out)
            os.chmod(out, 0o644)  # mkstemp creates 0600
    except CTBenchError as e:
        print(f"make_mnist_mini: error: {e}", file=sys.stderr)
        return 2
    data = args.out.read_bytes()
    for split in ("train", "test"):
        counts = [int((arrays[f"{split}_labels"] == c).sum()) for c in range(10)]
        print(f"{split}: {len(arrays[f'{split}_labels'])} images, per class {counts}")
    print(f"file     {args.out}  {len(data)} bytes")
    print(f"sha256   {hashlib.sha256(data).hexdigest()}")
    print(f"content  {content_sha256(arrays)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
