"""Audit a finished cell's certificates with independent verifiers (issue 26).

A cell's ``certify.h5`` says, per test sample, which stage of ctbench's cascade certified or falsified it. This
script re-decides the same samples of the same ``model.pt`` with implementations that share no bound code with
ctbench, so a wrong "certified" shows up as a conflict:

1. **auto_LiRPA IBP and CROWN** (Gowal et al. 2018, Zhang et al. 2018; ``ctbench.bounds.lirpa``, the
   reference backend) on every correctly classified sample: a sample either certifies is confirmed; a
   sample ctbench *falsified* (a checked counterexample) that either certifies is a conflict — one of the two
   is unsound.
2. **auto_LiRPA alpha-CROWN** (Xu et al. 2021; intermediate slopes optimised too, so at least as tight as
   ctbench's alpha-CROWN, whose intermediate bounds are CROWN's) on the certified samples CROWN left open.
3. ``--reference`` (``abCROWN``: alpha-beta-CROWN; ``MILP``: exact on small networks), a complete verifier run
   through ctbench's external stage, on the certified samples still unconfirmed. A sample it falsifies is a
   conflict.

Prints, per cascade stage that certified samples, how many each check confirmed and how many stayed
unconfirmed (not an error: the reference may time out), and the conflicts — including a certificate on a
clean input the model misclassifies (clean predictions are recomputed); exits 1 if there is any conflict or
a clean verdict differs from the file's, 2 on bad input. Example (a cell of the reduced-scale run,
benchmarks/README.md)::

    CTBENCH_ABCROWN=/path/to/alpha-beta-CROWN/complete_verifier/abcrown.py \\
    CTBENCH_ABCROWN_PYTHON=/path/to/its/venv/bin/python \\
    python benchmarks/audit_cell.py results/mnist/0.1/cnn_small/pgd/seed0 --data-root data --reference abCROWN
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


def lirpa_margins(model, ds, indices, eps: float, num_classes: int, method: str, batch: int, iterations: int
                  ) -> np.ndarray:
    """auto_LiRPA's lower bound of the smallest margin ``f_y − f_j`` over the ε-ball of each sample: (n,)."""
    import torch

    from ctbench.bounds import lirpa
    from ctbench.bounds.spec import margin_spec
    from ctbench.certify.cascade import boxes

    out = np.empty(len(indices))
    for s in range(0, len(indices), batch):
        pairs = [ds[int(i)] for i in indices[s : s + batch]]
        x = torch.stack([p[0] for p in pairs])
        y = torch.tensor([int(p[1]) for p in pairs])
        lo, hi = boxes(x, eps)[2:4]  # the ε-ball ∩ [0, 1], rounded outward to float32 (as the cascade's)
        C = margin_spec(y, num_classes)
        with torch.no_grad() if method != "alpha-CROWN" else torch.enable_grad():
            lb, _ = lirpa.compute_bounds_lirpa(model, lo, hi, method, C, iterations=iterations, bound_upper=False)
        out[s : s + len(pairs)] = lb.detach().min(1).values.double().numpy()
    return out


def clean_correct(model, ds, indices, batch: int) -> np.ndarray:
    """Whether the model classifies each clean sample correctly: (n,) bool."""
    import torch

    out = np.empty(len(indices), dtype=bool)
    with torch.no_grad():
        for s in range(0, len(indices), batch):
            pairs = [ds[int(i)] for i in indices[s : s + batch]]
            pred = model(torch.stack([p[0] for p in pairs])).argmax(1)
            out[s : s + len(pairs)] = (pred == torch.tensor([int(p[1]) for p in pairs])).numpy()
    return out


def reference_status(model, ds, indices, eps: float, stage: str, timeout: float, num_classes: int) -> np.ndarray:
    """Per-sample ``Status`` value of the complete verifier ``stage`` alone on ``indices``."""
    from ctbench.certify.cascade import CertifySettings, certify_model
    from ctbench.certify.hdf5 import read_h5

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "reference.h5"
        settings = CertifySettings(eps=eps, eps_str=str(eps), stages=(stage,), timeout=timeout)
        certify_model(model, ds, indices, settings, out, num_classes=num_classes, resume=False)
        data, _ = read_h5(out)
    return data["status"]


