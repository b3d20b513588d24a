"""Tests of ctbench.data: registry, MNIST staging/verification, mnist_mini, CIFAR-10 and TinyImageNet code
paths on synthetic data of the real format, loaders, and the ``ctbench data`` CLI. Offline and fast."""

from __future__ import annotations

import argparse
import gzip
import hashlib
import importlib.util
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import Subset

import ctbench.data as data
from ctbench.data import cifar, mnist_mini, tinyimagenet
from ctbench.data.integrity import MARKER
from ctbench.data.mnist import find_source_files
from ctbench.errors import CTBenchError

REPO = Path(__file__).resolve().parents[1]
MNIST_NAMES = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Data work here is many small tensor ops; intra-op threads only contend on a small, busy CI box."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def _no_data_env(monkeypatch):
    """Tests never see the user's data root or source."""
    monkeypatch.delenv("CTBENCH_DATA_ROOT", raising=False)
    monkeypatch.delenv("CTBENCH_DATA_SOURCE", raising=False)


@pytest.fixture(scope="module")
def mnist_source() -> Path:
    src = Path(os.environ.get("CTBENCH_TEST_MNIST_SOURCE") or REPO.parent / "shared/data/MNIST/raw")
    if len(find_source_files(src)) != len(MNIST_NAMES):
        pytest.skip(
            f"real MNIST not found in {src} (set CTBENCH_TEST_MNIST_SOURCE to a folder with the IDX files)"
        )
    return src


