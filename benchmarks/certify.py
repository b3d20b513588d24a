"""Certification cascade benchmark: throughput per stage (samples/s) and how many samples each decides.

Trains (or loads, ``--model``) a small IBP-trained CNN on the embedded ``mnist_mini`` and runs
``ctbench.certify`` on the first ``--n`` test samples. Prints a Markdown table (or JSON with ``--json``)::

    python benchmarks/certify.py --n 200 --threads 1
    python benchmarks/certify.py --model results/demo/model.pt --eps 0.1 --json

Columns: ``processed`` = samples the stage saw (the undecided ones), ``decided`` = samples it decided
(split into certified / falsified / timeout), ``time_s`` = its total time, ``samples/s`` = processed/time.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def train_model(out: Path, train_samples: int, epochs: int, eps: float) -> Path:
    """IBP-train cnn_small on mnist_mini with ctbench's trainer (``ctbench.training.train_ibp_model``)."""
    from ctbench.training import train_ibp_model

    return train_ibp_model(out, train_samples=train_samples, epochs=epochs, eps=eps)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, help="model file (default: train cnn_small with IBP on mnist_mini)")
    p.add_argument("--eps", default="0.1")
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--stages", default="IBP,CROWN-IBP,CROWN,alpha-CROWN,PGD,BaB")
    p.add_argument("--timeout", type=float, default=30.0, help="per-sample budget of the complete stages (s)")
    p.add_argument("--pgd-steps", type=int, default=200)
    p.add_argument("--pgd-restarts", type=int, default=5)
    p.add_argument("--train-samples", type=int, default=6000)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-bab-beta", action="store_true", help="BaB without beta-CROWN multipliers")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from ctbench.certify import certify_file
    from ctbench.certify.hdf5 import read_h5
    from ctbench.certify.status import CERTIFIED_VALUES, Status

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        model = args.model or train_model(tmp, args.train_samples, args.epochs, float(args.eps))
        train_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        counts = certify_file(
            model,
            tmp / "certify.h5",
            eps=args.eps,
            n=args.n,
            batch_size=args.batch,
            stages=tuple(args.stages.split(",")),
            timeout=args.timeout,
            pgd_steps=args.pgd_steps,
            pgd_restarts=args.pgd_restarts,
            bab_beta=not args.no_bab_beta,
            device=args.device,
        )
        wall = time.perf_counter() - t0
        data, attrs = read_h5(tmp / "certify.h5")
    rows = []
    for j, stage in enumerate(attrs["stages"]):
        t, k = float(data["stage_time_s"][j]), int(data["stage_samples"][j])
        mine = data["decided_by"] == j
        st = data["status"][mine]
        rows.append(
            {
                "stage": stage,
                "processed": k,
                "decided": int(mine.sum()),
                "certified": int(np.isin(st, CERTIFIED_VALUES).sum()),
                "falsified": int((st == int(Status.FALSIFIED)).sum()),
                "timeout": int((st == int(Status.TIMEOUT)).sum()),
                "time_s": round(t, 3),
                "samples_per_s": round(k / t, 2) if t > 0 else None,
            }
        )
    res = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "device": args.device,
        },
        "config": {k: v for k, v in vars(args).items() if k not in ("json",)}
        | {"model": str(args.model or "trained")},
        "train_s": round(train_s, 1),
        "wall_s": round(wall, 1),
        "counts": counts,
        "stages": rows,
    }
    if args.json:
        print(json.dumps(res, indent=1, default=str))
        return 0
    print(
        f"n={args.n} eps={args.eps} incorrect={counts['incorrect']} unknown={counts['unknown']} "
        f"timeout={counts['timeout']} wall={wall:.1f}s ({res['machine']['threads']} threads, {args.device})"
    )
    print("| stage | processed | decided | certified | falsified | timeout | time (s) | samples/s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['stage']} | {r['processed']} | {r['decided']} | {r['certified']} | {r['falsified']} | "
            f"{r['timeout']} | {r['time_s']} | {r['samples_per_s']} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
