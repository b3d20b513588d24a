"""The README's commands, pixi.toml's tasks, .ci/run and the CLI agree with each other."""

import re
import subprocess
import sys
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


def test_ci_runs_exactly_the_readme_test_command():
    pixi = tomllib.loads((ROOT / "pixi.toml").read_text())
    test_cmd = pixi["tasks"]["test"]["cmd"]
    assert test_cmd in readme_commands()
    ci = [line.strip() for line in (ROOT / ".ci/run").read_text().splitlines()]
    ci = [line for line in ci if line and not line.startswith("#")]
    assert ci[-1] == test_cmd, ".ci/run must end by running the README's test command"
    # and it installs what the README's install section installs
    for step in ("torch==2.14.1 torchvision==0.29.1", "-e '.[test,lint]'", "--no-deps auto-lirpa==0.3"):
        assert step in (ROOT / ".ci/run").read_text() and step in README


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
    assert r.stderr.strip().count("\n") == 0 and r.stderr.startswith("ctbench: error: invalid eps"), r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "d").exists()


def test_ruff_clean():
    """The README's lint command (`ruff check .`) passes."""
    r = subprocess.run([sys.executable, "-m", "ruff", "check", "."], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:]


def test_a_wheel_install_finds_its_hyperparameter_tables(tmp_path):
    """``pip install .`` (not editable): ctbench.config falls back to the copies the wheel installs
    under ``<prefix>/share/ctbench`` (pyproject ``data-files``), so ``ctbench train`` needs no --hparams."""
    import shutil
    import sysconfig
    import venv

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
    # the dependencies come from this environment (a plain path entry: its .pth files, like the editable
    # install of ctbench itself, are not processed)
    (Path(target) / "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    code = ("import ctbench.config as c, sys; assert 'site-packages' in c.__file__, c.__file__; "
            "from ctbench.data import load_dataset; assert len(load_dataset('mnist_mini', 'test')) == 1000; "
            "print(c.DEFAULT_HPARAMS); print(len(c.load_hparams()['settings']))")  # fmt: skip
    r = subprocess.run([py, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr
    path, n_settings = r.stdout.split()
    assert path == str(env_dir / "share" / "ctbench" / "config" / "hparams.yaml") and int(n_settings) == 5
