"""Static analysis of generated Python code, to decide who must look at it before it runs.

The analyzer works on the AST, never on text: comments and strings are not code. It resolves
import aliases and straight-line assignments, tracks variables bound to channel objects
(pyepics ``PV``, caproto and p4p contexts, Tango ``DeviceProxy``, HTTP sessions) and flags
*references* to write-capable functions as well as calls, because a write passed to ``map``
or a thread is still a write. Dynamic tricks (``exec``, dynamic imports, non-literal
``getattr``, dunder walking, shell-outs) are flagged as dangerous. Anything it cannot parse
fails closed with a critical ``parse_error`` finding.

It is *not* the security boundary (the nsjail sandbox and the control-system broker are):
it only decides whether a human must approve the code.
"""

from __future__ import annotations

import ast
import codecs
import io
import re
import tokenize
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

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


# --------------------------------------------------------------------------- tables

RUNTIME = "osprey_core.sandbox.runtime"

#: Module prefixes rewritten to one canonical spelling before table look-ups.
_CANONICAL: dict[str, str] = {
    "PyTango": "tango",
    "caproto.threading.pyepics_compat": "epics",
    "epics.pv.PV": "epics.PV",
    "epics.pv.get_pv": "epics.get_pv",
    "epics.motor.Motor": "epics.Motor",
    "epics.device.Device": "epics.Device",
    "epics.caput": "epics.caput",
    "p4p.client.asyncio.Context": "p4p.client.thread.Context",
    "p4p.client.cothread.Context": "p4p.client.thread.Context",
    "caproto.asyncio.client": "caproto.threading.client",
    "caproto.threading.client.PV": "caproto.threading.client.PV",
    "httpx": "requests",
    "requests.api": "requests",
    "requests.sessions.Session": "requests.Session",
    "requests.Client": "requests.Session",
    "requests.AsyncClient": "requests.Session",
    "http.client.HTTPSConnection": "http.client.HTTPConnection",
    f"{RUNTIME}.write_channel": "write_channel",
    f"{RUNTIME}.write_channels": "write_channels",
    f"{RUNTIME}.read_channel": "read_channel",
    f"{RUNTIME}.read_channels": "read_channels",
    f"{RUNTIME}.read_archiver": "read_archiver",
}

#: Calls whose result is a channel (or client) object, mapped to that object's type.
#: ``list:`` marks a collection of such objects.
_CONSTRUCTORS: dict[str, str] = {
    "epics.PV": "epics.PV",
    "epics.get_pv": "epics.PV",
    "epics.Motor": "epics.Motor",
    "epics.Device": "epics.Device",
    "caproto.threading.client.Context": "caproto.threading.client.Context",
    "caproto.threading.client.Context.get_pvs": "list:caproto.threading.client.PV",
    "p4p.client.thread.Context": "p4p.client.thread.Context",
    "tango.DeviceProxy": "tango.DeviceProxy",
    "tango.AttributeProxy": "tango.AttributeProxy",
    "tango.Group": "tango.Group",
    "requests.Session": "requests.Session",
    "http.client.HTTPConnection": "http.client.HTTPConnection",
}

#: Control-system writes (functions and methods, canonical names).
WRITE_FUNCTIONS: frozenset[str] = frozenset(
    {
        "epics.caput",
        "epics.caput_many",
        "epics.ca.put",
        "epics.PV.put",
        "epics.Motor.put",
        "epics.Motor.move",
        "epics.Device.put",
        "caproto.sync.client.write",
        "caproto.threading.client.PV.write",
        "p4p.client.thread.Context.put",
        "p4p.client.thread.Context.rpc",
        "tango.DeviceProxy.write_attribute",
        "tango.DeviceProxy.write_attribute_asynch",
        "tango.DeviceProxy.write_attributes",
        "tango.DeviceProxy.write_attributes_asynch",
        "tango.DeviceProxy.write_read_attribute",
        "tango.DeviceProxy.write_read_attributes",
        "tango.DeviceProxy.command_inout",
        "tango.DeviceProxy.command_inout_asynch",
        "tango.DeviceProxy.write_pipe",
        "tango.DeviceProxy.put_property",
        "tango.DeviceProxy.delete_property",
        "tango.AttributeProxy.write",
        "tango.AttributeProxy.write_read",
        "tango.Group.write_attribute",
        "tango.Group.command_inout",
        "write_channel",
        "write_channels",
    }
)

