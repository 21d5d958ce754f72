"""The runtime's layering, read from its source (ast): no import cycles among its modules, no
import of export-side code, and every layer type lives in exactly one family module."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import updatable_coreml.runtime as runtime_package
from updatable_coreml.runtime import layers
from updatable_coreml.runtime.registry import BACKWARD, ESTIMATES, FORWARD

RUNTIME = Path(runtime_package.__file__).parent
PACKAGE = "updatable_coreml"
#: Modules outside the runtime it may read: Apple's facts and the shared plumbing, never the
#: exporters, passes, backend, IR or validator (a backend bug must not hide behind shared code).
ALLOWED_OUTSIDE = {"_proto", "errors", "registry", "spec_io", "coreml_rules"}


def module_name(path: Path) -> str:
    parts = path.relative_to(RUNTIME.parent).with_suffix("").parts
    return ".".join((PACKAGE,) + parts[:-1] if parts[-1] == "__init__" else (PACKAGE,) + parts)


MODULES = {module_name(path): path for path in RUNTIME.rglob("*.py")}


def _is_type_checking(node: ast.If) -> bool:
    return isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"


def imports(path: Path) -> set[str]:
    """Modules ``path`` imports at run time (anywhere but under ``if TYPE_CHECKING:``)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                continue
            if isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[: len(base) - child.level + 1]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                submodules = {f"{target}.{alias.name}" for alias in child.names} & set(MODULES)
                found.update(submodules or {target})  # ``from . import x``: module x only
            elif isinstance(child, ast.Import):
                found.update(alias.name for alias in child.names)
            visit(child)

    visit(ast.parse(path.read_text()))
    return {target for target in found if target.startswith(PACKAGE)}


def graph() -> dict[str, set[str]]:
    return {
        name: {t for t in imports(path) if t in MODULES and t != name}
        for name, path in MODULES.items()
    }


def test_no_import_cycles_in_the_runtime():
    edges = graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for target in sorted(edges[node]):
            if state.get(target) == 1:
                cycle = stack[stack.index(target) :] + [target]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target)
        stack.pop()
        state[node] = 2

    for name in sorted(edges):
        if name not in state:
            visit(name)


def test_the_runtime_reads_no_export_side_code():
    outside = {}
    for name, path in MODULES.items():
        for target in imports(path):
            if target.startswith(f"{PACKAGE}.runtime") or target == PACKAGE:
                continue
            top = target.split(".")[1]
            if top not in ALLOWED_OUTSIDE:
                outside[name] = target
    assert not outside, outside


def test_every_layer_type_is_registered_by_one_family_module():
    families = {
        getattr(layers, name)
        for name in dir(layers)
        if getattr(getattr(layers, name), "__name__", "").startswith(layers.__name__ + ".")
    }
    for table in (FORWARD, BACKWARD, ESTIMATES):
        for kind, fn in table.items():
            assert any(fn.__module__ == family.__name__ for family in families), (
                kind,
                fn.__module__,
            )


def test_the_loader_is_the_only_module_that_knows_every_model_kind():
    edges = graph()
    kinds = {"network", "pipeline", "knn"}
    for name, targets in edges.items():
        known = {t.rsplit(".", 1)[1] for t in targets} & kinds
        if name.endswith(".model") or name.endswith(".runtime") or name.endswith(".simulate"):
            continue
        assert len(known) <= 1, (name, known)
    assert f"{PACKAGE}.runtime.network" not in edges[f"{PACKAGE}.runtime.pipeline"]
    assert f"{PACKAGE}.runtime.knn" not in edges[f"{PACKAGE}.runtime.pipeline"]
