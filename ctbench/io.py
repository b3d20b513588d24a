"""Atomic file writes: a partial output must never look like a finished one.

Every writer creates ``<name>.<random>.tmp`` in the destination directory and renames it over the
target only after the content is complete and flushed (``os.replace`` is atomic on POSIX). The file
gets the permissions of an ordinary new file under the user's umask (``mkstemp`` alone would make it
0600, unreadable for colleagues in a shared results directory).

:func:`load_torch` is the one place that reads PyTorch files (``weights_only=True``): anything that is
not one gives one line saying so — never torch's advice to load untrusted pickles.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ctbench.errors import CTBenchError


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``target``; on success rename it to ``target``, else delete it."""
    target = Path(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as e:
        raise CTBenchError(f"cannot write {target}: {e.strerror or e}") from None
    os.close(fd)
    tmp = Path(tmp)
    os.chmod(tmp, 0o666 & ~current_umask())
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def current_umask() -> int:
    """The process's umask (read by setting and restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def load_torch(path: str | os.PathLike, what: str, map_location="cpu"):
    """``torch.load(path, weights_only=True)``; a missing or foreign file is one :class:`CTBenchError`
    naming ``what`` was expected (e.g. "ctbench model file")."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise CTBenchError(f"{what} not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights only load failed" in str(e).lower():
            raise CTBenchError(
                f"{path} is not a {what}: it holds Python objects that ctbench never writes "
                "(refused: loading them could run arbitrary code)"
            ) from None
        raise CTBenchError(f"{path} is not a {what} (not a readable PyTorch file)") from None
    except Exception:  # noqa: BLE001 - truncated, random or foreign bytes are the same user error
        raise CTBenchError(f"{path} is not a {what} (not a readable PyTorch file)") from None


def write_text(target: str | os.PathLike, text: str) -> None:
    with atomic_path(target) as tmp:
        tmp.write_text(text)


def write_json(target: str | os.PathLike, obj) -> None:
    write_text(target, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
