"""Atomic file writes: a partial output must never look like a finished one.

Every writer creates ``<name>.<random>.tmp`` in the destination directory and renames it over the
target only after the content is complete and flushed (``os.replace`` is atomic on POSIX). The file
gets the permissions of an ordinary new file under the user's umask (``mkstemp`` alone would make it
0600, unreadable for colleagues in a shared results directory).

:func:`load_torch` is the one place that reads PyTorch files (``weights_only=True``): anything that is
not one gives one line saying what it is instead (an HDF5 file, a text file, a truncated PyTorch file, ...)
— never torch's advice to load untrusted pickles. :func:`check_writable` / :func:`unwritable_reason` say
why an output cannot be written (a path component that is a file, no write permission) before any work.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import pickle
import tempfile
import zipfile
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
        raise CTBenchError(f"cannot write {target}: {unwritable_reason(target) or e.strerror or e}") from None
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


def unwritable_reason(target: str | os.PathLike, *, directory: bool = False) -> str | None:
    """Why ``target`` (a file; a directory with ``directory=True``) cannot be created or replaced, or None.

    Looks only (creates nothing): a path component that is a file or a dangling link, ``target`` being a
    directory where a file is wanted (or the reverse), no write permission on the nearest existing directory.
    """
    target = Path(target)
    if directory and target.is_symlink() and not target.exists():  # (a file replaces a dangling link fine)
        return "it is a dangling symbolic link"
    if target.is_dir():
        if not directory:
            return "it is a directory"
        where = target
    elif target.exists() and directory:
        return "it is a file, not a directory"
    else:  # a new file or directory, or a file replaced atomically: its directory must be writable
        where = target.parent
        while not where.is_dir():
            if where.is_symlink() and not where.exists():
                return f"{where} is a dangling symbolic link"
            if where.exists():
                return f"{where} is a file, not a directory"
            if where.parent == where:
                return None
            where = where.parent
    if not os.access(where, os.W_OK | os.X_OK):
        return f"no write permission on {where}"
    return None


def check_writable(target: str | os.PathLike, *, directory: bool = False) -> None:
    """Fail early, with one :class:`CTBenchError` that says why, if ``target`` cannot be written.

    ``directory=False``: ``target`` is an output file; ``directory=True``: an output directory. Creates
    nothing: where the parent directory exists, a temporary file is created and removed there (catches
    read-only file systems, which permissions alone do not show).
    """
    target = Path(target)
    reason = unwritable_reason(target, directory=directory)
    if reason:
        raise CTBenchError(f"cannot write {target}: {reason}")
    where = target if directory else target.parent
    if not where.is_dir():
        return
    try:
        fd, tmp = tempfile.mkstemp(prefix=".ctbench-", suffix=".probe", dir=where)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        reason = unwritable_reason(target, directory=directory) or e.strerror or str(e)
        raise CTBenchError(f"cannot write {target}: {reason}") from None


#: Signatures of files people pass by mistake (first bytes; HDF5 may sit after a user block of 512·2^k bytes).
_HDF5 = b"\x89HDF\r\n\x1a\n"
_ZIP = b"PK\x03\x04"
_NUMPY = b"\x93NUMPY"
#: torch's legacy (non-zip) format starts with a protocol-2 pickle of this magic number.
_TORCH_LEGACY = b"\x80\x02\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")


def sniff_file(path: str | os.PathLike) -> str:
    """What a file looks like, from its first bytes: ``"empty"``, ``"hdf5"``, ``"zip"``, ``"torch-legacy"``,
    ``"pickle"``, ``"numpy"``, ``"text"`` or ``"unknown"``. Reads at most a few KiB; loads nothing."""
    with open(path, "rb") as f:
        head = f.read(4096)
        if not head:
            return "empty"
        if head.startswith(_HDF5):
            return "hdf5"
        offset = 512
        while offset <= 1 << 20:
            f.seek(offset)
            block = f.read(len(_HDF5))
            if len(block) < len(_HDF5):
                break
            if block == _HDF5:
                return "hdf5"
            offset *= 2
    if head.startswith(_ZIP):
        return "zip"
    if head.startswith(_TORCH_LEGACY):
        return "torch-legacy"
    if len(head) > 1 and head[0] == 0x80 and 2 <= head[1] <= 5:  # pickle protocol 2-5
        return "pickle"
    if head.startswith(_NUMPY):
        return "numpy"
    if _looks_like_text(head):
        return "text"
    return "unknown"


def _looks_like_text(head: bytes) -> bool:
    if b"\0" in head:
        return False
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(head) - 3:  # not just a character cut at the end of the block
            return False
        text = head[: e.start].decode("utf-8")
    return all(c.isprintable() or c in "\t\n\r\f\v\b\x1b" for c in text)


_KIND_WORDS = {
    "empty": "an empty file",
    "hdf5": "an HDF5 file",
    "pickle": "a plain Python pickle (not written by torch.save)",
    "numpy": "a NumPy array file",
    "text": "a text file",
}


def load_torch(path: str | os.PathLike, what: str, map_location="cpu", hint: str = ""):
    """``torch.load(path, weights_only=True)``; a missing or foreign file is one :class:`CTBenchError`
    saying what it is instead and naming ``what`` was expected (e.g. "ctbench model file"), followed by
    ``hint`` (e.g. "model.pt, written by ctbench train or select") in parentheses.

    Files that cannot be PyTorch files (HDF5, text, empty, NumPy, plain pickles) are recognised by their
    first bytes and never handed to ``torch.load``."""
    import torch

    path = Path(path)
    tail = f" ({hint})" if hint else ""
    unreadable = "not a readable PyTorch file" + (f"; {hint}" if hint else "")
    if path.is_dir():
        raise CTBenchError(f"{path} is a directory, not a {what}{tail}")
    if not path.is_file():
        raise CTBenchError(f"{what} not found: {path}")
    try:
        kind = sniff_file(path)
    except OSError as e:
        raise CTBenchError(f"cannot read {path}: {e.strerror or e}") from None
    if kind in _KIND_WORDS:
        raise CTBenchError(f"{path} is {_KIND_WORDS[kind]}, not a {what}{tail}")
    if kind == "zip" and not _is_torch_zip(path):
        raise CTBenchError(f"{path} is a zip archive but not a PyTorch file, so not a {what}{tail}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if any(w in str(e).lower() for w in ("unsupported global", "unsupported class")):  # a refused object
            raise CTBenchError(
                f"{path} is not a {what}: it holds Python objects that ctbench never writes "
                "(refused: loading them could run arbitrary code)"
            ) from None
        raise CTBenchError(f"{path} is not a {what} ({unreadable})") from None
    except Exception:  # noqa: BLE001 - truncated, random or foreign bytes are the same user error
        if kind in ("zip", "torch-legacy"):
            raise CTBenchError(f"{path} is not a {what}: it is a truncated or damaged PyTorch file") from None
        raise CTBenchError(f"{path} is not a {what} ({unreadable})") from None


def _is_torch_zip(path: Path) -> bool:
    """Whether a zip file is laid out like ``torch.save``'s (``<name>/data.pkl``); a truncated one counts."""
    try:
        with zipfile.ZipFile(path) as z:
            return any(n.endswith("/data.pkl") or n == "data.pkl" for n in z.namelist())
    except (zipfile.BadZipFile, OSError):
        return True  # damaged: let torch.load try and report it as truncated or damaged


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


@contextlib.contextmanager
def quiet_stdout():
    """Silence C++-level prints to file descriptor 1 (Marabou reports every property it loads; HiGHS
    prints its banner from the first ``Highs()`` of a process), so stdout stays the command's own."""
    import sys

    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 1)
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
