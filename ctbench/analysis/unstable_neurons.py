"""Unstable neurons, sampled lower vs IBP upper estimate (paper App. B.7, Table 5), per method.

Input: the per-model fragmentation tables (``results/.../analysis/fragmentation.parquet``, written by
``ctbench analyze fragmentation``; one row per (test input, evaluation ε) with ``unstable_lower_pct`` — the
share of ReLU neurons seen with both signs among the sampled points of the ε-ball — and ``unstable_ibp_pct``
— the share with l < 0 < u on the IBP box, Shi et al. 2021's measure). Per model the two are averaged over
its inputs; per (dataset, training ε, model, method, evaluation ε) over the models (seeds), with the
sample standard deviation over seeds (ddof = 1; empty for one seed). ``gap_pp`` is IBP's estimate minus the
sampled one: the paper observes it grows for the SOTA methods (SABR, STAPS, MTL-IBP), as does their
IBP-vs-complete certification gap (Table 22).

The CTBench paper's values (``config/literature.yaml`` ``table5``: CIFAR-10 2/255, CNN7, at the training ε)
sit beside rows of ``--paper-model`` evaluated at their training ε only.

Outputs (``--out-dir``): ``unstable_neurons.{csv,md,tex,png,pdf}``; columns ``dataset, eps, model, method,
eval_eps, n_models, n_inputs, samples, lower_pct, lower_std, ibp_pct, ibp_std, gap_pp, paper_lower_pct,
paper_ibp_pct`` (percent of the model's ReLU neurons).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from ctbench.analysis import cells as C
from ctbench.errors import CTBenchError

NAME = "unstable_neurons"
INPUTS = {"tables": ("table1", "analysis/fragmentation.parquet"),  # ctbench.analysis.protocol
          "literature": "config:literature"}
REQUIRED = ("dataset", "eps", "model", "method", "seed", "eval_eps_str", "unstable_lower_pct", "unstable_ibp_pct")


def read_tables(paths) -> list[tuple[Path, object, dict]]:
    """``(path, DataFrame, provenance)`` of each fragmentation table; a clear error for a missing file or
    one that is not a fragmentation table."""
    from ctbench.analysis.tables import read_table

    out = []
    for p in C.require(paths, "fragmentation"):
        df, prov = read_table(p)
        lacking = [c for c in REQUIRED if c not in df.columns]
        if lacking:
            raise CTBenchError(f"{p} is not a fragmentation table (missing column(s) {', '.join(lacking)})")
        out.append((Path(p), df, prov))
    return out


def _std(values) -> float:
    return float(values.std(ddof=1)) if len(values) >= 2 else math.nan


def unstable_table(tables, literature: dict | None = None, keep=None, paper_model: str = "cnn7"):
    """One row per (dataset, ε, model, method, evaluation ε) from :func:`read_tables`' items (percent)."""
    import numpy as np
    import pandas as pd

    per_model = []
    for path, df, _ in tables:
        df = df.assign(variant=df["variant"].fillna("") if "variant" in df.columns else "")
        for key, g in df.groupby(["dataset", "eps", "model", "method", "variant", "seed", "eval_eps_str"], sort=False):
            dataset, eps, model, method, variant, seed, ev = key
            label = f"{method}+{variant}" if variant else method
            if keep is not None and not keep(label):
                continue
            per_model.append({"dataset": str(dataset), "eps": str(eps).replace("_", "/"), "model": str(model),
                              "method": label, "seed": seed, "eval_eps": str(ev), "path": path,
                              "n_inputs": len(g), "samples": int(g["samples"].iloc[0]) if "samples" in g else None,
                              "lower": float(g["unstable_lower_pct"].mean()),
                              "ibp": float(g["unstable_ibp_pct"].mean())})
    if not per_model:
        raise CTBenchError("no fragmentation rows left (check --methods)")
    table5 = (literature or {}).get("table5", {})
    groups: dict[tuple, list[dict]] = {}
    for r in per_model:
        groups.setdefault((r["dataset"], r["eps"], r["model"], r["method"], r["eval_eps"]), []).append(r)
    out = []
    for (dataset, eps, model, label, ev), members in groups.items():
        key = (*C.Cell(dataset, eps, model, *label.partition("+")[::2], 0).sort_key(), C.eps_value(ev))
        lower = np.array([m["lower"] for m in members])
        ibp = np.array([m["ibp"] for m in members])
        paper = [None, None]
        at_training_eps = math.isclose(C.eps_value(ev), C.eps_value(eps), rel_tol=1e-9)
        if at_training_eps and (paper_model == "any" or model.lower() == paper_model.lower()):
            paper = C.setting_entry(table5, dataset, eps).get(label) or paper
        inputs = sorted({m["n_inputs"] for m in members})
        samples = sorted({m["samples"] for m in members if m["samples"] is not None})
        out.append((key, {
            "dataset": dataset, "eps": eps, "model": model, "method": label, "eval_eps": ev,
            "n_models": len(members), "n_inputs": "/".join(map(str, inputs)),
            "samples": "/".join(map(str, samples)),
            "lower_pct": float(lower.mean()), "lower_std": _std(lower), "ibp_pct": float(ibp.mean()),
            "ibp_std": _std(ibp), "gap_pp": float(ibp.mean() - lower.mean()),
            "paper_lower_pct": math.nan if paper[0] is None else float(paper[0]),
            "paper_ibp_pct": math.nan if paper[1] is None else float(paper[1])}))
    return pd.DataFrame([r for _, r in sorted(out, key=lambda kr: kr[0])])


