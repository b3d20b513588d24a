"""TinyImageNet (Le & Yang, 2015): 3×64×64 colour images, 200 classes, 100,000 train / 10,000 val.

CTBench App. C.1: normalize with the dataset mean/std (inside the model), augment with random horizontal
flips and random 64×64 crops of the image zero-padded by 4 pixels (the paper's "4 pixel zero padding"; the
reference implementation uses ``padding_mode='edge'``); train on ``train``, certify on the official validation
set — our ``test`` split.

A prepared root holds ``<root>/tiny-imagenet-200/`` with ``wnids.txt``, ``train/<wnid>/images/*.JPEG`` and
``val/<wnid>/*.JPEG`` (the official ``val/images`` reorganized into class folders using
``val/val_annotations.txt``, see :func:`reorganize_val`), opened with ``torchvision.datasets.ImageFolder``.
The class list is ``sorted(wnids.txt)`` (= ImageFolder's order on the real data).
Sources: ``tiny-imagenet-200.zip`` (MD5-verified, :data:`TINYIMAGENET_MD5`), an extracted folder, or the
archive URL. There is no official per-image checksum; the marker records file counts and the MD5s of the
two index files.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from ctbench.data.integrity import (
    MARKER,
    download_url,
    extract_archive,
    md5_of,
    missing_error,
    place_dir,
    staging_dir,
    verify_md5,
    write_marker,
)
from ctbench.data.spec import DATASETS, DatasetSpec, require_dir
from ctbench.errors import CTBenchError

if TYPE_CHECKING:  # torchvision is imported where used: the registry stays light
    from torchvision import transforms
    from torchvision.datasets import ImageFolder

logger = logging.getLogger(__name__)

FOLDER = "tiny-imagenet-200"
ARCHIVE = "tiny-imagenet-200.zip"
URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
#: Expected MD5 of the archive. Tests may replace this dict.
TINYIMAGENET_MD5: dict[str, str] = {ARCHIVE: "90528d7ca1a48142e341f4ef8d21d0de"}
TINYIMAGENET_MEAN = (0.4802, 0.4481, 0.3975)
TINYIMAGENET_STD = (0.2302, 0.2265, 0.2262)
_INDEX_FILES = ("wnids.txt", "val/val_annotations.txt")


def read_wnids(folder: Path) -> list[str]:
    """The sorted class ids (WordNet ids) from ``folder/wnids.txt``."""
    try:
        wnids = sorted(
            {line.strip() for line in (folder / "wnids.txt").read_text().splitlines() if line.strip()}
        )
    except OSError as e:
        raise CTBenchError(f"cannot read {folder / 'wnids.txt'}: {e.strerror or e}") from None
    if not wnids:
        raise CTBenchError(f"{folder / 'wnids.txt'} lists no classes")
    return wnids


def reorganize_val(val_dir: Path) -> int:
    """Move ``val/images/<f>`` to ``val/<wnid>/<f>`` per ``val/val_annotations.txt``; return files moved.

    Idempotent: images already in their class folder are skipped; ``val/images`` is removed once empty. An
    annotated image found in neither place raises ``CTBenchError``.
    """
    annotations = val_dir / "val_annotations.txt"
    try:
        lines = annotations.read_text().splitlines()
    except OSError as e:
        raise CTBenchError(f"cannot read {annotations}: {e.strerror or e}") from None
    moved = 0
    for line in lines:
        if not line.strip():
            continue
        fname, wnid = line.split("\t")[:2]
        src, dst = val_dir / "images" / fname, val_dir / wnid / fname
        if src.is_file():
            dst.parent.mkdir(exist_ok=True)
            os.replace(src, dst)
            moved += 1
        elif not dst.is_file():
            raise CTBenchError(f"{annotations} lists {fname} ({wnid}) but neither {src} nor {dst} exists")
    images = val_dir / "images"
    if images.is_dir() and not any(images.iterdir()):
        images.rmdir()
    logger.debug("reorganized %d validation images in %s", moved, val_dir)
    return moved


def _count_images(folder: Path) -> int:
    return sum(1 for p in folder.rglob("*") if p.suffix.lower() in (".jpeg", ".jpg", ".png"))


def _check_layout(folder: Path) -> None:
    """Raise ``CTBenchError`` unless ``folder`` has wnids.txt, train/<wnid>/ and val/val_annotations.txt."""
    for name in _INDEX_FILES:
        if not (folder / name).is_file():
            raise CTBenchError(f"{folder} is not a TinyImageNet folder: {name} is missing")
    missing = [w for w in read_wnids(folder) if not (folder / "train" / w).is_dir()]
    if missing:
        raise CTBenchError(
            f"{folder / 'train'} lacks class folders for {len(missing)} wnids, e.g. {missing[0]}"
        )


def _index_md5s(folder: Path) -> dict[str, str]:
    return {name: md5_of(folder / name) for name in _INDEX_FILES}


def is_prepared(folder: Path) -> bool:
    """Cheap check: the marker exists, matches the index files' sizes, and val is reorganized."""
    try:
        files = json.loads((folder / MARKER).read_text())["files"]
        sizes_ok = all((folder / n).stat().st_size == files[n]["size"] for n in _INDEX_FILES)
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return sizes_ok and not (folder / "val" / "images").exists()


