"""The README's commands, pixi.toml's tasks, .ci/run and the CLI agree with each other."""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tomllib

from ctbench.cli import COMMANDS, main

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def readme_commands() -> set[str]:
    """Every command line inside the README's ```bash blocks (comments stripped)."""
    blocks = re.findall(r"```bash\n(.*?)```", README, flags=re.S)
    lines = (line.split("  #")[0].strip() for block in blocks for line in block.splitlines())
    return {line for line in lines if line and not line.startswith("#")}


def test_pixi_toml_parses_and_mirrors_readme():
    pixi = tomllib.loads((ROOT / "pixi.toml").read_text())
    assert "conda-forge" in pixi["workspace"]["channels"]
    assert {"default", "cuda"} <= set(pixi["environments"])
    assert pixi["feature"]["cuda"]["system-requirements"]["cuda"]
    assert pixi["pypi-dependencies"]["ctbench"] == {"path": ".", "editable": True}
    tasks = pixi["tasks"]
    assert {"demo", "test", "lint", "dry-run", "slurm"} <= set(tasks)
    prose = re.sub(r"```.*?```", "", README, flags=re.S)
    commands = readme_commands() | set(re.findall(r"`([^`\n]+)`", prose))
    for name, task in tasks.items():
        cmd = task["cmd"] if isinstance(task, dict) else task
        assert cmd in commands, f"pixi task {name!r} runs {cmd!r}, which the README does not show"


def _quickstart_commands() -> list[str]:
    """The command lines of the README's Quickstart: its first ```bash block."""
    section = README[README.index("## Quickstart"):]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.S).group(1)
    return [line.split("  #")[0].strip() for line in block.splitlines() if line.strip()]


def _long_hand_install() -> list[str]:
    """The README's long-hand install steps: every `pip install ...` of the Quickstart's second block."""
    section = README[README.index("Long hand"):]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.S).group(1)
    steps = []
    for line in block.splitlines():
        for part in line.split("  #")[0].split("&&"):
            if part.strip().startswith("pip install"):
                steps.append(" ".join(part.split()))
    return steps


FAKE_PYTHON = """#!/usr/bin/env bash
echo "$@" >> "$(dirname "$0")/../calls.log"
"""


def _make_workdir(tmp_path: Path, with_venv: bool = True) -> Path:
    """The Makefile and pyproject.toml in a temporary folder; with_venv: a stand-in .venv/bin/python that only
    records how it is called (the install steps' arguments), so make's own logic is what is tested."""
    import shutil

    work = tmp_path / "repo"
    work.mkdir()
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy2(ROOT / name, work / name)
    if with_venv:
        (work / ".venv/bin").mkdir(parents=True)
        (work / ".venv/bin/python").write_text(FAKE_PYTHON)
        (work / ".venv/bin/python").chmod(0o755)
    return work


