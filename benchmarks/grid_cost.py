"""Projected compute of a benchmark grid, from step times measured on this device (issue 16).

For every Table 1 cell group (setting, model, method) of a grid configuration (default
``config/config.yaml``: the paper's 5 settings x 9 methods x 3 seeds, CNN7) this script *measures*, on
random data of the dataset's shape with the cell's resolved hyperparameters (``ctbench.grid.Grid``):

* **train**: one training step exactly as ``ctbench.training.train`` runs it — ``method.step`` at the
  cell's training ε after the ramp (``warmup=False``), gradient clipping, the Adam step — at the cell's
  ``batch_size``; plus, per epoch, the population-BatchNorm pass (a no-grad forward over the training
  set) and the model-selection evaluation (``method.evaluate_batch`` over ``n_val`` samples at the test
  batch size);
* **certify**: every sample through every *bound* stage of the cascade (IBP, CROWN-IBP, CROWN,
  alpha-CROWN with the cascade's iterations) and the PGD falsifier (margin loss, ``steps x restarts``
  per target) — an upper bound, since on a trained model most samples are decided by the first stage;
  the complete stage (BaB / abCROWN / MILP) runs only on the samples still undecided, each capped by the
  configured timeout, so it is reported as hours per 1 % of the test set that reaches it;
* **attack**: PGD with the configured ``steps x restarts`` (cross-entropy) over the test set (AutoAttack,
  run for standard/PGD/EDAC models, is not included).

and projects hours: ``train = epochs x (steps/epoch x step + BN pass + evaluation)`` per seed, times the
number of seeds; certify and attack per cell, times the seeds. Costs that the projection does not see:
ε-ramp epochs (TAPS/STAPS fall back to IBP there; the warm-up regularizer adds a little), data loading,
SWA's final BN pass, checkpoints, scheduler and file I/O. Measure on the device the grid will run on
(``--device cuda``): on a GPU this is the "projected GPU-hours" table of issue 16.

Usage::

    python benchmarks/grid_cost.py --device cuda                    # the paper grid, CNN7 (minutes on a GPU)
    python benchmarks/grid_cost.py --config config/mnist_small.yaml # any grid configuration
    python benchmarks/grid_cost.py --settings mnist_0.1 --methods ibp,pgd --batch 32   # a CPU-sized slice
    python benchmarks/grid_cost.py --stages certify,attack --cert-stages IBP,CROWN-IBP,PGD   # skip CROWN on a CPU
    python benchmarks/grid_cost.py --json ...

``--batch N`` measures training steps at batch N instead of the cell's and scales per sample (for CPUs;
the per-sample cost of a step falls with the batch size, so the projection is then pessimistic).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import statistics
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

import torch

from ctbench.attacks import pgd_attack
from ctbench.bounds import compute_bounds, margin_spec
from ctbench.errors import CTBenchError
from ctbench.grid import Grid, load_yaml
from ctbench.methods import create_method
from ctbench.methods.base import input_box
from ctbench.models import create_model, input_spec_for

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bounds import machine_info, timed  # noqa: E402  (benchmarks/bounds.py)

logger = logging.getLogger(__name__)

#: (training, test) split sizes of each dataset (MNIST, CIFAR-10: the canonical splits; TinyImageNet:
#: 100,000 training images, its 10,000 validation images serve as the test set, as in the paper).
SPLIT_SIZES = {"mnist": (60_000, 10_000), "mnist_mini": (6_000, 1_000), "cifar10": (50_000, 10_000),
               "tinyimagenet": (100_000, 10_000)}
BOUND_STAGES = ("IBP", "CROWN-IBP", "CROWN", "alpha-CROWN")
ALPHA_ITERATIONS = 20  # ctbench.certify.cascade.CertifySettings.alpha_iterations
COMPLETE_STAGES = {"BaB", "MILP", "abCROWN", "Marabou"}
STAGES = ("train", "certify", "attack")
#: Per-setting totals (hours, summed over methods and seeds) ← the per-cell row values.
TOTALS = {"train_h": "train_h_per_seed", "certify_bound_stages_h": "certify_bound_stages_h",
          "complete_h_per_pct": "complete_h_per_pct", "attack_h": "attack_h"}


def median_time(fn: Callable[[], None], repeats: int, device: torch.device,
                warmup: Callable[[], None] | None = None) -> float:
    """Median wall time of ``fn`` over ``repeats`` calls after one warm-up call (CUDA-synchronized);
    ``warmup``: a cheaper call that warms up the same code (default: ``fn`` itself)."""
    (warmup or fn)()
    return statistics.median(timed(fn, device) for _ in range(repeats))


def random_batch(spec, n: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, *spec.shape, generator=g)
    y = torch.randint(0, spec.num_classes, (n,), generator=g)
    return x.to(device), y.to(device)


def train_costs(cfg: dict, device, batch: int | None, repeats: int) -> dict:
    """Seconds per training sample (step), per BN-pass sample and per evaluation sample of one cell."""
    spec = input_spec_for(cfg["dataset"])
    model = create_model(cfg["model"], cfg["dataset"], init=cfg["init"], seed=0).to(device)
    method = create_method(cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=float(cfg["lr"]))
    b = batch or int(cfg["batch_size"])
    x, y = random_batch(spec, b, device)
    eps = float(cfg["train_eps"])

    def step():
        optimizer.zero_grad(set_to_none=True)
        method.step(model, x, y, eps, optimizer=optimizer, warmup=False,
                    accumulation_batch=cfg.get("grad_accu_batch"))
        if cfg.get("grad_clip"):
            torch.nn.utils.clip_grad_norm_(params, float(cfg["grad_clip"]))
        optimizer.step()

    step_s = median_time(step, repeats, device)

    def bn_pass():
        model.train()
        with torch.no_grad():
            model(x)

    bn_s = median_time(bn_pass, repeats, device)
    tb = min(batch or int(cfg["test_batch_size"]), int(cfg["test_batch_size"]))
    xt, yt = random_batch(spec, tb, device)

    def evaluate():
        model.eval()
        method.evaluate_batch(model, xt, yt, float(cfg["eps"]))

    eval_s = median_time(evaluate, repeats, device)
    return {"batch": b, "step_s": step_s, "per_sample_step_s": step_s / b, "per_sample_bn_s": bn_s / b,
            "per_sample_eval_s": eval_s / tb}


def certify_costs(cfg: dict, certify: dict, attack: dict | None, device, n: int, repeats: int,
                  only: set[str] | None = None) -> dict:
    """Seconds per test sample of each bound stage, the PGD falsifier (``certify`` not None) and the
    attack (``attack`` not None), on the eval-mode model; ``only``: measure just these certify stages."""
    spec = input_spec_for(cfg["dataset"])
    model = create_model(cfg["model"], cfg["dataset"], init=cfg["init"], seed=0).to(device).eval()
    x, y = random_batch(spec, n, device)
    lower, upper = input_box(x, float(cfg["eps"]))
    C = margin_spec(y, spec.num_classes, dtype=x.dtype)
    out = {}
    wanted = [s for s in (certify or {}).get("stages", ()) if only is None or s in only]
    for stage in (s for s in wanted if s in BOUND_STAGES):
        opts = {"iterations": ALPHA_ITERATIONS} if stage == "alpha-CROWN" else {}

        def run(stage=stage, opts=opts, k=n):
            with torch.enable_grad() if stage == "alpha-CROWN" else torch.no_grad():
                compute_bounds(model, lower[:k], upper[:k], stage, C[:k], bound_upper=False, **opts)

        # Full CROWN and alpha-CROWN take minutes per CNN7 sample on a CPU: warm up on one sample.
        warm = partial(run, k=1) if stage in ("CROWN", "alpha-CROWN") else None
        out[stage] = median_time(run, repeats, device, warmup=warm) / n
    if certify is not None and "PGD" in wanted:
        f = certify["falsifier"]
        targets = min(int(f["targets"]), spec.num_classes - 1)

        def falsify(steps=int(f["steps"]), restarts=int(f["restarts"])):
            for k in range(targets):
                target = (y + 1 + k) % spec.num_classes
                pgd_attack(model, x, y, lower, upper, steps=steps, restarts=restarts,
                           loss=f["loss"], target=target if f["loss"] == "margin" else None)

        falsify(1, 1)  # warm-up: one step of each target, then the full search timed once
        out["PGD"] = timed(falsify, device) / n

    if attack is not None:
        def attack_run(steps=int(attack["steps"]), restarts=int(attack["restarts"])):
            pgd_attack(model, x, y, lower, upper, steps=steps, restarts=restarts)

        attack_run(1, 1)
        out["attack"] = timed(attack_run, device) / n
    return out


def _or_oom(row: dict, what: str, measure: Callable[[], dict]) -> dict | None:
    """``measure()``, or None with ``row["error"]`` set when the device runs out of memory (the other
    cell groups are still measured; their hours stay, this group's are unknown)."""
    try:
        return measure()
    except torch.OutOfMemoryError:
        row["error"] = f"{what}: out of memory"
        logger.warning("%s %s %s: %s: out of memory, not measured", row["cells"], row["model"], row["method"], what)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return None


def project(grid: Grid, args, device) -> dict:
    """Measure each (setting, model, method) group of Table 1 once and project its hours."""
    cells = grid.table1_cells()
    groups: dict[tuple, list] = {}
    for c in cells:
        if args.settings and c.setting not in args.settings:
            continue
        if args.methods and c.method not in args.methods:
            continue
        groups.setdefault((c.setting, c.dataset, c.eps, c.model, c.method), []).append(c)
    if not groups:
        raise CTBenchError("no Table 1 cell matches --settings/--methods")
    limits = grid.limits()
    rows, cert_cache = [], {}
    for (setting, dataset, _eps, model, method), group in groups.items():
        cell = group[0]
        cfg = grid.train_config(cell)
        n_train, n_test = SPLIT_SIZES[dataset]
        if limits["subset"]:
            n_train = min(n_train, int(limits["subset"]))
        n_val = round(n_train * float(cfg["val_fraction"])) if cfg.get("val_fraction") else n_test
        n_train -= n_val if cfg.get("val_fraction") else 0
        steps = math.ceil(n_train / int(cfg["batch_size"]))
        if limits["max_steps"]:
            steps = min(steps, int(limits["max_steps"]))
        row = {"setting": setting, "cells": f"{dataset} {cell.eps.replace('_', '/')}", "model": model,
               "method": method, "seeds": len(group), "epochs": int(cfg["epochs"]),
               "batch_size": int(cfg["batch_size"]), "measured_batch": None, "step_s": None, "epoch_s": None,
               "train_h_per_seed": None, "certify_bound_stages_h": None, "complete_h_per_pct": None,
               "attack_h": None, "certify_s_per_sample": None, "certify_stage_h": None,
               "certify_stages_not_measured": None, "error": None}
        t = _or_oom(row, "train", partial(train_costs, cfg, device, args.batch, args.repeats)) \
            if "train" in args.stages else None
        if t is not None:
            trained = steps * int(cfg["batch_size"])
            epoch_s = (trained * t["per_sample_step_s"] + n_train * t["per_sample_bn_s"]
                       + n_val * t["per_sample_eval_s"])
            row.update(measured_batch=t["batch"], step_s=t["step_s"], epoch_s=epoch_s,
                       train_h_per_seed=int(cfg["epochs"]) * epoch_s / 3600)
            logger.info("%s %s %s: %.3g s/step, %.3g h/seed", row["cells"], model, method, t["step_s"],
                        row["train_h_per_seed"])
        cs, at = grid.certify_settings(cell), grid.attack_settings(cell)
        n_cert = min(n_test, int(cs["n"])) if cs["n"] else n_test
        key = (setting, model)
        if key not in cert_cache and ({"certify", "attack"} & set(args.stages)):
            cert_cache[key] = _or_oom(row, "certify/attack", partial(
                certify_costs, cfg, cs if "certify" in args.stages else None,
                at if "attack" in args.stages else None, device, args.cert_batch, args.repeats,
                set(args.cert_stages) if args.cert_stages else None))
            if cert_cache[key] is not None:
                logger.info("%s %s: certify/attack s per sample %s", row["cells"], model,
                            {k: round(v, 4) for k, v in cert_cache[key].items()})
        cc = cert_cache.get(key)
        if cc is None and {"certify", "attack"} & set(args.stages):
            row["error"] = row["error"] or "certify/attack: out of memory"
        if "certify" in args.stages and cc is not None:
            per_sample = {k: v for k, v in cc.items() if k != "attack"}
            complete = bool(COMPLETE_STAGES & set(cs["stages"]))
            n_complete = n_cert if cs["complete_limit"] is None else min(n_cert, int(cs["complete_limit"]))
            # The sum over the cascade's bound stages only when every one of them was measured
            # (``--cert-stages`` may leave some out: their hours are then unknown, not zero).
            missing = [s for s in cs["stages"] if (s in BOUND_STAGES or s == "PGD") and s not in per_sample]
            row.update(certify_s_per_sample=per_sample,
                       certify_stage_h={k: n_cert * v / 3600 for k, v in per_sample.items()},
                       certify_stages_not_measured=missing,
                       certify_bound_stages_h=None if missing else n_cert * sum(per_sample.values()) / 3600,
                       complete_h_per_pct=(0.01 * n_complete * float(cs["timeout"]) / 3600) if complete else 0.0)
        if "attack" in args.stages and cc is not None:
            row["attack_h"] = n_cert * cc["attack"] / 3600
        rows.append(row)
    totals: dict[str, dict] = {}
    for r in rows:
        s = totals.setdefault(r["cells"], dict.fromkeys(TOTALS, 0.0))
        for total_key, row_key in TOTALS.items():
            per_cell = r[row_key]
            s[total_key] = None if per_cell is None or s[total_key] is None else s[total_key] + per_cell * r["seeds"]
    config = {"grid": str(args.config), "batch": args.batch, "cert_batch": args.cert_batch,
              "repeats": args.repeats, "stages": args.stages, "cert_stages": args.cert_stages}
    return {"machine": machine_info(device), "config": config, "rows": rows, "totals": totals}


def _h(v, width: int) -> str:
    return f"{'-':>{width}s}" if v is None else f"{v:{width}.3g}"


def print_report(res: dict) -> None:
    m = res["machine"]
    print(f"machine: {m.get('gpu') or m['cpu']}, device {m['device']}, {m['threads']} threads, torch {m['torch']}, "
          f"{m['date_utc']}; grid {res['config']['grid']}")
    head = (f"{'cells':16s} {'model':9s} {'method':10s} {'seeds':>5s} {'epochs':>6s} {'s/step':>8s} "
            f"{'h/seed':>8s} {'cert h':>8s} {'attack h':>8s}")
    print(head)
    for r in res["rows"]:
        print(f"{r['cells']:16s} {r['model']:9s} {r['method']:10s} {r['seeds']:5d} {r['epochs']:6d} "
              f"{_h(r['step_s'], 8)} {_h(r['train_h_per_seed'], 8)} {_h(r['certify_bound_stages_h'], 8)} "
              f"{_h(r['attack_h'], 8)}" + (f"  ({r['error']})" if r["error"] else ""))
    seen = set()
    for r in res["rows"]:
        if r["certify_stage_h"] is None or (r["cells"], r["model"]) in seen:
            continue
        seen.add((r["cells"], r["model"]))
        stages = ", ".join(f"{k} {v:.3g} s ({r['certify_stage_h'][k]:.3g} h)"
                           for k, v in r["certify_s_per_sample"].items())
        left = r["certify_stages_not_measured"]
        print(f"certify {r['cells']} {r['model']}, per sample (per cell, every sample through the stage): "
              f"{stages or 'nothing'}" + (f"; not measured: {', '.join(left)}" if left else ""))
    print("totals over methods and seeds (hours):")
    print(f"{'cells':16s} {'train':>9s} {'certify (bound stages)':>23s} {'complete, per 1% reaching it':>29s} "
          f"{'attack':>8s}")
    for s, t in res["totals"].items():
        print(f"{s:16s} {_h(t['train_h'], 9)} {_h(t['certify_bound_stages_h'], 23)} "
              f"{_h(t['complete_h_per_pct'], 29)} {_h(t['attack_h'], 8)}")
    keys = next(iter(res["totals"].values()))
    grand = {k: None if any(t[k] is None for t in res["totals"].values()) else sum(t[k] for t in res["totals"].values())
             for k in keys}
    print(f"{'all':16s} {_h(grand['train_h'], 9)} {_h(grand['certify_bound_stages_h'], 23)} "
          f"{_h(grand['complete_h_per_pct'], 29)} {_h(grand['attack_h'], 8)}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="config/config.yaml", help="grid configuration (default: the paper grid)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--settings", type=lambda s: s.split(","), default=None, help="only these settings, e.g. mnist_0.1")
    p.add_argument("--methods", type=lambda s: s.split(","), default=None, help="only these methods, e.g. ibp,pgd")
    p.add_argument("--batch", type=int, default=None, help="measure training at this batch (default: the cell's)")
    p.add_argument("--cert-batch", type=int, default=16, help="samples per certify/attack measurement (default 16)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats after one warm-up (median; default 3)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    p.add_argument("--stages", type=lambda s: s.split(","), default=list(STAGES),
                   help="what to measure, a subset of train,certify,attack (default: all)")
    p.add_argument("--cert-stages", type=lambda s: s.split(","), default=None,
                   help="measure only these certify stages, e.g. IBP,CROWN-IBP,PGD (default: the grid's cascade); "
                        "the certify total is then reported as unknown ('-')")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    try:
        if args.device.startswith("cuda") and not torch.cuda.is_available():
            raise CTBenchError("--device cuda but CUDA is not available")
        if args.batch is not None and args.batch < 1 or args.cert_batch < 1 or args.repeats < 1:
            raise CTBenchError("--batch, --cert-batch and --repeats must be >= 1")
        unknown = sorted(set(args.stages) - set(STAGES))
        if unknown:
            raise CTBenchError(f"--stages: unknown {', '.join(unknown)}; known: {', '.join(STAGES)}")
        unknown = sorted(set(args.cert_stages or ()) - set(BOUND_STAGES) - {"PGD"})
        if unknown:
            raise CTBenchError(f"--cert-stages: unknown {', '.join(unknown)}; known: "
                               f"{', '.join(BOUND_STAGES + ('PGD',))} (the complete stage is not measured)")
        grid = Grid(load_yaml(args.config))
        res = project(grid, args, torch.device(args.device))
    except CTBenchError as e:
        print(f"grid_cost.py: error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        print_report(res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
