"""The package's import hygiene: no module of vaxis imports another module's private (``_name``) names (what two
modules share is public in its home module); the module import graph, counting imports inside functions too, has
no cycle and keeps the layers (``vaxis.core`` imports only itself; ``vaxis.data`` only core and data); and no
function is longer than :data:`MAX_FUNCTION_LINES`."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "vaxis"

# What each layer may import (a module's layer is its first two name parts, ``vaxis.core.extract`` -> ``vaxis.core``);
# layers not named here (``vaxis.run``, ``vaxis.experiments``, the top package) may import any module of the package.
LAYERS = {"vaxis.core": ("vaxis.core",), "vaxis.data": ("vaxis.core", "vaxis.data")}

MAX_FUNCTION_LINES = 80
# Functions let past the limit for a while (``"file name"``, each with a comment saying why and until when); a test
# fails once one is short enough, so the list only shrinks. Empty since issue 22 split the runner's run and main.
LONG_FUNCTIONS_ALLOWED: set[str] = set()


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


def _module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the package's modules it imports, from every ``import``/``from`` statement anywhere in its source
    (inside functions too). ``from pkg import name`` imports the module ``pkg.name`` when there is one, else ``pkg``;
    a relative import is resolved against the importing module's package. A package's ``__init__`` is a module of
    its own (its re-exports are its edges); importing a module does not count as importing its parent packages."""
    paths = {_module_name(p, root): p for p in sorted(root.rglob("*.py"))}

    def known(name: str) -> str | None:  # the longest prefix of ``name`` that is a module of the package
        parts = name.split(".")
        while parts and ".".join(parts) not in paths:
            parts.pop()
        return ".".join(parts) or None

    graph = {}
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                edges.update(known(alias.name) for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join([*up, *([node.module] if node.module else [])])
                else:
                    base = node.module or ""
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    edges.add(full if full in paths else known(base))
        edges.discard(None)
        edges.discard(name)
        graph[name] = edges
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The graph's cycles, as its strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(components)


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    """``"importer -> imported"`` for every edge that leaves what :data:`LAYERS` allows the importer."""
    found = []
    for module, imported in sorted(graph.items()):
        allowed = LAYERS.get(".".join(module.split(".")[:2]))
        if allowed is None:
            continue
        found += [f"{module} -> {other}" for other in sorted(imported)
                  if not any(other == a or other.startswith(a + ".") for a in allowed)]  # fmt: skip
    return found


def long_functions(root: Path = PACKAGE, limit: int = MAX_FUNCTION_LINES,
                   allowed: set[str] = LONG_FUNCTIONS_ALLOWED) -> list[str]:  # fmt: skip
    """``"lines file name"`` for every function (or method) under ``root`` longer than ``limit`` lines, counted
    from its ``def`` line (decorators aside) to its last line, docstring included; those ``allowed`` (``"file
    name"``) aside."""
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                where = f"{path.relative_to(root.parent).as_posix()} {node.name}"
                if lines > limit and where not in allowed:
                    found.append(f"{lines} {where}")
    return found


def test_no_module_imports_another_modules_private_names():
    assert private_imports() == []


def test_the_check_sees_a_private_import(tmp_path):
    (tmp_path / "a.py").write_text("from .b import _hidden\nfrom os import _exit\nfrom vaxis.c import public\n")
    assert private_imports(tmp_path) == [f"{tmp_path.name}/a.py:1 b _hidden"]


def test_the_import_graph_has_no_cycle():
    graph = import_graph()
    assert "vaxis.core.extract" in graph["vaxis"] or "vaxis.core.extract" in graph["vaxis.core.generate"]
    assert import_cycles(graph) == []


def test_the_layers_import_only_what_they_may():
    assert layer_violations(import_graph()) == []


def test_no_function_is_longer_than_the_limit():
    over = long_functions()
    assert over == [], f"functions over {MAX_FUNCTION_LINES} lines (split them into named helpers): {over}"


def test_the_allowed_long_functions_are_still_long():
    still = {" ".join(f.split()[1:]) for f in long_functions(allowed=set())}
    assert LONG_FUNCTIONS_ALLOWED <= still, f"no longer too long: drop {LONG_FUNCTIONS_ALLOWED - still} from the list"


def _plant(root: Path, files: dict[str, str]) -> Path:
    package = root / "vaxis"
    for name, text in files.items():
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_text(text)
    return package


def test_the_checks_see_a_planted_cycle_and_layer_violation(tmp_path):
    package = _plant(tmp_path, {
        "__init__.py": "from .core.a import f\n",
        "core/__init__.py": "",
        "core/a.py": "def f():\n    from . import b\n",  # inside a function, ``from . import module``
        "core/b.py": "from vaxis.core.c import g\n",
        "core/c.py": "import vaxis.core.a\nimport os\n",
        "core/d.py": "def h():\n    from ..data import e\n",  # core -> data: a layer violation
        "data/__init__.py": "",
        "data/e.py": "from ..run.f import x\nfrom ..core import d\n",  # data -> run: a violation; -> core: allowed
        "data/g.py": "",
        "run/__init__.py": "",
        "run/f.py": "from ..data.g import y\nfrom vaxis.core.a import f\n",  # run -> data and core: allowed
    })  # fmt: skip
    graph = import_graph(package)
    assert graph["vaxis"] == {"vaxis.core.a"}
    assert graph["vaxis.core.a"] == {"vaxis.core.b"}
    assert graph["vaxis.run.f"] == {"vaxis.data.g", "vaxis.core.a"}
    assert import_cycles(graph) == [["vaxis.core.a", "vaxis.core.b", "vaxis.core.c"], ["vaxis.core.d", "vaxis.data.e"]]
    assert layer_violations(graph) == ["vaxis.core.d -> vaxis.data.e", "vaxis.data.e -> vaxis.run.f"]


def test_the_check_sees_a_long_function(tmp_path):
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_FUNCTION_LINES - 2))
    method = body.replace("    ", "        ")
    (tmp_path / "m.py").write_text(f'def short():\n    """Doc."""\n{body}\n\nclass C:\n    def long(self):\n'
                                   f'        """Doc."""\n{method}        return 1\n\n    def also_long(self):\n'
                                   f'        """Doc."""\n{method}        return 2\n')  # fmt: skip
    allowed = {f"{tmp_path.name}/m.py also_long"}
    assert long_functions(tmp_path, allowed=allowed) == [f"{MAX_FUNCTION_LINES + 1} {tmp_path.name}/m.py long"]
