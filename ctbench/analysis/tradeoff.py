"""Robustness-accuracy trade-off (paper Fig. 1, App. B.2 Fig. 8): natural vs certified accuracy per setting.

One panel per setting (dataset, ε) of our grid: per method the literature's best reported values
(faded, as in Fig. 8), the CTBench paper's values (hollow) and ours (filled; mean over seeds with ± std
error bars when several seeds), with an arrow from the literature to ours. Each method has its own colour
and marker shape (the paper's method order); a second series of the same method in a panel (another
architecture or variant) is half-filled. Points that lie within a marker's width of each other are drawn
side by side — shifted horizontally by whole marker widths around their common place, in the table's order
— so that none hides another (e.g. IBP and CROWN-IBP of equal accuracies); the x label of such a panel says
so, and the table holds the exact values. The legend of a panel lists only what it shows: its methods and
the sources (literature, CTBench paper) that have points there. The paper's values are CNN7's: they sit
beside cells of ``--paper-model`` (cnn7) only. They come from ``config/literature.yaml`` ``table1``
(``[nat_literature, nat_ctbench, cert_literature, cert_ctbench, adv_ctbench]``).

Outputs (``--out-dir``): ``tradeoff.{csv,md,tex,png,pdf}``; columns ``dataset, eps, model, method, source
(literature | ctbench paper | ours), nat, cert, nat_std, cert_std, n_seeds`` (percent). The tables and the
figure state the sample count and data source of ours (``gridtables.metrics_note``: n per cell as each
``metrics.json`` records it); the literature's and the paper's values are as published.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from ctbench.analysis import cells as C
from ctbench.errors import CTBenchError

NAME = "tradeoff"
INPUTS = {"metrics": ("table1", "metrics.json"), "literature": "config:literature"}  # ctbench.analysis.protocol
SOURCES = ("literature", "ctbench paper", "ours")
MARKERS = "osD^vPX*hp"  # one shape per method, in the paper's method order (ctbench.analysis.style.METHOD_ORDER)
MARKER_SIZE = 6.0  # points
HALF_FILLS = ("full", "left", "bottom", "right", "top")  # 2nd, 3rd, ... series of one method in a panel
DODGE_NOTE = "points within a marker's width drawn side by side"
FIGURE_NOTE = ("Figure (tradeoff.png): one colour and marker shape per method; ours filled (± std over seeds), the "
               "CTBench paper's hollow, the literature's faded, an arrow from the literature to ours. Points within "
               "a marker's width of each other are drawn side by side (shifted horizontally by whole marker "
               "widths); this table holds the exact values.")


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


def figure(tables: list, out_stem: Path) -> list[Path]:
    """``stem.png`` and ``stem.pdf`` of :func:`draw`; ``note`` (sample count and data source) below."""
    from ctbench.analysis.gridtables import one_table, save_figure

    df, note = one_table(tables)

    return save_figure(draw(df), out_stem, note)


def draw(df):
    """The figure: one panel per setting, natural (x) vs certified (y) accuracy per method and source.

    Every point is a ``Line2D`` with gid ``"<source>|<method>|<model>"`` (the arrows and error bars have none)."""
    from ctbench.analysis.gridtables import panels, setting_name

    settings = list(dict.fromkeys(zip(df.dataset, df.eps, strict=True)))
    fig, axes = panels(len(settings))
    blocks = [df[(df.dataset == dataset) & (df.eps == eps)] for dataset, eps in settings]
    for ax, block, (dataset, eps) in zip(axes, blocks, settings, strict=True):
        ax.set_xlabel("natural accuracy [%]")
        ax.set_ylabel("certified accuracy [%]")
        ax.set_title(setting_name(dataset, eps))
        _set_limits(ax, block)
    fig.tight_layout()  # the layout the figure is saved with: distances between points are measured in it
    for ax, block in zip(axes, blocks, strict=True):
        _draw_panel(ax, block)
    return fig


def method_marker(label: str) -> str:
    """A fixed marker shape per method (``crown_ibp+wide`` → CROWN-IBP's), like its colour."""
    from ctbench.analysis.style import METHOD_ORDER

    method = label.split("+")[0]
    k = METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER) + sum(map(ord, method))
    return MARKERS[k % len(MARKERS)]


def _set_limits(ax, block) -> None:
    """Fix the axes' limits to all points and error bars (autoscaled once), so that points can be placed in
    the final coordinates."""
    import numpy as np

    nat, cert = block["nat"].to_numpy(float), block["cert"].to_numpy(float)
    dx, dy = np.nan_to_num(block["nat_std"].to_numpy(float)), np.nan_to_num(block["cert_std"].to_numpy(float))
    corners = np.c_[np.r_[nat - dx, nat + dx], np.r_[cert - dy, cert + dy]]
    ax.update_datalim(corners[np.isfinite(corners).all(axis=1)])
    ax.autoscale_view()
    ax.set_xlim(ax.get_xlim())
    ax.set_ylim(ax.get_ylim())


def _points(block) -> list[dict]:
    """The panel's points in drawing order, each with its series' colour, marker and fill."""
    from ctbench.analysis.gridtables import method_color

    several_models = block["model"].nunique() > 1
    fills: dict[str, int] = {}
    points = []
    for (method, model), g in block.groupby(["method", "model"], sort=False):
        base = method.split("+")[0]
        fill = HALF_FILLS[fills.setdefault(base, 0) % len(HALF_FILLS)]
        fills[base] += 1
        style = {"method": method, "model": model, "color": method_color(method), "marker": method_marker(method),
                 "fill": fill, "several_models": several_models}
        by_source = {r["source"]: r for r in g.to_dict("records")}
        points += [{**by_source[src], **style} for src in SOURCES if src in by_source]
    return points


