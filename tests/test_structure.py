"""The structure the code keeps (DESIGN.md, "Layers"): a torch-free core, no import of another package's
private names, no import that runs up the layers, display names equal to the registries' names.

Read with ``ast`` from the source (every import, also those inside functions), so nothing is imported.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "ctbench"

#: The layers, lowest first: a module may import its own layer and the layers below it, never one above.
#: A module belongs to the longest prefix that names it.
LAYERS = [
    ("core", ["ctbench", "ctbench.core", "ctbench.errors", "ctbench.registry", "ctbench.io", "ctbench.logs",
              "ctbench.threads", "ctbench.fingerprint", "ctbench.stagefile"]),
    ("bounds/data/models", ["ctbench.config", "ctbench.nn", "ctbench.schedules", "ctbench.regularizers",
                            "ctbench.architectures", "ctbench.models", "ctbench.data", "ctbench.bounds",
                            "ctbench.attacks", "ctbench.checkpoint", "ctbench.modelfile", "ctbench.swa"]),
    ("methods", ["ctbench.methods"]),
    ("training", ["ctbench.training", "ctbench.select"]),
    ("certify", ["ctbench.certify"]),
    ("analysis", ["ctbench.analysis", "ctbench.report"]),
    ("grid", ["ctbench.grid"]),
    ("commands", ["ctbench.commands", "ctbench.cli", "ctbench.__main__", "ctbench.slurm"]),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_of(path: Path) -> str:
    """The package a module belongs to: ``ctbench.certify`` for ``certify/lp.py``, ``ctbench`` for ``io.py``."""
    return module_name(path.parent / "__init__.py")


def imports(path: Path):
    """``(imported module, imported name or None)`` for every import of a ctbench module in ``path``."""
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import"
            if node.module and node.module.split(".")[0] == "ctbench":
                for alias in node.names:
                    submodule = f"{node.module}.{alias.name}"
                    if (PACKAGE.parent / (submodule.replace(".", "/") + ".py")).is_file() or \
                            (PACKAGE.parent / submodule.replace(".", "/")).is_dir():
                        yield submodule, None  # ``from ctbench.analysis import _model_cli``: a module
                    else:
                        yield node.module, alias.name
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "ctbench":
                    yield alias.name, None


def layer(module: str) -> int:
    best = max(((len(p), i) for i, (_, prefixes) in enumerate(LAYERS) for p in prefixes
                if module == p or module.startswith(p + ".")), default=None)
    assert best is not None, f"{module} is in no layer of tests/test_structure.py: add it to LAYERS"
    return best[1]


def private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


SOURCES = sorted(PACKAGE.rglob("*.py"))


def test_every_module_has_a_layer():
    for path in SOURCES:
        layer(module_name(path))


def test_no_import_runs_up_the_layers():
    up = []
    for path in SOURCES:
        src = module_name(path)
        for target, _ in imports(path):
            if layer(target) > layer(src):
                up.append(f"{src} [{LAYERS[layer(src)][0]}] imports {target} [{LAYERS[layer(target)][0]}]")
    assert not up, "imports that run up the layers:\n" + "\n".join(sorted(set(up)))


def test_architecture_page_names_the_layers_and_rules():
    """docs/architecture.md stays true: its layer table is LAYERS (same layers, same modules, same order) and
    its Rules section names every rule of the workflow."""
    import re

    page = (ROOT / "docs" / "architecture.md").read_text()
    layers = page[page.index("## Layers"):page.index("## One cell")]
    rows = [r.split("|")[1:3] for r in layers.splitlines() if r.startswith("| ") and "`" in r.split("|")[2]]
    documented = [(name.strip(), set(re.findall(r"`([\w.]+)`", mods))) for name, mods in rows]
    expected = [(name, {p.removeprefix("ctbench.") for p in prefixes if p != "ctbench"}) for name, prefixes in LAYERS]
    assert documented == expected
    rules = {m for f in [ROOT / "Snakefile", *(ROOT / "workflow" / "rules").glob("*.smk")]
             for m in re.findall(r"^rule (\w+):", f.read_text(), flags=re.M)}
    named = set(re.findall(r"`(\w+)`", page[page.index("## Rules"):]))
    assert rules and rules <= named, f"rules missing from docs/architecture.md: {sorted(rules - named)}"


def owner_package(module: str) -> str:
    """The package ``module`` lives in (itself for a package)."""
    is_package = (PACKAGE.parent / module.replace(".", "/")).is_dir()
    return module if is_package else module.rpartition(".")[0]


def test_no_import_of_another_packages_private_names():
    bad = []
    for path in SOURCES:
        mine = package_of(path)
        for target, name in imports(path):
            parts = target.split(".")
            owners = [".".join(parts[:k]) for k in range(1, len(parts)) if private(parts[k])]  # private modules
            if name and private(name):
                owners.append(owner_package(target))
            if any(owner != mine for owner in owners):
                bad.append(f"{module_name(path)} imports {target}{'.' + name if name else ''}")
    assert not bad, "imports of another package's private names:\n" + "\n".join(sorted(set(bad)))


@pytest.mark.parametrize("module", ["ctbench.core", "ctbench.fingerprint", "ctbench.stagefile", "ctbench.grid",
                                    "ctbench.report"])
def test_core_modules_do_not_import_torch(module):
    code = f"import sys, {module}; assert 'torch' not in sys.modules, 'torch imported'"
    if module == "ctbench.grid":
        code += "; assert 'ctbench.analysis' not in sys.modules, 'the grid imports the analyses'"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr


def test_display_names_are_the_registries_names():
    from ctbench import core
    from ctbench.data import DATASETS
    from ctbench.methods import method_names
    from ctbench.models import MODELS

    assert set(core.METHOD_NAMES) == set(method_names())
    assert set(core.MODEL_NAMES) == set(MODELS)
    assert set(core.DATASET_NAMES) == set(DATASETS)


def test_analysis_kinds_are_the_analysis_registry():
    from ctbench import analysis, core

    assert {n: e.kind for n, e in analysis.ANALYSES.items()} == core.ANALYSIS_KINDS
    for name, entry in analysis.ANALYSES.items():
        assert (PACKAGE / "analysis" / f"{name}.py").is_file() and entry.module == f"ctbench.analysis.{name}"


def test_eps_forms_agree():
    from ctbench import core

    assert core.parse_eps("2_255") == core.parse_eps("2/255") == 2 / 255
    assert core.eps_token("2/255") == "2_255" and core.eps_text("2_255") == "2/255"
    assert core.eps_pair("2_255") == (2 / 255, "2/255") and core.eps_pair(0.1) == (0.1, "0.1")
    assert core.eps_value("nonsense") != core.eps_value("nonsense")  # NaN
    assert core.setting_key("mnist_mini", "0.1") == "mnist_0.1"