def audit(cell: Path, data_root, reference: str | None, timeout: float, batch: int, iterations: int) -> dict:
    """The audit of ``cell`` (a folder with ``model.pt`` and ``certify.h5``) as a JSON-able dict."""
    from ctbench.bounds import lirpa
    from ctbench.certify.hdf5 import read_h5
    from ctbench.certify.run import load_for_certification
    from ctbench.certify.status import CERTIFIED_VALUES, Status
    from ctbench.io import sha256_file

    if batch < 1 or iterations < 0 or not timeout > 0:
        raise CTBenchError("--batch must be >= 1, --alpha-iterations >= 0 and --timeout > 0")
    model_path, cert_path = cell / "model.pt", cell / "certify.h5"
    for p in (model_path, cert_path):
        if not p.is_file():
            raise CTBenchError(f"{p} not found (a finished cell has model.pt and certify.h5)")
    if not lirpa.lirpa_available():
        raise CTBenchError(lirpa.lirpa_unavailable_reason() or "auto_LiRPA is not available")
    data, attrs = read_h5(cert_path)
    if attrs.get("model_sha256") and attrs["model_sha256"] != sha256_file(model_path):
        raise CTBenchError(f"{cert_path} was written for another model file than {model_path}")
    model, _, ds, spec = load_for_certification(model_path, attrs.get("dataset"), attrs.get("split", "test"),
                                                data_root)
    model.eval()
    t0 = time.perf_counter()
    eps, idx, status = float(attrs["eps_float"]), data["sample_index"], data["status"]
    certified = np.isin(status, CERTIFIED_VALUES)
    correct = clean_correct(model, ds, idx, batch)  # recomputed: the file's INCORRECT is not trusted either
    clean_mismatch = [int(i) for i in idx[correct != (status != int(Status.INCORRECT))]]

    ibp, crown = np.full(len(idx), np.nan), np.full(len(idx), np.nan)
    ibp[correct] = lirpa_margins(model, ds, idx[correct], eps, spec.num_classes, "IBP", batch, iterations)
    crown[correct] = lirpa_margins(model, ds, idx[correct], eps, spec.num_classes, "CROWN", batch, iterations)
    by = np.full(len(idx), "", dtype=object)
    by[certified & (crown > 0)] = "auto_LiRPA CROWN"
    by[certified & (ibp > 0)] = "auto_LiRPA IBP"
    sound_lb = np.fmax(ibp, crown)
    open_ = certified & (by == "")
    if open_.any():
        alpha = lirpa_margins(model, ds, idx[open_], eps, spec.num_classes, "alpha-CROWN", batch, iterations)
        by[np.flatnonzero(open_)[alpha > 0]] = "auto_LiRPA alpha-CROWN"
    # a certificate on a misclassified clean input, or a checked counterexample inside a ball auto_LiRPA certifies
    conflicts = [int(i) for i in idx[(certified & ~correct) | ((status == int(Status.FALSIFIED)) & (sound_lb > 0))]]
    open_ = certified & (by == "")
    if reference and open_.any():
        ref = reference_status(model, ds, idx[open_], eps, reference, timeout, spec.num_classes)
        by[np.flatnonzero(open_)[np.isin(ref, CERTIFIED_VALUES)]] = reference
        conflicts += [int(i) for i in idx[open_][np.isin(ref, (int(Status.FALSIFIED), int(Status.INCORRECT)))]]
    rows = {}
    for value in sorted(set(status[certified].tolist())):
        mine = status == value
        rows[Status(value).label] = {"certified": int(mine.sum())} | {
            check: int((mine & (by == check)).sum())
            for check in ("auto_LiRPA IBP", "auto_LiRPA CROWN", "auto_LiRPA alpha-CROWN", reference) if check}
        rows[Status(value).label]["unconfirmed"] = int((mine & (by == "")).sum())
    return {
        "cell": str(cell), "eps": attrs.get("eps"), "samples": len(idx), "certified": int(certified.sum()),
        "by_stage": rows,
        "confirmed_by": {int(i): str(c) for i, c in zip(idx[certified], by[certified], strict=True) if c},
        "unconfirmed": [int(i) for i in idx[certified & (by == "")]],
        "looser_than_auto_lirpa": int((~certified & correct & (status != int(Status.FALSIFIED))
                                       & (sound_lb > 0)).sum()),
        "conflicts": sorted(set(conflicts)), "clean_mismatch": clean_mismatch, "reference": reference,
        "wall_s": round(time.perf_counter() - t0, 1),
    }


def report(res: dict) -> None:
    print(f"{res['cell']} | eps {res['eps']} | {res['samples']} samples, {res['certified']} certified | "
          f"{res['wall_s']} s")
    checks = [c for c in ("auto_LiRPA IBP", "auto_LiRPA CROWN", "auto_LiRPA alpha-CROWN", res["reference"]) if c]
    head = " | ".join(f"confirmed by {c}" for c in checks)
    print(f"| certified by (ctbench) | samples | {head} | unconfirmed |")
    print("|---|---:|" + "---:|" * (len(checks) + 1))
    for stage, row in res["by_stage"].items():
        print(f"| {stage} | {row['certified']} | " + " | ".join(str(row[c]) for c in checks)
              + f" | {row['unconfirmed']} |")
    print(f"undecided by ctbench but certified by auto_LiRPA IBP or CROWN: {res['looser_than_auto_lirpa']}")
    print(f"unconfirmed samples: {res['unconfirmed'] or 'none'}")
    print(f"conflicts (certified by one, falsified by the other): {res['conflicts'] or 'none'}")
    print(f"samples whose clean verdict differs from the file's: {res['clean_mismatch'] or 'none'}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("cell", type=Path, help="a finished cell folder (model.pt, certify.h5)")
    p.add_argument("--data-root", default=None, help="prepared data root (default $CTBENCH_DATA_ROOT or ./data)")
    p.add_argument("--reference", choices=("none", "abCROWN", "MILP"), default="none",
                   help="complete verifier for the certified samples auto_LiRPA leaves open (default none)")
    p.add_argument("--timeout", type=float, default=60.0, help="the reference's budget per sample (s)")
    p.add_argument("--batch", type=int, default=50, help="samples per auto_LiRPA call")
    p.add_argument("--alpha-iterations", type=int, default=50)
    p.add_argument("--threads", type=int, help="CPU threads (default: ctbench's)")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    try:
        from ctbench.threads import apply_threads

        apply_threads(args.threads)
        res = audit(args.cell, args.data_root, None if args.reference == "none" else args.reference,
                    args.timeout, args.batch, args.alpha_iterations)
    except CTBenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(res, indent=1)) if args.json else report(res)
    return 1 if res["conflicts"] or res["clean_mismatch"] else 0


if __name__ == "__main__":
    sys.exit(main())
