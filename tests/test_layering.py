"""The package's import structure (issue 12 item 4): no import cycles, and the runtime never
imports export-side code.

Imports are read with ``ast`` from the source, lazy ones inside functions included (a lazy
import still ties two modules together; it only postpones the cost), ``if TYPE_CHECKING:``
blocks excluded (never executed).
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = "updatable_coreml"
ROOT = Path(__file__).resolve().parent.parent / PACKAGE

#: What the runtime may import besides its own modules: Apple's facts and leaf utilities,
#: never the export side (frontends, IR, passes, backend, validator, CLI).
RUNTIME_MAY_IMPORT = {
    "updatable_coreml",
    "updatable_coreml._proto",
    "updatable_coreml.errors",
    "updatable_coreml.spec_io",
    "updatable_coreml.coreml_rules",
    "updatable_coreml.registry",
    "updatable_coreml.frameworks",
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in ROOT.rglob("*.py")}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(tree: ast.AST):
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The package modules ``name`` imports (a ``from a import b`` of submodule b counts b)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in _import_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            targets = [stem] + [f"{stem}.{alias.name}" for alias in node.names]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target.startswith(PACKAGE) and target != name:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: imports_of(name, path, known) for name, path in found.items()}


def _is_package_init(name: str, graph: dict[str, set[str]]) -> bool:
    return any(other.startswith(name + ".") for other in graph)


def cycles(graph: dict[str, set[str]]) -> list[frozenset]:
    """Strongly connected components of more than one module (Tarjan's algorithm).

    An edge into a package's ``__init__`` from inside that package is left out: Python runs
    the ``__init__`` first anyway, and re-exports there (``from .model import load``) would
    otherwise make every package a cycle.
    """
    edges = {
        name: {t for t in targets if not (_is_package_init(t, graph) and name.startswith(t + "."))}
        for name, targets in graph.items()
    }
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = set()
            while True:
                item = stack.pop()
                on_stack.discard(item)
                component.add(item)
                if item == node:
                    break
            if len(component) > 1:
                found.append(frozenset(component))

    for name in sorted(edges):
        if name not in index:
            visit(name)
    return found


def test_the_reader_sees_imports():
    """The checks below would pass on an empty graph: make sure they read real edges."""
    graph = import_graph()
    assert "updatable_coreml.errors" in graph["updatable_coreml.export"]
    assert "updatable_coreml.export" in graph["updatable_coreml.exporters.torch"] or any(
        "updatable_coreml.export" in targets
        for name, targets in graph.items()
        if name.startswith("updatable_coreml.exporters.torch")
    )
    made_up = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(made_up) == [frozenset({"a", "b", "c"})]


def test_no_import_cycles():
    found = [sorted(component) for component in cycles(import_graph())]
    assert not found, f"import cycles: {found}"


def test_runtime_imports_no_export_code():
    graph = import_graph()
    wrong = {
        name: sorted(
            t
            for t in targets
            if not t.startswith(f"{PACKAGE}.runtime") and t not in RUNTIME_MAY_IMPORT
        )
        for name, targets in graph.items()
        if name.startswith(f"{PACKAGE}.runtime")
    }
    wrong = {name: targets for name, targets in wrong.items() if targets}
    assert not wrong, f"the runtime imports export-side code: {wrong}"
