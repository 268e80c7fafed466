"""Static analysis of generated Python code, to decide who must look at it before it runs.

The analyzer works on the AST, never on text: comments and strings are not code. It resolves
import aliases and straight-line assignments, tracks variables bound to channel objects
(pyepics ``PV``, caproto and p4p contexts, Tango ``DeviceProxy``, HTTP sessions), follows
them into comprehensions, lambdas and functions defined in the code, and flags *references*
to write-capable functions as well as calls, because a write passed to ``map`` or a thread
is still a write. A call of a control-system package that the tables in
:mod:`osprey_core.analysis_tables` do not know to be a read fails closed as a write. Dynamic
tricks (``exec``, dynamic imports, dispatch by a computed name through ``getattr``,
``methodcaller``, namespaces and the like, dunder walking, shell-outs) are flagged as
dangerous. Anything it cannot parse fails closed with a critical ``parse_error`` finding.

It is *not* the security boundary (the nsjail sandbox and the control-system broker are):
it only decides whether a human must approve the code.
"""

from __future__ import annotations

import ast
import codecs
import io
import tokenize
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from osprey_core.analysis_tables import (
    ATTRIBUTE_READ_TYPES,
    BENIGN_DUNDERS,
    CALLBACK_KEYWORDS,
    CALLER_METHODS,
    CALLERS,
    CONSTRUCTORS,
    DANGEROUS,
    DANGEROUS_IMPORTS,
    DISPATCHERS,
    GETTERS,
    HTTP_WRITES,
    MAPPERS,
    OBJECT_TYPES,
    READ_ATTRIBUTES,
    READ_FUNCTIONS,
    WRITE_COMMANDS,
    WRITE_FUNCTIONS,
    WRITE_METHOD_NAMES,
    canonical,
    in_control_namespace,
    unknown_member,
)

__all__ = ["Analysis", "Category", "Finding", "PlannedWrite", "Severity", "analyze"]


class Category(StrEnum):
    """What a finding is about."""

    CONTROL_WRITE = "control_write"
    CONTROL_READ = "control_read"
    DANGEROUS = "dangerous"
    PARSE_ERROR = "parse_error"


class Severity(StrEnum):
    """How much attention a finding deserves."""

    INFO = "info"
    WARNING = "warning"
    HIGH = "high"
    CRITICAL = "critical"


@dataclass(frozen=True)
class Finding:
    """One thing the analyzer noticed, at a source position."""

    category: Category
    severity: Severity
    line: int
    column: int
    reason: str
    symbol: str | None = None

    def to_json(self) -> dict[str, Any]:
        """Plain dict for audit records and API answers."""
        data = asdict(self)
        data["category"] = str(self.category)
        data["severity"] = str(self.severity)
        return data


@dataclass(frozen=True)
class PlannedWrite:
    """A runtime-API write the code will make, with what could be read off the source."""

    line: int
    #: The channel name when it is a literal, ``None`` when it is computed at run time.
    channel: str | None
    #: The value when it is a literal (``computed`` is true otherwise).
    value: Any = None
    computed: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Analysis:
    """All findings for one piece of code; the approval engine decides what they mean."""

    findings: list[Finding] = field(default_factory=list)
    #: Writes through the sandbox runtime API, one per call site.
    planned_writes: list[PlannedWrite] = field(default_factory=list)
    #: True when a runtime write is made in a way whose channel cannot be read off the
    #: source (a reference passed around, nested ``exec`` code, a computed name).
    dynamic_writes: bool = False

    @property
    def write_targets(self) -> frozenset[str] | None:
        """Channels the code may write through the broker; ``None``: any (not predictable)."""
        if self.dynamic_writes or any(w.channel is None for w in self.planned_writes):
            return None
        return frozenset(w.channel for w in self.planned_writes if w.channel is not None)

    def _has(self, category: Category) -> bool:
        return any(f.category is category for f in self.findings)

    @property
    def writes(self) -> bool:
        """Any control-system write (call, reference, attribute assignment, HTTP mutation)."""
        return self._has(Category.CONTROL_WRITE)

    @property
    def reads(self) -> bool:
        """Any control-system read."""
        return self._has(Category.CONTROL_READ)

    @property
    def dangerous(self) -> bool:
        """Any dangerous construct (dynamic code, shell-out, dunder walking...)."""
        return self._has(Category.DANGEROUS)

    @property
    def parse_error(self) -> bool:
        """The code could not be analyzed; callers must treat it as unsafe."""
        return self._has(Category.PARSE_ERROR)

    def to_json(self) -> dict[str, Any]:
        """Plain dict for audit records and API answers."""
        return {
            "writes": self.writes,
            "reads": self.reads,
            "dangerous": self.dangerous,
            "parse_error": self.parse_error,
            "findings": [f.to_json() for f in self.findings],
            "planned_writes": [w.to_json() for w in self.planned_writes],
            "write_targets": None if self.write_targets is None else sorted(self.write_targets),
        }


# --------------------------------------------------------------------------- limits, helpers

#: How deep constant code given to exec/eval/compile is analyzed.
_MAX_NESTED_CODE = 3
#: Calls of functions defined in the code that are followed with their arguments' types;
#: past this the analyzer gives up on following and says so (fails closed).
_MAX_EXPANSIONS = 256

_RUNTIME_WRITES = frozenset({"write_channel", "write_channels"})

#: The module namespace of the code (``globals()``): the runtime API functions live there.
_MAIN = "__main__.__dict__"
#: Namespace methods that look a name up, and those that reveal nothing callable.
_KEY_LOOKUPS = frozenset({"get", "pop", "setdefault", "__getitem__"})
_NAMESPACE_HARMLESS = frozenset({"keys", "__contains__", "__len__", "__iter__"})

#: Builtins whose result iterates like their argument (``list(pvs)``).
_ITERATING = frozenset({"list", "tuple", "set", "sorted", "reversed", "iter", "frozenset"})

#: Names recognised without an import: builtins and the sandbox runtime's functions.
_BARE_NAMES: frozenset[str] = frozenset(
    {k for k in DANGEROUS if "." not in k and not k.endswith("*")}
    | {"getattr", "setattr", "delattr", "hasattr", "__builtins__", "object", "type"}
    | {n for n in CALLERS if "." not in n}
    | _ITERATING
    | {n for n in WRITE_FUNCTIONS | READ_FUNCTIONS if "." not in n}
)

