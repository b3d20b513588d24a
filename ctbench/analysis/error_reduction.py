"""Reduction in certified error (paper Fig. 1): per setting and method, our certified error beside the
literature's best reported one and the CTBench paper's.

Certified error is 100 − certified accuracy (percent; paper §4.1 "Metrics": one minus the certified
accuracy). Per (dataset, ε, model, method) of the grid, ours is the mean over seeds of the cells'
``metrics.json`` certified accuracy; the literature's and the CTBench paper's values come from
``config/literature.yaml`` ``table1`` (``[nat_literature, nat_ctbench, cert_literature, cert_ctbench,
adv_ctbench]``; CNN7 on the full test set). Two reductions of the error against the literature's:

* ``*_reduction_pp`` — absolute, in percentage points: ``err_literature − err`` (positive = lower error);
* ``*_reduction_rel_pct`` — relative, the paper's definition (§5.1: "(100−93.10)/(100−93.62)−1 = 8.15 %
  relative certified error reduction"): ``err_literature / err − 1`` in percent (infinite for err = 0).

The ``paper_*`` columns are the same for the CTBench paper's own Table 1 value (the bars of its Fig. 1);
the ``reduction_*`` columns are ours. Rows of another architecture than ``--paper-model`` (cnn7) or of
a reduced dataset (``mnist_mini``) are compared all the same, as Table 1 does, but column ``comparable``
says ``no: ...`` — the literature's numbers are CNN7's on the full test set, so there the difference is
not the implementation's alone.

Outputs (``--out-dir``): ``error_reduction.{csv,md,tex,png,pdf}``; columns ``dataset, eps, model, method,
n_seeds, n_samples, cert_literature, cert_paper, cert, cert_std, err_literature, err_paper, err, err_std,
reduction_pp, reduction_rel_pct, paper_reduction_pp, paper_reduction_rel_pct, comparable``.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from ctbench.analysis import cells as C
from ctbench.errors import CTBenchError

NAME = "error_reduction"
INPUTS = {"metrics": ("table1", "metrics.json"), "literature": "config:literature"}  # ctbench.analysis.protocol
SOURCES = (("literature", "err_literature"), ("CTBench paper", "err_paper"), ("ours", "err"))


def relative_reduction(err_before: float, err_after: float) -> float:
    """The paper's relative certified error reduction ``err_before / err_after − 1``, in percent."""
    if math.isnan(err_before) or math.isnan(err_after):
        return math.nan
    if err_after == 0:
        return math.inf if err_before > 0 else 0.0
    return 100.0 * (err_before / err_after - 1.0)


def reduction_table(rows: list[dict], literature: dict, keep=None, paper_model: str = "cnn7"):
    """One row per (setting, model, method) of :func:`ctbench.analysis.cells.read_metrics` rows (percent)."""
    import numpy as np
    import pandas as pd

    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        c = r["cell"]
        if keep is None or keep(c.label):
            groups.setdefault((c.dataset, c.eps, c.model, c.label), []).append(r)
    if not groups:
        raise CTBenchError("no cells left (check --methods)")
    out = []
    for (dataset, eps, model, label), members in groups.items():
        key = C.Cell(dataset, eps, model, *label.partition("+")[::2], 0).sort_key()
        lit = C.setting_entry(literature.get("table1", {}), dataset, eps).get(label) or [None] * 5
        cert_lit = math.nan if lit[2] is None else float(lit[2])
        cert_paper = math.nan if lit[3] is None else float(lit[3])
        cert = np.array([m["cert"] for m in members], float)
        cert = cert[~np.isnan(cert)]
        mean = float(cert.mean()) if len(cert) else math.nan
        std = float(cert.std(ddof=1)) if len(cert) >= 2 else math.nan
        samples = sorted({int(m["meta"]["n"]) for m in members if m["meta"].get("n") is not None})
        err_lit, err_paper, err = 100.0 - cert_lit, 100.0 - cert_paper, 100.0 - mean
        out.append((key, {
            "dataset": dataset, "eps": eps, "model": model, "method": label, "n_seeds": len(members),
            "n_samples": "/".join(map(str, samples)) if samples else "",
            "cert_literature": cert_lit, "cert_paper": cert_paper, "cert": mean, "cert_std": std,
            "err_literature": err_lit, "err_paper": err_paper, "err": err, "err_std": std,
            "reduction_pp": err_lit - err, "reduction_rel_pct": relative_reduction(err_lit, err),
            "paper_reduction_pp": err_lit - err_paper,
            "paper_reduction_rel_pct": relative_reduction(err_lit, err_paper),
            "comparable": comparable(dataset, model, paper_model)}))
    df = pd.DataFrame([r for _, r in sorted(out, key=lambda kr: kr[0])])
    df["n_seeds"] = df["n_seeds"].astype("Int64")
    return df


