"""The package's floors: a module imports only from its own floor or below, never in a
cycle, and never a private name (``_x``) of another module.

Floors, bottom to top (``FLOORS``); modules on one floor may import each other as long as
no cycle forms. Function-local imports count like top-level ones: moving an import into a
function hides a cycle from Python, not from the design.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = "tuneforge"

# Bottom to top. A module's floor is the longest prefix listed here.
FLOORS: list[tuple[str, ...]] = [
    ("tuneforge.errors", "tuneforge.config", "tuneforge.bundle"),
    ("tuneforge.data",),
    ("tuneforge.models",),
    ("tuneforge.methods",),
    # environment.py describes what a run ran on (hardware, threads, precision support),
    # which training/device.py measures: it sits with training.
    ("tuneforge.training", "tuneforge.evaluation", "tuneforge.environment"),
    ("tuneforge.inference",),
    ("tuneforge.card", "tuneforge.recipes"),
    # the queue and worker, and the database (engine, tables, migrations, data dir) that
    # jobs/ holds today: one floor (a db/ package split out of jobs/ lands here too)
    ("tuneforge.jobs", "tuneforge.db"),
    ("tuneforge.server",),
    ("tuneforge.cli",),
]
# The package facade re-exports the public API lazily and the entry point runs the CLI:
# both sit above everything.
TOP = ("tuneforge", "tuneforge.__main__")


def module_name(path: Path, src: Path) -> str:
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def floor_of(module: str) -> int:
    if module in TOP:
        return len(FLOORS)
    best, best_len = None, -1
    for level, prefixes in enumerate(FLOORS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = level, len(prefix)
    if best is None:
        raise AssertionError(f"module {module} is on no floor: add it to FLOORS in {__file__}")
    return best


def source_modules(src: Path = SRC) -> dict[str, Path]:
    return {module_name(p, src): p for p in sorted((src / PACKAGE).rglob("*.py"))}


def imports_of(path: Path, module: str) -> list[tuple[int, str, list[str]]]:
    """(line, imported module, names taken from it) for every tuneforge import in a file."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == PACKAGE:
                    found.append((node.lineno, alias.name, []))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if target.split(".")[0] == PACKAGE:
                found.append((node.lineno, target, [a.name for a in node.names]))
    return found


def resolve(target: str, names: list[str], modules: dict[str, Path]) -> list[tuple[str, str]]:
    """(module imported, name or '') pairs: ``from pkg import submodule`` imports the
    submodule; ``from mod import name`` imports ``name`` from ``mod``."""
    out = []
    for name in names or [""]:
        if name and f"{target}.{name}" in modules:
            out.append((f"{target}.{name}", ""))
        else:
            out.append((target, name))
    return out


def private_attributes(path: Path, module: str, modules: dict[str, Path]) -> list[str]:
    """``file:line -> module._name`` for private attributes read off an imported module
    (``from tuneforge.training import checkpoint as ckpt; ckpt._x``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname and alias.name in modules:
                    aliases[alias.asname] = alias.name
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith(PACKAGE):
            for alias in node.names:
                if f"{node.module}.{alias.name}" in modules:
                    aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
    return [
        f"{node.lineno} -> {aliases[node.value.id]}.{node.attr}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id in aliases
        and aliases[node.value.id] != module
        and node.attr.startswith("_")
        and not node.attr.startswith("__")
    ]


def import_graph(src: Path = SRC) -> tuple[dict[str, set[str]], list[str], list[str]]:
    """The module graph, the upward imports and the private-name imports."""
    modules = source_modules(src)
    graph: dict[str, set[str]] = {m: set() for m in modules}
    upward, private = [], []
    for module, path in modules.items():
        where = f"src/{path.relative_to(src)}"
        for line, target, names in imports_of(path, module):
            for imported, name in resolve(target, names, modules):
                if imported not in modules:
                    continue
                if imported != module:
                    graph[module].add(imported)
                if floor_of(imported) > floor_of(module):
                    upward.append(f"{where}:{line} -> {imported}")
                if name.startswith("_") and imported != module:
                    private.append(f"{where}:{line} -> {imported}.{name}")
        private.extend(f"{where}:{hit}" for hit in private_attributes(path, module, modules))
    return graph, sorted(set(upward)), sorted(set(private))


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(v: str) -> None:
        nonlocal counter
        index[v] = low[v] = counter
        counter += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
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
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_every_module_is_on_a_floor():
    for module in source_modules():
        floor_of(module)


def test_no_upward_import():
    _, upward, _ = import_graph()
    assert not upward, "imports from a higher floor:\n" + "\n".join(upward)


def test_no_private_name_across_modules():
    _, _, private = import_graph()
    assert not private, "private names imported from another module:\n" + "\n".join(private)


def test_no_import_cycle():
    graph, _, _ = import_graph()
    found = cycles(graph)
    assert not found, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_checker_sees_what_it_must(tmp_path):
    """The checker itself: a function-local upward import, a private name and a cycle in a
    throwaway package are all reported."""
    pkg = tmp_path / PACKAGE
    (pkg / "data").mkdir(parents=True)
    (pkg / "cli").mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "data" / "__init__.py").write_text("")
    (pkg / "cli" / "__init__.py").write_text("")
    (pkg / "data" / "a.py").write_text("def f():\n    from tuneforge.cli.main import _helper\n")
    (pkg / "data" / "b.py").write_text("from tuneforge.data import c\n")
    (pkg / "data" / "c.py").write_text("from . import b\n")
    (pkg / "data" / "d.py").write_text("from tuneforge.data import c as cc\n\nx = cc._hidden\n")
    (pkg / "cli" / "main.py").write_text("def _helper():\n    pass\n")
    graph, upward, private = import_graph(tmp_path)
    assert upward == ["src/tuneforge/data/a.py:2 -> tuneforge.cli.main"]
    assert private == [
        "src/tuneforge/data/a.py:2 -> tuneforge.cli.main._helper",
        "src/tuneforge/data/d.py:3 -> tuneforge.data.c._hidden",
    ]
    assert cycles(graph) == [["tuneforge.data.b", "tuneforge.data.c"]]


@pytest.mark.parametrize(
    ("module", "floor"),
    [("tuneforge.data.tables", 1), ("tuneforge.cli.main", 9), ("tuneforge", 10)],
)
def test_floor_of(module, floor):
    assert floor_of(module) == floor