def data_note(tables) -> str:
    """The sample count and data source in one line (:func:`ctbench.analysis.gridtables.samples_note`): per
    (dataset, split) the test inputs per model and which ones, from the tables' ``index`` column."""
    import numpy as np

    from ctbench.analysis.gridtables import samples_note

    entries = []
    for _, df, prov in tables:
        dataset = df["eval_dataset"].iloc[0] if "eval_dataset" in df.columns else df["dataset"].iloc[0]
        if "index" in df.columns:  # the input's position in the split
            entries.append((dataset, prov.get("split"), np.unique(df["index"].to_numpy())))
        else:
            entries.append((dataset, prov.get("split"), int(df.groupby("eval_eps_str").size().max())))
    samples = sorted({str(s) for _, df, _ in tables if "samples" in df.columns for s in df["samples"].unique()})
    return (samples_note(entries, unit="test inputs", source="fragmentation.parquet", per="model")
            + f" Each input: {'/'.join(samples) or 'an unrecorded number of'} sampled points in its ε-ball.")


def notes(df, tables) -> list[str]:
    splits = sorted({str(prov.get("split", "test")) for _, _, prov in tables})
    sources = sorted({str(v) for _, t, _ in tables for v in (t["eval_dataset"].unique() if "eval_dataset" in t.columns
                                                              else t["dataset"].unique())})
    seeds = sorted({str(prov.get("seed", "")) for _, _, prov in tables})
    return [f"Data: {len(tables)} fragmentation table(s) (results/<cell>/analysis/fragmentation.parquet, `ctbench "
            f"analyze fragmentation`), one per model; inputs per model: {', '.join(sorted(set(df['n_inputs'])))} "
            f"(the first inputs of the {'/'.join(splits)} split of {', '.join(sources)}); sampled points per input: "
            f"{', '.join(sorted(set(df['samples']))) or 'unknown'} (noise seed {', '.join(seeds)}).",
            "Per model the percentages are averaged over its inputs; a row averages its models (`n_models`, seeds; "
            "`*_std` = std over them). `lower_pct`: sampled lower estimate of the unstable ReLU share; `ibp_pct`: "
            "IBP's upper estimate; `gap_pp` = ibp − lower. `paper_*`: the CTBench paper's Table 5 (CNN7, CIFAR-10 "
            "2/255, at the training ε) where this row is that experiment.",
            "Figure (unstable_neurons.png): per method the sampled lower estimate (filled) and IBP's upper estimate "
            "(hatched), the paper's values as black ticks where known; one panel per setting, model and "
            "evaluation ε."]


