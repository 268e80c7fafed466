"""YAML as osprey reads it: safe tags only, and aliases that cannot explode.

PyYAML shares the node of an anchor between its aliases, so parsing a "billion laughs"
document is cheap; everything that walks the result afterwards (validation, error
messages, hashing) pays for the fully expanded tree. A 700-byte file can expand to
millions of values. :class:`BoundedLoader` measures the expanded size of each document
on the node graph (linear in the file, memoised per node) and refuses a document whose
expansion passes :data:`MAX_EXPANDED_NODES`, or that uses more than :data:`MAX_ALIASES`
aliases, before anything is built from it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, ClassVar

import yaml

from osprey_core.errors import shorten

#: Values (scalars and collections) a document may hold once every alias is expanded.
MAX_EXPANDED_NODES = 100_000
#: Alias references a document may use (ordinary configs use a handful).
MAX_ALIASES = 1_000
BOOL_TAG = "tag:yaml.org,2002:bool"


class YAMLBombError(yaml.YAMLError):
    """A document whose aliases expand beyond the bounds; nothing was built from it."""

    def __init__(self, message: str, mark: yaml.Mark | None) -> None:
        super().__init__(message)
        self.problem = message
        self.problem_mark = mark


class BoundedLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses alias expansion beyond a small bound, and reads
    booleans as YAML 1.2 does: only ``true`` and ``false``. (YAML 1.1 also turns ``yes``,
    ``no``, ``on`` and ``off`` into booleans, so ``writes_enabled: on`` would switch a
    safety setting without anyone writing ``true``.)"""

    yaml_implicit_resolvers: ClassVar[dict[Any, list[tuple[str, re.Pattern[str]]]]] = {
        first: [(tag, pattern) for tag, pattern in resolvers if tag != BOOL_TAG]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._aliases = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            self._aliases += 1
            if self._aliases > MAX_ALIASES:
                mark = self.peek_event().start_mark
                raise YAMLBombError(f"more than {MAX_ALIASES} aliases; refusing to expand "
                                    "them", mark)
        return super().compose_node(parent, index)

    def compose_document(self) -> yaml.Node | None:
        node = super().compose_document()
        if node is not None:
            check_expansion(node)
        self._aliases = 0
        return node


BoundedLoader.add_implicit_resolver(
    BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


def check_expansion(root: yaml.Node, limit: int = MAX_EXPANDED_NODES) -> int:
    """The number of values ``root`` expands to; YAMLBombError past ``limit``.

    Each node's expanded size is computed once, so the cost is linear in the number of
    distinct nodes whatever the aliases multiply. A node reached again while it is being
    measured is a recursive alias: it expands to an infinite tree and is refused too.
    """
    sizes: dict[int, int] = {}
    in_progress: set[int] = set()
    # Iterative post-order walk: a deeply nested document must not hit Python's recursion
    # limit here.
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if key in sizes:
            continue
        children = _children(node)
        if children_done:
            in_progress.discard(key)
            total = 1 + sum(sizes[id(child)] for child in children)
            if total > limit:
                raise YAMLBombError(f"the document expands to more than {limit} values "
                                    "through its aliases; refusing to load it", node.start_mark)
            sizes[key] = total
            continue
        if key in in_progress:
            continue
        in_progress.add(key)
        stack.append((node, True))
        for child in children:
            if id(child) in in_progress:
                raise YAMLBombError("an alias refers to the collection that contains it "
                                    "(an infinitely deep value)", child.start_mark)
            if id(child) not in sizes:
                stack.append((child, False))
    return sizes[id(root)]


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def safe_load(text: str) -> Any:
    """``yaml.safe_load`` with bounded alias expansion."""
    loader = BoundedLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def load_file(path: Path) -> Any:
    """Read and parse a YAML file (UTF-8, a BOM tolerated) with bounded alias expansion."""
    return safe_load(path.read_text(encoding="utf-8-sig"))


def describe_error(exc: yaml.YAMLError, source: Path | str) -> str:
    """``source:line:column: problem`` for a YAML error, short whatever the input."""
    mark = getattr(exc, "problem_mark", None)
    where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else str(source)
    problem = getattr(exc, "problem", None) or str(exc)
    return f"{where}: {shorten(problem, 300)}"
