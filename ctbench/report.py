"""Paper tables from per-cell summaries: Table 1 (``results/table1.csv|.md|.tex``) and the three-seed
statistics of Tables 13–17 (``results/seeds.csv``).

Inputs are only the per-cell ``metrics.json`` files (written by ``ctbench summarize``), found by the
results path grammar ``results/{dataset}/{eps}/{method}/seed{seed}/metrics.json``; the cell's identity
comes from the path, the numbers from the file: ``nat_acc``, ``cert_acc``, ``adv_acc`` as fractions in
[0, 1] (``cert_acc``/``adv_acc`` may be null for standard training).

Table 1 (paper §4.2): one row per (dataset, ε, method) with the literature values and the CTBench
paper's values (``config/literature.yaml``) beside ours, in percent. Like the paper, ours come from one
fixed seed (the first configured seed); ``seeds.csv`` has mean ± std over all seeds (paper App. D.1).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from pathlib import Path

import pandas as pd
import yaml

from ctbench.errors import CTBenchError
from ctbench.io import atomic_path, write_text

logger = logging.getLogger(__name__)

CELL_RE = re.compile(r"(?P<dataset>[^/]+)/(?P<eps>[^/]+)/(?P<method>[^/]+)/seed(?P<seed>\d+)/metrics\.json$")
METRICS = ("nat", "cert", "adv")
#: Display names of the paper.
METHOD_NAMES = {"standard": "Standard", "pgd": "PGD", "edac": "EDAC", "ibp": "IBP", "crown_ibp": "CROWN-IBP",
                "sabr": "SABR", "taps": "TAPS", "staps": "STAPS", "mtl_ibp": "MTL-IBP"}


def read_cells(paths: Iterable[str | Path]) -> pd.DataFrame:
    """One row per cell: dataset, eps, method, seed, nat, cert, adv (percent)."""
    rows = []
    for p in map(Path, paths):
        m = CELL_RE.search(p.as_posix())
        if not m:
            raise CTBenchError(f"{p} does not follow results/{{dataset}}/{{eps}}/{{method}}/seed{{seed}}/metrics.json")
        try:
            data = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise CTBenchError(f"cannot read cell summary {p}: {e}") from None
        row = {**m.groupdict(), "seed": int(m["seed"])}
        for k in METRICS:
            v = data.get(f"{k}_acc")
            row[k] = None if v is None else 100.0 * float(v)
        rows.append(row)
    columns = ["dataset", "eps", "method", "seed", *METRICS]
    return pd.DataFrame(rows, columns=columns)


def _literature(path: str | Path) -> dict:
    try:
        return yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as e:
        raise CTBenchError(f"cannot read literature values {path}: {e}") from None


def _setting_key(dataset: str, eps: str) -> str:
    return f"{'mnist' if dataset == 'mnist_mini' else dataset}_{eps}"


def table1(cells: pd.DataFrame, literature: dict, seed: int | None = None) -> pd.DataFrame:
    """Paper Table 1 layout; ours from ``seed`` (default: the smallest seed present per cell)."""
    rows = []
    for (dataset, eps, method), group in cells.groupby(["dataset", "eps", "method"], sort=False):
        pick = group[group.seed == seed] if seed is not None else group[group.seed == group.seed.min()]
        if pick.empty:
            continue
        ours = pick.iloc[0]
        lit = literature.get("table1", {}).get(_setting_key(dataset, eps), {}).get(method)
        nat_lit, nat_ct, cert_lit, cert_ct, adv_ct = lit if lit else [None] * 5
        if method == "standard":
            nat_lit = literature.get("standard_nat", {}).get("mnist" if dataset == "mnist_mini" else dataset)
        rows.append({
            "dataset": dataset, "eps": eps.replace("_", "/"), "method": METHOD_NAMES.get(method, method),
            "source": literature.get("sources", {}).get(method, "/"), "seed": int(ours.seed),
            "nat_literature": nat_lit, "nat_ctbench_paper": nat_ct, "nat": ours.nat,
            "cert_literature": cert_lit, "cert_ctbench_paper": cert_ct, "cert": ours.cert,
            "adv_ctbench_paper": adv_ct, "adv": ours.adv,
        })
    return pd.DataFrame(rows)


def seed_statistics(cells: pd.DataFrame) -> pd.DataFrame:
    """Mean and (sample) standard deviation over seeds per (dataset, ε, method) (paper Tables 13–17)."""
    grouped = cells.groupby(["dataset", "eps", "method"], sort=False)
    out = grouped[list(METRICS)].agg(["mean", "std"])
    out.columns = [f"{m}_{s}" for m, s in out.columns]
    out["n_seeds"] = grouped.size()
    out = out.reset_index()
    out["eps"] = out["eps"].str.replace("_", "/")
    out["method"] = out["method"].map(lambda m: METHOD_NAMES.get(m, m))
    return out


def to_markdown(df: pd.DataFrame, title: str) -> str:
    def fmt(v):
        if v is None or (isinstance(v, float) and pd.isna(v)):
            return "/"
        return f"{v:.2f}" if isinstance(v, float) else str(v)

    lines = [f"# {title}", "", "| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
_DATASET_TEX = {"mnist": "MNIST", "mnist_mini": "MNIST (mini)", "cifar10": "CIFAR-10", "tinyimagenet": "TinyImageNet"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def to_latex(t1: pd.DataFrame) -> str:
    """Table 1 as a LaTeX ``tabular`` (booktabs) in the paper's layout: one block per (dataset, ε),
    literature | CTBench paper | ours; ``/`` where a value does not exist (e.g. certified accuracy of
    standard training). Needs ``\\usepackage{booktabs}``."""

    def num(v):
        return "/" if v is None or (isinstance(v, float) and pd.isna(v)) else f"{float(v):.2f}"

    lines = [
        "% CTBench Table 1 (ctbench report): accuracies in percent",
        r"\begin{tabular}{lllrrrrrrrr}",
        r"\toprule",
        r" & & & \multicolumn{2}{c}{Literature} & \multicolumn{3}{c}{CTBench paper} & \multicolumn{3}{c}{Ours} \\",
        r"\cmidrule(lr){4-5} \cmidrule(lr){6-8} \cmidrule(lr){9-11}",
        r"Dataset & $\epsilon$ & Method & Nat. & Cert. & Nat. & Cert. & Adv. & Nat. & Cert. & Adv. \\",
    ]
    for (dataset, eps), block in t1.groupby(["dataset", "eps"], sort=False):
        lines.append(r"\midrule")
        for k, r in enumerate(block.itertuples(index=False)):
            first = k == 0
            cells = [
                latex_escape(_DATASET_TEX.get(dataset, dataset)) if first else "",
                f"${latex_escape(eps)}$" if first else "",
                latex_escape(r.method),
                num(r.nat_literature), num(r.cert_literature),
                num(r.nat_ctbench_paper), num(r.cert_ctbench_paper), num(r.adv_ctbench_paper),
                num(r.nat), num(r.cert), num(r.adv),
            ]  # fmt: skip
            lines.append(" & ".join(cells) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    return "\n".join(lines) + "\n"


def _write_csv(df: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, float_format="%.2f")


def write_reports(cell_files: list[str | Path], literature_path: str | Path, out_dir: str | Path,
                  seed: int | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Write ``table1.csv``, ``table1.md``, ``table1.tex`` and ``seeds.csv`` into ``out_dir``."""
    if not cell_files:
        raise CTBenchError("no cell summaries given (expected results/{dataset}/{eps}/{method}/seed{seed}/"
                           "metrics.json)")
    cells = read_cells(cell_files)
    t1 = table1(cells, _literature(literature_path), seed)
    stats = seed_statistics(cells)
    out = Path(out_dir)
    _write_csv(t1, out / "table1.csv")
    write_text(out / "table1.md", to_markdown(t1, "CTBench Table 1: ours beside the literature (percent)"))
    write_text(out / "table1.tex", to_latex(t1))
    _write_csv(stats, out / "seeds.csv")
    return t1, stats