def comparable(dataset: str, model: str, paper_model: str = "cnn7") -> str:
    """``yes``, or ``no: <why>`` where the literature's CNN7 / full-test-set numbers are another experiment."""
    why = []
    if paper_model != "any" and model.lower() != paper_model.lower():
        why.append(f"{model} (literature: {paper_model.upper()})")
    if dataset == "mnist_mini":
        why.append("mnist_mini (literature: MNIST)")
    return "no: " + ", ".join(why) if why else "yes"


def notes(df, literature_path) -> list[str]:
    seeds = ", ".join(sorted({str(n) for n in df["n_seeds"]}))
    samples = ", ".join(sorted({s for s in df["n_samples"].astype(str) if s})) or "unknown"
    out = [f"Data: ours from {int(df['n_seeds'].sum())} cells' metrics.json (seeds per row: {seeds}; certified "
           f"test samples per cell: {samples}); literature and CTBench paper from {literature_path} `table1` "
           "(paper Table 1, CNN7, full test set, 1 seed).",
           "Certified error = 100 − certified accuracy [%]. `reduction_pp` = literature's error − ours (points, "
           "positive = ours lower); `reduction_rel_pct` = literature's error / ours − 1 [%], the paper's relative "
           "certified error reduction (§5.1); `paper_*` the same for the CTBench paper's value (its Fig. 1 bars).",
           "Figure (error_reduction.png): certified error per method — literature (faded), CTBench paper (hollow), "
           "ours (filled, ± std over seeds); the label above each of ours is its reduction against the literature "
           "(points and relative). Lower is better."]
    if (df["comparable"] != "yes").any():
        out.append("Rows with `comparable` = no are not the paper's experiment (another architecture or a reduced "
                   "dataset): their reduction mixes the implementation with the smaller setting.")
    return out


def to_latex(df) -> str:
    from ctbench.analysis.gridtables import fmt, latex_table, latex_text, method_name, setting_name

    rows = [[latex_text(setting_name(r["dataset"], r["eps"])), latex_text(f"{method_name(r['method'])} ({r['model']})"),
             fmt(r["err_literature"]), fmt(r["err_paper"]), fmt(r["err"]), fmt(r["paper_reduction_rel_pct"], 1),
             fmt(r["reduction_rel_pct"], 1)] for r in df.to_dict("records")]
    header = ["Setting", "Method", r"Lit. err. [\%]", r"CTBench err. [\%]", r"Our err. [\%]",
              r"CTBench red. [\%]", r"Our red. [\%]"]
    return latex_table(rows, header, group_cols=1, text_cols=2,
                       comment="CTBench Fig. 1 data: certified error and its relative reduction vs the literature "
                               "(ctbench analyze error_reduction)")


def _label(r) -> str:
    from ctbench.analysis.gridtables import fmt

    if math.isnan(r["reduction_pp"]):
        return ""
    rel = "∞" if math.isinf(r["reduction_rel_pct"]) else fmt(r["reduction_rel_pct"], 0)
    return f"{r['reduction_pp']:+.1f} pp\n({rel} %)"


