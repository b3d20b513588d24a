"""Function length (issue 27): no function in ``ctbench/`` is longer than 80 lines (layering: test_structure.py).

A function's length counts from its ``def`` line to the last line of its body (``ast`` ``end_lineno``),
docstring and nested functions included; methods and nested functions are functions too. Split a long
function into steps with names rather than raising the limit.
"""

from __future__ import annotations

import ast
from pathlib import Path

import ctbench

MAX_LINES = 80
PACKAGE = Path(ctbench.__file__).resolve().parent


def long_functions(root: Path = PACKAGE, limit: int = MAX_LINES) -> list[str]:
    """``path:line name (N lines)`` for every function of the package longer than ``limit`` lines."""
    found = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = node.end_lineno - node.lineno + 1
                if n > limit:
                    found.append(f"{path.relative_to(root.parent)}:{node.lineno} {node.name} ({n} lines)")
    return found


def test_no_function_longer_than_80_lines():
    assert long_functions() == [], "split these into smaller functions"


def test_the_check_sees_a_long_function(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    body = "\n".join(f"    x{i} = {i}" for i in range(80))
    (pkg / "m.py").write_text(f"class A:\n    def short(self):\n        pass\n\n\ndef long():\n{body}\n")
    assert long_functions(pkg) == ["pkg/m.py:6 long (81 lines)"]
