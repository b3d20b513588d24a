"""Resume state of the per-batch evaluation commands (``certify``, ``attack``): ``<out>.partial.npz``.

The state is a set of named numpy arrays plus a fingerprint of everything that determines the result
(model hash, data range, ε, settings). It is written atomically after each unit of work; a rerun
with the same fingerprint continues from it, a different or unreadable one is ignored with a
warning (the run starts over). The final output is written atomically and the state removed.
"""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path

import numpy as np

from ctbench.core import json_sha256
from ctbench.io import atomic_path

logger = logging.getLogger(__name__)


def state_path(out: str | Path) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".partial.npz")


def fingerprint(obj) -> str:
    """sha256 of ``obj`` as sorted JSON (non-JSON values by ``str``)."""
    return json_sha256(obj, compact=False)


def save_state(path: Path, fp: str, arrays: dict[str, np.ndarray]) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, fingerprint=np.array(fp), **arrays)


def load_state(path: Path, fp: str, names) -> dict[str, np.ndarray] | None:
    """The arrays ``names`` of the state at ``path`` if its fingerprint is ``fp``; else None (warned)."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if str(z["fingerprint"]) != fp:
                logger.warning("ignoring %s: it belongs to a different run (inputs or settings changed)", path)
                return None
            return {k: z[k].copy() for k in names}
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as e:
        logger.warning("ignoring unreadable resume state %s: %s", path, e)
        return None