def figure(tables: list, out_stem: Path) -> list[Path]:
    """One panel per (setting, model): bars of certified error per method and source, ours labelled with its
    reduction against the literature; ``note`` (sample count and data source) below. Bars carry gid
    ``"<source>|<method>"``."""
    import numpy as np

    from ctbench.analysis.gridtables import method_color, method_name, one_table, panels, save_figure, setting_name

    df, note = one_table(tables)

    keys = list(dict.fromkeys(zip(df.dataset, df.eps, df.model, strict=True)))
    fig, axes = panels(len(keys))
    width = 0.27
    for ax, (dataset, eps, model) in zip(axes, keys, strict=True):
        block = df[(df.dataset == dataset) & (df.eps == eps) & (df.model == model)]
        x = np.arange(len(block))
        for k, (source, col) in enumerate(SOURCES):
            for xi, r in zip(x, block.to_dict("records"), strict=True):
                if math.isnan(r[col]):
                    continue
                color = method_color(r["method"])
                style = {"literature": {"color": color, "alpha": 0.3},
                         "CTBench paper": {"facecolor": "none", "edgecolor": color, "hatch": "///"},
                         "ours": {"color": color}}[source]
                yerr = r["err_std"] if source == "ours" and not math.isnan(r["err_std"]) else None
                (bar,) = ax.bar(xi + (k - 1) * width, r[col], width, yerr=yerr, capsize=2, **style)
                bar.set_gid(f"{source}|{r['method']}")
                if source == "ours":
                    ax.annotate(_label(r), (xi + (k - 1) * width, r[col] + (yerr or 0)), xytext=(0, 2),
                                textcoords="offset points", ha="center", va="bottom", fontsize=5)
        ax.set_xticks(x, [method_name(m) for m in block.method], rotation=30, ha="right")
        ax.set_ylabel("certified error [%] (lower is better)")
        ax.set_ylim(0, 1.5 * max(np.nanmax(block[[c for _, c in SOURCES]].to_numpy(float)), 1e-9))
        title = f"{setting_name(dataset, eps)}, {model}"
        if (block["comparable"] != "yes").all():
            title += "\n(not the literature's setup: CNN7 on the full test set)"
        ax.set_title(title)
    from matplotlib.patches import Patch

    key = [Patch(color="grey", alpha=0.3, label="literature"),
           Patch(facecolor="none", edgecolor="grey", hatch="///", label="CTBench paper"),
           Patch(color="grey", label="ours")]
    axes[0].legend(handles=key, fontsize="x-small", loc="upper center", ncol=3)
    return save_figure(fig, out_stem, note)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--metrics", nargs="+", required=True, type=Path, help="metrics.json of the cells")
    parser.add_argument("--literature", type=Path, default=Path("config/literature.yaml"))
    parser.add_argument("--methods", default="certified",
                        help="methods shown: 'certified' (default: all but standard, PGD, EDAC), 'all', "
                             "or a comma list")
    parser.add_argument("--paper-model", default="cnn7",
                        help="architecture of the literature's values: other models are marked not comparable "
                             "('any': none is)")
    parser.add_argument("--out-dir", type=Path, default=Path("results/analysis"))
    parser.add_argument("--no-figure", action="store_true", help="tables only")


def run(args: argparse.Namespace) -> int:
    from ctbench.analysis.gridtables import metrics_note, with_note, write_tables

    literature = C.load_literature(args.literature)
    keep = C.method_filter(args.methods)
    rows = C.read_metrics(args.metrics)
    note = (metrics_note([r for r in rows if keep(r["cell"].label)]) + " Literature and CTBench-paper values: "
            f"as published ({args.literature} table1).")
    df = reduction_table(rows, literature, keep, args.paper_model)
    written = write_tables(args.out_dir, NAME, df, latex=to_latex(df), notes=notes(df, args.literature),
                           title="Reduction in certified error against the literature (Fig. 1), percent",
                           data_note=note)
    if not args.no_figure:
        written += figure([with_note(df, note)], Path(args.out_dir) / NAME)
    for p in written:
        print(f"wrote {p}")
    return 0
