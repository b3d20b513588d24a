"""Writers shared by the grid analyses: CSV + Markdown + LaTeX (booktabs) tables, PNG + PDF figures.

Every analysis writes ``<out_dir>/<stem>.csv`` (numbers, ``%.2f``), ``<stem>.md`` (``ctbench.report``'s
Markdown) and ``<stem>.tex`` (a ``tabular`` in the paper's layout; needs ``\\usepackage{booktabs}``),
and figures ``<stem>.png`` + ``<stem>.pdf``; all written atomically (``ctbench.io``). Figures use the shared
style of the per-model figures (``ctbench.analysis.style``: Agg backend, fonts, panel size, save).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from ctbench.core import DATASET_NAMES  # noqa: F401 - the analyses' dataset names (cost.py imports them here)
from ctbench.io import atomic_path, write_text


def is_missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def fmt(v, digits: int = 2) -> str:
    """Table cell text: ``/`` for a missing value (as the paper prints it), floats with ``digits``."""
    if is_missing(v):
        return "/"
    if isinstance(v, bool):
        return "yes" if v else ""
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    if hasattr(v, "item"):  # numpy scalar
        return fmt(v.item(), digits)
    return str(v)


def sci_tex(v: float) -> str:
    """``2100.0`` → ``$2.1\\times10^{3}$`` (Table 12's style)."""
    if is_missing(v):
        return "/"
    if v == 0:
        return "$0$"
    e = math.floor(math.log10(abs(v)))
    return rf"${v / 10**e:.1f}\times10^{{{e}}}$"


def method_name(label: str) -> str:
    """``crown_ibp+wide`` → ``CROWN-IBP (wide)``: the paper's names, as the per-model figures write them
    (``ctbench.analysis.style.label``)."""
    from ctbench.analysis.style import label as style_label

    method, _, variant = label.partition("+")
    return style_label(method, variant)


def setting_name(dataset: str, eps: str) -> str:
    return f"{DATASET_NAMES.get(dataset, dataset)} ε={eps}"


_TEX_SYMBOLS = {"∪": r"$\cup$", "±": r"$\pm$", "σ": r"$\sigma$", "⚠": r"$^{*}$", "−": "-"}


def latex_text(text) -> str:
    r"""``ctbench.report.latex_escape`` plus the symbols these tables use (``ε=2/255`` → ``$\epsilon=2/255$``)."""
    from ctbench.report import latex_escape

    out = re.sub(r"ε=(\S+)", lambda m: rf"$\epsilon={m.group(1)}$", latex_escape(str(text)))
    return "".join(_TEX_SYMBOLS.get(ch, ch) for ch in out)


def latex_table(rows: Sequence[Sequence[str]], header: Sequence[str], *, group_cols: int = 0, text_cols: int = 0,
                align: str = "", comment: str = "", pre_header: Iterable[str] = ()) -> str:
    """A booktabs ``tabular`` from already-formatted cells (LaTeX source). The first ``group_cols``
    columns name blocks: printed on a block's first row only, ``\\midrule`` between blocks. The first
    ``max(text_cols, group_cols, 1)`` columns are left-aligned, the rest right-aligned (unless ``align``)."""
    left = max(text_cols, group_cols, 1)
    align = align or "l" * left + "r" * (len(header) - left)
    lines = [f"% {comment}"] if comment else []
    lines += [rf"\begin{{tabular}}{{{align}}}", r"\toprule", *pre_header, " & ".join(header) + r" \\", r"\midrule"]
    previous = None
    for row in rows:
        key = tuple(row[:group_cols])
        if group_cols and previous is not None and key != previous:
            lines.append(r"\midrule")
        shown = [("" if group_cols and key == previous and j < group_cols else c) for j, c in enumerate(row)]
        lines.append(" & ".join(shown) + r" \\")
        previous = key
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def write_tables(out_dir: str | Path, stem: str, df, *, title: str, latex: str, display=None,
                 notes: Iterable[str] = (), data_note: str = "") -> list[Path]:
    """``stem.csv`` (``df``, floats ``%.2f``), ``stem.md`` (``display`` or ``df``, title, notes below) and
    ``stem.tex`` (``latex``) in ``out_dir``. ``data_note`` (:func:`samples_note`: sample count and data
    source) is the first note of the Markdown and a trailing ``%`` comment of the LaTeX."""
    from ctbench.report import to_markdown

    if data_note:
        notes = [data_note, *notes]
        latex = latex + "".join(f"% {line}\n" for line in data_note.splitlines())

    out = Path(out_dir)
    paths = [out / f"{stem}.csv", out / f"{stem}.md", out / f"{stem}.tex"]
    with atomic_path(paths[0]) as tmp:
        df.to_csv(tmp, index=False, float_format="%.2f")
    md = to_markdown(df if display is None else display, title)
    notes = list(notes)
    write_text(paths[1], md + ("\n" + "\n\n".join(notes) + "\n" if notes else ""))
    write_text(paths[2], latex)
    return paths


def with_note(df, note: str):
    """``df`` with its sample note (:func:`samples_note`) in ``df.attrs["data_note"]``, where every grid
    analysis' ``figure`` reads it (ctbench.analysis.protocol)."""
    df.attrs["data_note"] = note
    return df


def one_table(tables: Sequence) -> tuple:
    """``(df, note)`` of a grid analysis' ``figure(tables, out_stem)``: its one table and the sample note
    (``df.attrs["data_note"]``, "" if none); several tables are concatenated (the first one's note)."""
    import pandas as pd

    if not tables:
        raise ValueError("no table to draw")
    note = tables[0].attrs.get("data_note", "")
    df = tables[0] if len(tables) == 1 else pd.concat(list(tables), ignore_index=True)
    return df, note


def panels(n: int, ncols: int = 3):
    """``(Figure, [Axes] * n)`` in the shared figure style (``ctbench.analysis.style``: Agg backend, the
    per-model figures' rcParams and panel size), ``ncols`` panels a row; unused grid cells are hidden."""
    from ctbench.analysis import style

    plt = style.pyplot()
    ncols = max(1, min(ncols, n))
    nrows = max(1, math.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(style.PANEL_WIDTH * ncols, style.PANEL_HEIGHT * nrows),
                             squeeze=False)
    axes = list(axes.flat)
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def method_color(label: str):
    """A fixed colour per method (tab10 in the paper's method order), so figures agree with each other."""
    from matplotlib import colormaps

    from ctbench.analysis.style import METHOD_ORDER

    method = label.split("+")[0]
    k = METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER) + sum(map(ord, method)) % 8
    return colormaps["tab10"](k % 10)


