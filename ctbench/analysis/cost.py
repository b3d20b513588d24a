"""Cost (paper App. C.6, Table 12): wall time of each workflow stage per cell, with the hardware named.

Input: the Snakemake ``benchmark:`` files of the rules, ``<cell dir>/benchmarks/<rule>.tsv`` (rule =
train, select, certify, attack, ...; the file name is the rule, as Snakemake's directive writes it). Their
format: header ``s  h:m:s  max_rss  max_vms  max_uss  max_pss  io_in  io_out  mean_load  cpu_time``
(tab-separated), one row per repeat; a stage's time is the mean of ``s`` over the repeats.

A benchmark file has no cell identity of its own: it belongs to the cell whose ``certify.h5`` /
``metrics.json`` (given with ``--certify`` / ``--metrics``) lies in the same cell directory (the parent
of ``benchmarks/``); unmatched files are listed by that directory. ``--certify`` also adds the cascade's
per-stage seconds (``stage_time_s``) as ``stage_<stage>_s``. The hardware is ``--hardware``, else the
``hardware`` attribute of those files (or of their ``model_provenance``), else ``unknown``.

Outputs (``--out-dir``): ``cost.{csv,md,tex,png,pdf}``; columns ``dataset, eps, model, method, seed,
cell_dir, hardware, <rule>_s ..., total_s, max_rss_mb, stage_<stage>_s ...`` (seconds).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from ctbench.analysis import cells as C
from ctbench.errors import CTBenchError

KIND = "grid"
STEM = "cost"
RULE_ORDER = ("train", "select", "certify", "attack", "summarize")
HARDWARE_KEYS = ("hardware", "gpu_name", "device_name")


def read_benchmark(path: str | Path) -> dict:
    """One Snakemake benchmark TSV → ``{"s": mean seconds over repeats, "max_rss_mb": max, "repeats": n}``."""
    import pandas as pd

    try:
        df = pd.read_csv(path, sep="\t", na_values=["NA", "-"])
    except (OSError, ValueError) as e:
        raise CTBenchError(f"cannot read benchmark file {path}: {str(e).splitlines()[0]}") from None
    if "s" not in df.columns or df.empty:
        raise CTBenchError(f"{path} is not a Snakemake benchmark file (needs a header with column 's' and a row)")
    rss = pd.to_numeric(df.get("max_rss"), errors="coerce") if "max_rss" in df else None
    return {"s": float(pd.to_numeric(df["s"], errors="coerce").mean()), "repeats": len(df),
            "max_rss_mb": float(rss.max()) if rss is not None and rss.notna().any() else math.nan}


def _hardware_of(meta: dict) -> str | None:
    for source in (meta, meta.get("model_provenance") if isinstance(meta.get("model_provenance"), dict) else {}):
        for k in HARDWARE_KEYS:
            if source.get(k):
                return str(source[k])
    return None


def identities(certify=(), metrics=()) -> dict[Path, dict]:
    """Cell directory → ``{"cell", "hardware", "stage_s"}`` from the given identity files."""
    out: dict[Path, dict] = {}
    for item in C.read_all(certify):
        stage_s = dict(zip(item.stages, map(float, item.data.get("stage_time_s", [])), strict=False))
        out[item.path.parent.resolve()] = {"cell": item.cell, "hardware": _hardware_of(item.attrs),
                                           "device": item.attrs.get("device"), "stage_s": stage_s}
    for row in C.read_metrics(metrics):
        entry = out.setdefault(row["path"].parent.resolve(), {"cell": row["cell"], "stage_s": {}, "device": None,
                                                              "hardware": None})
        entry["hardware"] = entry["hardware"] or _hardware_of(row["meta"])
    return out


def cost_table(benchmarks, certify=(), metrics=(), hardware: str | None = None):
    """One row per cell (seconds), sorted in the paper's order."""
    import pandas as pd

    known = identities(certify, metrics)
    cells: dict[Path, dict] = {}
    for p in C.require(benchmarks, "benchmark"):
        cell_dir = p.parent.parent.resolve()
        b = read_benchmark(p)
        row = cells.setdefault(cell_dir, {"_rss": []})
        row[f"{p.stem}_s"] = b["s"]
        row["_rss"].append(b["max_rss_mb"])
    rows = []
    for cell_dir, times in cells.items():
        ident = known.get(cell_dir, {})
        cell = ident.get("cell")
        hw = hardware or ident.get("hardware") or (f"unknown (device {ident['device']})" if ident.get("device")
                                                   else "unknown")
        rule_cols = sorted((k for k in times if k.endswith("_s")), key=_rule_key)
        row = {"dataset": cell.dataset if cell else "", "eps": cell.eps if cell else "",
               "model": cell.model if cell else "", "method": cell.label if cell else "",
               "seed": cell.seed if cell else "", "cell_dir": str(cell_dir), "hardware": hw,
               **{k: times[k] for k in rule_cols}}
        row["total_s"] = float(sum(times[k] for k in rule_cols))
        rss = [v for v in times["_rss"] if not math.isnan(v)]
        row["max_rss_mb"] = max(rss) if rss else math.nan
        row.update({f"stage_{s}_s": t for s, t in ident.get("stage_s", {}).items()})
        rows.append((cell, row))
    rows.sort(key=lambda cr: (cr[0] is None, cr[0].sort_key() if cr[0] else cr[1]["cell_dir"]))
    df = pd.DataFrame([r for _, r in rows])
    first = ["dataset", "eps", "model", "method", "seed", "cell_dir", "hardware"]
    stages = [c for c in df.columns if c.startswith("stage_")]
    return df[first + sorted(rule_columns(df), key=_rule_key) + ["total_s", "max_rss_mb"] + stages]


