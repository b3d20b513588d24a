"""One figure style for the per-model analyses (paper Figs. 3-6, 9-11): matplotlib with the Agg backend,
methods side by side in the paper's order, one colour per training ε, one panel per evaluation ε, each
figure written as PNG and PDF. Figures are drawn from the stored Parquet tables only.

Tables carry the identity columns of ``ctbench.analysis._model_cli`` (dataset, eps, model, method,
seed, variant); a bar is one (method, variant) at one training ε, averaged over seeds and inputs.
"""

from __future__ import annotations

from pathlib import Path

from ctbench.core import METHOD_NAMES, METHOD_ORDER  # noqa: F401 - the paper's display names, in its order

PANEL_WIDTH, PANEL_HEIGHT = 3.6, 2.6


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend with the shared style applied."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update({
        "font.size": 8, "axes.titlesize": 8, "axes.labelsize": 8, "legend.fontsize": 7,
        "xtick.labelsize": 7, "ytick.labelsize": 7, "axes.spines.top": False, "axes.spines.right": False,
        "axes.grid": True, "axes.grid.axis": "y", "grid.alpha": 0.3, "savefig.dpi": 200,
        "pdf.fonttype": 42,
    })
    return plt


def concat(tables, required, analysis: str):
    """The tables concatenated; CTBenchError if empty or a required column is missing."""
    import pandas as pd

    from ctbench.errors import CTBenchError

    if not tables:
        raise CTBenchError(f"no {analysis} tables given")
    df = pd.concat(list(tables), ignore_index=True)
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise CTBenchError(f"not {analysis} tables: missing column(s) {', '.join(missing)}")
    if "variant" not in df.columns:
        df["variant"] = ""
    df["entity"] = [label(m, v) for m, v in zip(df["method"], df["variant"].fillna(""), strict=True)]
    return df


def label(method: str, variant: str = "") -> str:
    name = METHOD_NAMES.get(method, method)
    return f"{name} ({variant})" if variant else name


def entity_order(df) -> list[str]:
    """Methods (with variants) present in ``df``, in the paper's order, unknown methods last."""
    rank = {m: i for i, m in enumerate(METHOD_ORDER)}
    pairs = df[["method", "variant", "entity"]].drop_duplicates()
    pairs = sorted(pairs.itertuples(index=False), key=lambda p: (rank.get(p.method, len(rank)), p.method, p.variant))
    return [p.entity for p in pairs]


def eps_order(values) -> list[str]:
    """Distinct ε strings sorted by value ("2/255" before "8/255" before "0.1")."""
    from ctbench.core import parse_eps

    def key(s):
        try:
            return (parse_eps(s), s)
        except Exception:  # noqa: BLE001 - unparsable labels sort last
            return (float("inf"), s)

    return sorted({str(v) for v in values}, key=key)


def colors(n: int) -> list:
    import matplotlib

    cmap = matplotlib.colormaps["tab10"]
    return [cmap(i % 10) for i in range(n)]


def panels(plt, n: int, *, sharey: bool = True, width: float = PANEL_WIDTH, height: float = PANEL_HEIGHT):
    """A row of ``n`` panels (a list of axes)."""
    fig, axes = plt.subplots(1, n, figsize=(width * n, height), sharey=sharey, squeeze=False)
    return fig, list(axes[0])


def grouped_bars(ax, df, value: str, *, entities: list[str], hues: list[str], hue_col: str = "eps",
                 hue_title: str = "trained at ε", marker_value: str | None = None, marker_label: str = ""):
    """Bars of mean ``value`` per entity (x groups) and ``hue_col`` (bars within a group). With
    ``marker_value`` its mean is drawn as a black tick on each bar (e.g. the IBP upper estimate)."""
    import numpy as np

    means = df.groupby(["entity", hue_col], observed=True)[value].mean()
    marks = df.groupby(["entity", hue_col], observed=True)[marker_value].mean() if marker_value else None
    width = 0.8 / max(len(hues), 1)
    x = np.arange(len(entities))
    for j, (hue, color) in enumerate(zip(hues, colors(len(hues)), strict=True)):
        pos = x - 0.4 + width * (j + 0.5)
        vals = [means.get((e, hue), np.nan) for e in entities]
        ax.bar(pos, vals, width * 0.9, color=color, label=f"{hue_title} {hue}" if hue_title else str(hue))
        if marks is not None:
            mvals = [marks.get((e, hue), np.nan) for e in entities]
            ax.scatter(pos, mvals, marker="_", s=120, color="black", zorder=3,
                       label=marker_label if j == 0 else None)
    ax.set_xticks(x)
    ax.set_xticklabels(entities, rotation=45, ha="right")


def data_note(df) -> str:
    """What a per-model figure was computed on, from the tables' data columns (``_model_cli``): per data
    source "n = N <split> samples per model; data: <eval_source>" (N a range where models differ)."""
    cols = ("eval_split", "eval_n", "eval_source")
    if df.empty or not all(c in df.columns for c in cols):
        return "n and data source not recorded (tables written before ctbench recorded them)"
    lines = []
    for (split, source), sub in df.groupby(["eval_split", "eval_source"], observed=True, sort=True):
        lo, hi = int(sub["eval_n"].min()), int(sub["eval_n"].max())
        n = f"{lo:,}" if lo == hi else f"{lo:,}–{hi:,}"
        lines.append(f"n = {n} {split} samples per model; data: {source}")
    return "\n".join(lines)


def save(fig, out_stem, note: str | None = None) -> list[Path]:
    """Write ``out_stem``.png and ``out_stem``.pdf atomically; return both paths. ``note`` (e.g.
    :func:`data_note`) is printed small below the panels, wrapped to the figure's width, and stored in
    the files' metadata (PNG ``Description``, PDF ``Subject``)."""
    import textwrap

    from ctbench.io import atomic_path

    out_stem = Path(out_stem)
    if note:
        width = max(40, int(fig.get_figwidth() * 22))  # characters per line at 6 pt
        text = "\n".join(w for line in note.splitlines() for w in textwrap.wrap(line, width) or [""])
        extra = 0.12 * (text.count("\n") + 1) + 0.06  # inches added below the panels
        fig.set_figheight(fig.get_figheight() + extra)
        fig.tight_layout(rect=(0, extra / fig.get_figheight(), 1, 1))
        fig.text(0.005, 0.005, text, fontsize=6, color="0.25", ha="left", va="bottom")
    else:
        fig.tight_layout()
    paths = []
    for ext in ("png", "pdf"):
        path = out_stem.parent / f"{out_stem.name}.{ext}"
        meta = ({"png": {"Description": note}, "pdf": {"Subject": note}}[ext]) if note else None
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=ext, metadata=meta)
        paths.append(path)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return paths