def save_figure(fig, stem: str | Path, note: str = "") -> list[Path]:
    """``stem.png`` and ``stem.pdf``, atomically (``ctbench.analysis.style.save``; closes the figure);
    ``note`` (e.g. :func:`samples_note`) printed below the panels and kept in the files' metadata."""
    import logging

    from ctbench.analysis import style

    logging.getLogger("fontTools").setLevel(logging.WARNING)  # Type 42 PDF font subsetting logs every glyph
    return style.save(fig, stem, note=note or None)


def _positions(indices: list) -> str:
    """Which samples: ", the first n (sample_index 0–n−1)", ", sample_index a–b", or what is not known."""
    if any(isinstance(i, int) for i in indices):
        return ", sample positions not recorded"
    keys = {(int(i.min()), int(i.max()), len(i)) if len(i) else (0, -1, 0) for i in indices}
    if len(keys) > 1:
        lo, hi = min(k[0] for k in keys), max(k[1] for k in keys)
        return f", sample_index within {lo}–{hi} (differs between cells)"
    (lo, hi, n), = keys
    if hi - lo + 1 != n:
        return f", {n:,} samples within sample_index {lo}–{hi}"
    return f", the first {n:,} (sample_index 0–{hi})" if lo == 0 else f", sample_index {lo}–{hi}"


def samples_note(entries, *, unit: str, source: str, per: str = "cell") -> str:
    """What a grid table or figure rests on, in one line: per (dataset, split) the number of samples per
    ``per`` (a range where they differ) and which samples, read from the inputs (never a config value), e.g.
    "Samples (certify.h5): n = 1,000 certified samples per cell — MNIST test split, the first 1,000
    (sample_index 0–999)."

    ``entries``: one ``(dataset, split, index)`` per cell, ``index`` the (n,) ``sample_index`` array, or n
    (an int) where the input records no positions (``metrics.json``); ``split`` None where not recorded."""
    groups: dict[tuple[str, str], list] = {}
    for dataset, split, index in entries:
        index = int(index) if isinstance(index, int) or not hasattr(index, "__len__") else index
        groups.setdefault((str(dataset), str(split or "")), []).append(index)
    if not groups:
        return f"Samples ({source}): none."
    parts = []
    for (dataset, split), indices in groups.items():
        ns = [i if isinstance(i, int) else len(i) for i in indices]
        n = f"{min(ns):,}" if min(ns) == max(ns) else f"{min(ns):,}–{max(ns):,}"
        data = f"{DATASET_NAMES.get(dataset, dataset)} {split} split" if split else \
            f"{DATASET_NAMES.get(dataset, dataset)}, split not recorded"
        parts.append(f"n = {n} {unit} per {per} — {data}{_positions(indices)}")
    return f"Samples ({source}): " + "; ".join(parts) + "."


def metrics_note(rows) -> str:
    """:func:`samples_note` of ``cells.read_metrics`` rows: n per cell as each ``metrics.json`` records it
    (nat, cert and adv are of the same samples; the file records no sample positions)."""
    entries = [(r["cell"].dataset, r["meta"].get("split"), int(r["meta"]["n"])) for r in rows
               if r["meta"].get("n") is not None]
    note = samples_note(entries, unit="evaluated samples", source="metrics.json")
    unknown = len(rows) - len(entries)
    return note + " Nat, cert and adv are of the same samples." + (
        f" {unknown} metrics.json file(s) record no n." if unknown else "")
