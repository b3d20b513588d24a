"""ctbench's certification cascade against alpha-beta-CROWN on the same samples and per-sample budget (issue 25).

Certifies the first ``--n`` test samples of ``--model`` twice, each in one process, and compares the two:

1. **ctbench**: the cascade ``--stages`` (default: the paper's, IBP → CROWN-IBP → CROWN → α-CROWN → PGD →
   BaB), with ``--timeout`` seconds per sample for the complete stage;
2. **reference**: ``--reference`` alone on every correctly classified sample (default ``abCROWN``: the real
   alpha-beta-CROWN in its CSV batch mode, one process, ``--timeout`` seconds per sample as its
   ``bab.timeout``; ``CTBENCH_ABCROWN`` / ``CTBENCH_ABCROWN_PYTHON`` say where it is, see
   ``ctbench/certify/external.py``). Any other complete stage (``MILP``, ``BaB``) can stand in for it.

Both go through ``ctbench.certify.certify_file``, so both see the same samples, the same ε-ball (clipped to
the data domain) and the same clean-accuracy check. Prints certified / falsified / undecided counts, the wall
time of each run, the ratio ``ctbench wall / reference wall``, the samples decided by one and not the other,
and the **conflicts**: samples one certifies and the other falsifies (a soundness bug in one of them; the
script exits 1 if there is any). ``--out DIR`` keeps both ``certify.h5`` files and the JSON summary.
``--parallel`` runs the two at once, each pinned to its own CPU (``os.sched_setaffinity``, inherited by
alpha-beta-CROWN's process) with ``--threads`` threads: the same per-run wall times as one after the other
when nothing else runs on those CPUs.

The issue's acceptance, printed as ``acceptance``: ctbench decides at least as many samples as the reference
in at most half its wall time, with no conflict. Example (the MNIST CNN7 of benchmarks/README.md)::

    CTBENCH_ABCROWN=/path/to/alpha-beta-CROWN/complete_verifier/abcrown.py \\
    CTBENCH_ABCROWN_PYTHON=/path/to/its/venv/bin/python \\
    python benchmarks/cascade_vs_abcrown.py --model .runs/cnn7/ibp_0.1/model.pt --eps 0.1 --n 100 \\
        --timeout 60 --threads 1 --data-root data --out .runs/cnn7/compare
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ctbench.errors import CTBenchError

#: Verdict classes of a per-sample status (``ctbench.certify.status.Status``).
VERDICTS = ("certified", "falsified", "undecided", "incorrect")


def verdicts(status: np.ndarray) -> np.ndarray:
    """Per-sample ``certified`` / ``falsified`` / ``undecided`` / ``incorrect`` of a ``status`` vector (n,)."""
    from ctbench.certify.status import CERTIFIED_VALUES, Status

    out = np.full(status.shape, "undecided", dtype=object)
    out[np.isin(status, CERTIFIED_VALUES)] = "certified"
    out[status == int(Status.FALSIFIED)] = "falsified"
    out[status == int(Status.INCORRECT)] = "incorrect"
    return out


def run(model: Path, out: Path, stages: tuple[str, ...], args) -> dict:
    """One certification of the samples; its per-sample verdicts, per-stage times and wall time."""
    from ctbench.certify import certify_file
    from ctbench.certify.hdf5 import read_h5

    t0 = time.perf_counter()
    certify_file(model, out, eps=args.eps, n=args.n, start=args.start, batch_size=args.batch, stages=stages,
                 timeout=args.timeout, abcrown_config=args.abcrown_config, device=args.device,
                 data_root=args.data_root)
    wall = time.perf_counter() - t0
    data, attrs = read_h5(out)
    v = verdicts(data["status"])
    return {
        "stages": list(attrs["stages"]),
        "wall_s": round(wall, 2),
        "stage_time_s": {s: round(float(t), 2) for s, t in zip(attrs["stages"], data["stage_time_s"], strict=True)},
        "stage_samples": {s: int(k) for s, k in zip(attrs["stages"], data["stage_samples"], strict=True)},
        "counts": {k: int((v == k).sum()) for k in VERDICTS},
        "verdicts": v,
        "index": data["sample_index"],
    }


def _pinned_run(cpu: int, model: Path, out: Path, stages: tuple[str, ...], args) -> dict:
    """``run`` in a worker process pinned to CPU ``cpu`` (``--parallel``)."""
    import os

    from ctbench.threads import apply_threads

    os.sched_setaffinity(0, {cpu})
    apply_threads(args.threads)
    return run(model, out, stages, args)


def run_both(model: Path, out: Path, stages, reference, args) -> tuple[dict, dict]:
    """The ctbench run and the reference run: one after the other, or (``--parallel``) at once on two CPUs."""
    if not args.parallel:
        return run(model, out / "ctbench.h5", stages, args), run(model, out / "reference.h5", reference, args)
    import multiprocessing
    import os
    from concurrent.futures import ProcessPoolExecutor

    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        raise CTBenchError("--parallel needs at least 2 CPUs")
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        ours = pool.submit(_pinned_run, cpus[0], model, out / "ctbench.h5", stages, args)
        ref = pool.submit(_pinned_run, cpus[1], model, out / "reference.h5", reference, args)
        return ours.result(), ref.result()


def compare(ours: dict, ref: dict) -> dict:
    """Counts, decided-by-one-only samples and conflicts of two runs over the same samples."""
    a, b = ours["verdicts"], ref["verdicts"]
    if len(a) != len(b) or not np.array_equal(ours["index"], ref["index"]):
        raise CTBenchError("the two runs did not certify the same samples")
    idx = ours["index"]
    decided_a = np.isin(a, ("certified", "falsified"))
    decided_b = np.isin(b, ("certified", "falsified"))
    conflict = ((a == "certified") & (b == "falsified")) | ((a == "falsified") & (b == "certified"))
    return {
        "decided": {"ctbench": int(decided_a.sum()), "reference": int(decided_b.sum())},
        "only_ctbench_decided": [int(i) for i in idx[decided_a & ~decided_b]],
        "only_reference_decided": [int(i) for i in idx[decided_b & ~decided_a]],
        "conflicts": [int(i) for i in idx[conflict]],
        "incorrect_mismatch": [int(i) for i in idx[(a == "incorrect") != (b == "incorrect")]],
        "wall_ratio": round(ours["wall_s"] / ref["wall_s"], 3) if ref["wall_s"] > 0 else None,
    }


def report(res: dict) -> None:
    print(f"model {res['config']['model']} | eps {res['config']['eps']} | n {res['config']['n']} | "
          f"timeout {res['config']['timeout']} s/sample | {res['machine']}")
    print("| run | stages | certified | falsified | undecided | incorrect | wall (s) |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name in ("ctbench", "reference"):
        r = res[name]
        c = r["counts"]
        print(f"| {name} | {' → '.join(r['stages'])} | {c['certified']} | {c['falsified']} | {c['undecided']} | "
              f"{c['incorrect']} | {r['wall_s']} |")
    cmp = res["comparison"]
    print(f"decided: ctbench {cmp['decided']['ctbench']}, reference {cmp['decided']['reference']}; "
          f"wall ratio ctbench/reference {cmp['wall_ratio']}")
    print(f"decided only by ctbench: {cmp['only_ctbench_decided']}; only by the reference: "
          f"{cmp['only_reference_decided']}")
    print(f"conflicts (certified by one, falsified by the other): {cmp['conflicts'] or 'none'}")
    for name in ("ctbench", "reference"):
        print(f"{name} per stage (samples seen, s): " + ", ".join(
            f"{s} {res[name]['stage_samples'][s]} / {t}" for s, t in res[name]["stage_time_s"].items()))
    print(f"acceptance (decides >= reference, wall <= 1/2 of it, no conflict): {res['acceptance']}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True, help="a ctbench model file (model.pt)")
    p.add_argument("--eps", required=True, help="test ε, e.g. 0.1 or 2/255")
    p.add_argument("--n", type=int, default=100, help="samples (the first N of the test split from --start)")
    p.add_argument("--start", type=int, default=0)
    p.add_argument("--timeout", type=float, default=60.0, help="per-sample budget of the complete stages (s)")
    p.add_argument("--stages", default="paper", help="ctbench's cascade (a preset or a comma list)")
    p.add_argument("--reference", default="abCROWN", help="the complete stage run alone (default abCROWN)")
    p.add_argument("--abcrown-config", default="", help="alpha-beta-CROWN YAML (default: ctbench's built-in one)")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, help="CPU threads (default: ctbench's, the CPUs this process may use)")
    p.add_argument("--data-root", default=None, help="prepared data root (default $CTBENCH_DATA_ROOT or ./data)")
    p.add_argument("--parallel", action="store_true", help="run the two at once, each pinned to its own CPU")
    p.add_argument("--out", type=Path, help="keep both certify.h5 files and summary.json here")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    try:
        return _main(args)
    except CTBenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _main(args) -> int:
    import torch

    from ctbench.certify.stages import check_stages
    from ctbench.modelfile import hardware
    from ctbench.threads import apply_threads

    apply_threads(args.threads)
    stages, reference = check_stages(args.stages.split(",")), check_stages([args.reference])
    if not args.model.is_file():
        raise CTBenchError(f"model file not found: {args.model}")
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp)
        out.mkdir(parents=True, exist_ok=True)
        ours, ref = run_both(args.model, out, stages, reference, args)
        cmp = compare(ours, ref)
        res = {
            "machine": f"{hardware()}, {torch.get_num_threads()} threads, torch {torch.__version__}, {args.device}",
            "config": {k: str(v) for k, v in vars(args).items() if k != "json"},
            "ctbench": {k: v for k, v in ours.items() if k not in ("verdicts", "index")},
            "reference": {k: v for k, v in ref.items() if k not in ("verdicts", "index")},
            "comparison": cmp,
        }
        res["acceptance"] = bool(cmp["decided"]["ctbench"] >= cmp["decided"]["reference"]
                                 and cmp["wall_ratio"] is not None and cmp["wall_ratio"] <= 0.5
                                 and not cmp["conflicts"])
        if args.out:
            (out / "summary.json").write_text(json.dumps(res, indent=1) + "\n")
    if args.json:
        print(json.dumps(res, indent=1))
    else:
        report(res)
    return 1 if cmp["conflicts"] else 0


if __name__ == "__main__":
    sys.exit(main())
