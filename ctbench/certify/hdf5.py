"""``certify.h5`` / ``attack.h5``: per-sample vectors aligned by ``sample_index`` (see docs/certificates.md).

One writer per file; files are written complete into a temporary name and renamed
(:func:`ctbench.io.atomic_path`), so a reader never sees a partial file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from ctbench.certify.status import STATUS_MAPPING
from ctbench.errors import CTBenchError
from ctbench.io import atomic_path

CERTIFY_FORMAT = "ctbench-certify/1"
ATTACK_FORMAT = "ctbench-attack/1"

#: Datasets and attributes that hold wall-clock measurements (differ between identical runs).
TIMING_DATASETS = ("time_s", "stage_time_s")
TIMING_ATTRS = ("created_utc", "wall_time_s")


def provenance_attrs(fmt: str) -> dict:
    """The root attributes every ctbench HDF5 file starts with: format, versions, git commit, creation time."""
    import torch

    from ctbench import __version__
    from ctbench.modelfile import provenance
    from ctbench.threads import thread_info

    prov = provenance()
    return {
        "format": fmt,
        "ctbench_version": __version__,
        "torch_version": torch.__version__,
        "git_commit": prov.get("git_commit") or "",
        "created_utc": prov["created_utc"],
        "hardware": prov["hardware"],
        "threads": int(torch.get_num_threads()),  # what this process's torch used
        "threads_source": thread_info()["source"],
    }


def status_dtype():
    import h5py

    return h5py.enum_dtype(STATUS_MAPPING, basetype="u1")


def _attr_value(v):
    if isinstance(v, (dict, list, tuple)):
        return json.dumps(v, sort_keys=True, default=str)
    if v is None:
        return "null"
    if isinstance(v, str):
        return str(v)  # also numpy str_ (h5py stores Python str as variable-length UTF-8)
    if isinstance(v, np.generic):
        return v.item()
    return v


def write_h5(
    path: str | os.PathLike,
    datasets: dict[str, np.ndarray],
    attrs: dict,
    *,
    dataset_attrs: dict[str, dict] | None = None,
    enum_datasets: tuple[str, ...] = ("status",),
) -> None:
    """Write ``datasets`` (name → array) and root ``attrs`` atomically (gzip for vectors ≥ 4096 entries)."""
    import h5py

    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w", track_order=True) as f:
            for name, arr in datasets.items():
                arr = np.asarray(arr)
                kw = {"compression": "gzip", "chunks": True} if arr.size >= 4096 else {}
                dtype = status_dtype() if name in enum_datasets else arr.dtype
                f.create_dataset(name, data=arr, dtype=dtype, **kw)
                for k, v in (dataset_attrs or {}).get(name, {}).items():
                    f[name].attrs[k] = _attr_value(v)
            for k, v in attrs.items():
                f.attrs[k] = _attr_value(v)


def read_h5(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict]:
    """All datasets (as numpy arrays) and root attributes (JSON strings decoded) of a ctbench HDF5 file."""
    import h5py

    path = Path(path)
    if not path.is_file():
        raise CTBenchError(f"file not found: {path}")
    try:
        with h5py.File(path, "r") as f:
            data = {k: f[k][()] for k in f.keys()}
            attrs = {}
            for k, v in f.attrs.items():
                if isinstance(v, bytes):
                    v = v.decode()
                if isinstance(v, str) and (v[:1] in ("[", "{") or v == "null"):
                    try:
                        v = json.loads(v)
                    except (TypeError, ValueError):
                        pass
                attrs[k] = v
    except OSError as e:
        raise CTBenchError(f"cannot read HDF5 file {path}: {e}") from None
    return data, attrs


def read_certificates(path: str | os.PathLike):
    """``certify.h5`` → ``(pandas.DataFrame, attrs)``: one row per sample; ``status`` as its name,
    per-stage margins as columns ``margin_<stage>``."""
    import pandas as pd

    data, attrs = read_h5(path)
    if attrs.get("format") != CERTIFY_FORMAT:
        raise CTBenchError(f"{path} is not a ctbench certificate file (expected format {CERTIFY_FORMAT})")
    names = {v: k for k, v in attrs["status_enum"].items()}
    df = pd.DataFrame({k: v for k, v in data.items() if v.ndim == 1 and len(v) == len(data["sample_index"])})
    df["status"] = [names[int(s)] for s in data["status"]]
    for j, stage in enumerate(attrs["stages"]):
        df[f"margin_{stage}"] = data["stage_margins"][:, j]
    return df, attrs