#: HTTP calls that can change state (LabVIEW web services and anything else over HTTP).
HTTP_WRITES: frozenset[str] = frozenset(
    {
        "requests.post",
        "requests.put",
        "requests.patch",
        "requests.delete",
        "requests.request",
        "requests.Session.post",
        "requests.Session.put",
        "requests.Session.patch",
        "requests.Session.delete",
        "requests.Session.request",
        "urllib.request.urlopen",
        "urllib.request.Request",
        "http.client.HTTPConnection.request",
        "http.client.HTTPConnection.putrequest",
        "urllib3.request",
        "urllib3.PoolManager.request",
    }
)

#: Control-system reads.
READ_FUNCTIONS: frozenset[str] = frozenset(
    {
        "epics.caget",
        "epics.caget_many",
        "epics.cainfo",
        "epics.ca.get",
        "epics.PV.get",
        "epics.Motor.get",
        "epics.Device.get",
        "caproto.sync.client.read",
        "caproto.threading.client.PV.read",
        "p4p.client.thread.Context.get",
        "tango.DeviceProxy.read_attribute",
        "tango.DeviceProxy.read_attributes",
        "tango.DeviceProxy.read_attribute_asynch",
        "tango.DeviceProxy.read_pipe",
        "tango.AttributeProxy.read",
        "tango.Group.read_attribute",
        "read_channel",
        "read_channels",
        "read_archiver",
    }
)

#: Tango ``DeviceProxy`` methods that do not change the device; any *other* method call is
#: treated as a write, because Tango exposes device commands as proxy methods (``dev.On()``).
_TANGO_PASSIVE: frozenset[str] = frozenset(
    {
        "read_attribute", "read_attributes", "read_attribute_asynch", "read_pipe", "state",
        "status", "ping", "name", "dev_name", "info", "description", "get_attribute_list",
        "get_command_list", "attribute_query", "attribute_list_query", "command_query",
        "command_list_query", "get_property", "get_attribute_config", "black_box",
        "get_timeout_millis", "adm_name", "alias", "get_property_list", "is_locked",
    }
)

#: Modules whose objects lead to control-system writes (dynamic access on them is suspect).
_CONTROL_MODULES: tuple[str, ...] = ("epics", "caproto", "p4p", "tango", RUNTIME)

