"""``mnist_mini``: a small real MNIST subset shipped inside the package (see MNIST_MINI.md).

6,000 train / 1,000 test images, class-balanced (600 / 100 per class): for each digit, the first
``k`` images of that digit in the official file order (the smallest indices), kept in ascending index order.
Stored in ``mnist_mini.npz`` as uint8 images ``(N, 28, 28)``, uint8 labels and the int32 indices into the
official files. It loads with no files other than the package; its SHA-256 is checked on every load.
Statistics are MNIST's (0.1307 / 0.3081): the model normalizes with the parent dataset's values.
"""

from __future__ import annotations

import hashlib
import io
import logging
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

from ctbench.data.mnist import MNIST_CLASSES, MNIST_MEAN, MNIST_STD, read_mnist_split
from ctbench.data.spec import DATASETS, DatasetSpec
from ctbench.errors import CTBenchError

if TYPE_CHECKING:  # numpy and torch are imported where used: the registry stays light
    import numpy as np

    from ctbench.data.tensors import TensorImageDataset

logger = logging.getLogger(__name__)

NPZ_NAME = "mnist_mini.npz"
#: SHA-256 of the shipped ``mnist_mini.npz`` (also recorded in MNIST_MINI.md).
NPZ_SHA256 = "4e32b82602c8138e569b678285a6787ed93df2910c56ced0769a0be754985267"
PER_CLASS = {"train": 600, "test": 100}
KEYS = tuple(f"{split}_{what}" for split in PER_CLASS for what in ("images", "labels", "indices"))


def npz_path() -> Path:
    """The shipped file, next to this module."""
    return Path(__file__).with_name(NPZ_NAME)


def select_indices(labels: np.ndarray, per_class: int, num_classes: int = 10) -> np.ndarray:
    """The first ``per_class`` indices of each class in ``labels``, merged in ascending order (int32)."""
    import numpy as np

    chosen = []
    for c in range(num_classes):
        idx = np.flatnonzero(labels == c)[:per_class]
        if len(idx) < per_class:
            raise ValueError(f"class {c} has only {len(idx)} samples, need {per_class}")
        chosen.append(idx)
    return np.sort(np.concatenate(chosen)).astype(np.int32)


def build_arrays(raw: Path) -> dict[str, np.ndarray]:
    """The subset's arrays from a prepared (verified) ``MNIST/raw`` folder."""
    import numpy as np

    arrays = {}
    for split, k in PER_CLASS.items():
        images, labels = read_mnist_split(raw, split)
        idx = select_indices(labels.numpy(), k)
        arrays[f"{split}_images"] = images.numpy()[idx].astype(np.uint8)
        arrays[f"{split}_labels"] = labels.numpy()[idx].astype(np.uint8)
        arrays[f"{split}_indices"] = idx
    return arrays


def write_npz(arrays: dict[str, np.ndarray], out: Path) -> None:
    """A deterministic ``.npz`` (fixed member order and timestamps, deflate level 9) for ``np.load``."""
    import numpy as np

    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf:
        for key in KEYS:
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.ascontiguousarray(arrays[key]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue(), compresslevel=9)


def content_sha256(arrays: dict[str, np.ndarray]) -> str:
    """SHA-256 over the arrays' names, dtypes, shapes and bytes (independent of zip/zlib details)."""
    import numpy as np

    h = hashlib.sha256()
    for key in KEYS:
        a = np.ascontiguousarray(arrays[key])
        h.update(f"{key}:{a.dtype.str}:{a.shape};".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def load_arrays(path: Path | None = None, sha256: str | None = None) -> dict[str, np.ndarray]:
    """The shipped arrays, after checking the file's SHA-256 (a corrupt file raises ``CTBenchError``)."""
    import numpy as np

    path = npz_path() if path is None else Path(path)
    expected = NPZ_SHA256 if sha256 is None else sha256
    try:
        data = path.read_bytes()
    except OSError as e:
        raise CTBenchError(f"cannot read the shipped {path}: {e.strerror or e}; reinstall ctbench") from None
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected:
        raise CTBenchError(
            f"checksum mismatch for {path}: expected SHA-256 {expected}, got {actual}; "
            "the shipped file is corrupt — reinstall ctbench or rebuild it with scripts/make_mnist_mini.py"
        )
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        return {key: npz[key] for key in KEYS}


def prepare_mnist_mini(root: Path, source: Path | None, download: bool) -> Path:
    """Nothing to stage: verify the shipped file and return its path (``root`` is not used)."""
    load_arrays()
    return npz_path()


def build_mnist_mini(location: Path, split: str, augment: bool) -> TensorImageDataset:
    """Items ``(float (1, 28, 28) in [0, 1], int)``; no augmentation, as for MNIST."""
    import numpy as np
    import torch

    from ctbench.data.tensors import TensorImageDataset

    arrays = load_arrays(location)
    images = torch.from_numpy(arrays[f"{split}_images"]).unsqueeze(1)
    labels = torch.from_numpy(arrays[f"{split}_labels"].astype(np.int64))
    ds = TensorImageDataset(images, labels, classes=MNIST_CLASSES)
    ds.indices = torch.from_numpy(arrays[f"{split}_indices"].astype(np.int64))  # into the official files
    return ds


MNIST_MINI_SPEC = DATASETS.register("mnist_mini")(
    DatasetSpec(
        name="mnist_mini",
        shape=(1, 28, 28),
        num_classes=10,
        mean=MNIST_MEAN,
        std=MNIST_STD,
        train_augmentation="none",
        source="shipped in the package (real MNIST subset, 6,000 train / 1,000 test)",
        files=(f"ctbench/data/{NPZ_NAME}",),
        prepare=prepare_mnist_mini,
        build=build_mnist_mini,
        present=lambda root: npz_path().is_file(),
    )
)
