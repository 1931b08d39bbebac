"""The import graph of ``selection`` and ``shadow`` has no cycles, and ``selection`` never imports ``shadow``.

Built with the stdlib ``ast`` from the source files, not by importing them, so it sees every import:
module level, inside functions (a lazy import hides a cycle from the interpreter, not from a
reader), ``from x import y`` where ``y`` is a submodule, relative imports, and
``importlib.import_module("literal")``.

What counts, and why:

- **Cycles**: every import except those under ``if TYPE_CHECKING:``. Those never run, so they can
  neither fail at import time nor make one module's import order matter to another; they are the
  standard way to name a type across packages. A function-level import *does* count: it runs, and
  a cycle it closes is a cycle (it only moves the failure to the first call).
- **``selection`` never imports ``shadow``**: *every* import counts, ``TYPE_CHECKING`` ones included:
  a type-only dependency still needs ``shadow`` installed to check or read ``selection``, which must
  stand alone.
- A submodule's implicit import of its parent package (``import a.b.c`` runs ``a/b/__init__.py``
  first) is not an edge: Python finishes the parent's ``__init__`` before the child's body only
  when the parent does not import the child, so a real problem there always shows up as an
  explicit edge from the child back into the parent, which is counted.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("selection", "shadow")

#: Cycles other work is removing right now; each is listed until its fix lands, then deleted here.
#: Keep this empty once they are gone: a new cycle must fail the test.
KNOWN_CYCLES: set[frozenset[str]] = set()


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {
        _module_name(path): path
        for package in PACKAGES
        for path in sorted((ROOT / package).rglob("*.py"))
    }


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST, type_only: bool = False) -> Iterator[tuple[ast.AST, bool]]:
    """Every import node (and literal import_module call) with whether it is under TYPE_CHECKING."""
    if isinstance(tree, (ast.Import, ast.ImportFrom)):
        yield tree, type_only
        return
    if (isinstance(tree, ast.Call) and isinstance(tree.func, (ast.Name, ast.Attribute))
            and (tree.func.id if isinstance(tree.func, ast.Name) else tree.func.attr) == "import_module"
            and tree.args and isinstance(tree.args[0], ast.Constant)
            and isinstance(tree.args[0].value, str)):
        yield tree, type_only
    if isinstance(tree, ast.If) and _is_type_checking(tree.test):
        for node in tree.body:
            yield from _imports(node, True)
        for node in tree.orelse:
            yield from _imports(node, type_only)
        return
    for child in ast.iter_child_nodes(tree):
        yield from _imports(child, type_only)


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The internal module ``name`` refers to (its longest known prefix), or None if external."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def _targets(node: ast.AST, module: str, is_package: bool, modules: dict[str, Path]) -> list[str]:
    """The internal modules one import node loads."""
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
        base = node.module or ""
        if node.level:
            package = module.split(".") if is_package else module.split(".")[:-1]
            anchor = package[: len(package) - (node.level - 1)]
            base = ".".join([*anchor, *([base] if base else [])])
        # ``from a.b import c`` loads the submodule a.b.c when there is one, else a.b itself.
        names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                 for alias in node.names]
    else:  # import_module("literal")
        names = [node.args[0].value]  # type: ignore[attr-defined]
    return sorted({t for n in names if (t := _resolve(n, modules)) is not None})


def import_graph(include_type_only: bool) -> dict[str, set[str]]:
    """module -> the internal modules it imports (optionally counting TYPE_CHECKING imports)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        edges: set[str] = set()
        for node, type_only in _imports(tree):
            if type_only and not include_type_only:
                continue
            edges.update(_targets(node, module, path.name == "__init__.py", modules))
        edges.discard(module)
        graph[module] = edges
    return graph


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components with more than one module (each one holds a cycle)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _one_cycle(graph: dict[str, set[str]], component: list[str]) -> list[str]:
    """A shortest cycle through the component's first module, for a readable failure."""
    start, members = component[0], set(component)
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for nxt in sorted(graph[node] & members):
            if nxt == start:
                return [*paths[node], start]
            if nxt not in paths:
                paths[nxt] = [*paths[node], nxt]
                queue.append(nxt)
    return component  # unreachable for a real component


def test_the_graph_sees_lazy_relative_and_type_only_imports(tmp_path):
    """The walker itself: function-level and relative imports are edges; TYPE_CHECKING ones optional."""
    source = (
        "from typing import TYPE_CHECKING\n"
        "from . import sibling\n"
        "if TYPE_CHECKING:\n    from selection.records import CandidateRecord\n"
        "def later():\n    from selection.errors import ConfigError\n"
    )
    modules = {"selection.ranking.policies": Path(), "selection.ranking.sibling": Path(),
               "selection.records": Path(), "selection.errors": Path()}
    found = {True: set(), False: set()}
    for node, type_only in _imports(ast.parse(source)):
        for target in _targets(node, "selection.ranking.policies", False, modules):
            found[type_only].add(target)
    assert found == {False: {"selection.ranking.sibling", "selection.errors"}, True: {"selection.records"}}
    assert strongly_connected({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]


def test_no_import_cycles():
    graph = import_graph(include_type_only=False)
    assert len(graph) > 50, "the walker found almost no modules: is ROOT right?"
    cycles = [c for c in strongly_connected(graph) if frozenset(c) not in KNOWN_CYCLES]
    assert not cycles, "import cycles (break each: move the shared part into its own module):\n" + "\n".join(
        " -> ".join(_one_cycle(graph, c)) + (f"   [{len(c)} modules tangled: {', '.join(c)}]" if len(c) > 2 else "")
        for c in cycles
    )


def test_selection_never_imports_shadow():
    graph = import_graph(include_type_only=True)
    offenders = sorted(
        f"{module} imports {target}"
        for module, targets in graph.items() if module.split(".")[0] == "selection"
        for target in targets if target.split(".")[0] == "shadow"
    )
    assert not offenders, "selection must stand alone (it may not import shadow):\n" + "\n".join(offenders)
