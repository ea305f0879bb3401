"""The package's import hygiene: no module of vaxis imports another module's private (``_name``) names; what two
modules share is public in its home module."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "vaxis"


def private_imports(root: Path = PACKAGE) -> list[str]:
    """``"file:line module name"`` for every ``from <vaxis module> import _name`` under ``root``."""
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ImportFrom) or node.module == "__future__":
                continue
            if node.level == 0 and not (node.module or "").startswith("vaxis"):
                continue  # another package's names are its own business
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__"):
                    found.append(f"{path.relative_to(root.parent)}:{node.lineno} {node.module} {alias.name}")
    return found


def test_no_module_imports_another_modules_private_names():
    assert private_imports() == []


def test_the_check_sees_a_private_import(tmp_path):
    (tmp_path / "a.py").write_text("from .b import _hidden\nfrom os import _exit\nfrom vaxis.c import public\n")
    assert private_imports(tmp_path) == [f"{tmp_path.name}/a.py:1 b _hidden"]
