"""CIFAR-10 (Krizhevsky et al., 2009): 3×32×32 colour images, 10 classes, 50,000 train / 10,000 test.

CTBench App. C.1: normalize with the dataset mean/std (inside the model) and augment training images with
random horizontal flips and random 32×32 crops of the image zero-padded by 2 pixels. We follow the paper's
text ("2 pixel zero padding"); the reference implementation uses ``padding_mode='edge'`` instead.

A prepared root holds torchvision's layout ``<root>/cifar-10-batches-py/`` and is opened with
``torchvision.datasets.CIFAR10``. Sources: an extracted ``cifar-10-batches-py/`` folder (each file checked
against torchvision's MD5 list) or ``cifar-10-python.tar.gz`` (archive MD5, then each file), or the real
download. The expected MD5s live in :data:`CIFAR10_MD5`, read at call time so tests can substitute their own.
"""

from __future__ import annotations

import functools
import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from ctbench.data.integrity import (
    download_url,
    ensure_verified,
    extract_archive,
    marker_ok,
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
    from torchvision.datasets import CIFAR10

logger = logging.getLogger(__name__)

# torchvision's constants for CIFAR-10 (``torchvision.datasets.CIFAR10``), written out so that importing the
# registry does not import torchvision; tests/test_data.py checks that they equal torchvision's.
FOLDER = "cifar-10-batches-py"  # CIFAR10.base_folder
ARCHIVE = "cifar-10-python.tar.gz"  # CIFAR10.filename
META = "batches.meta"  # CIFAR10.meta["filename"]
URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"  # CIFAR10.url
#: Expected MD5 per file (torchvision's tables), plus the archive's. Tests may replace this dict.
CIFAR10_MD5: dict[str, str] = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",  # CIFAR10.train_list
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",  # CIFAR10.test_list
    META: "5ff9c542aee3614f3951f8cda6e48888",  # CIFAR10.meta["md5"]
    ARCHIVE: "c58f30108f718f92721af3b95e74349a",  # CIFAR10.tgz_md5
}
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2023, 0.1994, 0.2010)


def _file_md5s() -> dict[str, str]:
    return {name: md5 for name, md5 in CIFAR10_MD5.items() if name != ARCHIVE}


def _verify_folder(folder: Path) -> None:
    for name, md5 in _file_md5s().items():
        verify_md5(folder / name, md5)


def _install(staged: Path, root: Path) -> Path:
    """Verify the staged ``cifar-10-batches-py`` folder, mark it, and rename it into ``root``."""
    _verify_folder(staged)
    write_marker(staged, _file_md5s())
    final = root / FOLDER
    place_dir(staged, final, lambda: marker_ok(final, _file_md5s()))
    logger.info("prepared CIFAR-10 in %s", final)
    return final


def stage_from_folder(folder: Path, root: Path) -> Path:
    """Copy a verified extracted ``cifar-10-batches-py`` folder into ``root`` (verified before any write)."""
    _verify_folder(folder)
    with staging_dir(root) as tmp:
        staged = tmp / FOLDER
        staged.mkdir()
        for name in _file_md5s():
            shutil.copyfile(folder / name, staged / name)
        return _install(staged, root)


def stage_from_archive(archive: Path, root: Path) -> Path:
    """Check the archive's MD5, extract it into a staging folder, verify each file, rename into ``root``."""
    verify_md5(archive, CIFAR10_MD5[ARCHIVE])
    with staging_dir(root) as tmp:
        extract_archive(str(archive), str(tmp))
        if not (tmp / FOLDER).is_dir():
            raise CTBenchError(f"{archive} does not contain {FOLDER}/")
        return _install(tmp / FOLDER, root)


def _source_folder(source: Path) -> Path | None:
    for folder in (source / FOLDER, source):
        if all((folder / name).is_file() for name in _file_md5s()):
            return folder
    return None


