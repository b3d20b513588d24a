"""Readers shared by the grid analyses (paper §5.2, App. D): cell identity, per-sample vectors, summaries.

A *cell* is one trained and certified model: ``(dataset, eps, model, method, variant, seed)``. Its
identity is read from the files themselves — the root attribute ``cell`` (JSON) of ``certify.h5`` /
``attack.h5`` or the key ``cell`` of ``metrics.json``, else the individual attributes ``dataset``,
``eps``, ``model``, ``method``, ``seed`` with variant ``""`` — never from the path. ε is kept as written,
with ``_`` read as ``/`` (``2_255`` = ``2/255``).

Per-sample vectors are aligned by ``sample_index`` (:func:`align`): files covering different samples
are refused with a message naming them, or intersected on request. Missing inputs give one line
naming the files and the workflow rule that makes them (:func:`require`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ctbench.core import DATASET_ORDER, METHOD_ORDER, CellId, eps_text, eps_value
from ctbench.errors import CTBenchError

#: what makes each input: kind → (file, rule and command).
MAKERS = {
    "certify": ("certify.h5", "rule `certify` (`ctbench certify`)"),
    "attack": ("attack.h5", "rule `attack` (`ctbench attack`)"),
    "metrics": ("metrics.json", "rule `summarize` (`ctbench summarize`)"),
    "verifier": ("verifiers/<V>.h5", "rule `certify_verifier` (`ctbench certify --stages <V>` on all samples)"),
    "literature": ("config/literature.yaml", "the repository (config/literature.yaml)"),
    "cell": ("cell.json", "rule `cell_config` (the cell's resolved training configuration)"),
    "history": ("train/history.csv", "rule `train` (`ctbench train`)"),
    "fragmentation": ("analysis/fragmentation.parquet", "rule `analyze_model` (`ctbench analyze fragmentation`)"),
}
#: the paper's order of methods and datasets (Table 1), for sorting rows: ``ctbench.core.METHOD_ORDER``,
#: ``ctbench.core.DATASET_ORDER`` (imported above).
#: not certified-training methods: left out of the method comparisons unless asked for (Tables 2, 20; Fig. 8).
NOT_CERTIFIED_TRAINING = ("standard", "pgd", "edac")


def require(paths: Iterable[str | Path], kind: str) -> list[Path]:
    """The paths, or one-line :class:`CTBenchError` naming the missing ones and what makes them."""
    paths = [Path(p) for p in paths]
    missing = [p for p in paths if not p.is_file()]
    if not missing:
        return paths
    shown = ", ".join(map(str, missing[:5])) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
    if kind == "benchmark":  # Snakemake writes benchmarks/<rule>.tsv for the rule named by the file
        rules = list(dict.fromkeys(p.stem for p in missing))
        how = "the `benchmark:` directive of rule " + ", ".join(f"`{r}`" for r in rules)
        name = "benchmark TSV"
    else:
        name, how = MAKERS[kind]
    raise CTBenchError(f"missing {len(missing)} {name} file(s): {shown} — made by {how}; run the workflow first")


class Cell(CellId):
    """One cell of the grid (:class:`ctbench.core.CellId`, ε as written: ``2/255``; ``eps_value`` from
    ``ctbench.core``, NaN for an unreadable ε); ``label`` is ``method`` or ``method+variant``."""

    __slots__ = ()

    @property
    def label(self) -> str:
        return self.run

    @property
    def setting(self) -> tuple[str, str]:
        return self.dataset, self.eps

    def sort_key(self) -> tuple:
        return (*setting_sort_key(self.dataset, self.eps), self.model, *method_sort_key(self.label),
                str(self.seed).zfill(8))


def setting_sort_key(dataset: str, eps: str) -> tuple:
    d = DATASET_ORDER.index(dataset) if dataset in DATASET_ORDER else len(DATASET_ORDER)
    return d, dataset, eps_value(eps)


def method_sort_key(label: str) -> tuple:
    method = label.split("+")[0]
    return (METHOD_ORDER.index(method) if method in METHOD_ORDER else len(METHOD_ORDER), label)


def _seed(v) -> int | str:
    try:
        return int(v)
    except (TypeError, ValueError):
        return "" if v is None else str(v)


def cell_of(meta: dict, source: str | Path = "") -> Cell:
    """Cell identity from root attributes / ``metrics.json`` keys (``cell`` preferred)."""
    c = meta.get("cell")
    if isinstance(c, str):
        try:
            c = json.loads(c)
        except ValueError:
            c = None
    src = c if isinstance(c, dict) else {**meta, "variant": ""}
    missing = [k for k in ("dataset", "eps", "method") if not src.get(k)]
    if missing:
        raise CTBenchError(f"{source} does not name its cell (attributes {', '.join(missing)} missing)")
    eps = eps_text(src["eps"])  # "2_255" (results-path token) and "2/255" are one ε
    return Cell(str(src["dataset"]), eps, str(src.get("model") or ""), str(src["method"]),
                str(src.get("variant") or ""), _seed(src.get("seed")))


@dataclass
class Certificates:
    """The per-sample vectors of one ``certify.h5`` (shapes (n,)) and its identity."""

    path: Path
    cell: Cell
    sample_index: np.ndarray  # (n,) int64
    status: np.ndarray  # (n,) int64, ctbench.certify.status values
    nat_correct: np.ndarray  # (n,) bool
    decided_by: np.ndarray  # (n,) int64, index into stages; -1 = clean check or undecided
    stages: list[str]
    attrs: dict = field(repr=False)
    data: dict = field(repr=False)

    @property
    def certified(self) -> np.ndarray:
        from ctbench.certify.status import CERTIFIED_VALUES

        return np.isin(self.status, CERTIFIED_VALUES)

    @property
    def falsified(self) -> np.ndarray:
        from ctbench.certify.status import Status

        return self.status == int(Status.FALSIFIED)


def read_certificates(path: str | Path) -> Certificates:
    """One ``certify.h5`` (format ``ctbench-certify/1``, docs/certificates.md)."""
    from ctbench.certify import hdf5

    data, attrs = hdf5.read_h5(path)
    if attrs.get("format") != hdf5.CERTIFY_FORMAT:
        raise CTBenchError(f"{path} is not a ctbench certificate file (expected format {hdf5.CERTIFY_FORMAT})")
    idx = data["sample_index"].astype(np.int64)
    if len(np.unique(idx)) != len(idx):
        raise CTBenchError(f"{path} lists some sample_index twice")
    return Certificates(Path(path), cell_of(attrs, path), idx, data["status"].astype(np.int64),
                        data["nat_correct"].astype(bool), data["decided_by"].astype(np.int64),
                        list(attrs.get("stages") or []), attrs, data)


def read_all(paths: Iterable[str | Path], kind: str = "certify") -> list[Certificates]:
    return [read_certificates(p) for p in require(paths, kind)]


def _describe(idx: np.ndarray) -> str:
    return f"{len(idx)} samples ({idx.min()}..{idx.max()})" if len(idx) else "no samples"


def align(items: Sequence[Certificates], *, intersect: bool = False, what: str = "") -> list[np.ndarray]:
    """Row indices into each item's vectors that put them on common, sorted ``sample_index`` values.

    Files covering different samples are refused (naming them) unless ``intersect``: then the common
    samples are used. Returns one (m,) int array per item."""
    sets = [set(it.sample_index.tolist()) for it in items]
    common = set.intersection(*sets) if sets else set()
    if any(s != common for s in sets):
        if not intersect:
            parts = "; ".join(f"{it.path} has {_describe(it.sample_index)}" for it in items)
            raise CTBenchError(f"{what or 'files'} cover different samples: {parts}; {len(common)} in common — "
                               f"evaluate them with the same --start/--n, or pass --intersect to use the common ones")
        if not common:
            raise CTBenchError(f"{what or 'files'} have no sample in common: "
                               + ", ".join(str(it.path) for it in items))
    keys = np.array(sorted(common), dtype=np.int64)
    return [_rows(it.sample_index, keys) for it in items]


def _rows(index: np.ndarray, keys: np.ndarray) -> np.ndarray:
    order = np.argsort(index, kind="stable")
    return order[np.searchsorted(index[order], keys)]


def certified_matrix(items: Sequence[Certificates], *, intersect: bool = False, what: str = "") -> np.ndarray:
    """(k, m) bool: sample j (common ``sample_index`` order) is certified in file i."""
    rows = align(items, intersect=intersect, what=what)
    return np.stack([it.certified[r] for it, r in zip(items, rows, strict=True)])


def read_metrics(paths: Iterable[str | Path]) -> list[dict]:
    """``metrics.json`` files → dicts with ``cell`` (:class:`Cell`), ``path`` and nat/cert/adv in percent
    (NaN where null, e.g. the certified accuracy of standard training)."""
    rows = []
    for p in require(paths, "metrics"):
        try:
            data = json.loads(p.read_text())
        except (OSError, ValueError) as e:
            raise CTBenchError(f"cannot read cell summary {p}: {e}") from None
        row = {"cell": cell_of(data, p), "path": p, "meta": data}
        for k in ("nat", "cert", "adv"):
            v = data.get(f"{k}_acc")
            row[k] = math.nan if v is None else 100.0 * float(v)
        rows.append(row)
    return rows


def load_literature(path: str | Path) -> dict:
    import yaml

    (path,) = require([path], "literature")
    try:
        return yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise CTBenchError(f"cannot read literature values {path}: {str(e).splitlines()[0]}") from None


def setting_entry(table: dict, dataset: str, eps) -> dict:
    """The literature entry of a setting keyed ``<dataset>_<eps token>`` (``mnist_0.1``, ``cifar10_2_255``);
    ``mnist_mini`` reads MNIST's (as ``ctbench report`` does); ε matched by value, e.g. ``2/255``."""
    ds = "mnist" if dataset == "mnist_mini" else dataset
    want = eps_value(eps)
    for key, entry in (table or {}).items():
        head, _, token = str(key).partition("_")
        if head == ds and math.isclose(eps_value(token), want, rel_tol=1e-9, abs_tol=1e-12):
            return entry or {}
    return {}


def method_filter(spec: str | None) -> Callable[[str], bool]:
    """``--methods`` → a test on cell labels: ``certified`` (all but standard, PGD and EDAC, as in Tables 2,
    20 and Fig. 8), ``all``, or a comma list of methods or ``method+variant`` labels."""
    if spec in (None, "", "all"):
        return lambda label: True
    if spec == "certified":
        return lambda label: label.split("+")[0] not in NOT_CERTIFIED_TRAINING
    chosen = {m.strip() for m in spec.split(",") if m.strip()}
    return lambda label: label in chosen or label.split("+")[0] in chosen