def _finish(folder: Path) -> None:
    """Reorganize val, check the layout and write the marker (index MD5s + image counts)."""
    _check_layout(folder)
    reorganize_val(folder / "val")
    counts = {"train_images": _count_images(folder / "train"), "val_images": _count_images(folder / "val")}
    write_marker(folder, _index_md5s(folder), counts=counts)


def _install(staged: Path, root: Path) -> Path:
    _finish(staged)
    final = root / FOLDER
    place_dir(staged, final, lambda: is_prepared(final))
    logger.info("prepared TinyImageNet in %s", final)
    return final


def stage_from_archive(archive: Path, root: Path) -> Path:
    """Check the zip's MD5, extract into a staging folder, reorganize val, rename into ``root``."""
    verify_md5(archive, TINYIMAGENET_MD5[ARCHIVE])
    with staging_dir(root) as tmp:
        extract_archive(str(archive), str(tmp))
        if not (tmp / FOLDER).is_dir():
            raise CTBenchError(f"{archive} does not contain {FOLDER}/")
        return _install(tmp / FOLDER, root)


def stage_from_folder(folder: Path, root: Path) -> Path:
    """Copy an extracted TinyImageNet folder (left untouched) into ``root`` and reorganize the copy."""
    _check_layout(folder)
    with staging_dir(root) as tmp:
        shutil.copytree(folder, tmp / FOLDER, ignore=shutil.ignore_patterns(MARKER))
        return _install(tmp / FOLDER, root)


def prepare_tinyimagenet(root: Path, source: Path | None, download: bool) -> Path:
    """Make ``<root>/tiny-imagenet-200`` present, reorganized and marked; return it (idempotent)."""
    final = root / FOLDER
    if is_prepared(final):
        return final
    if final.is_dir() and (final / "wnids.txt").is_file():  # extracted into the root by hand
        _finish(final)
        return final
    places = [final]
    if source is not None:
        require_dir(source)
        for folder in (source / FOLDER, source):
            if (folder / "wnids.txt").is_file():
                return stage_from_folder(folder, root)
        if (source / ARCHIVE).is_file():
            return stage_from_archive(source / ARCHIVE, root)
        places += [source / FOLDER, source]
    if download:
        with staging_dir(root) as tmp:
            logger.info("downloading TinyImageNet from %s", URL)
            try:
                download_url(URL, str(tmp), ARCHIVE, None)  # MD5: stage_from_archive
            except (OSError, RuntimeError) as e:
                raise CTBenchError(f"TinyImageNet download failed: {e}") from None
            return stage_from_archive(tmp / ARCHIVE, root)
    raise missing_error("tinyimagenet", [f"{FOLDER}/ (with wnids.txt, train/, val/)", ARCHIVE], places)


@functools.cache
def _wnid_image_folder() -> type[ImageFolder]:
    """The class :class:`WnidImageFolder`, created on first use (it subclasses a torchvision class)."""
    from torchvision.datasets import ImageFolder

    class WnidImageFolder(ImageFolder):
        """``ImageFolder`` whose classes are the given wnids (sorted) rather than whatever folders exist."""

        def __init__(self, root: str, wnids: list[str], transform):
            self._wnids = sorted(wnids)
            super().__init__(root, transform=transform)

        def find_classes(self, directory):
            return self._wnids, {w: i for i, w in enumerate(self._wnids)}

    WnidImageFolder.__module__ = __name__  # picklable as ctbench.data.tinyimagenet.WnidImageFolder (__getattr__)
    WnidImageFolder.__qualname__ = "WnidImageFolder"
    return WnidImageFolder


def tinyimagenet_transform(augment: bool) -> transforms.Compose:
    """PIL image → float (3, 64, 64) in [0, 1]; with ``augment`` flip + RandomCrop(64, zero pad 4)."""
    from torchvision import transforms

    aug = [transforms.RandomHorizontalFlip(), transforms.RandomCrop(64, padding=4, padding_mode="constant")]
    return transforms.Compose([*(aug if augment else []), transforms.ToTensor()])


def build_tinyimagenet(location: Path, split: str, augment: bool) -> ImageFolder:
    """``ImageFolder`` on ``train/`` or ``val/`` (split ``test``): items ``(float (3, 64, 64), int)``."""
    folder = location / ("train" if split == "train" else "val")
    try:
        return _wnid_image_folder()(str(folder), read_wnids(location), tinyimagenet_transform(augment))
    except FileNotFoundError as e:
        raise CTBenchError(f"TinyImageNet {split} split in {folder} is incomplete: {e}") from None


TINYIMAGENET_SPEC = DATASETS.register("tinyimagenet")(
    DatasetSpec(
        name="tinyimagenet",
        shape=(3, 64, 64),
        num_classes=200,
        mean=TINYIMAGENET_MEAN,
        std=TINYIMAGENET_STD,
        train_augmentation="RandomHorizontalFlip + RandomCrop(64, padding=4) (zero padding)",
        source=f"{ARCHIVE} or {FOLDER}/: --source-dir or download from cs231n.stanford.edu",
        files=(f"{FOLDER}/", ARCHIVE),
        prepare=prepare_tinyimagenet,
        build=build_tinyimagenet,
        present=lambda root: is_prepared(root / FOLDER),
    )
)


def __getattr__(name: str):
    """``WnidImageFolder`` (a torchvision ``ImageFolder``), created on first access (PEP 562)."""
    if name == "WnidImageFolder":
        return _wnid_image_folder()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