def _make(work: Path, *args: str) -> str:
    r = subprocess.run(["make", "--no-print-directory", *args], cwd=work, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def _calls(work: Path) -> list[str]:
    log = work / ".venv/calls.log"
    return log.read_text().splitlines() if log.exists() else []


def test_quickstart_make_pixi_and_ci_name_the_same_steps(tmp_path):
    """Issue 29: the README's two quickstart commands are `make demo` and `make test`; .ci/run runs `make test`
    (one copy of the install steps: the Makefile); the Makefile runs pixi's demo/test commands after installing
    exactly the README's long-hand pip steps, and the long hand shows the same two commands."""
    assert _quickstart_commands() == ["make demo", "make test"]
    ci = [line.strip() for line in (ROOT / ".ci/run").read_text().splitlines()]
    ci = [line for line in ci if line and not line.startswith("#")]
    assert ci[-1] == "make test", ".ci/run must end by running the README's test command"
    assert "pip install" not in (ROOT / ".ci/run").read_text(), ".ci/run must not keep its own copy of the install"
    tasks = tomllib.loads((ROOT / "pixi.toml").read_text())["tasks"]
    work = _make_workdir(tmp_path, with_venv=False)
    for target in ("demo", "test"):
        planned = _make(work, "-n", target).strip().splitlines()
        assert planned[0] == "test -x .venv/bin/python || python3 -m venv .venv"
        assert planned[-1].split('" ', 1)[1].strip() == tasks[target]["cmd"], planned[-1]  # PATH=.venv/bin:... cmd
        assert tasks[target]["cmd"] in readme_commands()
        installs = [" ".join(line.replace(".venv/bin/python -m ", "").replace(" -q", "").split())
                    for line in planned if "-m pip install" in line and "--upgrade pip" not in line]
        assert installs == _long_hand_install(), (installs, _long_hand_install())


def test_make_sets_up_once_and_reuses_the_environment(tmp_path):
    """Re-running `make test` / `make demo` installs nothing when nothing changed; a changed pyproject.toml
    installs again; a missing environment is created."""
    work = _make_workdir(tmp_path)
    _make(work, "env")
    first = _calls(work)
    assert sum("pip install" in c for c in first) == 5 and (work / ".venv/.ctbench-installed").is_file()
    out = _make(work, "env")
    assert _calls(work) == first and "pip" not in out  # nothing installed the second time
    assert _make(work, "-n", "test").strip().splitlines() == [f'PATH="{work}/.venv/bin:$PATH" python -m pytest']
    assert "pip" not in _make(work, "-n", "demo")
    future = time.time() + 5
    os.utime(work / "pyproject.toml", (future, future))  # the dependencies changed
    assert "pip install" in _make(work, "-n", "test")


def test_pyproject_dependencies():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert meta["scripts"]["ctbench"] == "ctbench.cli:main"
    everything = " ".join(meta["dependencies"] + sum(meta["optional-dependencies"].values(), []))
    assert "lirpa" not in everything.lower(), "auto_LiRPA must never be a resolvable dependency"
    torch_req = next(d for d in meta["dependencies"] if d.startswith("torch") and not d.startswith("torchv"))
    assert "2.14.1" in torch_req
    for extra, pkgs in {"test": ("pytest", "hypothesis", "pytest-timeout"), "lint": ("ruff", "snakefmt")}.items():
        names = " ".join(meta["optional-dependencies"][extra])
        assert all(p in names for p in pkgs)


def test_pyproject_license_is_a_pep639_expression():
    """setuptools stops building projects whose ``project.license`` is a TOML table on 2027-02-18; the SPDX
    string needs setuptools >= 77 in the build requirements."""
    doc = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert isinstance(doc["project"]["license"], str) and doc["project"]["license"] == "MIT"
    (req,) = [r for r in doc["build-system"]["requires"] if r.startswith("setuptools")]
    assert int(req.split(">=")[1].split(".")[0]) >= 77


def test_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


def test_console_script_runs_in_a_subprocess():
    r = subprocess.run([sys.executable, "-m", "ctbench", "models", "list", "--datasets", "mnist"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "cnn7" in r.stdout and "13,259,338" in r.stdout


def test_bad_input_is_one_line_and_exit_2(tmp_path):
    r = subprocess.run([sys.executable, "-m", "ctbench", "train", "--dataset", "mnist_mini", "--method", "ibp",
                        "--eps", "-1", "--out", str(tmp_path / "d")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and r.stderr.startswith("ctbench: error: eps must lie in [0, 1]"), r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "d").exists()


def test_ruff_clean():
    """The README's lint command (`ruff check .`) passes."""
    r = subprocess.run([sys.executable, "-m", "ruff", "check", "."], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:]


@pytest.fixture(scope="module")
def wheel_env(tmp_path_factory) -> Path:
    """A fresh virtual environment with ctbench installed from its wheel (``pip install .``, not editable);
    the dependencies come from this environment (a plain path entry: its .pth files, like the editable
    install of ctbench itself, are not processed), so it needs no network and takes seconds."""
    import shutil
    import sysconfig
    import venv

    tmp_path = tmp_path_factory.mktemp("wheel")
    src = tmp_path / "src"  # build from a copy: setuptools writes build/ next to the sources
    skip = (".git", ".venv*", "build", "dist", "results", "*.egg-info", ".snakemake", "__pycache__", ".*cache")
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(*skip))
    wheels = tmp_path / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "-q",
                    "-w", str(wheels)], check=True, capture_output=True, timeout=600)  # fmt: skip
    (wheel,) = wheels.glob("ctbench-*.whl")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)  # its own pip: installing from this one would touch this environment
    py = env_dir / "bin" / "python"
    target = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                            capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    subprocess.run([py, "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)],
                   check=True, capture_output=True, timeout=600)  # fmt: skip
    (Path(target) / "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return env_dir


def test_a_wheel_install_finds_its_hyperparameter_tables(wheel_env, tmp_path):
    """``pip install .`` (not editable): ctbench.config falls back to the copies the wheel installs
    under ``<prefix>/share/ctbench`` (pyproject ``data-files``), so ``ctbench train`` needs no --hparams."""
    code = ("import ctbench.config as c, sys; assert 'site-packages' in c.__file__, c.__file__; "
            "from ctbench.data import load_dataset; assert len(load_dataset('mnist_mini', 'test')) == 1000; "
            "print(c.DEFAULT_HPARAMS); print(len(c.load_hparams()['settings']))")  # fmt: skip
    r = subprocess.run([wheel_env / "bin" / "python", "-c", code], capture_output=True, text=True, cwd=tmp_path,
                       timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr
    path, n_settings = r.stdout.split()
    assert path == str(wheel_env / "share" / "ctbench" / "config" / "hparams.yaml") and int(n_settings) == 5


def test_a_wheel_install_checks_a_grid_file_from_another_folder(wheel_env, tmp_path):
    """Issue 27's acceptance: ``pip install .``, then ``ctbench grid check .../config/demo.yaml`` from a folder
    outside the checkout: the file's ``hparams: config/hparams.yaml`` is found above the grid file's folder
    (``config/README.md``, "Paths"), the schema inside the installed package; the same fingerprints as here."""
    from ctbench.grid import Grid, load_yaml

    ctbench = wheel_env / "bin" / "ctbench"
    r = subprocess.run([wheel_env / "bin" / "python", "-c", "import ctbench.grid as g; print(g.__file__)"],
                       capture_output=True, text=True, cwd=tmp_path, timeout=300)  # fmt: skip
    assert r.returncode == 0 and r.stdout.startswith(str(wheel_env)), (r.stdout, r.stderr)  # the installed copy
    demo = ROOT / "config" / "demo.yaml"
    r = subprocess.run([ctbench, "grid", "check", str(demo)], capture_output=True, text=True, cwd=tmp_path,
                       timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"{demo}: valid; 8 cells (6 in Table 1, 2 ablation cells)"
    r = subprocess.run([ctbench, "grid", "cells", str(demo)], capture_output=True, text=True, cwd=tmp_path,
                       timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr
    cwd = os.getcwd()
    os.chdir(ROOT)  # the workflow's rule: paths from the repository root
    try:
        grid = Grid(load_yaml(demo))
    finally:
        os.chdir(cwd)
    train = {line.split()[0]: line.split()[-1] for line in r.stdout.splitlines()}
    assert train == {c.dir: grid.fingerprints(c)["train"] for c in grid.cells}
    # a grid file whose hparams is nowhere: one line naming where it was looked for
    lost = tmp_path / "lost.yaml"
    lost.write_text(demo.read_text())
    r = subprocess.run([ctbench, "grid", "check", str(lost)], capture_output=True, text=True, cwd=tmp_path,
                       timeout=300)  # fmt: skip
    assert r.returncode == 2 and r.stderr.strip() == (
        f"ctbench: error: config: hparams: file not found: config/hparams.yaml (looked in the current folder, "
        f"in {tmp_path} and in the folders above it)")