def rule_columns(df) -> list[str]:
    """The ``<rule>_s`` columns (not ``total_s``, not the cascade's ``stage_<stage>_s``)."""
    return [c for c in df.columns if c.endswith("_s") and not c.startswith("stage_") and c != "total_s"]


def _rule_key(col: str) -> tuple:
    rule = col[:-2]
    return (RULE_ORDER.index(rule) if rule in RULE_ORDER else len(RULE_ORDER), rule)


def to_latex(df) -> str:
    """Table 12's layout: Dataset, ε, Method, then one time column per rule (seconds, ``a×10^b``)."""
    from ctbench.analysis.gridtables import DATASET_NAMES, latex_table, latex_text, method_name, sci_tex

    rules = rule_columns(df)
    rows = [[latex_text(DATASET_NAMES.get(r["dataset"], r["dataset"]) or r["cell_dir"]),
             f"${latex_text(r['eps'])}$" if r["eps"] else "", latex_text(f"{r['model']} seed{r['seed']}"),
             latex_text(method_name(r["method"])), *(sci_tex(r[c]) for c in rules), sci_tex(r["total_s"])]
            for r in df.to_dict("records")]
    header = ["Dataset", r"$\epsilon$", "Model", "Method",
              *(latex_text(c[:-2].replace("_", " ").capitalize()) + " (s)" for c in rules), "Total (s)"]
    hw = "; ".join(sorted(set(df["hardware"])))
    return latex_table(rows, header, group_cols=2, align="llll" + "r" * (len(rules) + 1),
                       comment=f"CTBench Table 12 layout (ctbench analyze cost); hardware: {hw}")


def figure(df, stem: Path) -> list[Path]:
    """Seconds per rule for each cell (log scale), one panel per setting."""
    import numpy as np

    from ctbench.analysis.gridtables import method_name, panels, save_figure, setting_name

    rules = rule_columns(df)
    settings = list(dict.fromkeys(zip(df.dataset, df.eps, strict=True)))
    fig, axes = panels(len(settings))
    for ax, (dataset, eps) in zip(axes, settings, strict=True):
        block = df[(df.dataset == dataset) & (df.eps == eps)]
        x = np.arange(len(block))
        width = 0.8 / max(len(rules), 1)
        for k, col in enumerate(rules):
            ax.bar(x + (k - (len(rules) - 1) / 2) * width, block[col].to_numpy(float), width, label=col[:-2])
        labels = [f"{method_name(m)} s{s}" for m, s in zip(block.method, block.seed, strict=True)]
        ax.set_xticks(x, labels, rotation=45, ha="right")
        ax.set_yscale("log")
        ax.set_ylabel("wall time [s]")
        ax.set_title(setting_name(dataset, eps) if dataset else "unidentified cells")
    axes[0].legend()
    return save_figure(fig, stem)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--benchmarks", nargs="+", required=True, type=Path,
                        help="Snakemake benchmark files <cell dir>/benchmarks/<rule>.tsv")
    parser.add_argument("--certify", nargs="*", type=Path, default=[],
                        help="certify.h5 of the cells: identity, hardware and per-stage certification seconds")
    parser.add_argument("--metrics", nargs="*", type=Path, default=[], help="metrics.json of the cells (identity)")
    parser.add_argument("--hardware", default=None,
                        help="hardware description (default: from the files' provenance, else 'unknown')")
    parser.add_argument("--out-dir", type=Path, default=Path("results/analysis"))
    parser.add_argument("--no-figure", action="store_true", help="tables only")


def run(args: argparse.Namespace) -> int:
    from ctbench.analysis.gridtables import write_tables

    df = cost_table(args.benchmarks, args.certify, args.metrics, args.hardware)
    hw = "; ".join(sorted(set(df["hardware"])))
    notes = [f"Hardware: {hw}."]
    if (df["dataset"] == "").any():
        notes.append("Cells without a given certify.h5/metrics.json are named by their directory (`cell_dir`).")
    written = write_tables(args.out_dir, STEM, df, latex=to_latex(df), notes=notes,
                           title=f"Wall time per stage and cell [s] (Table 12; hardware: {hw})")
    if not args.no_figure:
        written += figure(df, Path(args.out_dir) / STEM)
    for p in written:
        print(f"wrote {p}")
    return 0
