"""``ctbench bounds check``: a self-check of the native bound engine on a random small network.

Builds a random conv net (Normalization, Conv2d+BatchNorm2d+ReLU ×2, Linear+BatchNorm1d+ReLU, Linear),
bounds the margin specification over ε-boxes with IBP, CROWN-IBP, CROWN and alpha-CROWN, prints the
mean bound width of each method, and checks that sampled points of each box (and random vertices)
map inside every bound. Exit status 1 if any bound is violated.
"""

from __future__ import annotations

import argparse

from ctbench.commands._evaluation import accept_negative_numbers


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bounds", help="bound propagation engine (self-check)", description=__doc__)
    bsub = p.add_subparsers(dest="bounds_command", metavar="ACTION")
    bsub.required = True
    cp = bsub.add_parser(
        "check", help="bound widths and a sampled-point soundness check on a random net", description=__doc__
    )
    cp.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    cp.add_argument("--batch", type=int, default=4, help="number of boxes (default 4)")
    accept_negative_numbers(cp)  # --eps -0.1 or -2/255 reaches the ε check
    cp.add_argument("--eps", default="0.05",
                    help="box radius in [0,1] pixel space, e.g. 0.05 or 2/255 (default 0.05)")
    cp.add_argument("--samples", type=int, default=1000, help="sampled points per box (default 1000)")
    cp.add_argument(
        "--bn",
        choices=["eval", "train"],
        default="eval",
        help="BatchNorm regime: running statistics or frozen clean-batch statistics (default eval)",
    )
    cp.add_argument("--dtype", choices=["float32", "float64"], default="float64", help="(default float64)")
    cp.add_argument("--alpha-iterations", type=int, default=20, help="alpha-CROWN Adam steps (default 20)")
    cp.set_defaults(func=_check)


def _check(args: argparse.Namespace) -> int:
    import torch
    from torch import nn

    from ctbench.bounds import BOUND_METHODS, clean_forward_and_freeze_bn, compute_bounds, margin_spec
    from ctbench.core import parse_eps
    from ctbench.errors import CTBenchError
    from ctbench.nn import Normalization

    args.eps = parse_eps(args.eps)  # the ε check (and message) of every command
    if args.batch < 1 or args.samples < 1:
        raise CTBenchError("--batch and --samples must be >= 1")
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(args.seed)
    K = 10
    model = nn.Sequential(
        Normalization([0.5, 0.5], [0.25, 0.25]),
        nn.Conv2d(2, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 4 * 4, 32),
        nn.BatchNorm1d(32),
        nn.ReLU(),
        nn.Linear(32, K),
    ).to(dtype)
    x = torch.rand(max(args.batch, 8), 2, 8, 8, dtype=dtype)
    model.train()
    model(x)  # non-trivial running statistics
    if args.bn == "train":
        clean_forward_and_freeze_bn(model, x)
    else:
        model.eval()
    x = x[: args.batch]
    y = torch.randint(0, K, (args.batch,))
    lo, hi = (x - args.eps).clamp(0, 1), (x + args.eps).clamp(0, 1)
    C = margin_spec(y, K, dtype)
    n = args.samples
    with torch.no_grad():
        pts = lo + (hi - lo) * torch.rand(n, *x.shape, dtype=dtype)
        corners = torch.where(torch.rand(n, *x.shape) < 0.5, lo, hi)
        pts = torch.cat([pts, corners])
        z = model(pts.reshape(-1, *x.shape[1:])).reshape(2 * n, args.batch, K)
        vals = torch.einsum("bsk,nbk->nbs", C, z)
    tol = 1e-9 if dtype == torch.float64 else 1e-4
    print(
        f"random net: {sum(p.numel() for p in model.parameters())} parameters, BN={args.bn}, {args.dtype}, "
        f"eps={args.eps}, {args.batch} boxes, {2 * n} points each, tolerance {tol:g}·(1+|bound|)"
    )
    print(f"{'method':12s} {'mean width':>12s} {'mean lb':>12s} {'certified':>9s} {'sound':>6s}")
    ok = True
    for method in [m for m in ("IBP", "CROWN-IBP", "CROWN", "alpha-CROWN") if m in BOUND_METHODS]:
        opts = {"iterations": args.alpha_iterations} if method == "alpha-CROWN" else {}
        with torch.no_grad():
            lb, ub = compute_bounds(model, lo, hi, method, C, **opts)
        lo_v = (lb.unsqueeze(0) - vals - tol * (1 + lb.abs())).max()
        hi_v = (vals - ub.unsqueeze(0) - tol * (1 + ub.abs())).max()
        sound = bool(lo_v <= 0 and hi_v <= 0)
        ok &= sound
        cert = int((lb > 0).all(1).sum())
        print(
            f"{method:12s} {float((ub - lb).mean()):12.5f} {float(lb.mean()):12.5f} "
            f"{cert:>5d}/{args.batch:<3d} {'yes' if sound else 'NO':>6s}"
        )
    print("all bounds contain every sampled point" if ok else "SOUNDNESS VIOLATION")
    return 0 if ok else 1