@pytest.fixture(scope="module")
def mnist_root(mnist_source, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mnist") / "root"
    data.prepare_dataset("mnist", root, source_dir=mnist_source)
    return root


def _tree(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*")) if path.exists() else []


# ----------------------------------------------------------------------------------------------- registry
def test_registry_lists_the_four_datasets():
    assert list(data.DATASETS) == ["cifar10", "mnist", "mnist_mini", "tinyimagenet"]
    mn, c10, tin, mini = (data.get_spec(n) for n in ("mnist", "cifar10", "tinyimagenet", "mnist_mini"))
    assert (mn.shape, mn.num_classes, mn.mean, mn.std) == ((1, 28, 28), 10, (0.1307,), (0.3081,))
    assert (c10.shape, c10.mean, c10.std) == ((3, 32, 32), (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))
    assert (tin.shape, tin.num_classes, tin.std) == ((3, 64, 64), 200, (0.2302, 0.2265, 0.2262))
    assert (mini.shape, mini.mean, mini.std) == (mn.shape, mn.mean, mn.std)


def test_unknown_dataset_and_split():
    with pytest.raises(CTBenchError, match="known: cifar10, mnist, mnist_mini, tinyimagenet"):
        data.get_spec("nosuch")
    with pytest.raises(CTBenchError, match="unknown split 'val'"):
        data.load_dataset("mnist_mini", "val")


# ------------------------------------------------------------------------------------------------- MNIST
def test_full_mnist_staged(mnist_root):
    raw = mnist_root / "MNIST" / "raw"
    assert sorted(p.name for p in raw.iterdir()) == sorted([*MNIST_NAMES, MARKER])
    train, test = (
        data.load_dataset("mnist", "train", mnist_root),
        data.load_dataset("mnist", "test", mnist_root),
    )
    assert (len(train), len(test)) == (60000, 10000)
    x, y = train[0]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32 and isinstance(y, int)
    n, mean, std = data.dataset_stats(train)
    assert n == 60000 and round(mean.item(), 4) == 0.1307 and round(std.item(), 4) == 0.3081
    for ds in (train, test):
        assert ds.labels.min() == 0 and ds.labels.max() == 9
    assert data.get_spec("mnist").present(mnist_root)
    # idempotent: no source needed any more; the marker makes it cheap
    assert data.prepare_dataset("mnist", mnist_root) == raw


def test_mnist_from_uncompressed_subfolder_and_env(mnist_root, tmp_path, monkeypatch):
    # the prepared root itself is a valid source: uncompressed files under MNIST/raw/
    monkeypatch.setenv("CTBENCH_DATA_SOURCE", str(mnist_root))
    monkeypatch.setenv("CTBENCH_DATA_ROOT", str(tmp_path / "r"))
    assert len(data.load_dataset("mnist", "test")) == 10000
    assert (tmp_path / "r" / "MNIST" / "raw" / MARKER).is_file()


def test_mnist_bad_checksum_rejected(mnist_source, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for path in find_source_files(mnist_source).values():
        shutil.copy(path, src / path.name)
    bad = src / "t10k-labels-idx1-ubyte.gz"
    plain = src / bad.stem
    content = bytearray(gzip.decompress(bad.read_bytes()) if bad.is_file() else plain.read_bytes())
    content[-1] ^= 0xFF
    plain.unlink(missing_ok=True)
    bad.write_bytes(gzip.compress(bytes(content)))  # a valid gzip with the wrong content
    root = tmp_path / "root"
    with pytest.raises(CTBenchError) as e:
        data.prepare_dataset("mnist", root, source_dir=src)
    msg = str(e.value)
    assert "t10k-labels-idx1-ubyte" in msg and "27ae3e4e09519cfbb04c329615203637" in msg
    assert hashlib.md5(bytes(content)).hexdigest() in msg
    assert _tree(root) == []


def test_corrupt_prepared_root_rejected(mnist_root, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(mnist_root, root)
    labels = root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
    content = bytearray(labels.read_bytes())
    content[-1] ^= 0xFF
    labels.write_bytes(bytes(content))  # same size: only a missing marker triggers re-verification
    assert data.prepare_dataset("mnist", root)  # the marker still vouches for it (cheap check)
    (labels.parent / MARKER).unlink()
    with pytest.raises(CTBenchError, match="t10k-labels-idx1-ubyte.*expected MD5 27ae3e4e"):
        data.load_dataset("mnist", "test", root)


def test_missing_mnist(tmp_path):
    root, empty = tmp_path / "root", tmp_path / "empty"
    empty.mkdir()
    for kwargs in ({}, {"source_dir": empty}):
        with pytest.raises(CTBenchError) as e:
            data.load_dataset("mnist", "train", root, **kwargs)
        msg = str(e.value)
        assert all(n in msg for n in MNIST_NAMES) and str(root / "MNIST" / "raw") in msg
        assert "--source-dir" in msg and "--download" in msg and "CTBENCH_DATA_SOURCE" in msg
        assert "\n" not in msg
    assert not root.exists()
    with pytest.raises(CTBenchError, match="does not exist"):
        data.prepare_dataset("mnist", root, source_dir=tmp_path / "nowhere")


def test_stale_source_env_ignored_when_root_is_prepared(mnist_root, tmp_path, monkeypatch):
    monkeypatch.setenv("CTBENCH_DATA_SOURCE", str(tmp_path / "gone"))
    assert data.prepare_dataset("mnist", mnist_root) == mnist_root / "MNIST" / "raw"


def test_mnist_download_path_is_staged_and_verified(mnist_source, tmp_path, monkeypatch):
    """``download=True`` goes through torchvision's MNIST into a staging folder (network faked here)."""
    import torchvision.datasets

    class FakeMNIST:
        def __init__(self, root, train=True, download=False):
            raw = Path(root) / "MNIST" / "raw"
            raw.mkdir(parents=True)
            for path in find_source_files(mnist_source).values():
                shutil.copy(path, raw / path.name)

    monkeypatch.setattr(torchvision.datasets, "MNIST", FakeMNIST)
    root = tmp_path / "root"
    assert data.prepare_dataset("mnist", root, download=True) == root / "MNIST" / "raw"
    assert sorted(p.name for p in root.iterdir()) == ["MNIST"]  # the staging folder is gone


# -------------------------------------------------------------------------------------------- mnist_mini
def test_mnist_mini():
    train, test = data.load_dataset("mnist_mini", "train"), data.load_dataset("mnist_mini", "test")
    assert (len(train), len(test)) == (6000, 1000)
    for ds, k in ((train, 600), (test, 100)):
        assert ds.labels.bincount().tolist() == [k] * 10
        assert ds.images.shape[1:] == (1, 28, 28)
        assert torch.equal(ds.indices, ds.indices.sort().values)
        x, y = ds[len(ds) - 1]
        assert x.shape == (1, 28, 28) and 0.0 <= x.min() and x.max() <= 1.0 and 0 <= y <= 9
    assert data.prepare_dataset("mnist_mini") == mnist_mini.npz_path()
    assert mnist_mini.npz_path().stat().st_size <= 2 * 1024 * 1024


def test_mnist_mini_matches_real_mnist(mnist_root):
    raw = mnist_root / "MNIST" / "raw"
    for split in ("train", "test"):
        mini, full = data.load_dataset("mnist_mini", split), data.load_dataset("mnist", split, mnist_root)
        assert torch.equal(mini.images, full.images[mini.indices])
        assert torch.equal(mini.labels, full.labels[mini.indices])
    # the selection rule reproduces the shipped content exactly
    rebuilt = mnist_mini.build_arrays(raw)
    assert mnist_mini.content_sha256(rebuilt) == mnist_mini.content_sha256(mnist_mini.load_arrays())


def test_mnist_mini_corrupt_file(tmp_path, monkeypatch):
    bad = tmp_path / "mnist_mini.npz"
    content = bytearray(mnist_mini.npz_path().read_bytes())
    content[1000] ^= 0xFF
    bad.write_bytes(bytes(content))
    monkeypatch.setattr(mnist_mini, "npz_path", lambda: bad)
    with pytest.raises(CTBenchError, match="mnist_mini.npz.*expected SHA-256"):
        data.load_dataset("mnist_mini", "train")


# ----------------------------------------------------------------------------------------------- loaders
def test_make_loader_reproducible_and_batched():
    ds = data.load_dataset("mnist_mini", "test")

    def labels(loader):
        return torch.cat([y for _, y in loader])

    a, b = data.make_loader(ds, 64, True, seed=1), data.make_loader(ds, 64, True, seed=1)
    epoch1 = labels(a)
    assert torch.equal(epoch1, labels(b))  # same seed, same order
    assert not torch.equal(epoch1, labels(a))  # the next epoch is reshuffled
    x, y = next(iter(a))
    assert x.shape == (64, 1, 28, 28) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert not torch.equal(labels(a), labels(data.make_loader(ds, 64, True, seed=2)))
    # the batch-at-a-time path gives the same order and values as the per-item path
    per_item = data.make_loader(Subset(ds, range(len(ds))), 64, True, seed=1)
    for (xa, ya), (xb, yb) in zip(data.make_loader(ds, 64, True, seed=1), per_item, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert torch.equal(labels(data.make_loader(ds, 100, False, seed=0)), ds.labels)
    small = Subset(ds, range(200))
    workers = data.make_loader(small, 50, True, seed=3, num_workers=1)
    assert torch.equal(labels(workers), labels(data.make_loader(small, 50, True, seed=3)))


# -------------------------------------------------------------------------------- CIFAR-10 (synthetic)
def _write_fake_cifar(folder: Path, n: int = 4) -> dict[str, str]:
    """The real format: pickled dicts with 'data' uint8 (N, 3072) (CHW rows) and 'labels'. The real files
    are Python-2 pickles whose str keys load as str under encoding='latin1', like these."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    names = [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]
    for name in names:
        batch = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "labels": list(range(n))}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    (folder / "batches.meta").write_bytes(
        pickle.dumps({"label_names": [f"c{i}" for i in range(10)]}, protocol=2)
    )
    return {name: hashlib.md5((folder / name).read_bytes()).hexdigest() for name in [*names, "batches.meta"]}


@pytest.fixture
def fake_cifar(tmp_path, monkeypatch) -> Path:
    src = tmp_path / "src"
    md5s = _write_fake_cifar(src / "cifar-10-batches-py")
    shutil.make_archive(str(src / "cifar-10-python"), "gztar", src, "cifar-10-batches-py")
    md5s["cifar-10-python.tar.gz"] = hashlib.md5((src / "cifar-10-python.tar.gz").read_bytes()).hexdigest()
    monkeypatch.setattr(cifar, "CIFAR10_MD5", md5s)
    return src


def test_cifar10_from_folder(fake_cifar, tmp_path):
    root = tmp_path / "root"
    train = data.load_dataset("cifar10", "train", root, source_dir=fake_cifar)
    test = data.load_dataset("cifar10", "test", root)  # prepared now: no source needed
    assert (len(train), len(test)) == (20, 4)
    x, y = train[0]
    assert x.shape == (3, 32, 32) and 0 <= x.min() and x.max() <= 1 and y == 0
    raw = pickle.loads((fake_cifar / "cifar-10-batches-py" / "test_batch").read_bytes())["data"]
    assert torch.allclose(test[1][0], torch.from_numpy(raw[1].reshape(3, 32, 32)).float() / 255)
    assert data.get_spec("cifar10").present(root)
    torch.manual_seed(0)
    batch = next(iter(data.make_loader(train, 8, True, seed=0)))
    assert batch[0].shape == (8, 3, 32, 32)
    plain = data.load_dataset("cifar10", "train", root, augment=False)
    assert any(not torch.equal(train[i][0], plain[i][0]) for i in range(len(plain)))  # flip/crop happen


def test_cifar10_from_archive(fake_cifar, tmp_path):
    shutil.rmtree(fake_cifar / "cifar-10-batches-py")
    location = data.prepare_dataset("cifar10", tmp_path / "root", source_dir=fake_cifar)
    assert location == tmp_path / "root" / "cifar-10-batches-py" and (location / MARKER).is_file()
    assert [p.name for p in (tmp_path / "root").iterdir()] == ["cifar-10-batches-py"]  # no staging left


def test_cifar10_download_path(fake_cifar, tmp_path, monkeypatch):
    """``download=True``: the archive is fetched into a staging folder, then verified (network faked)."""
    archive = fake_cifar / "cifar-10-python.tar.gz"
    calls = []

    def fake_download(url, folder, filename, md5):
        calls.append((url, filename, md5))
        shutil.copy(archive, Path(folder) / filename)

    monkeypatch.setattr(cifar, "download_url", fake_download)
    root = tmp_path / "root"
    assert data.prepare_dataset("cifar10", root, download=True) == root / "cifar-10-batches-py"
    assert calls == [(cifar.URL, archive.name, None)]  # verified afterwards, by us
    assert [p.name for p in root.iterdir()] == ["cifar-10-batches-py"]
    archive.write_bytes(b"truncated")  # a bad download is rejected with our checksum message
    with pytest.raises(CTBenchError, match="cifar-10-python.tar.gz: expected MD5"):
        data.prepare_dataset("cifar10", tmp_path / "root2", download=True)
    assert not (tmp_path / "root2").exists()


def test_cifar10_constants_match_torchvision():
    """cifar.py spells out torchvision's names and MD5s (so the registry imports no torchvision): no typo."""
    from torchvision.datasets import CIFAR10

    assert (cifar.FOLDER, cifar.ARCHIVE, cifar.META, cifar.URL) == (
        CIFAR10.base_folder, CIFAR10.filename, CIFAR10.meta["filename"], CIFAR10.url
    )
    assert cifar.CIFAR10_MD5 == {
        **dict(CIFAR10.train_list),
        **dict(CIFAR10.test_list),
        CIFAR10.meta["filename"]: CIFAR10.meta["md5"],
        CIFAR10.filename: CIFAR10.tgz_md5,
    }
    assert cifar.CIFAR10 is CIFAR10  # still reachable as a module attribute (imported on access)


def test_lazy_torchvision_classes_are_stable_and_picklable(fake_cifar, tmp_path):
    """The torchvision subclasses are created on first use, once, and pickle by their module name (for
    DataLoader workers started with spawn)."""
    train = data.load_dataset("cifar10", "train", tmp_path / "root", source_dir=fake_cifar, augment=False)
    assert type(train) is cifar._VerifiedCIFAR10 and type(train).__module__ == "ctbench.data.cifar"
    again = pickle.loads(pickle.dumps(train))
    assert type(again) is type(train) and torch.equal(again[3][0], train[3][0])
    wnid_folder = tinyimagenet.WnidImageFolder
    assert wnid_folder is tinyimagenet.WnidImageFolder and pickle.loads(pickle.dumps(wnid_folder)) is wnid_folder
    with pytest.raises(AttributeError, match="nosuch"):
        tinyimagenet.nosuch  # noqa: B018


def test_md5_of_matches_torchvision(tmp_path):
    from torchvision.datasets.utils import calculate_md5

    from ctbench.data.integrity import md5_of

    path = tmp_path / "f.bin"
    path.write_bytes(os.urandom((1 << 20) + 12345))  # more than one read block
    assert md5_of(path) == calculate_md5(str(path)) == hashlib.md5(path.read_bytes()).hexdigest()
    with pytest.raises(OSError):
        md5_of(tmp_path / "missing")


def test_cifar10_tampered_rejected(fake_cifar, tmp_path):
    batch = fake_cifar / "cifar-10-batches-py" / "data_batch_3"
    content = bytearray(batch.read_bytes())
    content[100] ^= 0xFF
    batch.write_bytes(bytes(content))
    root = tmp_path / "root"
    with pytest.raises(CTBenchError, match="data_batch_3: expected MD5"):
        data.prepare_dataset("cifar10", root, source_dir=fake_cifar)
    assert _tree(root) == []
    shutil.rmtree(fake_cifar / "cifar-10-batches-py")
    (fake_cifar / "cifar-10-python.tar.gz").write_bytes(b"not the archive")
    with pytest.raises(CTBenchError, match="cifar-10-python.tar.gz: expected MD5"):
        data.prepare_dataset("cifar10", root, source_dir=fake_cifar)
    assert _tree(root) == []


# ---------------------------------------------------------------------------- TinyImageNet (synthetic)
WNIDS = ["n02", "n01", "n03"]  # deliberately unsorted in wnids.txt


def _write_fake_tin(folder: Path, wnids: list[str] = WNIDS, per_class: int = 2) -> None:
    """Official layout: wnids.txt, train/<wnid>/images/*.JPEG (+ boxes), val/images + val_annotations.txt."""
    from PIL import Image

    rng = np.random.default_rng(0)

    def jpeg(path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path, "JPEG")

    folder.mkdir(parents=True)
    (folder / "wnids.txt").write_text("\n".join(wnids) + "\n")
    for w in wnids:
        for i in range(per_class):
            jpeg(folder / "train" / w / "images" / f"{w}_{i}.JPEG")
        (folder / "train" / w / f"{w}_boxes.txt").write_text("")
    lines = []
    for i, w in enumerate(["n03", "n01", "n02", "n03"] if wnids is WNIDS else wnids[:4]):
        jpeg(folder / "val" / "images" / f"val_{i}.JPEG")
        lines.append(f"val_{i}.JPEG\t{w}\t0\t0\t63\t63")
    (folder / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")


def test_tinyimagenet_reorganize_val_idempotent(tmp_path):
    folder = tmp_path / "tiny-imagenet-200"
    _write_fake_tin(folder)
    assert data.reorganize_tinyimagenet_val(folder / "val") == 4
    expected = {"n01": ["val_1.JPEG"], "n02": ["val_2.JPEG"], "n03": ["val_0.JPEG", "val_3.JPEG"]}
    got = {w: sorted(p.name for p in (folder / "val" / w).iterdir()) for w in expected}
    assert got == expected and not (folder / "val" / "images").exists()
    assert data.reorganize_tinyimagenet_val(folder / "val") == 0  # idempotent
    (folder / "val" / "n01" / "val_1.JPEG").unlink()
    with pytest.raises(CTBenchError, match="val_1.JPEG"):
        data.reorganize_tinyimagenet_val(folder / "val")


def test_tinyimagenet_from_folder_and_archive(tmp_path, monkeypatch):
    src = tmp_path / "src"
    _write_fake_tin(src / "tiny-imagenet-200")
    root = tmp_path / "root"
    train = data.load_dataset("tinyimagenet", "train", root, source_dir=src)
    test = data.load_dataset("tinyimagenet", "test", root, augment=True)
    assert (src / "tiny-imagenet-200" / "val" / "images").is_dir()  # the source is left untouched
    assert train.classes == sorted(WNIDS) and len(train.classes) == 3 and (len(train), len(test)) == (6, 4)
    x, y = train[0]
    assert x.shape == (3, 64, 64) and x.dtype == torch.float32 and y == 0
    assert test[0][0].shape == (3, 64, 64)
    assert sorted(y for _, y in test.samples) == [0, 1, 2, 2]
    assert data.prepare_dataset("tinyimagenet", root) == root / "tiny-imagenet-200"
    assert data.get_spec("tinyimagenet").present(root)
    # archive path, with an injected MD5; a wrong MD5 is rejected before extraction
    shutil.make_archive(str(tmp_path / "z" / "tiny-imagenet-200"), "zip", src, "tiny-imagenet-200")
    archive = tmp_path / "z" / "tiny-imagenet-200.zip"
    with pytest.raises(CTBenchError, match="tiny-imagenet-200.zip: expected MD5 90528d7c"):
        data.prepare_dataset("tinyimagenet", tmp_path / "root2", source_dir=archive.parent)
    assert not (tmp_path / "root2").exists()
    monkeypatch.setattr(
        tinyimagenet, "TINYIMAGENET_MD5", {archive.name: hashlib.md5(archive.read_bytes()).hexdigest()}
    )
    location = data.prepare_dataset("tinyimagenet", tmp_path / "root2", source_dir=archive.parent)
    assert len(data.load_dataset("tinyimagenet", "test", tmp_path / "root2")) == 4
    assert not (location / "val" / "images").exists()
    # download=True: fetched into a staging folder, then the same archive path (network faked)
    monkeypatch.setattr(tinyimagenet, "download_url", lambda u, d, f, m: shutil.copy(archive, Path(d) / f))
    assert data.prepare_dataset("tinyimagenet", tmp_path / "root3", download=True).is_dir()
    assert [p.name for p in (tmp_path / "root3").iterdir()] == ["tiny-imagenet-200"]


def test_tinyimagenet_200_classes(tmp_path):
    wnids = [f"n{i:08d}" for i in range(200)]
    _write_fake_tin(tmp_path / "src" / "tiny-imagenet-200", wnids, per_class=1)
    train = data.load_dataset("tinyimagenet", "train", tmp_path / "root", source_dir=tmp_path / "src")
    assert len(train.classes) == data.get_spec("tinyimagenet").num_classes == 200
    assert [y for _, y in train.samples] == list(range(200))


def test_missing_tinyimagenet_and_cifar(tmp_path):
    for name, needle in (("tinyimagenet", "tiny-imagenet-200.zip"), ("cifar10", "cifar-10-python.tar.gz")):
        with pytest.raises(CTBenchError, match=needle) as e:
            data.prepare_dataset(name, tmp_path / "root", source_dir=tmp_path)
        assert f"ctbench data prepare {name} --download" in str(e.value)
    assert not (tmp_path / "root").exists()


# --------------------------------------------------------------------------------------------------- CLI
def _run_data_cli(argv: list[str]) -> int:
    """The ``data`` command through its own ``add_parser``, with ctbench.cli's error convention."""
    from ctbench.commands import data as data_cmd

    parser = argparse.ArgumentParser(prog="ctbench")
    data_cmd.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except CTBenchError as e:
        print(f"ctbench: error: {e}", file=sys.stderr)
        return 2


def _all_commands_exist() -> bool:
    from ctbench.cli import COMMANDS

    return all(importlib.util.find_spec(f"ctbench.commands.{name}") for name in COMMANDS)


def test_cli_via_add_parser(capsys, tmp_path):
    assert _run_data_cli(["data", "list", "--root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in data.DATASETS) and "1x28x28" in out
    assert _run_data_cli(["data", "prepare", "nosuch"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown dataset 'nosuch'" in err and "Traceback" not in err
    assert _run_data_cli(["data", "stats", "mnist_mini", "--split", "test"]) == 0
    assert "N=1000" in capsys.readouterr().out
    assert _run_data_cli(["data", "prepare", "mnist_mini"]) == 0
    assert capsys.readouterr().out.strip().endswith("mnist_mini.npz")


@pytest.mark.skipif(not _all_commands_exist(), reason="ctbench.cli imports command modules not written yet")
def test_cli_main(capsys, tmp_path):
    from ctbench.cli import main

    assert main(["data", "list", "--root", str(tmp_path)]) == 0
    assert "mnist_mini" in capsys.readouterr().out
    assert main(["data", "prepare", "nosuch"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ctbench: error: unknown dataset") and err.count("\n") == 1
    env = {k: v for k, v in os.environ.items() if not k.startswith("CTBENCH_DATA")}
    proc = subprocess.run(
        [sys.executable, "-m", "ctbench", "data", "list"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0 and "tinyimagenet" in proc.stdout
    proc = subprocess.run(
        [sys.executable, "-m", "ctbench", "data", "prepare", "nosuch"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1
