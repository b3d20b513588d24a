"""Robustness-accuracy trade-off (paper Fig. 1, App. B.2 Fig. 8): natural vs certified accuracy per setting.

One panel per setting (dataset, ε) of our grid: per method the literature's best reported values
(transparent, as in Fig. 8), the CTBench paper's values (hollow squares) and ours (solid; mean over seeds
with ± std error bars when several seeds; one marker per architecture), with an arrow from the literature
to ours. The paper's values are CNN7's: they sit beside cells of ``--paper-model`` (cnn7) only. They come
from ``config/literature.yaml`` ``table1`` (``[nat_literature, nat_ctbench, cert_literature,
cert_ctbench, adv_ctbench]``).

Outputs (``--out-dir``): ``tradeoff.{csv,md,tex,png,pdf}``; columns ``dataset, eps, model, method, source
(literature | ctbench paper | ours), nat, cert, nat_std, cert_std, n_seeds`` (percent).
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from ctbench.analysis import cells as C
from ctbench.errors import CTBenchError

KIND = "grid"
STEM = "tradeoff"
SOURCES = ("literature", "ctbench paper", "ours")


def tradeoff_table(rows: list[dict], literature: dict, keep=None, paper_model: str = "cnn7"):
    """Long table: per (setting, model, method) one row for each source that has both accuracies; the
    paper's values (CNN7) sit beside cells of ``paper_model`` only (``any``: beside every model); ``keep``
    (:func:`ctbench.analysis.cells.method_filter`) selects the methods."""
    import numpy as np
    import pandas as pd

    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        c = r["cell"]
        if keep is None or keep(c.label):
            groups.setdefault((c.dataset, c.eps, c.model, c.label), []).append(r)
    out = []
    for (dataset, eps, model, label), members in groups.items():
        key = C.Cell(dataset, eps, model, *label.partition("+")[::2], 0).sort_key()
        lit = C.setting_entry(literature.get("table1", {}), dataset, eps).get(label) or [None] * 5
        if paper_model != "any" and model.lower() != paper_model.lower():
            lit = [None] * 5
        base = {"dataset": dataset, "eps": eps, "model": model, "method": label}
        for k, (source, nat, cert) in enumerate((("literature", lit[0], lit[2]), ("ctbench paper", lit[1], lit[3]))):
            if nat is not None and cert is not None:
                out.append(((key, k), {**base, "source": source, "nat": float(nat), "cert": float(cert),
                                       "nat_std": math.nan, "cert_std": math.nan, "n_seeds": None}))
        nat = np.array([m["nat"] for m in members], float)
        cert = np.array([m["cert"] for m in members], float)
        out.append(((key, 2), {**base, "source": "ours", "nat": float(nat.mean()), "cert": float(cert.mean()),
                               "nat_std": _std(nat), "cert_std": _std(cert), "n_seeds": len(members)}))
    if not out:
        raise CTBenchError("no cells left to plot (check --methods)")
    df = pd.DataFrame([r for _, r in sorted(out, key=lambda kr: kr[0])])
    df["n_seeds"] = df["n_seeds"].astype("Int64")
    return df


def _std(values) -> float:
    """Sample standard deviation (ddof = 1); NaN for a single seed."""
    values = values[~(values != values)]
    return float(values.std(ddof=1)) if len(values) >= 2 else math.nan


def to_latex(df) -> str:
    from ctbench.analysis.gridtables import fmt, latex_table, latex_text, method_name, setting_name

    rows = [[latex_text(setting_name(r["dataset"], r["eps"])), latex_text(f"{method_name(r['method'])} "
                                                                             f"({r['model']})"),
             latex_text(r["source"]), fmt(r["nat"]), fmt(r["cert"])] for r in df.to_dict("records")]
    return latex_table(rows, ["Setting", "Method", "Source", r"Nat. [\%]", r"Cert. [\%]"], group_cols=2, text_cols=3,
                       comment="CTBench Fig. 1/8 data (ctbench analyze tradeoff)")


def figure(df, stem: Path) -> list[Path]:
    """One panel per setting: natural (x) vs certified (y) accuracy per method and source."""
    from matplotlib.lines import Line2D

    from ctbench.analysis.gridtables import method_color, method_name, panels, save_figure, setting_name

    settings = list(dict.fromkeys(zip(df.dataset, df.eps, strict=True)))
    markers = dict(zip(sorted(set(df.model)), "o^vDP*X", strict=False))  # one marker per architecture
    fig, axes = panels(len(settings))
    for ax, (dataset, eps) in zip(axes, settings, strict=True):
        block = df[(df.dataset == dataset) & (df.eps == eps)]
        for (method, model), g in block.groupby(["method", "model"], sort=False):
            color = method_color(method)
            pts = {r["source"]: r for r in g.to_dict("records")}
            if "literature" in pts:
                ax.plot(pts["literature"]["nat"], pts["literature"]["cert"], "o", color=color, alpha=0.35)
            if "ctbench paper" in pts:
                ax.plot(pts["ctbench paper"]["nat"], pts["ctbench paper"]["cert"], "s", mfc="none", color=color)
            ours = pts["ours"]
            ax.errorbar(ours["nat"], ours["cert"], xerr=_err(ours["nat_std"]), yerr=_err(ours["cert_std"]),
                        fmt=markers.get(model, "o"), color=color, label=method_name(method) + (f" ({model})" if len(
                            set(block.model)) > 1 else ""))
            if "literature" in pts:
                ax.annotate("", (ours["nat"], ours["cert"]), (pts["literature"]["nat"], pts["literature"]["cert"]),
                            arrowprops={"arrowstyle": "->", "color": color, "alpha": 0.5, "lw": 0.8})
        ax.set_xlabel("natural accuracy [%]")
        ax.set_ylabel("certified accuracy [%]")
        ax.set_title(setting_name(dataset, eps))
        handles = ax.get_legend_handles_labels()[0]
        if ax is axes[0]:  # which marker is which source, once
            handles += [Line2D([], [], marker="o", ls="", color="grey", alpha=0.35, label="literature"),
                        Line2D([], [], marker="s", ls="", mfc="none", color="grey", label="CTBench paper"),
                        Line2D([], [], marker="o", ls="", color="grey", label="ours (± std over seeds)")]
        ax.legend(handles=handles, fontsize="x-small", loc="best")
    return save_figure(fig, stem)


def _err(std: float):
    return None if std is None or math.isnan(std) else std


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--metrics", nargs="+", required=True, type=Path, help="metrics.json of the cells")
    parser.add_argument("--literature", type=Path, default=Path("config/literature.yaml"))
    parser.add_argument("--methods", default="certified",
                        help="methods shown: 'certified' (default: all but standard, PGD, EDAC), 'all', "
                             "or a comma list")
    parser.add_argument("--paper-model", default="cnn7",
                        help="architecture of the paper's values; they are drawn beside this model only ('any': all)")
    parser.add_argument("--out-dir", type=Path, default=Path("results/analysis"))
    parser.add_argument("--no-figure", action="store_true", help="tables only")


def run(args: argparse.Namespace) -> int:
    from ctbench.analysis.gridtables import write_tables

    literature = C.load_literature(args.literature)
    df = tradeoff_table(C.read_metrics(args.metrics), literature, C.method_filter(args.methods), args.paper_model)
    written = write_tables(args.out_dir, STEM, df, latex=to_latex(df),
                           title="Natural vs certified accuracy: ours beside the literature and the CTBench paper "
                                 "(Fig. 1, 8), percent")
    if not args.no_figure:
        written += figure(df, Path(args.out_dir) / STEM)
    for p in written:
        print(f"wrote {p}")
    return 0
