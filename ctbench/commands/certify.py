"""``ctbench certify``: the certification cascade on a model file → ``certify.h5`` (docs/certificates.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ctbench.commands._evaluation import add_evaluation_args
from ctbench.commands._provenance import add_fingerprint_args
from ctbench.threads import add_threads_argument


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "certify",
        help="certify a model: IBP → CROWN-IBP → CROWN → alpha-CROWN → PGD → BaB",
        description=__doc__,
    )
    add_evaluation_args(p, "certify.h5")
    p.add_argument(
        "--stages",
        default="paper",
        help="comma-separated cascade, or a preset: paper = IBP,CROWN-IBP,CROWN,alpha-CROWN,PGD,BaB (default); "
        "exact = IBP,CROWN,PGD,MILP (small networks: MILP decides every sample); abcrown = the paper's with "
        "alpha-beta-CROWN (found via $CTBENCH_ABCROWN) instead of BaB. The external verifiers abCROWN and "
        "Marabou are used only if available",
    )
    p.add_argument(
        "--abcrown-config",
        type=Path,
        help="alpha-beta-CROWN YAML merged under the generated keys (solver, branching, batch sizes)",
    )
    p.add_argument(
        "--timeout", type=float, default=1000.0, help="per-sample budget (s) of the complete stages (default 1000)"
    )
    p.add_argument("--batch", type=int, default=256, help="batch size of the bound/attack stages (default 256)")
    p.add_argument(
        "--complete-limit",
        type=int,
        help="only the first N samples may reach the complete stages (BaB, MILP, external verifiers); the rest "
        "stay undecided — paper Table 1's rule for PGD/EDAC models (N = 10). Default: every sample",
    )
    p.add_argument("--pgd-steps", type=int, default=200, help="PGD steps (default 200)")
    p.add_argument("--pgd-restarts", type=int, default=5, help="PGD restarts (default 5)")
    p.add_argument("--pgd-loss", choices=("margin", "ce"), default="margin",
                   help="the falsifier's loss: margin (default) or ce (the original code's cross-entropy)")
    p.add_argument("--pgd-targets", type=int, default=3,
                   help="runner-up classes the falsifier's restarts target in turn (default 3; 0: untargeted)")
    p.add_argument("--alpha-iterations", type=int, default=20, help="alpha-CROWN iterations (default 20)")
    p.add_argument("--bab-batch", type=int, default=64, help="subdomains bounded per BaB call (default 64)")
    p.add_argument(
        "--no-bab-beta",
        dest="bab_beta",
        action="store_false",
        help="BaB without beta-CROWN multipliers of the split constraints (looser, for comparison)",
    )
    p.add_argument(
        "--recheck-threshold",
        type=float,
        default=1e-2,
        help="bound decisions with 0 < margin <= this are re-checked in float64 (default 0.01)",
    )
    add_fingerprint_args(p)
    add_threads_argument(p)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import json

    from ctbench.certify import certify_file
    from ctbench.fingerprint import parse_expect

    counts = certify_file(
        args.model,
        args.out,
        eps=args.eps,
        dataset=args.dataset,
        split=args.split,
        n=args.n,
        start=args.start,
        device=args.device,
        data_root=args.data_root,
        stages=tuple(args.stages.split(",")),
        timeout=args.timeout,
        batch_size=args.batch,
        pgd_steps=args.pgd_steps,
        pgd_restarts=args.pgd_restarts,
        pgd_loss=args.pgd_loss,
        pgd_targets=args.pgd_targets,
        alpha_iterations=args.alpha_iterations,
        bab_batch=args.bab_batch,
        bab_beta=args.bab_beta,
        seed=args.seed,
        recheck_threshold=args.recheck_threshold,
        abcrown_config=str(args.abcrown_config or ""),
        complete_limit=args.complete_limit,
        fingerprint=args.fingerprint,
        expect=parse_expect(args.expect),
    )
    print(json.dumps(counts, indent=1))
    print(f"wrote {args.out}")
    return 0
