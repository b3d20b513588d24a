"""Certification cascade benchmark: throughput per stage (samples/s) and how many samples each decides.

Trains (or loads, ``--model``) a small IBP-trained CNN on the embedded ``mnist_mini`` and runs
``ctbench.certify`` on the first ``--n`` test samples. Prints a Markdown table (or JSON with ``--json``)::

    python benchmarks/certify.py --n 200 --threads 1
    python benchmarks/certify.py --model results/demo/model.pt --eps 0.1 --json

Columns: ``processed`` = samples the stage saw (the undecided ones), ``decided`` = samples it decided
(split into certified / falsified / timeout), ``time_s`` = its total time, ``samples/s`` = processed/time.

Shared-node comparison (``--concurrent``): trains the model once, then runs the same certification
(each copy a separate process, as separate jobs would be) side by side in one invocation::

    python benchmarks/certify.py --concurrent --n 200 --timeout 30

1. *quiet*: one copy alone, with the threads ctbench picks by default (the CPUs it may run on);
2. *shared, budgeted*: two copies at once, each pinned to half of the CPUs (``taskset``, what a batch
   system's cpuset does), each using the threads its affinity gives it — ctbench's default;
3. *shared, oversubscribed*: two copies at once, unpinned, each with as many threads as there are CPUs —
   torch's default before ctbench set threads from the job's budget.

and prints per stage the time of each run and its ratio to the quiet run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
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
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--stages", default="IBP,CROWN-IBP,CROWN,alpha-CROWN,PGD,BaB")
    p.add_argument("--abcrown-config", default="", help="alpha-beta-CROWN YAML (stage abCROWN)")
    p.add_argument("--timeout", type=float, default=30.0, help="per-sample budget of the complete stages (s)")
    p.add_argument("--pgd-steps", type=int, default=200)
    p.add_argument("--pgd-restarts", type=int, default=5)
    p.add_argument("--pgd-loss", default="margin", choices=("margin", "ce"), help="the falsifier's loss")
    p.add_argument("--pgd-targets", type=int, default=3, help="runner-up classes the falsifier targets")
    p.add_argument("--pgd-check-every", type=int, default=10,
                   help="falsifier steps between checks that drop broken samples (0: at the end of a restart)")
    p.add_argument("--train-samples", type=int, default=6000)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--threads", type=int, help="CPU threads (default: ctbench's, the CPUs this process may use)")
    p.add_argument("--concurrent", action="store_true", help="quiet vs two concurrent copies (module docstring)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-bab-beta", action="store_true", help="BaB without beta-CROWN multipliers")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if args.concurrent:
        return compare_under_load(args, argv if argv is not None else sys.argv[1:])
    from ctbench.threads import apply_threads

    apply_threads(args.threads)

    from ctbench.certify import certify_file
    from ctbench.certify.hdf5 import read_h5
    from ctbench.certify.status import CERTIFIED_VALUES, Status
    from ctbench.modelfile import hardware

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
            pgd_loss=args.pgd_loss,
            pgd_targets=args.pgd_targets,
            pgd_check_every=args.pgd_check_every,
            bab_beta=not args.no_bab_beta,
            abcrown_config=args.abcrown_config,
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
            "cpu": hardware(),
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


def _copy(cmd: list[str], cpus: list[int] | None, threads: int | None) -> subprocess.Popen:
    cmd = [*cmd, "--threads", str(threads)] if threads else cmd
    if cpus is not None:
        cmd = ["taskset", "-c", ",".join(map(str, cpus)), *cmd]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _results(procs) -> list[dict]:
    out = []
    for proc in procs:
        stdout, stderr = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"a benchmark copy failed:\n{stderr[-3000:]}")
        out.append(json.loads(stdout))
    return out


def compare_under_load(args, argv: list[str]) -> int:
    """Quiet run vs two concurrent copies (budgeted and oversubscribed); prints per-stage ratios."""
    if not shutil.which("taskset"):
        raise SystemExit("--concurrent needs taskset (util-linux) to give each copy its own CPUs")
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        raise SystemExit("--concurrent needs at least 2 CPUs")
    halves = [cpus[: len(cpus) // 2], cpus[len(cpus) // 2 :]]
    skip = {"--concurrent", "--json"}
    rest, i = [], 0
    while i < len(argv):  # the user's options minus the mode, --model and --threads
        if argv[i] in ("--model", "--threads"):
            i += 2
            continue
        if argv[i] not in skip:
            rest.append(argv[i])
        i += 1
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or train_model(Path(tmp), args.train_samples, args.epochs, float(args.eps))
        cmd = [sys.executable, os.path.abspath(__file__), "--model", str(model), "--json", *rest]
        t0 = time.perf_counter()
        runs = {"quiet": _results([_copy(cmd, None, None)])}
        runs["shared, budgeted"] = _results([_copy(cmd, h, None) for h in halves])
        runs["shared, oversubscribed"] = _results([_copy(cmd, None, len(cpus)) for _ in halves])
        total = time.perf_counter() - t0
    quiet = {r["stage"]: r for r in runs["quiet"][0]["stages"]}
    print(f"machine: {runs['quiet'][0]['machine']} | n={args.n} eps={args.eps} timeout={args.timeout}s | "
          f"benchmark wall {total:.0f} s")
    print("threads per copy: " + ", ".join(f"{k}: {[r['machine']['threads'] for r in v]}" for k, v in runs.items()))
    head = "| stage | quiet (s) | samples/s | " + " | ".join(
        f"{k} (s, slowest copy) | × quiet" for k in runs if k != "quiet") + " |"
    print(head)
    print("|---" * (head.count("|") - 1) + "|")
    for stage, q in quiet.items():
        cells = [f"{q['time_s']:.2f}", f"{q['samples_per_s']}"]
        for k, rs in runs.items():
            if k == "quiet":
                continue
            t = max(next(r for r in x["stages"] if r["stage"] == stage)["time_s"] for x in rs)
            cells += [f"{t:.2f}", f"{t / q['time_s']:.2f}" if q["time_s"] > 0 else "–"]
        print(f"| {stage} | " + " | ".join(cells) + " |")
    walls = {k: max(x["wall_s"] for x in v) for k, v in runs.items()}
    print("| total (wall) | " + f"{walls['quiet']:.1f} | {args.n / walls['quiet']:.2f} | " + " | ".join(
        f"{walls[k]:.1f} | {walls[k] / walls['quiet']:.2f}" for k in runs if k != "quiet") + " |")
    decided = {k: [x["counts"]["decided_by"] for x in v] for k, v in runs.items()}
    print("decided by stage: " + json.dumps(decided))
    return 0


if __name__ == "__main__":
    sys.exit(main())
