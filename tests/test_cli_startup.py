"""Fast CLI start-up (issue 11): ``ctbench data list`` and ``ctbench models list`` never import torch.

A deterministic check of what the listing path imports, instead of a timed test (timings belong in
benchmarks): torch alone takes seconds to import, everything on the listing path is pure Python.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: Heavy modules the listing commands must not import (numpy is tolerated by the brief but not needed).
HEAVY = ("torch", "torchvision", "numpy", "pandas", "matplotlib", "h5py", "scipy", "PIL")


def _run(code: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """``python -c code *args`` in ``tmp_path``, with ``CTBENCH_DATA_ROOT`` an empty folder there."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CTBENCH_DATA")}
    env["CTBENCH_DATA_ROOT"] = str(tmp_path / "data")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True, text=True, cwd=tmp_path, env=env,
        timeout=120,
    )


def test_listing_commands_import_no_torch(tmp_path):
    proc = _run(
        """
        import sys
        from ctbench.cli import main
        assert main(["data", "list"]) == 0
        assert main(["models", "list"]) == 0
        assert main(["models", "list", "--datasets", "mnist_mini", "cifar10"]) == 0
        assert 'torch' not in sys.modules and 'torchvision' not in sys.modules, \\
            sorted(m for m in sys.modules if m.startswith('torch'))
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in sys.argv[1:])
        assert not heavy, heavy
        """,
        tmp_path,
        *HEAVY,
    )
    assert proc.returncode == 0, proc.stderr
    assert "tinyimagenet" in proc.stdout and "cnn_small" in proc.stdout
    assert f"data root: {tmp_path / 'data'}" in proc.stdout


def test_registry_and_present_checks_import_no_torch(tmp_path):
    """The whole ``ctbench.data`` registry (specs, ``present``, ``prepare_dataset`` import) stays light, and
    the torch-backed names are still there, imported on first access."""
    proc = _run(
        """
        import sys
        import ctbench.data as data
        from ctbench.data import DATASETS, get_spec, prepare_dataset, reorganize_tinyimagenet_val, resolve_root
        from ctbench.data import cifar, integrity, mnist, mnist_mini, spec, tinyimagenet
        from ctbench import architectures
        present = {name: s.present(resolve_root()) for name, s in DATASETS.items()}
        assert present == {"cifar10": False, "mnist": False, "mnist_mini": True, "tinyimagenet": False}, present
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in sys.argv[1:])
        assert not heavy, heavy
        assert {"TensorImageDataset", "make_loader", "dataset_stats"} <= set(dir(data))
        from ctbench.data import TensorImageDataset, make_loader
        from ctbench.data.tensors import TensorImageDataset as T, make_loader as M
        assert (TensorImageDataset, make_loader, data.dataset_stats) == (T, M, data.tensors.dataset_stats)
        assert "torch" in sys.modules
        try:
            data.nosuch
        except AttributeError as e:
            assert "nosuch" in str(e)
        else:
            raise AssertionError("no AttributeError")
        """,
        tmp_path,
        *HEAVY,
    )
    assert proc.returncode == 0, proc.stderr


DATASETS = ["mnist", "mnist_mini", "cifar10", "tinyimagenet"]


def test_models_list_counts_match_the_built_networks(capsys):
    """``models list`` counts from the layer plans; they must equal the parameters of the built networks."""
    from ctbench.cli import main
    from ctbench.models import MODELS, create_model

    assert main(["models", "list", "--datasets", *DATASETS]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["model", *DATASETS]
    rows = {line.split()[0]: line.split()[1:] for line in lines[1:]}
    assert [line.split()[0] for line in lines[1:]] == list(MODELS)
    for name in MODELS:
        built = [f"{sum(p.numel() for p in create_model(name, ds).parameters()):,}" for ds in DATASETS]
        assert rows[name] == built, name


def test_models_list_unknown_dataset(capsys):
    from ctbench.cli import main

    assert main(["models", "list", "--datasets", "nosuch"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ctbench: error: unknown dataset 'nosuch'") and err.count("\n") == 1


@pytest.mark.parametrize("argv", [["data", "list"], ["models", "list"]])
def test_listing_via_module_entry_point(argv, tmp_path):
    """The console path (``python -m ctbench``) too, not just ``main`` in-process."""
    proc = _run(
        """
        import runpy, sys
        sys.argv = ["ctbench", *sys.argv[1:]]
        try:
            runpy.run_module("ctbench", run_name="__main__")
        except SystemExit as e:
            assert not e.code, e.code
        assert not [m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision")]
        """,
        tmp_path,
        *argv,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip()