_CONSTRUCTOR_TYPES: frozenset[str] = frozenset(CONSTRUCTORS.values())

_Function = ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda

_DANGEROUS: dict[str, tuple[Severity, str]] = {
    name: (Severity(severity), reason) for name, (severity, reason) in DANGEROUS.items()
}
_DANGEROUS_PREFIXES: tuple[str, ...] = tuple(
    k.rstrip("*") for k in _DANGEROUS if k.endswith((".", "*"))
)


def _dangerous(name: str) -> tuple[Severity, str] | None:
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


def _is_dunder(name: str) -> bool:
    return len(name) > 4 and name.startswith("__") and name.endswith("__")


def _is_literal(node: ast.AST) -> bool:
    return isinstance(node, ast.Constant) and isinstance(node.value, str)


def _element(name: str | None) -> str | None:
    """What iterating over a value resolved to ``name`` yields, when known."""
    return name[5:] if name is not None and name.startswith("list:") else None


def _is_namespace(name: str) -> bool:
    """Whether ``name`` stands for a name -> object mapping (``vars(x)``, ``sys.modules``)."""
    return name.endswith(".__dict__") or name in ("sys.modules", "__builtins__")


def _const_str(node: ast.AST) -> str | None:
    """Fold string constants, concatenations, joins and constant f-strings (obfuscation)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _const_str(node.left), _const_str(node.right)
        return None if left is None or right is None else left + right
    if isinstance(node, ast.JoinedStr):
        pieces = []
        for value in node.values:
            if isinstance(value, ast.FormattedValue):
                inner = _const_str(value.value)
                if inner is None:
                    return None
                pieces.append(inner)
            else:
                piece = _const_str(value)
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
        sep = _const_str(node.func.value)
        items = [_const_str(e) for e in node.args[0].elts]
        if sep is None or any(i is None for i in items):
            return None
        return sep.join(i for i in items if i is not None)
    return None


def _returned(function: _Function) -> list[ast.expr]:
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


# --------------------------------------------------------------------------- visitor


class _Analyzer(ast.NodeVisitor):
    """Walks the module in source order, binding names as it goes (straight-line flow).

    Function bodies are scoped: visited where they are defined, again with the parameter
    types of each call that passes control-system objects, and once more at the end with
    the module's final bindings (a body runs when it is called, not where it is written).
    """

    def __init__(self, depth: int, bindings: dict[str, str] | None = None) -> None:
        self.bindings: dict[str, str] = dict(bindings or {})
        self.functions: dict[str, _Function] = {}
        #: Classes defined in the code (``local:NAME``) -> their methods.
        self.classes: dict[str, dict[str, _Function]] = {}
        self.star_modules: list[str] = []
        self.findings: list[Finding] = []
        self._seen: set[Finding] = set()
        self.planned: list[PlannedWrite] = []
        self._planned_calls: set[int] = set()
        self.dynamic_writes = False
        self.depth = depth
        self._deferred: dict[int, _Function] = {}
        self._final_pass = False
        self._expanded: set[tuple[Any, ...]] = set()
        self._expanding: set[int] = set()
        self._resolving: set[int] = set()
        #: Names declared ``global``/``nonlocal`` in the body being visited (they escape it).
        self._escaping: set[str] = set()
        self._class_depth = 0

    # ---- helpers

    def add(
        self,
        node: ast.AST,
        category: Category,
        severity: Severity,
        reason: str,
        symbol: str | None = None,
    ) -> None:
        finding = Finding(
            category,
            severity,
            getattr(node, "lineno", 0),
            getattr(node, "col_offset", 0),
            reason,
            symbol,
        )
        if finding not in self._seen:
            self._seen.add(finding)
            self.findings.append(finding)

    def resolve(self, node: ast.AST) -> str | None:
        """Dotted canonical name (or object type) an expression stands for, when known."""
        if isinstance(node, ast.Name):
            return self._resolve_name(node.id)
        if isinstance(node, ast.Attribute):
            base = self.resolve(node.value)
            return None if base is None else canonical(f"{base}.{node.attr}")
        if isinstance(node, ast.Call):
            return self._resolve_call(node)
        if isinstance(node, ast.Subscript):
            base = self.resolve(node.value)
            if base is None:
                return None
            if base.startswith("list:"):
                return base[5:]
            return self._namespace_member(base, node.slice) if _is_namespace(base) else None
        if isinstance(node, ast.List | ast.Tuple | ast.Set):
            return self._resolve_collection([self.resolve(e) for e in node.elts])
        if isinstance(node, ast.Dict):
            return self._resolve_collection([self.resolve(v) for v in node.values])
        if isinstance(node, ast.ListComp | ast.SetComp | ast.GeneratorExp):
            return self._resolve_collection([self.resolve(node.elt)])
        if isinstance(node, ast.DictComp):
            return self._resolve_collection([self.resolve(node.value)])
        if isinstance(node, ast.NamedExpr):
            return self.resolve(node.value)
        return None

    def _resolve_name(self, name: str) -> str | None:
        if name in self.bindings:
            return self.bindings[name]
        for module in self.star_modules:
            candidate = canonical(f"{module}.{name}")
            if candidate in WRITE_FUNCTIONS or candidate in READ_FUNCTIONS or (
                candidate in CONSTRUCTORS
            ):
                return candidate
        return name if name in _BARE_NAMES else None

    @staticmethod
    def _resolve_collection(items: list[str | None]) -> str | None:
        """A collection resolves to its most telling element (a possible write first, then
        anything of a control-system package), so that using any element is checked."""
        kinds = [kind for kind in items if kind is not None]
        for kind in kinds:
            if kind in WRITE_FUNCTIONS or unknown_member(kind) is not None:
                return f"list:{kind}"
        for kind in kinds:
            if kind in _CONSTRUCTOR_TYPES or in_control_namespace(kind):
                return f"list:{kind}"
        return None

    def _resolve_call(self, node: ast.Call) -> str | None:
        func = self.resolve(node.func)
        args = node.args
        target = self._getter_target(node, func)
        if target is not None:
            base, attr = self.resolve(target[0]), _const_str(target[1])
            return canonical(f"{base}.{attr}") if base is not None and attr else None
        local = self._local_function(node.func)
        if func in self.classes:
            return func  # an instance of a class defined in the code
        if local is not None:
            return self._resolve_returned(*local, node)
        if func is None:
            return None
        if func in _ITERATING and len(args) == 1:
            inner = self.resolve(args[0])
            return inner if inner is not None and inner.startswith("list:") else None
        if func == "map" and args:
            kind = CONSTRUCTORS.get(self.resolve(args[0]) or "")
            return None if kind is None or kind.startswith("list:") else f"list:{kind}"
        if func == "__import__" and args:
            module = _const_str(args[0])
            return None if module is None else canonical(module.split(".")[0])
        if func == "importlib.import_module" and args:
            module = _const_str(args[0])
            return None if module is None else canonical(module)
        if func in ("globals", "locals") or (func == "vars" and not args):
            return _MAIN
        if func == "vars":
            base = self.resolve(args[0])
            return None if base is None else f"{base}.__dict__"
        if func == "type" and len(args) == 1:
            base = self.resolve(args[0])
            return base if base in OBJECT_TYPES else None
        if func == "eval" and args:
            return self._resolve_source(args[0])
        if func in ("operator.methodcaller", "operator.attrgetter") and args:
            if func == "operator.attrgetter" and len(args) > 1:
                return None  # a tuple of values, never called
            return f"{func}:{_const_str(args[0]) or ''}"
        if func.startswith("operator.attrgetter:") and len(args) == 1:
            base, attr = self.resolve(args[0]), func.partition(":")[2]
            return canonical(f"{base}.{attr}") if base is not None and attr else None
        owner, _, method = func.rpartition(".")
        if owner and _is_namespace(owner) and method in _KEY_LOOKUPS and args:
            return self._namespace_member(owner, args[0])
        return CONSTRUCTORS.get(func)

    def _resolve_returned(self, function: _Function, bound: str | None, call: ast.Call
                          ) -> str | None:
        """What a call of a function defined in the code returns, when a return says."""
        if id(function) in self._resolving:
            return None
        outer = self.bindings
        arguments = self._call_arguments(function, call, bound=bound)
        self.bindings = outer | self._parameters(function, arguments)
        self._resolving.add(id(function))
        try:
            return next(filter(None, map(self.resolve, _returned(function))), None)
        finally:
            self._resolving.discard(id(function))
            self.bindings = outer

    def _getter_target(self, node: ast.Call, func: str | None) -> tuple[ast.AST, ast.AST] | None:
        """``(object, name)`` of a call that fetches an attribute by name."""
        if func in GETTERS and len(node.args) >= 2:
            return node.args[0], node.args[1]
        if (
            isinstance(node.func, ast.Attribute)
            and node.func.attr in ("__getattribute__", "__getattr__")
            and len(node.args) == 1
        ):
            return node.func.value, node.args[0]
        return None

    def _resolve_source(self, node: ast.AST) -> str | None:
        """What a constant expression given to ``eval`` stands for."""
        source = _const_str(node)
        if source is None:
            return None
        try:
            tree = ast.parse(source.strip(), mode="eval")
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            return None
        return self.resolve(tree.body)

    def _namespace_member(self, namespace: str, key_node: ast.AST) -> str | None:
        """What a constant-key lookup in a namespace stands for."""
        key = _const_str(key_node)
        if key is None:
            return None
        if namespace == "sys.modules":
            return canonical(key)
        if namespace in (_MAIN, "__builtins__"):
            return self._resolve_name(key)
        return canonical(f"{namespace.removesuffix('.__dict__')}.{key}")

    def bind(self, target: ast.AST, value: ast.AST | None, resolved: str | None) -> None:
        """Bind assignment targets to what the value resolves to (tuples pairwise)."""
        if isinstance(target, ast.Name):
            self.functions.pop(target.id, None)
            if resolved is None:
                self.bindings.pop(target.id, None)
            else:
                self.bindings[target.id] = resolved
        elif isinstance(target, ast.Tuple | ast.List):
            if isinstance(value, ast.Tuple | ast.List) and len(value.elts) == len(target.elts):
                for sub_target, sub_value in zip(target.elts, value.elts, strict=True):
                    self.bind(sub_target, sub_value, self.resolve(sub_value))
            else:
                element = _element(resolved)
                for sub_target in target.elts:
                    inner = sub_target.value if isinstance(sub_target, ast.Starred) else sub_target
                    self.bind(inner, None, element)
        elif isinstance(target, ast.Starred):
            self.bind(target.value, None, resolved)

    def check_name(
        self, node: ast.AST, name: str, *, called: bool, via: str | None = None
    ) -> None:
        """Report a resolved name as write / read / dangerous, as a call or a reference.

        ``via`` says how a reference will be called later (handed to ``map`` or a thread,
        stored where the analyzer cannot follow it): it is judged as a call.
        """
        if called and name.endswith(".__call__"):
            name = name.removesuffix(".__call__")
        verb = "call to" if called else "reference to"
        fetched = not isinstance(node, ast.Name)  # a variable's later use is not a new fetch
        if name in _RUNTIME_WRITES and not called:
            self.dynamic_writes = True
        if name in WRITE_FUNCTIONS:
            self.add(node, Category.CONTROL_WRITE, Severity.CRITICAL, f"{verb} {name}", name)
        elif name in HTTP_WRITES and not called:
            self.add(node, Category.CONTROL_WRITE, Severity.HIGH, f"{verb} {name}", name)
        elif name in READ_FUNCTIONS:
            self.add(node, Category.CONTROL_READ, Severity.INFO, f"{verb} {name}", name)
        elif name in READ_ATTRIBUTES:
            if fetched and not called:
                self.add(node, Category.CONTROL_READ, Severity.INFO, f"read of {name}", name)
        elif not called and name in DISPATCHERS:
            self.add(node, Category.DANGEROUS, Severity.HIGH,
                     f"{verb} {name}, which dispatches by a name chosen at run time", name)
        else:
            owner = unknown_member(name)
            if owner is not None:
                self._unknown_member(node, name, owner, called=called, fetched=fetched,
                                     via=via)
        danger = _dangerous(name)
        if danger is not None:
            severity, reason = danger
            self.add(node, Category.DANGEROUS, severity, reason if called else f"{verb} {name}",
                     name)

    def _unknown_member(
        self, node: ast.AST, name: str, owner: str, *, called: bool, fetched: bool,
        via: str | None,
    ) -> None:
        """A control-system callable outside the tables: a call fails closed as a write.

        On a Tango ``DeviceProxy`` a plain attribute is a device attribute: fetching it
        reads the device, calling it runs a command.
        """
        member = name[len(owner) + 1 :]
        tango = owner in ATTRIBUTE_READ_TYPES
        if called or via:
            what = f"Tango device command {member}" if tango else name
            why = ("commands are writes" if tango
                   else "not a known read of a control-system package: treated as a write")
            reason = f"{what} {via}" if via else f"call to {what}"
            severity = Severity.CRITICAL if tango else Severity.HIGH
            self.add(node, Category.CONTROL_WRITE, severity, f"{reason} ({why})", name)
            self.dynamic_writes = True
        elif tango and fetched:
            self.add(node, Category.CONTROL_READ, Severity.INFO,
                     f"read of Tango attribute {member}", name)

    def _check_chain(self, node: ast.AST, *, called: bool) -> None:
        """Check a maximal Name/Attribute chain and every prefix of it (``caput.__call__``)."""
        name = self.resolve(node)
        if name is not None:
            self.check_name(node, name, called=called)
        inner = node.value if isinstance(node, ast.Attribute) else None
        while isinstance(inner, ast.Attribute | ast.Name):
            prefix = self.resolve(inner)
            if prefix is not None:
                self.check_name(inner, prefix, called=False)
            inner = inner.value if isinstance(inner, ast.Attribute) else None
        if isinstance(inner, ast.AST):
            self.visit(inner)

    def _on_control_object(self, name: str | None) -> bool:
        return name is not None and (name in OBJECT_TYPES or in_control_namespace(name))

    def _namespace_is_control(self, namespace: str) -> bool:
        """Namespaces whose entries may be writes: the code's own (runtime API functions)
        and those of control-system modules and objects."""
        return namespace == _MAIN or (
            namespace.endswith(".__dict__")
            and self._on_control_object(namespace.removesuffix(".__dict__"))
        )

    def _mentions_control(self, node: ast.AST) -> bool:
        return any(
            self._on_control_object(_element(name) or name)
            for sub in ast.walk(node)
            if isinstance(sub, ast.Name | ast.Attribute)
            for name in [self.resolve(sub)]
        )

    # ---- imports and bindings

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._import_check(node, alias.name)
            name = alias.asname or alias.name.split(".")[0]
            self.functions.pop(name, None)
            self.bindings[name] = canonical(alias.name if alias.asname else name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level or not node.module:
            return
        self._import_check(node, node.module)
        for alias in node.names:
            full = canonical(f"{node.module}.{alias.name}")
            if alias.name == "*":
                self.star_modules.append(canonical(node.module))
                continue
            self._import_check(node, full)
            self.functions.pop(alias.asname or alias.name, None)
            self.bindings[alias.asname or alias.name] = full

    def _import_check(self, node: ast.AST, module: str) -> None:
        if module.split(".")[0] in DANGEROUS_IMPORTS:
            self.add(node, Category.DANGEROUS, Severity.CRITICAL, f"import of {module}", module)
        if module.split(".")[0] == "importlib" or module == "builtins":
            self.add(node, Category.DANGEROUS, Severity.HIGH, f"import of {module}", module)

    def visit_Assign(self, node: ast.Assign) -> None:
        self.visit(node.value)
        resolved = self.resolve(node.value)
        if resolved is not None and (
            self._class_depth or any(isinstance(t, ast.Attribute | ast.Subscript)
                                     for t in node.targets)
        ):
            self._escapes(node.value, resolved)
        for target in node.targets:
            self._visit_target(target)
            self.bind(target, node.value, resolved)
            if isinstance(node.value, ast.Lambda) and isinstance(target, ast.Name):
                self.functions[target.id] = node.value

    def _escapes(self, node: ast.AST, name: str) -> None:
        """A control-system function stored in an attribute, an item or a class body can be
        called from where the analyzer does not follow it: judged as a call."""
        owner = unknown_member(name)
        if owner is not None and owner not in OBJECT_TYPES:
            self.check_name(node, name, called=False,
                            via="stored where it can be called later")

    def visit_AnnAssign(self, node: ast.AnnAssign) -> None:
        if node.value is not None:
            self.visit(node.value)
            self._visit_target(node.target)
            self.bind(node.target, node.value, self.resolve(node.value))

    def visit_AugAssign(self, node: ast.AugAssign) -> None:
        self.visit(node.value)
        self._visit_target(node.target)

    def visit_NamedExpr(self, node: ast.NamedExpr) -> None:
        self.visit(node.value)
        self.bind(node.target, node.value, self.resolve(node.value))

    def _alternatives(self, start: dict[str, str], *paths: Sequence[ast.AST]) -> None:
        """Visit paths that may or may not run (branches, loop bodies, handlers), each from
        ``start``; a name keeps any binding a path (or skipping them all) leaves, so a
        rebinding in a branch that never runs cannot hide what the name stands for."""
        merged = dict(start)
        for path in paths:
            self.bindings = dict(start)
            for statement in path:
                self.visit(statement)
            merged.update(self.bindings)
        self.bindings = merged

    def visit_If(self, node: ast.If | ast.While) -> None:
        self.visit(node.test)
        self._alternatives(self.bindings, node.body, node.orelse)

    visit_While = visit_If

    def visit_For(self, node: ast.For | ast.AsyncFor) -> None:
        self.visit(node.iter)
        self.bind(node.target, None, _element(self.resolve(node.iter)))
        self._alternatives(self.bindings, node.body, node.orelse)

    visit_AsyncFor = visit_For

    def visit_Try(self, node: ast.Try | ast.TryStar) -> None:
        before = self.bindings
        self._alternatives(before, node.body)
        self._alternatives(self.bindings, node.orelse, *([h] for h in node.handlers))
        for statement in node.finalbody:
            self.visit(statement)

    visit_TryStar = visit_Try

    def visit_Match(self, node: ast.Match) -> None:
        self.visit(node.subject)
        self._alternatives(self.bindings, *([case] for case in node.cases))

    def visit_With(self, node: ast.With | ast.AsyncWith) -> None:
        for item in node.items:
            self.visit(item.context_expr)
            if item.optional_vars is not None:
                self.bind(item.optional_vars, None, self.resolve(item.context_expr))
        for statement in node.body:
            self.visit(statement)

    visit_AsyncWith = visit_With

    def _visit_target(self, target: ast.AST) -> None:
        """Assignment targets: attribute stores on channel objects are writes."""
        if isinstance(target, ast.Attribute):
            owner = self.resolve(target.value)
            if owner is not None and self._on_control_object(owner):
                self.add(
                    target,
                    Category.CONTROL_WRITE,
                    Severity.CRITICAL,
                    f"attribute assignment {target.attr} on {owner}",
                    f"{owner}.{target.attr}",
                )
            if _is_dunder(target.attr):
                self.add(target, Category.DANGEROUS, Severity.CRITICAL,
                         f"assignment to dunder attribute {target.attr}", target.attr)
            self._check_chain(target.value, called=False)
        elif isinstance(target, ast.Tuple | ast.List):
            for element in target.elts:
                self._visit_target(element)
        elif isinstance(target, ast.Starred):
            self._visit_target(target.value)
        elif isinstance(target, ast.Subscript):
            self.visit(target.value)
            self.visit(target.slice)

    # ---- scopes: functions, lambdas, classes, comprehensions

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self._decorators(node.decorator_list)
        self.visit(node.args)
        if node.returns is not None:
            self.visit(node.returns)
        self.bindings.pop(node.name, None)
        self.functions[node.name] = node
        self._visit_function(node)

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_Lambda(self, node: ast.Lambda) -> None:
        self.visit(node.args)
        self._visit_function(node)

    def _visit_function(self, function: _Function) -> None:
        self._visit_body(function, {})
        if not self._final_pass:
            self._deferred.setdefault(id(function), function)

    def _visit_body(self, function: _Function, arguments: dict[str, str | None]) -> None:
        """Visit a body with its parameters bound (to ``arguments``, else to the types of
        their defaults); only names declared ``global`` escape it. A parameter of unknown
        type keeps what the same name stands for outside (fail closed)."""
        outer_bindings, outer_functions = self.bindings, self.functions
        self.bindings = outer_bindings | self._parameters(function, arguments)
        self.functions = dict(outer_functions)
        outer_escaping, self._escaping = self._escaping, set()
        try:
            if isinstance(function, ast.Lambda):
                self.visit(function.body)
            else:
                for statement in function.body:
                    self.visit(statement)
        finally:
            inner, escaping = self.bindings, self._escaping
            self.bindings, self.functions = outer_bindings, outer_functions
            self._escaping = outer_escaping
        if not arguments:
            self.bindings.update({k: v for k, v in inner.items() if k in escaping})

    def visit_Global(self, node: ast.Global | ast.Nonlocal) -> None:
        self._escaping.update(node.names)

    visit_Nonlocal = visit_Global

    def _parameters(self, function: _Function, arguments: dict[str, str | None]
                    ) -> dict[str, str]:
        """Parameter name -> type, for the parameters whose type is known."""
        args = function.args
        positional = [*args.posonlyargs, *args.args]
        defaults: list[ast.expr | None] = [None] * (len(positional) - len(args.defaults))
        params: dict[str, str] = {}
        pairs = [*zip(positional, [*defaults, *args.defaults], strict=True),
                 *zip(args.kwonlyargs, args.kw_defaults, strict=True)]
        for param, default in pairs:
            if param.arg in arguments:
                kind = arguments[param.arg]
            else:
                kind = None if default is None else self.resolve(default)
            if kind is not None:
                params[param.arg] = kind
        return params

    def _call_arguments(
        self, function: _Function, call: ast.Call | None = None,
        positional: list[str | None] | None = None, bound: str | None = None,
    ) -> dict[str, str | None]:
        """Parameter name -> type of what a call (or a caller, ``positional``) passes;
        ``bound`` is the instance a method is called on."""
        names = [p.arg for p in [*function.args.posonlyargs, *function.args.args]]
        if call is not None:
            positional = [bound] if bound is not None else []
            for argument in call.args:
                if isinstance(argument, ast.Starred):  # f(*pvs): the rest get its elements
                    element = _element(self.resolve(argument.value))
                    positional += [element] * (len(names) - len(positional))
                    break
                positional.append(self.resolve(argument))
        arguments = dict(zip(names, positional or [], strict=False))
        if call is not None:
            arguments |= {k.arg: self.resolve(k.value) for k in call.keywords if k.arg}
        return arguments

    def _expand(self, function: _Function, arguments: dict[str, str | None]) -> None:
        """Visit a local function's body again with the types a call gives its parameters,
        when the call passes something from a control-system package."""
        if not any(self._followed(t) for t in arguments.values()):
            return
        key = (id(function), tuple(sorted(arguments.items())))
        if key in self._expanded or id(function) in self._expanding:
            return
        if len(self._expanded) >= _MAX_EXPANSIONS:
            self.add(function, Category.DANGEROUS, Severity.HIGH,
                     "too many calls passing control-system objects to follow")
            return
        self._expanded.add(key)
        self._expanding.add(id(function))
        try:
            self._visit_body(function, arguments)
        finally:
            self._expanding.discard(id(function))

    def _followed(self, name: str | None) -> bool:
        """Whether a value is worth following into a function's body."""
        if name is None:
            return False
        base = _element(name) or name
        return (self._on_control_object(base) or base.startswith("operator.")
                or base == _MAIN or base in DISPATCHERS or base in WRITE_FUNCTIONS)

    def _local_function(self, node: ast.AST) -> tuple[_Function, str | None] | None:
        """The function defined in the code that calling ``node`` runs, with the instance
        it is bound to (methods and constructors of classes defined in the code)."""
        if isinstance(node, ast.Lambda):
            return node, None
        if isinstance(node, ast.Name) and node.id in self.functions:
            return self.functions[node.id], None
        name = self.resolve(node) if isinstance(node, ast.Name | ast.Attribute) else None
        if name is None or not name.startswith("local:"):
            return None
        cls, _, method = name.partition(".")
        function = self.classes.get(cls, {}).get(method or "__init__")
        return None if function is None else (function, cls)

    def finish(self) -> None:
        """Visit every function body once more, with the module's final bindings."""
        self._final_pass = True
        for function in self._deferred.values():
            self._visit_body(function, {})

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        """A class body is its own scope; a subclass of a channel type is that type, any
        other class is ``local:NAME``, whose methods are followed like functions."""
        self._decorators(node.decorator_list)
        for expression in [*node.bases, *(k.value for k in node.keywords)]:
            self.visit(expression)
        outer_bindings, outer_functions = self.bindings, self.functions
        self.bindings, self.functions = dict(outer_bindings), dict(outer_functions)
        self._class_depth += 1
        try:
            for statement in node.body:
                self.visit(statement)
        finally:
            self.bindings, self.functions = outer_bindings, outer_functions
            self._class_depth -= 1
        self.functions.pop(node.name, None)
        bases = [self.resolve(b) for b in node.bases]
        channel = next((b for b in bases if b in CONSTRUCTORS), None)
        if channel is not None:
            self.bindings[node.name] = channel
            return
        methods: dict[str, _Function] = {}
        for base in bases:
            methods |= self.classes.get(base or "", {})
        methods |= {f.name: f for f in node.body
                    if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)}
        self.classes[f"local:{node.name}"] = methods
        self.bindings[node.name] = f"local:{node.name}"

    def _decorators(self, decorators: list[ast.expr]) -> None:
        """A decorator is called with what it decorates."""
        for decorator in decorators:
            self.visit(decorator)
            if isinstance(decorator, ast.Name | ast.Attribute):
                self._check_chain(decorator, called=True)

    def _visit_comprehension(
        self, node: ast.ListComp | ast.SetComp | ast.GeneratorExp | ast.DictComp,
        elements: list[ast.expr],
    ) -> None:
        """Generators first, binding their targets to the iterated elements, then the
        element expressions; the targets do not leak out."""
        outer = self.bindings
        self.bindings = dict(outer)
        try:
            for generator in node.generators:
                self.visit(generator.iter)
                self.bind(generator.target, None, _element(self.resolve(generator.iter)))
                for condition in generator.ifs:
                    self.visit(condition)
            for element in elements:
                self.visit(element)
        finally:
            self.bindings = outer

    def visit_ListComp(self, node: ast.ListComp | ast.SetComp | ast.GeneratorExp) -> None:
        self._visit_comprehension(node, [node.elt])

    visit_SetComp = visit_GeneratorExp = visit_ListComp

    def visit_DictComp(self, node: ast.DictComp) -> None:
        self._visit_comprehension(node, [node.key, node.value])

    # ---- expressions

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Load):
            if node.id == "__builtins__":
                self.add(node, Category.DANGEROUS, Severity.CRITICAL, "__builtins__ access",
                         node.id)
            self._check_chain(node, called=False)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        self._dunder_check(node)
        self._check_chain(node, called=False)
        inner = node.value
        while isinstance(inner, ast.Attribute):
            self._dunder_check(inner)
            inner = inner.value

    def visit_Subscript(self, node: ast.Subscript) -> None:
        self.generic_visit(node)
        base = self.resolve(node.value)
        if base is not None and _is_namespace(base):
            self._namespace_lookup(node, base, node.slice)

    def _namespace_lookup(self, node: ast.AST, namespace: str, key: ast.AST) -> None:
        """A lookup by a computed name in a namespace is dispatch by that name."""
        if _const_str(key) is not None:
            return
        label = {_MAIN: "globals()", "__builtins__": "__builtins__"}.get(namespace, namespace)
        self.add(node, Category.DANGEROUS, Severity.HIGH,
                 f"lookup in {label} by a name computed at run time", namespace)
        if self._namespace_is_control(namespace):
            self._dynamic_write(node)

    def _dunder_check(self, node: ast.Attribute) -> None:
        if node.attr == "__dict__":
            self.add(node, Category.DANGEROUS, Severity.CRITICAL, "__dict__ access", node.attr)
            if self._on_control_object(self.resolve(node.value)):
                self._dynamic_write(node)
        elif _is_dunder(node.attr) and node.attr not in BENIGN_DUNDERS:
            self.add(node, Category.DANGEROUS, Severity.CRITICAL,
                     f"dunder attribute walking ({node.attr})", node.attr)

    def _dynamic_write(self, node: ast.AST) -> None:
        self.add(
            node,
            Category.CONTROL_WRITE,
            Severity.HIGH,
            "dynamic attribute access on a control-system module may reach a write function",
        )
        self.dynamic_writes = True

    def visit_Call(self, node: ast.Call) -> None:
        func = self.resolve(node.func)
        if isinstance(node.func, ast.Name | ast.Attribute):
            if isinstance(node.func, ast.Attribute):
                self._dunder_check(node.func)
                inner = node.func.value
                while isinstance(inner, ast.Attribute):
                    self._dunder_check(inner)
                    inner = inner.value
            self._check_chain(node.func, called=True)
        else:
            self.visit(node.func)
            if func is not None:
                self.check_name(node, func, called=True)
        if func is not None:
            self._special_call(node, func)
        for argument in node.args:
            self.visit(argument)
        for keyword in node.keywords:
            self.visit(keyword.value)
        self._callables_passed(node, func)
        local = self._local_function(node.func)
        if local is not None:
            function, bound = local
            self._expand(function, self._call_arguments(function, node, bound=bound))

    def _special_call(self, node: ast.Call, func: str) -> None:
        """Builtins and calls whose meaning depends on their arguments."""
        args = node.args
        target = self._getter_target(node, func)
        if func in _RUNTIME_WRITES:
            self._plan_writes(node, func)
        elif target is not None or (func in ("setattr", "delattr", "hasattr") and len(args) >= 2):
            obj, name = target or (args[0], args[1])
            label = func if func in GETTERS or target is None else func.rpartition(".")[2]
            self._attribute_by_name(node, label, obj, name, fetch=target is not None)
        elif func == "vars" and args and self._on_control_object(self.resolve(args[0])):
            self._dynamic_write(node)
        elif func in ("operator.methodcaller", "operator.attrgetter"):
            self._dispatcher(node, func, args)
        elif func.startswith(("operator.methodcaller:", "operator.attrgetter:")) and args:
            self._apply_dispatcher(node, func, self.resolve(args[0]))
        elif func in ("__import__", "importlib.import_module", "importlib.__import__") and args:
            module = _const_str(args[0])
            if module is not None and module.split(".")[0] in DANGEROUS_IMPORTS:
                self.add(node, Category.DANGEROUS, Severity.CRITICAL,
                         f"dynamic import of {module}", module)
        elif func in ("exec", "eval", "compile") and args:
            self._nested_code(node, args[0])
        elif _dangerous(func) is not None and func.split(".")[0] in (
            "subprocess", "os", "pty", "asyncio"
        ):
            self._shell_strings(node)
        elif func in HTTP_WRITES:
            self._http_call(node, func)
        else:
            namespace, _, method = func.rpartition(".")
            if namespace and _is_namespace(namespace):
                if method in _KEY_LOOKUPS and args:
                    self._namespace_lookup(node, namespace, args[0])
                elif method not in _NAMESPACE_HARMLESS and self._namespace_is_control(namespace):
                    self._dynamic_write(node)

    def _attribute_by_name(
        self, node: ast.Call, func: str, obj: ast.AST, name: ast.AST, *, fetch: bool
    ) -> None:
        """``getattr``-like calls: a computed name is dispatch chosen at run time."""
        attr = _const_str(name)
        owner = self.resolve(obj)
        if not _is_literal(name):
            self.add(node, Category.DANGEROUS, Severity.HIGH,
                     f"{func} with a non-literal attribute name", func)
            if self._on_control_object(owner):
                self._dynamic_write(node)
        if attr is not None and _is_dunder(attr):
            self.add(node, Category.DANGEROUS, Severity.CRITICAL,
                     f"{func} of dunder attribute {attr}", attr)
        if fetch and owner is not None and attr is not None:
            self.check_name(node, canonical(f"{owner}.{attr}"), called=False)
        if func in ("setattr", "delattr") and self._on_control_object(owner):
            self.add(node, Category.CONTROL_WRITE, Severity.CRITICAL,
                     f"{func} on {owner}", f"{owner}.{attr}" if attr else owner)

    def _dispatcher(self, node: ast.Call, func: str, args: list[ast.expr]) -> None:
        """``methodcaller``/``attrgetter``: the object comes later, so a computed name is
        dangerous and a constant one naming a write method is a write wherever it lands."""
        short = func.rpartition(".")[2]
        for argument in args[:1] if short == "methodcaller" else args:
            if not _is_literal(argument):
                self.add(node, Category.DANGEROUS, Severity.HIGH,
                         f"{short} with a non-literal name", func)
            name = _const_str(argument)
            if name is None:
                continue
            last = name.rpartition(".")[2]
            if last in WRITE_METHOD_NAMES:
                self.add(node, Category.CONTROL_WRITE, Severity.CRITICAL,
                         f"{short}({name!r}) dispatches to a write method", name)
                if last in _RUNTIME_WRITES:
                    self.dynamic_writes = True
            if _is_dunder(last):
                self.add(node, Category.DANGEROUS, Severity.CRITICAL,
                         f"{short} of dunder attribute {last}", last)

    def _apply_dispatcher(self, node: ast.AST, marker: str, owner: str | None) -> None:
        """A ``methodcaller``/``attrgetter`` applied to an object whose type is known."""
        if owner is None:
            return
        func, _, name = marker.partition(":")
        if name:
            self.check_name(node, canonical(f"{owner}.{name}"),
                            called=func == "operator.methodcaller")
        elif self._on_control_object(owner):
            self._dynamic_write(node)

    def _callables_passed(self, node: ast.Call, func: str | None) -> None:
        """Callables handed to something that calls them (``map``, threads, executors,
        ``callback=``) are judged as calls."""
        method = node.func.attr if isinstance(node.func, ast.Attribute) else None
        label = func or method or "a caller"
        mapper = func in MAPPERS or method in MAPPERS
        # (callable, the arguments it will be called with)
        passed: list[tuple[ast.AST, list[ast.expr]]] = []
        if func in CALLERS or method in CALLER_METHODS:
            passed += [(arg, node.args[i + 1 :]) for i, arg in enumerate(node.args)]
        extra = _keyword_node(node, "args")
        extra_args = list(extra.elts) if isinstance(extra, ast.Tuple | ast.List) else []
        passed += [(k.value, extra_args) for k in node.keywords if k.arg in CALLBACK_KEYWORDS]
        others = [*node.args, *(k.value for k in node.keywords)]
        for candidate, later in passed:
            types = [self.resolve(a) for a in later if not isinstance(a, ast.Starred)]
            if mapper:
                types = [_element(t) for t in types]
            local = self._local_function(candidate)
            if local is not None:
                function, bound = local
                types = [bound, *types] if bound is not None else types
                self._expand(function, self._call_arguments(function, positional=types))
                continue
            name = self.resolve(candidate)
            if name is None:
                continue
            if name in DISPATCHERS:
                self._dispatcher_passed(node, name, label, later, others, candidate)
            elif name.startswith(("operator.methodcaller:", "operator.attrgetter:")):
                for owner in types:
                    self._apply_dispatcher(node, name, owner)
            elif unknown_member(name) is not None:
                self.check_name(candidate, name, called=False,
                                via=f"passed to {label}, which calls it")

    def _dispatcher_passed(self, node: ast.Call, name: str, label: str, later: list[ast.expr],
                           others: list[ast.expr], candidate: ast.AST) -> None:
        """A dispatch helper handed to a caller: ``partial`` fixing its name is the helper
        called with it; otherwise it may reach anything the call also mentions."""
        if label == "functools.partial":
            if name in GETTERS and len(later) >= 2:
                self._attribute_by_name(node, name, later[0], later[1], fetch=True)
                return
            if name in ("operator.methodcaller", "operator.attrgetter") and later:
                self._dispatcher(node, name, later)
                return
        if any(self._mentions_control(a) for a in others if a is not candidate):
            self._dynamic_write(node)

    def _plan_writes(self, node: ast.Call, func: str) -> None:
        """Record what a runtime write call will write, as far as the source says."""
        if id(node) in self._planned_calls:
            return  # a body visited again (deferred or followed) plans nothing new
        self._planned_calls.add(id(node))
        line = node.lineno
        if func == "write_channel":
            channel = _const_str(node.args[0]) if node.args else _keyword(node, "name")
            value_node = node.args[1] if len(node.args) > 1 else _keyword_node(node, "value")
            self.planned.append(_planned(line, channel, value_node))
            return
        mapping = node.args[0] if node.args else _keyword_node(node, "writes")
        if isinstance(mapping, ast.Dict) and None not in mapping.keys:
            for key, value in zip(mapping.keys, mapping.values, strict=True):
                self.planned.append(_planned(line, _const_str(key), value))
        elif isinstance(mapping, ast.List | ast.Tuple) and all(
            isinstance(item, ast.Tuple) and len(item.elts) == 2 for item in mapping.elts
        ):
            for item in mapping.elts:
                assert isinstance(item, ast.Tuple)
                self.planned.append(_planned(line, _const_str(item.elts[0]), item.elts[1]))
        else:
            self.planned.append(PlannedWrite(line, None, None, computed=True))

    def _nested_code(self, node: ast.Call, argument: ast.AST) -> None:
        """Analyze constant code given to exec/eval/compile, reporting at the call's line;
        it runs in the caller's namespace, so it sees the caller's bindings."""
        code = _const_str(argument)
        if code is None:
            return
        if self.depth >= _MAX_NESTED_CODE:
            self.dynamic_writes = True  # not looked into: its writes cannot be predicted
            return
        nested = _analyze(code, self.depth + 1, self.bindings)
        if nested.planned_writes or nested.dynamic_writes:
            self.dynamic_writes = True
        for finding in nested.findings:
            if finding.category is Category.PARSE_ERROR:
                continue
            self.add(node, finding.category, finding.severity,
                     f"{finding.reason} (in {self.resolve(node.func)}'d code)", finding.symbol)

    def _shell_strings(self, node: ast.Call) -> None:
        for sub in ast.walk(node):
            text = _const_str(sub) if isinstance(sub, ast.Constant | ast.BinOp) else None
            if text and WRITE_COMMANDS.search(text):
                self.add(node, Category.CONTROL_WRITE, Severity.CRITICAL,
                         "shell-out runs a control-system write command", text[:60])
                return

    def _http_call(self, node: ast.Call, func: str) -> None:
        keywords = {k.arg for k in node.keywords}
        method_node: ast.AST | None = None
        if func.endswith(".request") and func != "urllib.request.Request":
            method_node = node.args[0] if node.args else next(
                (k.value for k in node.keywords if k.arg == "method"), None
            )
            method = _const_str(method_node) if method_node is not None else None
            mutating = method is None or method.upper() not in ("GET", "HEAD", "OPTIONS")
        elif func in ("urllib.request.urlopen", "urllib.request.Request"):
            method = next(
                (_const_str(k.value) for k in node.keywords if k.arg == "method"), None
            )
            mutating = len(node.args) >= 2 or "data" in keywords or (
                method is not None and method.upper() not in ("GET", "HEAD")
            ) or any(k.arg is None for k in node.keywords)
        else:
            mutating = True
        if mutating:
            self.add(node, Category.CONTROL_WRITE, Severity.HIGH,
                     "HTTP request that can change state", func)