def dodge(xy_px, width_px: float) -> list[float]:
    """Horizontal offsets, in marker widths, that put points closer than ``width_px`` (display units) to each
    other side by side: each cluster of such points (single linkage) is spread symmetrically around its
    place, its points in the given order, one marker width apart. Isolated points keep offset 0."""
    import numpy as np

    xy = np.asarray(xy_px, float).reshape(-1, 2)
    group = list(range(len(xy)))

    def root(i):
        while group[i] != i:
            i = group[i]
        return i

    for i in range(len(xy)):
        for j in range(i):
            if np.hypot(*(xy[i] - xy[j])) < width_px:
                group[root(i)] = root(j)
    clusters: dict[int, list[int]] = {}
    for i in range(len(xy)):
        clusters.setdefault(root(i), []).append(i)
    offsets = [0.0] * len(xy)
    for members in clusters.values():
        for k, i in enumerate(members):
            offsets[i] = k - (len(members) - 1) / 2
    return offsets


def _draw_panel(ax, block) -> None:
    from matplotlib.transforms import ScaledTranslation

    points = _points(block)
    width_px = MARKER_SIZE * ax.figure.dpi / 72
    offsets = dodge(ax.transData.transform([(p["nat"], p["cert"]) for p in points]), width_px)
    for p, k in zip(points, offsets, strict=True):
        p["transform"] = ax.transData + ScaledTranslation(k * MARKER_SIZE / 72, 0, ax.figure.dpi_scale_trans)
        _draw_point(ax, p)
    for series in _series(points):
        if "literature" in series and "ours" in series:
            lit, ours = series["literature"], series["ours"]
            ax.annotate("", (ours["nat"], ours["cert"]), (lit["nat"], lit["cert"]), xycoords=ours["transform"],
                        textcoords=lit["transform"],
                        arrowprops={"arrowstyle": "->", "color": ours["color"], "alpha": 0.5, "lw": 0.8})
    if any(offsets):
        ax.set_xlabel(f"natural accuracy [%]\n({DODGE_NOTE})")
    ax.legend(handles=_legend_handles(ax, points), fontsize="x-small", loc="best")


def _series(points) -> list[dict]:
    out: dict[tuple, dict] = {}
    for p in points:
        out.setdefault((p["method"], p["model"]), {})[p["source"]] = p
    return list(out.values())


def _draw_point(ax, p) -> None:
    """One marker: ours filled (or half-filled) with error bars, the CTBench paper's hollow, the literature's
    faded; ``p["transform"]`` places it (data coordinates, shifted sideways by :func:`dodge`)."""
    from ctbench.analysis.gridtables import method_name

    common = {"marker": p["marker"], "color": p["color"], "ms": MARKER_SIZE, "ls": "none", "clip_on": False,
              "transform": p["transform"], "gid": f"{p['source']}|{p['method']}|{p['model']}"}
    if p["source"] == "literature":
        ax.plot(p["nat"], p["cert"], alpha=0.35, **common)
    elif p["source"] == "ctbench paper":
        ax.plot(p["nat"], p["cert"], mfc="none", **common)
    else:
        label = method_name(p["method"]) + (f" ({p['model']})" if p["several_models"] else "")
        bars = ax.errorbar(p["nat"], p["cert"], xerr=_err(p["nat_std"]), yerr=_err(p["cert_std"]),
                           fillstyle=p["fill"], mfc=p["color"], mfcalt="white", mec=p["color"], label=label,
                           **{k: v for k, v in common.items() if k != "gid"})
        bars.lines[0].set_gid(common["gid"])


def _legend_handles(ax, points) -> list:
    """The panel's methods, then a key to the sources — only those with points in this panel (``ours`` only
    beside another source or when error bars are drawn)."""
    from matplotlib.lines import Line2D

    handles = ax.get_legend_handles_labels()[0]
    shown = {p["source"] for p in points}
    bars = any(_err(p.get("nat_std")) is not None or _err(p.get("cert_std")) is not None
               for p in points if p["source"] == "ours")
    key = {"literature": Line2D([], [], marker="o", ls="", color="grey", alpha=0.35, label="literature"),
           "ctbench paper": Line2D([], [], marker="o", ls="", mfc="none", color="grey", label="CTBench paper"),
           "ours": Line2D([], [], marker="o", ls="", color="grey",
                          label="ours (± std over seeds)" if bars else "ours")}
    with_key = len(shown) > 1 or bars
    return handles + [key[s] for s in SOURCES if s in shown and with_key]


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
    from ctbench.analysis.gridtables import metrics_note, with_note, write_tables

    literature = C.load_literature(args.literature)
    keep = C.method_filter(args.methods)
    rows = C.read_metrics(args.metrics)
    note = (metrics_note([r for r in rows if keep(r["cell"].label)]) + " Literature and CTBench-paper points: "
            "as published (config/literature.yaml).")
    df = tradeoff_table(rows, literature, keep, args.paper_model)
    written = write_tables(args.out_dir, NAME, df, latex=to_latex(df), notes=[FIGURE_NOTE],
                           title="Natural vs certified accuracy: ours beside the literature and the CTBench paper "
                                 "(Fig. 1, 8), percent", data_note=note)
    if not args.no_figure:
        written += figure([with_note(df, note)], Path(args.out_dir) / NAME)
    for p in written:
        print(f"wrote {p}")
    return 0