#: Dangerous callables: exact names, or prefixes ending in ``.`` / ``*``.
_DANGEROUS: dict[str, tuple[Severity, str]] = {
    "exec": (Severity.CRITICAL, "exec of dynamic code"),
    "eval": (Severity.CRITICAL, "eval of dynamic code"),
    "compile": (Severity.CRITICAL, "compile of dynamic code"),
    "__import__": (Severity.CRITICAL, "dynamic import"),
    "breakpoint": (Severity.CRITICAL, "breakpoint() can run arbitrary code"),
    "globals": (Severity.HIGH, "globals() access"),
    "locals": (Severity.HIGH, "locals() access"),
    "vars": (Severity.HIGH, "vars() access"),
    "importlib.": (Severity.CRITICAL, "dynamic import"),
    "runpy.": (Severity.CRITICAL, "dynamic code execution"),
    "code.": (Severity.CRITICAL, "interactive interpreter"),
    "types.FunctionType": (Severity.CRITICAL, "function built from a code object"),
    "types.CodeType": (Severity.CRITICAL, "code object construction"),
    "sys._getframe": (Severity.CRITICAL, "frame walking"),
    "subprocess.": (Severity.CRITICAL, "shell-out via subprocess"),
    "os.system": (Severity.CRITICAL, "shell-out via os.system"),
    "os.popen": (Severity.CRITICAL, "shell-out via os.popen"),
    "os.exec*": (Severity.CRITICAL, "process replacement via os.exec*"),
    "os.spawn*": (Severity.CRITICAL, "process spawn via os.spawn*"),
    "os.fork*": (Severity.CRITICAL, "fork"),
    "os.posix_spawn*": (Severity.CRITICAL, "process spawn via os.posix_spawn"),
    "asyncio.create_subprocess_*": (Severity.CRITICAL, "shell-out via asyncio subprocess"),
    "pty.": (Severity.CRITICAL, "pseudo-terminal spawn"),
    "ctypes.": (Severity.CRITICAL, "native code via ctypes"),
    "cffi.": (Severity.CRITICAL, "native code via cffi"),
    "pickle.load*": (Severity.HIGH, "unpickling can run arbitrary code"),
    "pickle.Unpickler": (Severity.HIGH, "unpickling can run arbitrary code"),
    "cloudpickle.load*": (Severity.HIGH, "unpickling can run arbitrary code"),
    "dill.load*": (Severity.HIGH, "unpickling can run arbitrary code"),
    "marshal.load*": (Severity.HIGH, "marshal loading can build code objects"),
    "shelve.open": (Severity.HIGH, "shelve unpickles data"),
    "socket.": (Severity.HIGH, "raw socket access"),
}

#: Modules whose mere import is dangerous (native code, terminals).
_DANGEROUS_IMPORTS: frozenset[str] = frozenset({"ctypes", "cffi", "pty"})

#: Dunder attributes that are ordinary in generated code; every other one is "walking".
_BENIGN_DUNDERS: frozenset[str] = frozenset(
    {"__name__", "__doc__", "__version__", "__qualname__", "__module__", "__init__",
     "__enter__", "__exit__", "__len__", "__file__", "__all__"}
)

#: Command-line tools that write to a control system, looked for in shell-out strings.
_WRITE_COMMANDS = re.compile(
    r"\b(caput|caproto-put|pvput|pvcall|tango_admin|write_attribute|command_inout|curl\s+.*-X\s*(POST|PUT|PATCH|DELETE))\b",
    re.IGNORECASE,
)

_MAX_NESTED_CODE = 3

#: Names recognised without an import: builtins and the sandbox runtime's functions.
_BARE_NAMES: frozenset[str] = frozenset(
    {k for k in _DANGEROUS if "." not in k and not k.endswith("*")}
    | {"getattr", "setattr", "delattr", "hasattr", "__builtins__"}
    | {n for n in WRITE_FUNCTIONS | READ_FUNCTIONS if "." not in n}
)

#: Object types whose attribute assignment writes to the machine (not HTTP clients).
_CHANNEL_TYPES: frozenset[str] = frozenset(
    v for v in _CONSTRUCTORS.values()
    if not v.startswith(("list:", "requests.", "http."))
)


def _canonical(name: str) -> str:
    """Rewrite known prefixes of ``name`` to their canonical spelling, to a fixed point."""
    for _ in range(4):
        if name.startswith("builtins."):
            name = name[len("builtins.") :]
        parts = name.split(".")
        for cut in range(len(parts), 0, -1):
            prefix = ".".join(parts[:cut])
            if prefix in _CANONICAL and _CANONICAL[prefix] != prefix:
                name = ".".join([_CANONICAL[prefix], *parts[cut:]])
                break
        else:
            return name
    return name


def _dangerous(name: str) -> tuple[Severity, str] | None:
    """The dangerous-table entry matching ``name``, if any."""
    if name in _DANGEROUS:
        return _DANGEROUS[name]
    for key, value in _DANGEROUS.items():
        if key.endswith(".") and name.startswith(key):
            return value
        if key.endswith("*") and name.startswith(key[:-1]) and "." not in name[len(key) - 1 :]:
            return value
    return None


