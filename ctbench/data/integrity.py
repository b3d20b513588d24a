"""Checksums, verification markers, atomic staging — shared by every dataset module.

Rules (see reference/datasets.md): a file whose MD5 does not match is never used and never copied into the
data root; staging writes into a temporary name in the destination and renames it into place only when
complete; a verified location carries ``.ctbench-verified.json`` (file names, MD5s, sizes) so later runs
check it cheaply (sizes + the expected table) instead of re-hashing; it is re-verified if the marker is
missing or stale.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path

from ctbench import __version__
from ctbench.errors import CTBenchError
from ctbench.io import atomic_path, write_json

logger = logging.getLogger(__name__)

MARKER = ".ctbench-verified.json"


def md5_of(path: Path, *, uncompressed: bool = False) -> str:
    """MD5 of ``path``; with ``uncompressed`` the MD5 of its gunzipped content (for ``*.gz`` files)."""
    md5 = hashlib.md5(usedforsecurity=False)
    if not uncompressed:
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                md5.update(block)
        return md5.hexdigest()
    try:
        with gzip.open(path, "rb") as f:
            while block := f.read(1 << 20):
                md5.update(block)
    except (OSError, EOFError) as e:
        raise CTBenchError(f"cannot decompress {path}: {e}; the file is corrupt, replace it") from None
    return md5.hexdigest()


def verify_md5(path: Path, expected: str, *, uncompressed: bool = False) -> None:
    """Raise ``CTBenchError`` naming ``path``, the expected and the actual MD5 if they differ."""
    actual = md5_of(path, uncompressed=uncompressed)
    if actual != expected:
        what = "uncompressed content of " if uncompressed else ""
        raise CTBenchError(
            f"checksum mismatch for {what}{path}: expected MD5 {expected}, got {actual}; "
            "the file is corrupt or not the official one — replace it (it was not used)"
        )
    logger.debug("verified %s (md5 %s)", path, actual)


def marker_ok(directory: Path, expected: Mapping[str, str]) -> bool:
    """Cheap check: ``directory``'s marker lists exactly ``expected``'s MD5s and every file has its size."""
    try:
        marker = json.loads((directory / MARKER).read_text())
        files = marker["files"]
        for name, md5 in expected.items():
            entry = files[name]
            if entry["md5"] != md5 or (directory / name).stat().st_size != entry["size"]:
                return False
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return True


def write_marker(directory: Path, md5s: Mapping[str, str], **extra) -> None:
    """Record verified files (name → MD5, size) in ``directory/.ctbench-verified.json`` (atomic)."""
    files = {name: {"md5": md5, "size": (directory / name).stat().st_size} for name, md5 in md5s.items()}
    created = datetime.now(timezone.utc).isoformat(timespec="seconds")
    write_json(directory / MARKER, {"files": files, "ctbench": __version__, "verified": created, **extra})


def write_marker_best_effort(directory: Path, md5s: Mapping[str, str], **extra) -> None:
    """Like :func:`write_marker`, but a read-only data root only costs a warning (re-verified next time)."""
    try:
        write_marker(directory, md5s, **extra)
    except (OSError, CTBenchError) as e:
        logger.warning(
            "could not write %s (%s); the data will be re-verified next time", directory / MARKER, e
        )


def ensure_verified(directory: Path, expected: Mapping[str, str]) -> bool:
    """True if ``directory`` holds all ``expected`` files, verified (marker, else full MD5 + new marker).

    False if any file is missing. A present file with a wrong MD5 raises ``CTBenchError``.
    """
    if marker_ok(directory, expected):
        return True
    if not all((directory / name).is_file() for name in expected):
        return False
    logger.info("verifying %s", directory)
    for name, md5 in expected.items():
        try:
            verify_md5(directory / name, md5)
        except CTBenchError as e:
            raise CTBenchError(f"{e}; delete it and prepare the data again") from None
    write_marker_best_effort(directory, expected)
    return True


def copy_atomic(src: Path, dst: Path, *, decompress: bool = False) -> None:
    """Copy (or gunzip) ``src`` to ``dst`` through a temporary file renamed into place."""
    opener = gzip.open if decompress else open
    with atomic_path(dst) as tmp:
        with opener(src, "rb") as fin, open(tmp, "wb") as fout:
            shutil.copyfileobj(fin, fout, 1 << 20)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; data roots are often shared


@contextlib.contextmanager
def staging_dir(root: Path) -> Iterator[Path]:
    """A temporary directory inside ``root`` (same file system, so renames are atomic), always removed.

    If ``root`` did not exist and is still empty afterwards (the staging failed), it is removed too, so a
    failed preparation leaves nothing behind.
    """
    existed = root.exists()
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".ctbench-staging-", dir=root))
    except OSError as e:
        raise CTBenchError(f"cannot write to data root {root}: {e.strerror or e}") from None
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if not existed:
            with contextlib.suppress(OSError):
                root.rmdir()  # only succeeds when empty


def place_dir(staged: Path, final: Path, is_ready) -> None:
    """Rename the complete ``staged`` folder to ``final``; tolerate a concurrent preparation that won."""
    try:
        os.rename(staged, final)
    except OSError:
        if final.exists() and is_ready():
            logger.info("%s was prepared concurrently; keeping that copy", final)
            return
        raise CTBenchError(
            f"{final} exists but is incomplete or unverified; delete it and prepare the data again"
        ) from None


def download_url(url: str, root: str, filename: str | None = None, md5: str | None = None) -> None:
    """``torchvision.datasets.utils.download_url`` (torchvision is imported on first use, not with ctbench.data)."""
    from torchvision.datasets.utils import download_url as tv_download_url

    tv_download_url(url, root, filename, md5)


def extract_archive(from_path: str, to_path: str | None = None) -> str:
    """``torchvision.datasets.utils.extract_archive`` (torchvision is imported on first use); returns ``to_path``."""
    from torchvision.datasets.utils import extract_archive as tv_extract_archive

    return tv_extract_archive(from_path, to_path)


def missing_error(
    dataset: str, files: Iterable[str], places: Iterable[Path], *, hint: str = ""
) -> CTBenchError:
    """One ``CTBenchError`` line: which files were looked for, where, and how to provide them."""
    where = ", ".join(str(p) for p in dict.fromkeys(places))
    return CTBenchError(
        f"{dataset} data not found: looked for {', '.join(files)} in {where}{hint}; provide them with "
        f"`ctbench data prepare {dataset} --source-dir DIR` (or CTBENCH_DATA_SOURCE=DIR), point "
        f"CTBENCH_DATA_ROOT at an already prepared root, or download with "
        f"`ctbench data prepare {dataset} --download` (needs internet)"
    )
