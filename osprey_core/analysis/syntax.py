"""Limits and small readings of the syntax tree that the visitor's parts share: constant
strings folded through obfuscation, what a function returns, look-ups in the dangerous table."""

from __future__ import annotations

import ast

from osprey_core.analysis.dangerous import DANGEROUS
from osprey_core.analysis.model import PlannedWrite, Severity
from osprey_core.analysis.tables import CALLERS, CONSTRUCTORS, READ_FUNCTIONS, WRITE_FUNCTIONS

#: How deep constant code given to exec/eval/compile is analyzed.
MAX_NESTED_CODE = 3
#: Calls of functions defined in the code that are followed with their arguments' types;
#: past this the analyzer gives up on following and says so (fails closed).
MAX_EXPANSIONS = 256

RUNTIME_WRITES = frozenset({"write_channel", "write_channels"})

#: The module namespace of the code (``globals()``): the runtime API functions live there.
MAIN = "__main__.__dict__"
#: Namespace methods that look a name up, and those that reveal nothing callable.
KEY_LOOKUPS = frozenset({"get", "pop", "setdefault", "__getitem__"})
NAMESPACE_HARMLESS = frozenset({"keys", "__contains__", "__len__", "__iter__"})

#: Builtins whose result iterates like their argument (``list(pvs)``).
ITERATING = frozenset({"list", "tuple", "set", "sorted", "reversed", "iter", "frozenset"})

#: Names recognised without an import: builtins and the sandbox runtime's functions.
BARE_NAMES: frozenset[str] = frozenset(
    {k for k in DANGEROUS if "." not in k and not k.endswith("*")}
    | {"getattr", "setattr", "delattr", "hasattr", "__builtins__", "object", "type"}
    | {n for n in CALLERS if "." not in n}
    | ITERATING
    | {n for n in WRITE_FUNCTIONS | READ_FUNCTIONS if "." not in n}
)

CONSTRUCTOR_TYPES: frozenset[str] = frozenset(CONSTRUCTORS.values())

FunctionNode = ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda

_DANGEROUS: dict[str, tuple[Severity, str]] = {
    name: (Severity(severity), reason) for name, (severity, reason) in DANGEROUS.items()
}
_DANGEROUS_PREFIXES: tuple[str, ...] = tuple(
    k.rstrip("*") for k in _DANGEROUS if k.endswith((".", "*"))
)


def dangerous_entry(name: str) -> tuple[Severity, str] | None:
    """The dangerous-table entry matching ``name``, if any."""
    if name in _DANGEROUS:
        return _DANGEROUS[name]
    if not name.startswith(_DANGEROUS_PREFIXES):
        return None
    for key, value in _DANGEROUS.items():
        if key.endswith(".") and name.startswith(key):
            return value
        if key.endswith("*") and name.startswith(key[:-1]) and "." not in name[len(key) - 1 :]:
            return value
    return None


def is_dunder(name: str) -> bool:
    return len(name) > 4 and name.startswith("__") and name.endswith("__")


def is_literal(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, str)


def element_of(name: str | None) -> str | None:
    """What iterating over a value resolved to ``name`` yields, when known."""
    return name[5:] if name is not None and name.startswith("list:") else None


def is_namespace(name: str) -> bool:
    """Whether ``name`` stands for a name -> object mapping (``vars(x)``, ``sys.modules``)."""
    return name.endswith(".__dict__") or name in ("sys.modules", "__builtins__")


def const_str(node: ast.AST) -> str | None:
    """Fold string constants, concatenations, joins and constant f-strings (obfuscation)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = const_str(node.left), const_str(node.right)
        return None if left is None or right is None else left + right
    if isinstance(node, ast.JoinedStr):
        pieces = []
        for value in node.values:
            if isinstance(value, ast.FormattedValue):
                inner = const_str(value.value)
                if inner is None:
                    return None
                pieces.append(inner)
            else:
                piece = const_str(value)
                if piece is None:
                    return None
                pieces.append(piece)
        return "".join(pieces)
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "join"
        and len(node.args) == 1
        and isinstance(node.args[0], ast.List | ast.Tuple)
    ):
        sep = const_str(node.func.value)
        items = [const_str(e) for e in node.args[0].elts]
        if sep is None or any(i is None for i in items):
            return None
        return sep.join(i for i in items if i is not None)
    return None


def returned(function: FunctionNode) -> list[ast.expr]:
    """The expressions a function returns (not those of functions nested in it)."""
    if isinstance(function, ast.Lambda):
        return [function.body]
    found: list[ast.expr] = []
    pending: list[ast.AST] = list(function.body)
    while pending:
        node = pending.pop()
        if isinstance(node, ast.Return) and node.value is not None:
            found.append(node.value)
        elif not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda
                            | ast.ClassDef):
            pending.extend(ast.iter_child_nodes(node))
    return found


def keyword_node(node: ast.Call, name: str) -> ast.AST | None:
    return next((k.value for k in node.keywords if k.arg == name), None)


def keyword_str(node: ast.Call, name: str) -> str | None:
    value = keyword_node(node, name)
    return None if value is None else const_str(value)


def planned_write(line: int, channel: str | None, value_node: ast.AST | None) -> PlannedWrite:
    try:
        value = ast.literal_eval(value_node) if value_node is not None else None
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return PlannedWrite(line, channel, None, computed=True)
    return PlannedWrite(line, channel, value, computed=value_node is None)