# --------------------------------------------------------------------------- entry point


def _keyword_node(node: ast.Call, name: str) -> ast.AST | None:
    return next((k.value for k in node.keywords if k.arg == name), None)


def _keyword(node: ast.Call, name: str) -> str | None:
    value = _keyword_node(node, name)
    return None if value is None else _const_str(value)


def _planned(line: int, channel: str | None, value_node: ast.AST | None) -> PlannedWrite:
    try:
        value = ast.literal_eval(value_node) if value_node is not None else None
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return PlannedWrite(line, channel, None, computed=True)
    return PlannedWrite(line, channel, value, computed=value_node is None)


def _fail(reason: str, line: int = 0, column: int = 0) -> Analysis:
    # Unparsed code may write anywhere: nothing about its writes is predictable.
    return Analysis([Finding(Category.PARSE_ERROR, Severity.CRITICAL, line, column, reason)],
                    dynamic_writes=True)


def _analyze(source: str, depth: int, bindings: dict[str, str] | None = None) -> Analysis:
    try:
        raw = source.encode("utf-8")
    except UnicodeEncodeError:
        return _fail("source is not valid UTF-8 text")
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(raw).readline)
    except SyntaxError as error:
        return _fail(f"bad encoding declaration: {error}", 1)
    if codecs.lookup(encoding).name not in ("utf-8", "utf-8-sig"):
        return _fail(f"encoding declaration {encoding!r} is not allowed (UTF-8 only)", 1)
    try:
        tree = ast.parse(source, filename="<generated>")
    except SyntaxError as error:
        return _fail(f"cannot parse: {error.msg}", error.lineno or 0, error.offset or 0)
    except (ValueError, RecursionError, MemoryError) as error:
        return _fail(f"cannot parse: {type(error).__name__}")
    analyzer = _Analyzer(depth, bindings)
    try:
        analyzer.visit(tree)
        analyzer.finish()
    except (RecursionError, MemoryError) as error:
        return _fail(f"too complex to analyze: {type(error).__name__}")
    findings = sorted(analyzer.findings, key=lambda f: (f.line, f.column, f.category))
    return Analysis(findings, analyzer.planned, analyzer.dynamic_writes)


def analyze(source: str, *, filename: str = "<generated>") -> Analysis:
    """Analyze generated code; never raises, fails closed with a ``parse_error`` finding.

    ``filename`` only labels parse errors.
    """
    analysis = _analyze(source, 0)
    if analysis.parse_error and filename != "<generated>":
        return Analysis(
            [
                Finding(f.category, f.severity, f.line, f.column, f"{filename}: {f.reason}",
                        f.symbol)
                for f in analysis.findings
            ],
            dynamic_writes=True,
        )
    return analysis
