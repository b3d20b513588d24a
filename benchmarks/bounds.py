"""Cost of certified-training steps: ctbench's native bound engine vs auto_LiRPA, CNN7 on CIFAR shapes.

Each *training* row is one full step — clean forward (which sets the BatchNorm statistics), bounds,
loss, backward — and is reported as a ratio to the standard step (forward + cross-entropy + backward).
The paper's cost model (CTBench Table 11) puts IBP at 2T and CROWN-IBP with loss fusion (Xu et al.
2020) at 4T. The *certification* rows bound all K−1 margins with CROWN-IBP, lower bounds only, in
eval mode without autograd.

Rows (auto_LiRPA rows print "unavailable" when it is not installed):

==========================  ===================================================================
standard                    ``CE(model(x), y)`` + backward (BatchNorm in train mode)
ctbench IBP                 clean_forward_and_freeze_bn + IBP margins + robust CE + backward
ctbench LF CROWN-IBP        clean_forward_and_freeze_bn + loss_fusion_crown_ibp + backward
auto_LiRPA IBP              BoundedModule forward (batch statistics) + IBP margins + robust CE + backward
auto_LiRPA LF CROWN-IBP     CrossEntropyWrapper loss fusion (auto_LiRPA's cifar_training recipe) + backward
ctbench AM CROWN-IBP        clean_forward_and_freeze_bn + CROWN-IBP lower bounds of all K−1 margins with
                            CTBench's cut points + robust CE + backward (CROWN-IBP training without fusion)
ctbench AM CROWN-IBP nocut  the same with ``cut_points=False``
auto_LiRPA AM CROWN-IBP     the same through auto_LiRPA (no cut points there)
ctbench ... eager           the LF and AM (cut / nocut) rows with ``CTBENCH_COMPILE=0``; the rows without
                            the suffix run as the environment says (default ``auto``: at CNN7's size
                            the CROWN ReLU relaxation runs through ``torch.compile``, compiled during
                            the warm-up round; ``ctbench.bounds.fused``)
cert ctbench CROWN-IBP      eval, no_grad, lower bounds of the K−1 margins (with cut points)
cert ctbench ... nocut      the same with ``cut_points=False``
cert auto_LiRPA CROWN-IBP   the same through auto_LiRPA
==========================  ===================================================================

``--full-crown`` measures instead full CROWN (every ReLU's pre-activation bounds by back-substitution, the
certification cascade's CROWN stage; issue 25) of the K−1 margins, lower bounds, eval mode with running
BatchNorm statistics, random weights: ``cert ctbench CROWN`` (convolution-local rows,
``ctbench.bounds.patches``) against ``cert auto_LiRPA CROWN`` (its patches mode) on the same inputs, one
timed run each after no warm-up (minutes per input on a CPU), and the largest difference of their bounds.

Measurements are interleaved (each repeat runs every row once, round-robin) after one warm-up round
(which also builds auto_LiRPA's BoundedModules), and the median of ``--repeats`` is reported.

Usage::

    python benchmarks/bounds.py --repeats 5            # CNN7, batch 128 (minutes on a CPU)
    python benchmarks/bounds.py --small --json --repeats 1   # seconds: smoke test
    python benchmarks/bounds.py --full-crown --batch 2       # full CROWN, ours vs auto_LiRPA (minutes)
    python benchmarks/bounds.py --full-crown --model M.pt --eps 0.1 --batch 8   # a trained model, its test images
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone

import torch
import torch.nn.functional as F

from ctbench.bounds import (
    clean_forward_and_freeze_bn,
    compute_bounds,
    fused,
    lirpa,
    loss_fusion_crown_ibp,
    margin_spec,
    robust_ce_from_margin_bounds,
    unfreeze_bn,
)
from ctbench.models import InputSpec, cnn7

logger = logging.getLogger(__name__)

CIFAR = InputSpec((3, 32, 32), 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), name="cifar10")
SMALL = InputSpec((3, 16, 16), 10, CIFAR.mean, CIFAR.std, name="small")

#: Targets checked at the end: (description, predicate on the results dict).
TARGET_TEXT = {
    "ibp_ratio": "ctbench IBP <= 2.1x standard",
    "ibp_vs_lirpa": "ctbench IBP no slower than auto_LiRPA IBP",
    "lf_ratio": "ctbench LF CROWN-IBP <= 4.0x standard",
    "lf_speedup": "ctbench LF CROWN-IBP >= 1.3x faster than auto_LiRPA's",
    "cert_speedup": "ctbench all-margins CROWN-IBP >= 1.3x faster than auto_LiRPA's",
    "ibp_speedup": "ctbench IBP >= 1.2x faster than auto_LiRPA's (issue 16)",
    "am_cut_cost": "all-margins CROWN-IBP step with cut points <= 1.15x the step without (issue 16)",
    "am_speedup": "ctbench all-margins CROWN-IBP step (cut points) >= 1.2x faster than auto_LiRPA's (issue 16)",
    "lf_speedup_eager": "ctbench LF CROWN-IBP, CTBENCH_COMPILE=0, >= 1.3x faster than auto_LiRPA's",
    "am_speedup_eager": "ctbench all-margins CROWN-IBP, CTBENCH_COMPILE=0, >= 1.2x faster than auto_LiRPA's",
    "am_cut_cost_eager": "all-margins step with cut points <= 1.15x the step without, CTBENCH_COMPILE=0",
    "cert_cut_cost": "certification CROWN-IBP with cut points <= 1.15x without (issue 16)",
}


def machine_info(device: torch.device) -> dict:
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(device),
        "date_utc": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def make_steps(model, x, y, lower, upper, have_lirpa: bool) -> dict[str, Callable[[], None] | None]:
    """One closure per row; each runs a complete step. None where auto_LiRPA is unavailable."""
    K = CIFAR.num_classes
    C = margin_spec(y, K, dtype=x.dtype)

    def zero():
        model.zero_grad(set_to_none=True)

    def standard():
        zero()
        model.train()
        F.cross_entropy(model(x), y).backward()

    def ctbench_ibp():
        zero()
        model.train()
        clean_forward_and_freeze_bn(model, x)
        try:
            lb, _ = compute_bounds(model, lower, upper, "IBP", C)
            robust_ce_from_margin_bounds(lb).backward()
        finally:
            unfreeze_bn(model)

    def ctbench_lf():
        zero()
        model.train()
        clean_forward_and_freeze_bn(model, x)
        try:
            loss_fusion_crown_ibp(model, lower, upper, y).backward()
        finally:
            unfreeze_bn(model)

    def ctbench_am(cut_points: bool):
        def step():
            zero()
            model.train()
            clean_forward_and_freeze_bn(model, x)
            try:
                lb, _ = compute_bounds(model, lower, upper, "CROWN-IBP", C, bound_upper=False, cut_points=cut_points)
                robust_ce_from_margin_bounds(lb).backward()
            finally:
                unfreeze_bn(model)

        return step

    def eager(step):
        def run():
            fused.set_compile(False)
            try:
                step()
            finally:
                fused.set_compile(None)

        return run

    def lirpa_am():
        zero()
        model.train()
        lb, _ = lirpa.compute_bounds_lirpa(model, lower, upper, "CROWN-IBP", C, x=x, bound_upper=False)
        robust_ce_from_margin_bounds(lb).backward()

    def lirpa_ibp():
        zero()
        model.train()
        lb, _ = lirpa.compute_bounds_lirpa(model, lower, upper, "IBP", C, x=x)
        robust_ce_from_margin_bounds(lb).backward()

    def lirpa_lf():
        zero()
        model.train()
        lirpa.lirpa_loss_fusion(model, lower, upper, y, x=x).backward()

    def cert_ctbench(cut_points: bool):
        def step():
            model.eval()
            with torch.no_grad():
                compute_bounds(model, lower, upper, "CROWN-IBP", C, bound_upper=False, cut_points=cut_points)

        return step

    def cert_lirpa():
        model.eval()
        with torch.no_grad():
            lirpa.compute_bounds_lirpa(model, lower, upper, "CROWN-IBP", C, bound_upper=False)

    return {
        "standard": standard,
        "ctbench IBP": ctbench_ibp,
        "ctbench LF CROWN-IBP": ctbench_lf,
        "auto_LiRPA IBP": lirpa_ibp if have_lirpa else None,
        "auto_LiRPA LF CROWN-IBP": lirpa_lf if have_lirpa else None,
        "ctbench AM CROWN-IBP": ctbench_am(True),
        "ctbench AM CROWN-IBP nocut": ctbench_am(False),
        "auto_LiRPA AM CROWN-IBP": lirpa_am if have_lirpa else None,
        "ctbench LF CROWN-IBP eager": eager(ctbench_lf),
        "ctbench AM CROWN-IBP eager": eager(ctbench_am(True)),
        "ctbench AM CROWN-IBP nocut eager": eager(ctbench_am(False)),
        "cert ctbench CROWN-IBP": cert_ctbench(True),
        "cert ctbench CROWN-IBP nocut": cert_ctbench(False),
        "cert auto_LiRPA CROWN-IBP": cert_lirpa if have_lirpa else None,
    }


def timed(fn: Callable[[], None], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0


def run(args) -> dict:
    device = torch.device(args.device)
    spec = SMALL if args.small else CIFAR
    batch = args.batch if args.batch is not None else (8 if args.small else 128)
    torch.manual_seed(0)
    model = (cnn7(spec, width=8, linear=32) if args.small else cnn7(spec)).to(device)
    x = torch.rand(batch, *spec.shape, device=device)
    y = torch.randint(0, spec.num_classes, (batch,), device=device)
    lower, upper = (x - args.eps).clamp(0, 1), (x + args.eps).clamp(0, 1)

    have_lirpa = lirpa.lirpa_available()
    if have_lirpa:
        lirpa.self_check()
    steps = make_steps(model, x, y, lower, upper, have_lirpa)
    active = {k: f for k, f in steps.items() if f is not None}

    real_forward, compiled_calls = fused.fused_forward, []

    def counted_forward(*a, **kw):  # did the default rows take the compiled path? (warm-up only)
        compiled_calls.append(1)
        return real_forward(*a, **kw)

    fused.fused_forward = counted_forward
    try:
        active["ctbench LF CROWN-IBP"]()
    finally:
        fused.fused_forward = real_forward
    default_compiled = bool(compiled_calls)
    for fn in active.values():  # warm-up (auto_LiRPA builds its graphs here)
        fn()
    times: dict[str, list[float]] = {k: [] for k in active}
    for r in range(args.repeats):
        for name, fn in active.items():  # round-robin: drift hits every row alike
            times[name].append(timed(fn, device))
        logger.info("repeat %d/%d done", r + 1, args.repeats)

    base = statistics.median(times["standard"])
    rows = {}
    for name in steps:
        if name not in times:
            rows[name] = None
            continue
        med = statistics.median(times[name])
        rows[name] = {"median_s": med, "ratio": med / base, "times_s": times[name]}

    def speedup(ours: str, theirs: str):
        if rows.get(theirs) is None:
            return None
        return rows[theirs]["median_s"] / rows[ours]["median_s"]

    speedups = {
        "IBP": speedup("ctbench IBP", "auto_LiRPA IBP"),
        "LF CROWN-IBP": speedup("ctbench LF CROWN-IBP", "auto_LiRPA LF CROWN-IBP"),
        "cert CROWN-IBP": speedup("cert ctbench CROWN-IBP", "cert auto_LiRPA CROWN-IBP"),
        "AM CROWN-IBP": speedup("ctbench AM CROWN-IBP", "auto_LiRPA AM CROWN-IBP"),
        "AM CROWN-IBP nocut": speedup("ctbench AM CROWN-IBP nocut", "auto_LiRPA AM CROWN-IBP"),
        "LF CROWN-IBP eager": speedup("ctbench LF CROWN-IBP eager", "auto_LiRPA LF CROWN-IBP"),
        "AM CROWN-IBP eager": speedup("ctbench AM CROWN-IBP eager", "auto_LiRPA AM CROWN-IBP"),
    }
    cut_cost = rows["ctbench AM CROWN-IBP"]["median_s"] / rows["ctbench AM CROWN-IBP nocut"]["median_s"]
    cut_cost_cert = rows["cert ctbench CROWN-IBP"]["median_s"] / rows["cert ctbench CROWN-IBP nocut"]["median_s"]
    cut_cost_eager = (rows["ctbench AM CROWN-IBP eager"]["median_s"]
                      / rows["ctbench AM CROWN-IBP nocut eager"]["median_s"])
    targets = {
        "ibp_ratio": rows["ctbench IBP"]["ratio"] <= 2.1,
        "ibp_vs_lirpa": None if speedups["IBP"] is None else speedups["IBP"] >= 1.0,
        "lf_ratio": rows["ctbench LF CROWN-IBP"]["ratio"] <= 4.0,
        "lf_speedup": None if speedups["LF CROWN-IBP"] is None else speedups["LF CROWN-IBP"] >= 1.3,
        "cert_speedup": None if speedups["cert CROWN-IBP"] is None else speedups["cert CROWN-IBP"] >= 1.3,
        "ibp_speedup": None if speedups["IBP"] is None else speedups["IBP"] >= 1.2,
        "am_cut_cost": cut_cost <= 1.15,
        "am_cut_cost_eager": cut_cost_eager <= 1.15,
        "cert_cut_cost": cut_cost_cert <= 1.15,
        "am_speedup": None if speedups["AM CROWN-IBP"] is None else speedups["AM CROWN-IBP"] >= 1.2,
        "lf_speedup_eager": None if speedups["LF CROWN-IBP eager"] is None
        else speedups["LF CROWN-IBP eager"] >= 1.3,
        "am_speedup_eager": None if speedups["AM CROWN-IBP eager"] is None
        else speedups["AM CROWN-IBP eager"] >= 1.2,
    }
    return {
        "machine": machine_info(device),
        "config": {"model": "cnn7" + ("-small" if args.small else ""), "input": list(spec.shape),
                   "batch": batch, "eps": args.eps, "repeats": args.repeats, "bn": "train, clean-batch stats",
                   "auto_lirpa": have_lirpa, "compile": fused.mode(),
                   "auto_min_elements": fused.AUTO_MIN_ELEMENTS, "default_rows_compiled": default_compiled},
        "results": rows,
        "speedups": speedups,
        "cut_point_cost": cut_cost,
        "cut_point_cost_eager": cut_cost_eager,
        "cut_point_cost_cert": cut_cost_cert,
        "targets": targets,
    }


def peak_rss_gb() -> float:
    """Peak resident memory of this process so far (GB; Linux ``ru_maxrss`` is in kB)."""
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)


def trained_inputs(model_path, data_root, batch: int):
    """A trained ctbench model file and the first ``batch`` test images of its dataset (labels as the
    margins' reference class, as the certification cascade uses them): (model, spec, x, y, source)."""
    from ctbench.certify.run import load_for_certification

    model, meta, ds, spec = load_for_certification(model_path, None, "test", data_root)
    pairs = [ds[i] for i in range(min(batch, len(ds)))]
    x = torch.stack([p[0] for p in pairs])
    y = torch.tensor([int(p[1]) for p in pairs])
    method = (meta.get("config") or {}).get("method", "?")
    return model, spec, x, y, {"model": f"{meta.get('model', '?')} ({model_path})",
                               "weights": f"trained ({method}); {meta['dataset']} test images"}


def run_full_crown(args) -> dict:
    """Full CROWN of the K−1 margins, ours and auto_LiRPA's, on the same eval-mode CNN7 and inputs."""
    from ctbench.bounds.spec import margin_spec

    device = torch.device(args.device)
    batch = args.batch if args.batch is not None else 2
    if args.model:
        model, spec, x, y, source = trained_inputs(args.model, args.data_root, batch)
        model, x, y = model.to(device).eval(), x.to(device), y.to(device)
    else:
        spec = SMALL if args.small else CIFAR
        torch.manual_seed(0)
        model = (cnn7(spec, width=8, linear=32) if args.small else cnn7(spec)).to(device).eval()
        x = torch.rand(batch, *spec.shape, device=device)
        source = {"model": "cnn7" + ("-small" if args.small else ""), "weights": "random (seed 0)"}
        with torch.no_grad():
            y = model(x).argmax(1)
    lower, upper = (x - args.eps).clamp(0, 1), (x + args.eps).clamp(0, 1)
    C = margin_spec(y, spec.num_classes)
    rows, bounds = {}, {}

    def ours():
        return compute_bounds(model, lower, upper, "CROWN", C, bound_upper=False)[0]

    def theirs():
        return lirpa.compute_bounds_lirpa(model, lower, upper, "CROWN", C, bound_upper=False)[0]

    have_lirpa = lirpa.lirpa_available()
    for name, fn in (("cert ctbench CROWN", ours), ("cert auto_LiRPA CROWN", theirs if have_lirpa else None)):
        if fn is None:
            rows[name] = None
            continue
        try:
            with torch.no_grad():
                rows[name] = {"median_s": timed(lambda fn=fn, name=name: bounds.__setitem__(name, fn()), device)}
        except (torch.OutOfMemoryError, MemoryError, RuntimeError) as e:  # CPU: "can't allocate memory"
            if not isinstance(e, (torch.OutOfMemoryError, MemoryError)) and "allocate" not in str(e):
                raise
            rows[name] = {"median_s": None, "error": "out of memory"}
            bounds.pop(name, None)
        rows[name]["peak_rss_gb"] = peak_rss_gb()  # the process's peak so far: this row's, as ours runs first
        logger.info("%s: %s", name, rows[name])
    both = len(bounds) == 2
    diff = float((bounds["cert ctbench CROWN"] - bounds["cert auto_LiRPA CROWN"]).abs().max()) if both else None
    speed = rows["cert auto_LiRPA CROWN"]["median_s"] / rows["cert ctbench CROWN"]["median_s"] if both else None
    return {"machine": machine_info(device),
            "config": source | {"input": list(spec.shape), "batch": batch, "eps": args.eps,
                                "bn": "eval, running statistics", "auto_lirpa": have_lirpa},
            "results": rows, "speedups": {"full CROWN": speed}, "max_bound_difference": diff,
            "certified_margins": {k: int((v > 0).sum()) for k, v in bounds.items()},
            "targets": {"full_crown_not_slower": None if speed is None else speed >= 1.0}}


def print_report(res: dict) -> None:
    m, c = res["machine"], res["config"]
    print(f"machine: {m['cpu']}, {m['cores']} cores ({m['threads']} threads), device {m['device']}, "
          f"torch {m['torch']}, {m['date_utc']}")
    print(f"model {c['model']} input {c['input']} batch {c['batch']} eps {c['eps']:.5f}, "
          f"median of {c['repeats']} (interleaved, after warm-up); CTBENCH_COMPILE={c['compile']}: rows "
          f"without 'eager' {'ran' if c['default_rows_compiled'] else 'did not run'} the compiled relaxation")
    print(f"{'row':28s} {'median s':>10s} {'x standard':>11s}")
    for name, row in res["results"].items():
        if row is None:
            print(f"{name:28s} {'unavailable':>10s}")
        else:
            print(f"{name:28s} {row['median_s']:10.3f} {row['ratio']:10.2f}x")
    print("speedup of ctbench over auto_LiRPA:")
    for name, s in res["speedups"].items():
        print(f"  {name:26s} " + ("unavailable" if s is None else f"{s:.2f}x"))
    print(f"cut points in the all-margins step: {res['cut_point_cost']:.2f}x the step without "
          f"({res['cut_point_cost_eager']:.2f}x with CTBENCH_COMPILE=0); in certification "
          f"{res['cut_point_cost_cert']:.2f}x")
    print("targets:")
    for key, ok in res["targets"].items():
        print(f"  [{'n/a' if ok is None else ('ok' if ok else 'MISSED')}] {TARGET_TEXT[key]}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=None, help="batch size (default 128; 8 with --small)")
    p.add_argument("--eps", type=float, default=2 / 255)
    p.add_argument("--repeats", type=int, default=5, help="timed repeats after one warm-up (median)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--small", action="store_true", help="tiny CNN7 (width 8) on 16x16 inputs: a smoke run")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--full-crown", action="store_true",
                   help="full CROWN, ours vs auto_LiRPA, instead of the training rows (default batch 2)")
    p.add_argument("--model", help="with --full-crown: a trained model file, bounded on its test images "
                   "(default: CNN7 with random weights on random CIFAR-shaped inputs)")
    p.add_argument("--data-root", default=None, help="with --model: prepared data root (default ./data)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("bounds.py: error: --device cuda but CUDA is not available", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING)
    res = run_full_crown(args) if args.full_crown else run(args)
    if args.json:
        print(json.dumps(res, indent=2))
    elif args.full_crown:
        for name, row in res["results"].items():
            print(f"{name:24s} " + ("unavailable" if row is None else row.get("error") or f"{row['median_s']:.1f} s")
                  + ("" if row is None else f" (peak RSS {row['peak_rss_gb']} GB)"))
        print(f"auto_LiRPA / ctbench time: {res['speedups']['full CROWN']}; largest bound difference: "
              f"{res['max_bound_difference']}; margins certified: {res['certified_margins']}")
    else:
        print_report(res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
