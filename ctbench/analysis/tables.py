"""Analysis tables on disk: Parquet with the provenance in the file's key-value metadata.

Every analysis output carries where it came from (the model file and its sha256, the model's stage
fingerprints, the analysis settings, versions, creation time) under the metadata key ``ctbench``, so a
table can be traced back, and checked against the current configuration, without its neighbours::

    write_table(df, "results/.../analysis/utilization.parquet", {"analysis": "utilization", ...})
    df, provenance = read_table("results/.../analysis/utilization.parquet")

Writes are atomic (``ctbench.io.atomic_path``). :func:`with_certification` joins the tables with the
cascade's certified accuracy of their model (``metrics.json``), for the figures that plot against it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ctbench.errors import CTBenchError
from ctbench.io import atomic_path

META_KEY = b"ctbench"
FORMAT = "ctbench-analysis/1"


def write_table(df, path: str | os.PathLike, provenance: dict) -> None:
    """Write ``df`` (a pandas DataFrame) to ``path`` (.parquet) with ``provenance`` as JSON metadata."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ctbench.modelfile import provenance as versions

    table = pa.Table.from_pandas(df, preserve_index=False)
    meta = {"format": FORMAT, **versions(), **provenance}
    merged = {**(table.schema.metadata or {}), META_KEY: json.dumps(meta, sort_keys=True, default=str).encode()}
    with atomic_path(path) as tmp:
        pq.write_table(table.replace_schema_metadata(merged), tmp)


def read_table(path: str | os.PathLike):
    """``(DataFrame, provenance dict)`` of a table written by :func:`write_table`."""
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise CTBenchError(f"analysis table not found: {path}")
    try:
        table = pq.read_table(path)
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same user error
        raise CTBenchError(f"cannot read analysis table {path}: {str(e).splitlines()[0]}") from None
    raw = (table.schema.metadata or {}).get(META_KEY)
    if raw is None:
        raise CTBenchError(f"{path} is not a ctbench analysis table (no provenance metadata)")
    return table.to_pandas(), json.loads(raw)


def with_certification(tables, metrics_paths) -> list:
    """The tables (``(DataFrame, provenance)`` pairs of :func:`ctbench.analysis.tables.read_table`) with the
    cascade's certified accuracy of their model, from the cells' ``metrics.json`` (``ctbench summarize``),
    matched by the model file's sha256: columns ``cert_acc`` (percent, at the cell's training ε),
    ``cert_n`` (samples certified), ``cert_metrics`` (the file). A table whose model has no metrics file
    gets none (NaN); a metrics file of no table's model is a CTBenchError (the wrong files were given).
    Returns the DataFrames, in order (paper Fig. 5 plots certified accuracy against tightness)."""
    by_model = {}
    for path in map(Path, metrics_paths):
        try:
            m = json.loads(path.read_text())
            by_model[m["model_sha256"]] = (path, 100.0 * float(m["cert_acc"]), m.get("n"))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise CTBenchError(f"cannot read the certified accuracy from {path}: {e}") from None
    out, used = [], set()
    for df, provenance in tables:
        sha = (provenance or {}).get("model_sha256")
        df = df.copy()
        if sha in by_model:
            used.add(sha)
            path, acc, n = by_model[sha]
            df["cert_acc"], df["cert_n"], df["cert_metrics"] = acc, n, str(path)
        else:
            df["cert_acc"], df["cert_n"], df["cert_metrics"] = float("nan"), None, ""
        out.append(df)
    stray = [str(by_model[s][0]) for s in by_model if s not in used]
    if stray:
        raise CTBenchError(f"metrics of a model no table was computed on: {', '.join(stray)}")
    return out