def _is_dunder(name: str) -> bool:
    return len(name) > 4 and name.startswith("__") and name.endswith("__")


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


# --------------------------------------------------------------------------- visitor


class _Analyzer(ast.NodeVisitor):
    """Walks the module in source order, binding names as it goes (straight-line flow)."""

    def __init__(self, depth: int) -> None:
        self.bindings: dict[str, str] = {}
        self.star_modules: list[str] = []
        self.findings: list[Finding] = []
        self.planned: list[PlannedWrite] = []
        self.dynamic_writes = False
        self.depth = depth

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
        if finding not in self.findings:
            self.findings.append(finding)

    def resolve(self, node: ast.AST) -> str | None:
        """Dotted canonical name (or object type) an expression stands for, when known."""
        if isinstance(node, ast.Name):
            if node.id in self.bindings:
                return self.bindings[node.id]
            for module in self.star_modules:
                candidate = _canonical(f"{module}.{node.id}")
                if candidate in WRITE_FUNCTIONS or candidate in READ_FUNCTIONS or (
                    candidate in _CONSTRUCTORS
                ):
                    return candidate
            return node.id if node.id in _BARE_NAMES else None
        if isinstance(node, ast.Attribute):
            base = self.resolve(node.value)
            return None if base is None else _canonical(f"{base}.{node.attr}")
        if isinstance(node, ast.Call):
            return self._resolve_call(node)
        if isinstance(node, ast.Subscript):
            base = self.resolve(node.value)
            if base is not None and base.startswith("list:"):
                return base[5:]
            if base == "sys.modules":
                key = _const_str(node.slice)
                return None if key is None else _canonical(key)
            return None
        if isinstance(node, ast.List | ast.Tuple | ast.Set):
            return self._resolve_collection([self.resolve(e) for e in node.elts])
        if isinstance(node, ast.ListComp | ast.SetComp | ast.GeneratorExp):
            return self._resolve_collection([self.resolve(node.elt)])
        if isinstance(node, ast.NamedExpr):
            return self.resolve(node.value)
        return None

    @staticmethod
    def _resolve_collection(items: list[str | None]) -> str | None:
        kinds = set(items)
        if len(kinds) == 1:
            (kind,) = kinds
            if kind is not None and kind in _CONSTRUCTORS.values():
                return f"list:{kind}"
        return None

    def _resolve_call(self, node: ast.Call) -> str | None:
        func = self.resolve(node.func)
        if func in ("getattr", "builtins.getattr") and len(node.args) >= 2:
            base = self.resolve(node.args[0])
            attr = _const_str(node.args[1])
            if base is not None and attr is not None:
                return _canonical(f"{base}.{attr}")
            return None
        if func in ("__import__", "builtins.__import__") and node.args:
            module = _const_str(node.args[0])
            return None if module is None else _canonical(module.split(".")[0])
        if func == "importlib.import_module" and node.args:
            module = _const_str(node.args[0])
            return None if module is None else _canonical(module)
        if func is not None and func in _CONSTRUCTORS:
            return _CONSTRUCTORS[func]
        return None

    def bind(self, target: ast.AST, value: ast.AST | None, resolved: str | None) -> None:
        """Bind assignment targets to what the value resolves to (tuples pairwise)."""
        if isinstance(target, ast.Name):
            if resolved is None:
                self.bindings.pop(target.id, None)
            else:
                self.bindings[target.id] = resolved
        elif isinstance(target, ast.Tuple | ast.List):
            if isinstance(value, ast.Tuple | ast.List) and len(value.elts) == len(target.elts):
                for sub_target, sub_value in zip(target.elts, value.elts, strict=True):
                    self.bind(sub_target, sub_value, self.resolve(sub_value))
            else:
                element = resolved[5:] if resolved and resolved.startswith("list:") else None
                for sub_target in target.elts:
                    inner = sub_target.value if isinstance(sub_target, ast.Starred) else sub_target
                    self.bind(inner, None, element)
        elif isinstance(target, ast.Starred):
            self.bind(target.value, None, resolved)

    def check_name(self, node: ast.AST, name: str, *, called: bool) -> None:
        """Report a resolved name as write / read / dangerous, as a call or a reference."""
        verb = "call to" if called else "reference to"
        if name in _RUNTIME_WRITES and not called:
            self.dynamic_writes = True
        if name in WRITE_FUNCTIONS:
            self.add(node, Category.CONTROL_WRITE, Severity.CRITICAL, f"{verb} {name}", name)
        elif name in HTTP_WRITES and not called:
            self.add(node, Category.CONTROL_WRITE, Severity.HIGH, f"{verb} {name}", name)
        elif name in READ_FUNCTIONS:
            self.add(node, Category.CONTROL_READ, Severity.INFO, f"{verb} {name}", name)
        elif name.startswith("tango.DeviceProxy.") and name.count(".") == 2:
            method = name.rsplit(".", 1)[1]
            if method not in _TANGO_PASSIVE and not method.startswith("_"):
                self.add(
                    node,
                    Category.CONTROL_WRITE,
                    Severity.CRITICAL,
                    f"{verb} Tango device method {method} (commands are writes)",
                    name,
                )
        danger = _dangerous(name)
        if danger is not None:
            severity, reason = danger
            self.add(node, Category.DANGEROUS, severity, reason if called else f"{verb} {name}",
                     name)

    def _check_chain(self, node: ast.AST, *, called: bool) -> None:
        """Check a maximal Name/Attribute chain and every prefix of it (``caput.__call__``)."""
        name = self.resolve(node)
        if name is not None:
            self.check_name(node, name, called=called)
        inner = node.value if isinstance(node, ast.Attribute) else None
        while isinstance(inner, ast.Attribute | ast.Name):
            prefix = self.resolve(inner)
            if prefix is not None and (
                prefix in WRITE_FUNCTIONS or prefix in HTTP_WRITES or _dangerous(prefix)
            ):
                self.check_name(inner, prefix, called=False)
            inner = inner.value if isinstance(inner, ast.Attribute) else None
        if isinstance(inner, ast.AST):
            self.visit(inner)

    def _on_control_object(self, name: str | None) -> bool:
        if name is None:
            return False
        return name in _CHANNEL_TYPES or any(
            name == m or name.startswith(m + ".") for m in _CONTROL_MODULES
        )

    # ---- imports and bindings

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._import_check(node, alias.name)
            if alias.asname:
                self.bindings[alias.asname] = _canonical(alias.name)
            else:
                top = alias.name.split(".")[0]
                self.bindings[top] = _canonical(top)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level or not node.module:
            return
        self._import_check(node, node.module)
        for alias in node.names:
            full = _canonical(f"{node.module}.{alias.name}")
            if alias.name == "*":
                self.star_modules.append(_canonical(node.module))
                continue
            self._import_check(node, full)
            self.bindings[alias.asname or alias.name] = full

    def _import_check(self, node: ast.AST, module: str) -> None:
        if module.split(".")[0] in _DANGEROUS_IMPORTS:
            self.add(node, Category.DANGEROUS, Severity.CRITICAL, f"import of {module}", module)
        if module.split(".")[0] == "importlib" or module == "builtins":
            self.add(node, Category.DANGEROUS, Severity.HIGH, f"import of {module}", module)

    def visit_Assign(self, node: ast.Assign) -> None:
        self.visit(node.value)
        resolved = self.resolve(node.value)
        for target in node.targets:
            self._visit_target(target)
            self.bind(target, node.value, resolved)

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

    def visit_For(self, node: ast.For) -> None:
        self.visit(node.iter)
        resolved = self.resolve(node.iter)
        element = resolved[5:] if resolved and resolved.startswith("list:") else None
        self.bind(node.target, None, element)
        for statement in [*node.body, *node.orelse]:
            self.visit(statement)

    visit_AsyncFor = visit_For

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

    # ---- expressions

    def visit_Name(self, node: ast.Name) -> None:
        if isinstance(node.ctx, ast.Load):
            if node.id == "__builtins__":
                self.add(node, Category.DANGEROUS, Severity.CRITICAL, "__builtins__ access",
                         node.id)
            self._check_chain(node, called=False)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        self._dunder_check(node)
        owner = self.resolve(node.value)
        if owner == "epics.PV" and node.attr in ("value", "char_value"):
            self.add(node, Category.CONTROL_READ, Severity.INFO, f"read of PV.{node.attr}",
                     f"epics.PV.{node.attr}")
        self._check_chain(node, called=False)
        inner = node.value
        while isinstance(inner, ast.Attribute):
            self._dunder_check(inner)
            inner = inner.value

    def _dunder_check(self, node: ast.Attribute) -> None:
        if node.attr == "__dict__":
            self.add(node, Category.DANGEROUS, Severity.CRITICAL, "__dict__ access", node.attr)
            if self._on_control_object(self.resolve(node.value)):
                self._dynamic_write(node)
        elif _is_dunder(node.attr) and node.attr not in _BENIGN_DUNDERS:
            self.add(node, Category.DANGEROUS, Severity.CRITICAL,
                     f"dunder attribute walking ({node.attr})", node.attr)

    def _dynamic_write(self, node: ast.AST) -> None:
        self.add(
            node,
            Category.CONTROL_WRITE,
            Severity.HIGH,
            "dynamic attribute access on a control-system module may reach a write function",
        )

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

    def _special_call(self, node: ast.Call, func: str) -> None:
        """Builtins and calls whose meaning depends on their arguments."""
        args = node.args
        if func in _RUNTIME_WRITES:
            self._plan_writes(node, func)
        elif func in ("getattr", "setattr", "delattr", "hasattr") and len(args) >= 2:
            attr = _const_str(args[1])
            owner = self.resolve(args[0])
            if not (isinstance(args[1], ast.Constant) and isinstance(args[1].value, str)):
                self.add(node, Category.DANGEROUS, Severity.HIGH,
                         f"{func} with a non-literal attribute name", func)
                if self._on_control_object(owner):
                    self._dynamic_write(node)
            if attr is not None and _is_dunder(attr):
                self.add(node, Category.DANGEROUS, Severity.CRITICAL,
                         f"{func} of dunder attribute {attr}", attr)
            if func == "getattr" and owner is not None and attr is not None:
                self.check_name(node, _canonical(f"{owner}.{attr}"), called=False)
            if func in ("setattr", "delattr") and self._on_control_object(owner):
                self.add(node, Category.CONTROL_WRITE, Severity.CRITICAL,
                         f"{func} on {owner}", f"{owner}.{attr}" if attr else owner)
        elif func == "vars" and args and self._on_control_object(self.resolve(args[0])):
            self._dynamic_write(node)
        elif func in ("__import__", "importlib.import_module", "importlib.__import__") and args:
            module = _const_str(args[0])
            if module is not None and module.split(".")[0] in _DANGEROUS_IMPORTS:
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

    def _plan_writes(self, node: ast.Call, func: str) -> None:
        """Record what a runtime write call will write, as far as the source says."""
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
        """Analyze constant code given to exec/eval/compile, reporting at the call's line."""
        code = _const_str(argument)
        if code is None:
            return
        if self.depth >= _MAX_NESTED_CODE:
            self.dynamic_writes = True  # not looked into: its writes cannot be predicted
            return
        nested = _analyze(code, self.depth + 1)
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
            if text and _WRITE_COMMANDS.search(text):
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


_RUNTIME_WRITES = frozenset({"write_channel", "write_channels"})


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


def _analyze(source: str, depth: int) -> Analysis:
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
    analyzer = _Analyzer(depth)
    try:
        analyzer.visit(tree)
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
