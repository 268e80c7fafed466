"""The analyzer's state and name resolution: what a name, attribute or call stands for, given the
bindings seen so far, and the findings a resolved name earns."""

from __future__ import annotations

import ast
from typing import Any

from osprey_core.analysis.model import Category, Finding, PlannedWrite, Severity
from osprey_core.analysis.syntax import (
    BARE_NAMES,
    CONSTRUCTOR_TYPES,
    ITERATING,
    KEY_LOOKUPS,
    MAIN,
    RUNTIME_WRITES,
    FunctionNode,
    const_str,
    dangerous_entry,
    element_of,
    is_namespace,
    returned,
)
from osprey_core.analysis.tables import (
    ATTRIBUTE_READ_TYPES,
    CONSTRUCTORS,
    DISPATCHERS,
    GETTERS,
    HTTP_WRITES,
    OBJECT_TYPES,
    READ_ATTRIBUTES,
    READ_FUNCTIONS,
    WRITE_FUNCTIONS,
    canonical,
    in_control_namespace,
    unknown_member,
)


class Resolver(ast.NodeVisitor):
    """Bindings, findings and the resolution of expressions to canonical dotted names."""

    def __init__(self, depth: int, bindings: dict[str, str] | None = None) -> None:
        self.bindings: dict[str, str] = dict(bindings or {})
        self.functions: dict[str, FunctionNode] = {}
        #: Classes defined in the code (``local:NAME``) -> their methods.
        self.classes: dict[str, dict[str, FunctionNode]] = {}
        self.star_modules: list[str] = []
        self.findings: list[Finding] = []
        self._seen: set[Finding] = set()
        self.planned: list[PlannedWrite] = []
        self._planned_calls: set[int] = set()
        self.dynamic_writes = False
        self.depth = depth
        self._deferred: dict[int, FunctionNode] = {}
        self._final_pass = False
        self._expanded: set[tuple[Any, ...]] = set()
        self._expanding: set[int] = set()
        self._resolving: set[int] = set()
        #: Names declared ``global``/``nonlocal`` in the body being visited (they escape it).
        self._escaping: set[str] = set()
        self._class_depth = 0

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
            return self._namespace_member(base, node.slice) if is_namespace(base) else None
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
        return name if name in BARE_NAMES else None

    @staticmethod
    def _resolve_collection(items: list[str | None]) -> str | None:
        """A collection resolves to its most telling element (a possible write first, then
        anything of a control-system package), so that using any element is checked."""
        kinds = [kind for kind in items if kind is not None]
        for kind in kinds:
            if kind in WRITE_FUNCTIONS or unknown_member(kind) is not None:
                return f"list:{kind}"
        for kind in kinds:
            if kind in CONSTRUCTOR_TYPES or in_control_namespace(kind):
                return f"list:{kind}"
        return None

    def _resolve_call(self, node: ast.Call) -> str | None:
        func = self.resolve(node.func)
        args = node.args
        target = self._getter_target(node, func)
        if target is not None:
            base, attr = self.resolve(target[0]), const_str(target[1])
            return canonical(f"{base}.{attr}") if base is not None and attr else None
        local = self._local_function(node.func)
        if func in self.classes:
            return func  # an instance of a class defined in the code
        if local is not None:
            return self._resolve_returned(*local, node)
        if func is None:
            return None
        if func in ITERATING and len(args) == 1:
            inner = self.resolve(args[0])
            return inner if inner is not None and inner.startswith("list:") else None
        if func == "map" and args:
            kind = CONSTRUCTORS.get(self.resolve(args[0]) or "")
            return None if kind is None or kind.startswith("list:") else f"list:{kind}"
        if func == "__import__" and args:
            module = const_str(args[0])
            return None if module is None else canonical(module.split(".")[0])
        if func == "importlib.import_module" and args:
            module = const_str(args[0])
            return None if module is None else canonical(module)
        if func in ("globals", "locals") or (func == "vars" and not args):
            return MAIN
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
            return f"{func}:{const_str(args[0]) or ''}"
        if func.startswith("operator.attrgetter:") and len(args) == 1:
            base, attr = self.resolve(args[0]), func.partition(":")[2]
            return canonical(f"{base}.{attr}") if base is not None and attr else None
        owner, _, method = func.rpartition(".")
        if owner and is_namespace(owner) and method in KEY_LOOKUPS and args:
            return self._namespace_member(owner, args[0])
        return CONSTRUCTORS.get(func)

    def _resolve_returned(self, function: FunctionNode, bound: str | None, call: ast.Call
                          ) -> str | None:
        """What a call of a function defined in the code returns, when a return says."""
        if id(function) in self._resolving:
            return None
        outer = self.bindings
        arguments = self._call_arguments(function, call, bound=bound)
        self.bindings = outer | self._parameters(function, arguments)
        self._resolving.add(id(function))
        try:
            return next(filter(None, map(self.resolve, returned(function))), None)
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
        source = const_str(node)
        if source is None:
            return None
        try:
            tree = ast.parse(source.strip(), mode="eval")
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            return None
        return self.resolve(tree.body)

    def _namespace_member(self, namespace: str, key_node: ast.AST) -> str | None:
        """What a constant-key lookup in a namespace stands for."""
        key = const_str(key_node)
        if key is None:
            return None
        if namespace == "sys.modules":
            return canonical(key)
        if namespace in (MAIN, "__builtins__"):
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
                element = element_of(resolved)
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
        if name in RUNTIME_WRITES and not called:
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
        danger = dangerous_entry(name)
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
        return namespace == MAIN or (
            namespace.endswith(".__dict__")
            and self._on_control_object(namespace.removesuffix(".__dict__"))
        )

    def _mentions_control(self, node: ast.AST) -> bool:
        return any(
            self._on_control_object(element_of(name) or name)
            for sub in ast.walk(node)
            if isinstance(sub, ast.Name | ast.Attribute)
            for name in [self.resolve(sub)]
        )

    def _parameters(self, function: FunctionNode, arguments: dict[str, str | None]
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
        self, function: FunctionNode, call: ast.Call | None = None,
        positional: list[str | None] | None = None, bound: str | None = None,
    ) -> dict[str, str | None]:
        """Parameter name -> type of what a call (or a caller, ``positional``) passes;
        ``bound`` is the instance a method is called on."""
        names = [p.arg for p in [*function.args.posonlyargs, *function.args.args]]
        if call is not None:
            positional = [bound] if bound is not None else []
            for argument in call.args:
                if isinstance(argument, ast.Starred):  # f(*pvs): the rest get its elements
                    element = element_of(self.resolve(argument.value))
                    positional += [element] * (len(names) - len(positional))
                    break
                positional.append(self.resolve(argument))
        arguments = dict(zip(names, positional or [], strict=False))
        if call is not None:
            arguments |= {k.arg: self.resolve(k.value) for k in call.keywords if k.arg}
        return arguments

    def _local_function(self, node: ast.AST) -> tuple[FunctionNode, str | None] | None:
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

    def _dynamic_write(self, node: ast.AST) -> None:
        self.add(
            node,
            Category.CONTROL_WRITE,
            Severity.HIGH,
            "dynamic attribute access on a control-system module may reach a write function",
        )
        self.dynamic_writes = True
