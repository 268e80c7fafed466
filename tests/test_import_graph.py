"""The import graph of the ``osprey_core`` package has no cycle and no upward import.

The graph is read from the source with :mod:`ast`, so it holds every ``import`` statement
wherever it stands: at module top, inside a function (a lazy import still closes a cycle
the first time it runs) and under ``if TYPE_CHECKING:`` (a type-only cycle is still a
dependency in both directions). The folders ``hookspecs/``, ``plugins/`` and ``sandbox/``
are read as ``osprey_core.hookspecs``, ``osprey_core.plugins`` and ``osprey_core.sandbox``,
as the ``package-dir`` table in ``pyproject.toml`` installs them.

An edge goes from a module to the module an import statement names:
``from osprey_core.a import b`` names ``osprey_core.a.b`` when that is a module, else the
package ``osprey_core.a`` (its ``__init__``). Merely importing ``osprey_core.a.b`` also
runs ``osprey_core.a``'s ``__init__``, but that implicit edge is left out: a package's
``__init__`` must then stay light, which the upward rule below keeps true.

The rules:

* **No cycle**: no module reaches itself by following edges. A failure lists each cycle.
* **No upward import**: no module imports the ``__init__`` of a package that contains it
  (its own package or any ancestor, ``osprey_core`` included) when that ``__init__``
  imports, directly or through other modules, any module inside the package. Such an
  ``__init__`` is the package's face to the outside; a member that imports it depends on
  everything the face gathers, which is how cycles start. An ``__init__`` that reaches
  none of its package's modules (``osprey_core.hookspecs``: the pluggy markers;
  ``osprey_core.sandbox``: a tuple of file names) is a plain module of definitions, and
  importing it is like importing a sibling. A package's ``__main__`` may import its
  package: ``python -m`` has imported the package before it, and nothing imports
  ``__main__`` back. Importing a plain *module* of an ancestor
  package (``osprey_core.errors`` from ``osprey_core.logbook.service``) is not upward
  either: it is a lower layer, and if it imported the member back the cycle rule would
  say so.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: Where each top-level import package's source lives (pyproject's ``package-dir``).
PACKAGE_DIRS = {
    "osprey_core": ROOT / "osprey_core",
    "osprey_core.hookspecs": ROOT / "hookspecs",
    "osprey_core.plugins": ROOT / "plugins",
    "osprey_core.sandbox": ROOT / "sandbox",
}


@functools.cache
def modules() -> dict[str, Path]:
    """Every module name of the package and the file it is read from."""
    found: dict[str, Path] = {}
    for prefix, folder in PACKAGE_DIRS.items():
        for path in sorted(folder.rglob("*.py")):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join([prefix, *parts])] = path
    return found


def is_package(name: str) -> bool:
    return modules()[name].name == "__init__.py"


def imported(name: str, path: Path) -> set[str]:
    """The package's modules that ``name`` (read from ``path``) imports anywhere."""
    known = modules()
    package = name if is_package(name) else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            for alias in node.names:
                member = f"{base}.{alias.name}"
                targets.add(member if member in known else base)
    return {target for target in targets if target in known and target != name}


@functools.cache
def graph() -> dict[str, frozenset[str]]:
    return {name: frozenset(imported(name, path)) for name, path in modules().items()}


def cycles(edges: dict[str, frozenset[str]]) -> list[list[str]]:
    """One cycle through each strongly connected component with more than one module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def connect(node: str) -> None:  # Tarjan's algorithm
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges[node]):
            if target not in index:
                connect(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(component)

    for node in sorted(edges):
        if node not in index:
            connect(node)
    return [_one_cycle(edges, component) for component in components]


def _one_cycle(edges: dict[str, frozenset[str]], component: set[str]) -> list[str]:
    """A shortest cycle through the component's first module (breadth-first)."""
    start = min(component)
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for target in sorted(edges[node] & component):
                if target == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [*reversed(path), start]
                if target not in previous:
                    previous[target] = node
                    following.append(target)
        frontier = following
    raise AssertionError(f"no cycle through {start}")


def reach(edges: dict[str, frozenset[str]], start: str) -> set[str]:
    """Every module ``start`` imports, directly or through others."""
    seen: set[str] = set()
    todo = [start]
    while todo:
        for target in edges[todo.pop()] - seen:
            seen.add(target)
            todo.append(target)
    return seen


def upward(edges: dict[str, frozenset[str]], packages: set[str]) -> list[str]:
    """``module -> package`` for each import of a containing package's ``__init__`` that
    reaches into the package (``packages``: the names that are packages)."""
    found = []
    for name in sorted(edges):
        for target in sorted(edges[name]):
            inside = target + "."
            if (target in packages and name.startswith(inside)
                    and not name.endswith(".__main__")
                    and any(reached.startswith(inside) for reached in reach(edges, target))):
                found.append(f"{name} -> {target}")
    return found


def test_the_graph_covers_every_mapped_folder() -> None:
    names = modules()
    for prefix in PACKAGE_DIRS:
        assert prefix in names
    assert "osprey_core.orchestration.orchestrator" in names
    # Lazy and type-only imports are edges too.
    assert "osprey_core.api" in graph()["osprey_core"]


def test_no_import_cycle() -> None:
    found = cycles(graph())
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(cycle) for cycle in found)


def test_no_upward_import() -> None:
    found = upward(graph(), {name for name in modules() if is_package(name)})
    assert not found, "modules importing a package that contains them:\n" + "\n".join(found)


def test_the_checks_see_a_cycle_and_an_upward_import() -> None:
    edges = {"a": frozenset({"b"}), "b": frozenset({"c"}), "c": frozenset({"a"}),
             "d": frozenset()}
    assert cycles(edges) == [["a", "b", "c", "a"]]
    assert cycles({"a": frozenset({"b"}), "b": frozenset()}) == []
    # p.x imports its package p: upward only when p's __init__ reaches into p.
    edges = {"p": frozenset({"q"}), "q": frozenset({"p.y"}), "p.x": frozenset({"p"}),
             "p.y": frozenset()}
    assert upward(edges, {"p"}) == ["p.x -> p"]
    assert upward({**edges, "q": frozenset()}, {"p"}) == []
    assert upward({**edges, "p.__main__": frozenset({"p"})}, {"p"}) == ["p.x -> p"]