def prepare_cifar10(root: Path, source: Path | None, download: bool) -> Path:
    """Make ``<root>/cifar-10-batches-py`` present and verified; return it (idempotent)."""
    final = root / FOLDER
    if ensure_verified(final, _file_md5s()):
        return final
    if final.exists():
        raise CTBenchError(
            f"{final} is incomplete (some batch files are missing); delete it and prepare again"
        )
    places = [final]
    if source is not None:
        require_dir(source)
        if (folder := _source_folder(source)) is not None:
            return stage_from_folder(folder, root)
        if (source / ARCHIVE).is_file():
            return stage_from_archive(source / ARCHIVE, root)
        places += [source / FOLDER, source]
    if download:
        with staging_dir(root) as tmp:
            logger.info("downloading CIFAR-10 from %s", URL)
            try:
                download_url(URL, str(tmp), ARCHIVE, None)  # MD5: stage_from_archive
            except (OSError, RuntimeError) as e:
                raise CTBenchError(f"CIFAR-10 download failed: {e}") from None
            return stage_from_archive(tmp / ARCHIVE, root)
    raise missing_error("cifar10", [f"{FOLDER}/ ({', '.join(_file_md5s())})", ARCHIVE], places)


@functools.cache
def _verified_cifar10() -> type[CIFAR10]:
    """The class :class:`_VerifiedCIFAR10`, created on first use (it subclasses a torchvision class)."""
    from torchvision.datasets import CIFAR10

    class _VerifiedCIFAR10(CIFAR10):
        """torchvision's CIFAR10 on a folder already verified by :func:`prepare_cifar10` (marker present).

        Skips torchvision's re-hashing of all six batch files on every construction; the MD5 of the metadata
        file is taken from :data:`CIFAR10_MD5`.
        """

        def __init__(self, root: str, train: bool, transform):
            self.meta = {**CIFAR10.meta, "md5": CIFAR10_MD5[META]}
            super().__init__(root, train=train, transform=transform, download=False)

        def _check_integrity(self) -> bool:
            return True

    _VerifiedCIFAR10.__module__ = __name__  # picklable as ctbench.data.cifar._VerifiedCIFAR10 (__getattr__)
    _VerifiedCIFAR10.__qualname__ = "_VerifiedCIFAR10"
    return _VerifiedCIFAR10


def cifar10_transform(augment: bool) -> transforms.Compose:
    """PIL image → float tensor (3, 32, 32) in [0, 1]; with ``augment`` flip + RandomCrop(32, zero pad 2)."""
    from torchvision import transforms

    aug = [transforms.RandomHorizontalFlip(), transforms.RandomCrop(32, padding=2, padding_mode="constant")]
    return transforms.Compose([*(aug if augment else []), transforms.ToTensor()])


def build_cifar10(location: Path, split: str, augment: bool) -> CIFAR10:
    """``torchvision.datasets.CIFAR10`` items ``(float (3, 32, 32) in [0, 1], int)``."""
    return _verified_cifar10()(
        str(location.parent), train=split == "train", transform=cifar10_transform(augment)
    )


CIFAR10_SPEC = DATASETS.register("cifar10")(
    DatasetSpec(
        name="cifar10",
        shape=(3, 32, 32),
        num_classes=10,
        mean=CIFAR10_MEAN,
        std=CIFAR10_STD,
        train_augmentation="RandomHorizontalFlip + RandomCrop(32, padding=2) (zero padding)",
        source=f"{ARCHIVE} or {FOLDER}/: --source-dir (md5-verified) or torchvision download",
        files=(f"{FOLDER}/", ARCHIVE),
        prepare=prepare_cifar10,
        build=build_cifar10,
        present=lambda root: marker_ok(root / FOLDER, _file_md5s()),
    )
)


def __getattr__(name: str):
    """``CIFAR10`` (torchvision's class) and ``_VerifiedCIFAR10``, imported on first access (PEP 562)."""
    if name == "CIFAR10":
        from torchvision.datasets import CIFAR10

        return CIFAR10
    if name == "_VerifiedCIFAR10":
        return _verified_cifar10()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
