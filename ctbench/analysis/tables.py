"""Analysis tables on disk: Parquet with the provenance in the file's key-value metadata.

Every analysis output carries where it came from (the model file and its sha256, the model's stage
fingerprints, the analysis settings, versions, creation time) under the metadata key ``ctbench``, so a
table can be traced back, and checked against the current configuration, without its neighbours::

    write_table(df, "results/.../analysis/utilization.parquet", {"analysis": "utilization", ...})
    df, provenance = read_table("results/.../analysis/utilization.parquet")

Writes are atomic (``ctbench.io.atomic_path``).
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
