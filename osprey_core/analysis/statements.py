"""The statement half of the visitor: imports, bindings, control flow, scopes (functions,
lambdas, classes, comprehensions) and plain name/attribute/subscript expressions."""

from __future__ import annotations

import ast
from collections.abc import Sequence

from osprey_core.analysis.dangerous import BENIGN_DUNDERS, DANGEROUS_IMPORTS
from osprey_core.analysis.model import Category, Severity
from osprey_core.analysis.resolver import Resolver
from osprey_core.analysis.syntax import (
    MAIN,
    MAX_EXPANSIONS,
    FunctionNode,
    const_str,
    element_of,
    is_dunder,
    is_namespace,
)
from osprey_core.analysis.tables import (
    CONSTRUCTORS,
    DISPATCHERS,
    OBJECT_TYPES,
    WRITE_FUNCTIONS,
    canonical,
    unknown_member,
)


class StatementVisitor(Resolver):
    """Walks the module in source order, binding names as it goes (straight-line flow).

    Function bodies are scoped: visited where they are defined, again with the parameter
    types of each call that passes control-system objects, and once more at the end with
    the module's final bindings (a body runs when it is called, not where it is written).
    """

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
        self.bind(node.target, None, element_of(self.resolve(node.iter)))
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
            if is_dunder(target.attr):
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

    def _visit_function(self, function: FunctionNode) -> None:
        self._visit_body(function, {})
        if not self._final_pass:
            self._deferred.setdefault(id(function), function)

    def _visit_body(self, function: FunctionNode, arguments: dict[str, str | None]) -> None:
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

    def _expand(self, function: FunctionNode, arguments: dict[str, str | None]) -> None:
        """Visit a local function's body again with the types a call gives its parameters,
        when the call passes something from a control-system package."""
        if not any(self._followed(t) for t in arguments.values()):
            return
        key = (id(function), tuple(sorted(arguments.items())))
        if key in self._expanded or id(function) in self._expanding:
            return
        if len(self._expanded) >= MAX_EXPANSIONS:
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
        base = element_of(name) or name
        return (self._on_control_object(base) or base.startswith("operator.")
                or base == MAIN or base in DISPATCHERS or base in WRITE_FUNCTIONS)

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
        methods: dict[str, FunctionNode] = {}
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
                self.bind(generator.target, None, element_of(self.resolve(generator.iter)))
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
        if base is not None and is_namespace(base):
            self._namespace_lookup(node, base, node.slice)

    def _namespace_lookup(self, node: ast.AST, namespace: str, key: ast.AST) -> None:
        """A lookup by a computed name in a namespace is dispatch by that name."""
        if const_str(key) is not None:
            return
        label = {MAIN: "globals()", "__builtins__": "__builtins__"}.get(namespace, namespace)
        self.add(node, Category.DANGEROUS, Severity.HIGH,
                 f"lookup in {label} by a name computed at run time", namespace)
        if self._namespace_is_control(namespace):
            self._dynamic_write(node)

    def _dunder_check(self, node: ast.Attribute) -> None:
        if node.attr == "__dict__":
            self.add(node, Category.DANGEROUS, Severity.CRITICAL, "__dict__ access", node.attr)
            if self._on_control_object(self.resolve(node.value)):
                self._dynamic_write(node)
        elif is_dunder(node.attr) and node.attr not in BENIGN_DUNDERS:
            self.add(node, Category.DANGEROUS, Severity.CRITICAL,
                     f"dunder attribute walking ({node.attr})", node.attr)
