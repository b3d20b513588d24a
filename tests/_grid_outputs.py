"""The numbers of a grid run's outputs, to compare two runs (tests/test_grid_reference.py).

:func:`collect` reads every per-sample vector of ``certify.h5`` / ``attack.h5`` / ``verifiers/*.h5``, every
``metrics.json``, the per-model analysis tables and the grid's CSV tables under ``results/``, leaving out
what measures time (and paths, which name the checkout). :func:`differences` compares two collections:
integers, booleans and strings exactly, floats to a relative 1e-4 (another CPU's kernels may round the
last bits differently; a flipped certificate is still an exact difference).

    python tests/_grid_outputs.py RESULTS_DIR OUT.json.gz     # record a run (what the reference was made with)
"""

from __future__ import annotations

import gzip
import json
import math
import re
import sys
from pathlib import Path

#: names of values that measure time or cost (they differ between any two runs) or name files
SKIP = re.compile(r"time|wall|throughput|created|seconds|_s$|cost|hardware|threads|device|eval_source|"
                  r"model_file|git_commit|version|data_location|sha256|benchmarks")
#: grid tables made of timings only
TIMED_TABLES = ("cost", "cost_ratio")


def collect(results: Path) -> dict:
    out = {}
    for path in sorted(results.rglob("*")):
        rel = path.relative_to(results).as_posix()
        if "/logs/" in rel or "/benchmarks/" in rel or "/train/" in rel:
            continue
        if path.suffix == ".h5":
            out[rel] = _h5(path)
        elif path.name == "metrics.json":
            out[rel] = _mapping(json.loads(path.read_text()))
        elif path.suffix == ".parquet" and "/analysis/" in rel:
            import pandas as pd

            out[rel] = _frame(pd.read_parquet(path))
        elif path.suffix == ".csv" and path.stem not in TIMED_TABLES:
            import pandas as pd

            out[rel] = _frame(pd.read_csv(path))
    return out


def _h5(path: Path) -> dict:
    import h5py

    with h5py.File(path, "r") as h:
        data = {name: h[name][()].tolist() for name in h if isinstance(h[name], h5py.Dataset)
                and not SKIP.search(name)}
        fingerprints = h.attrs.get("fingerprints")
        data["fingerprints"] = json.loads(fingerprints) if isinstance(fingerprints, str) else None
    return data


def _mapping(m: dict) -> dict:
    return {k: v for k, v in m.items() if not SKIP.search(k)}


def _frame(df) -> dict:
    cols = [c for c in df.columns if not SKIP.search(str(c))]
    return {str(c): [None if _missing(v) else v for v in df[c].tolist()] for c in cols}


def _missing(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def differences(before, after, where: str = "", limit: int = 20) -> list[str]:
    """Where ``after`` differs from ``before`` (at most ``limit`` places)."""
    out: list[str] = []
    _diff(before, after, where, out, limit)
    return out


def _diff(a, b, where: str, out: list[str], limit: int) -> None:
    if len(out) >= limit:
        return
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k not in a or k not in b:
                out.append(f"{where}/{k}: only in {'after' if k in b else 'before'}")
            else:
                _diff(a[k], b[k], f"{where}/{k}", out, limit)
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            out.append(f"{where}: {len(a)} values before, {len(b)} after")
        for i, (x, y) in enumerate(zip(a, b, strict=False)):
            _diff(x, y, f"{where}[{i}]", out, limit)
    elif isinstance(a, float) and isinstance(b, float):
        if not (math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-6) or (math.isnan(a) and math.isnan(b))):
            out.append(f"{where}: {a!r} before, {b!r} after")
    elif a != b:
        out.append(f"{where}: {a!r} before, {b!r} after")


def save(data: dict, path: Path) -> None:
    with gzip.open(path, "wt") as f:
        json.dump(data, f, sort_keys=True)


def load(path: Path) -> dict:
    with gzip.open(path, "rt") as f:
        return json.load(f)


if __name__ == "__main__":
    save(collect(Path(sys.argv[1])), Path(sys.argv[2]))