def to_latex(df) -> str:
    """Table 5's layout: Method, lower bound, upper bound (IBP); a block per setting (and evaluation ε)."""
    from ctbench.analysis.gridtables import fmt, latex_table, latex_text, method_name, setting_name

    def block(r):
        name = f"{setting_name(r['dataset'], r['eps'])} ({r['model']})"
        return name if r["eval_eps"] == r["eps"] else f"{name} at ε={r['eval_eps']}"

    rows = [[latex_text(block(r)), latex_text(method_name(r["method"])), fmt(r["lower_pct"]), fmt(r["ibp_pct"]),
             fmt(r["paper_lower_pct"]), fmt(r["paper_ibp_pct"])] for r in df.to_dict("records")]
    pre = [r"& & \multicolumn{2}{c}{Ours [\%]} & \multicolumn{2}{c}{CTBench paper [\%]} \\"]
    header = ["Setting", "Method", "lower bound", "upper bound (IBP)", "lower bound", "upper bound (IBP)"]
    return latex_table(rows, header, group_cols=1, text_cols=2, pre_header=pre,
                       comment="CTBench Table 5 layout: unstable neurons, sampled lower vs IBP upper estimate "
                               "(ctbench analyze unstable_neurons)")


def figure(tables: list, out_stem: Path) -> list[Path]:
    """Bars per method: sampled lower (filled) and IBP upper (hatched) estimate; the paper's as black ticks;
    ``note`` (sample count and data source) below."""
    import numpy as np

    from ctbench.analysis.gridtables import method_color, method_name, one_table, panels, save_figure, setting_name

    df, note = one_table(tables)

    keys = list(dict.fromkeys(zip(df.dataset, df.eps, df.model, df.eval_eps, strict=True)))
    fig, axes = panels(len(keys))
    width = 0.38
    for ax, (dataset, eps, model, ev) in zip(axes, keys, strict=True):
        block = df[(df.dataset == dataset) & (df.eps == eps) & (df.model == model) & (df.eval_eps == ev)]
        x = np.arange(len(block))
        colors = [method_color(m) for m in block.method]
        lower_err, ibp_err = (_errors(block[c]) for c in ("lower_std", "ibp_std"))
        ax.bar(x - width / 2, block["lower_pct"], width, color=colors, yerr=lower_err, capsize=2,
               label="sampled lower estimate")
        ax.bar(x + width / 2, block["ibp_pct"], width, facecolor="none", edgecolor=colors, hatch="///",
               yerr=ibp_err, capsize=2, label="IBP upper estimate")
        for dx, col in ((-width / 2, "paper_lower_pct"), (width / 2, "paper_ibp_pct")):
            v = block[col].to_numpy(float)
            shown = ~np.isnan(v)
            if shown.any():
                ax.scatter(x[shown] + dx, v[shown], marker="_", s=120, color="black", zorder=3,
                           label="CTBench paper" if dx < 0 else None)
        ax.set_xticks(x, [method_name(m) for m in block.method], rotation=30, ha="right")
        ax.set_ylabel("unstable ReLUs [%]")
        title = f"{setting_name(dataset, eps)}, {model}"
        ax.set_title(title if ev == eps else f"{title}\nevaluated at ε={ev}")
    axes[0].legend(fontsize="x-small", loc="best")
    return save_figure(fig, out_stem, note)


def _errors(std):
    """Error bars from a std column: None where no row has one (a single seed), else NaN → 0."""
    import numpy as np

    values = std.to_numpy(float)
    return None if np.isnan(values).all() else np.nan_to_num(values)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tables", nargs="+", required=True, type=Path,
                        help="fragmentation.parquet of the cells (ctbench analyze fragmentation)")
    parser.add_argument("--literature", type=Path, default=Path("config/literature.yaml"))
    parser.add_argument("--methods", default="all",
                        help="methods shown: 'all' (default), 'certified' (all but standard, PGD, EDAC), "
                             "or a comma list")
    parser.add_argument("--paper-model", default="cnn7",
                        help="architecture of the paper's values; they sit beside this model only ('any': all)")
    parser.add_argument("--out-dir", type=Path, default=Path("results/analysis"))
    parser.add_argument("--no-figure", action="store_true", help="tables only")


def run(args: argparse.Namespace) -> int:
    from ctbench.analysis.gridtables import with_note, write_tables

    literature = C.load_literature(args.literature)
    tables = read_tables(args.tables)
    df = unstable_table(tables, literature, C.method_filter(args.methods), args.paper_model)
    note = data_note(tables)
    written = write_tables(args.out_dir, NAME, df, latex=to_latex(df), notes=notes(df, tables),
                           title="Unstable neurons: sampled lower vs IBP upper estimate (Table 5), percent",
                           data_note=note)
    if not args.no_figure:
        written += figure([with_note(df, note)], Path(args.out_dir) / NAME)
    for p in written:
        print(f"wrote {p}")
    return 0
