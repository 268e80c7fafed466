"""Calls, the heart of the analysis (writes, reads, dispatch, nested code, shell-outs, HTTP),
and the entry point that parses the source and fails closed on what it cannot read."""

from __future__ import annotations

import ast
import codecs
import io
import tokenize

from osprey_core.analysis.dangerous import DANGEROUS_IMPORTS, WRITE_COMMANDS
from osprey_core.analysis.model import Analysis, Category, Finding, PlannedWrite, Severity
from osprey_core.analysis.statements import StatementVisitor
from osprey_core.analysis.syntax import (
    KEY_LOOKUPS,
    MAX_NESTED_CODE,
    NAMESPACE_HARMLESS,
    RUNTIME_WRITES,
    const_str,
    dangerous_entry,
    element_of,
    is_dunder,
    is_literal,
    is_namespace,
    keyword_node,
    keyword_str,
    planned_write,
)
from osprey_core.analysis.tables import (
    CALLBACK_KEYWORDS,
    CALLER_METHODS,
    CALLERS,
    DISPATCHERS,
    GETTERS,
    HTTP_WRITES,
    MAPPERS,
    WRITE_METHOD_NAMES,
    canonical,
    unknown_member,
)


class Analyzer(StatementVisitor):
    """The complete visitor: statements and names from its bases, calls here."""

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
        if func in RUNTIME_WRITES:
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
            module = const_str(args[0])
            if module is not None and module.split(".")[0] in DANGEROUS_IMPORTS:
                self.add(node, Category.DANGEROUS, Severity.CRITICAL,
                         f"dynamic import of {module}", module)
        elif func in ("exec", "eval", "compile") and args:
            self._nested_code(node, args[0])
        elif dangerous_entry(func) is not None and func.split(".")[0] in (
            "subprocess", "os", "pty", "asyncio"
        ):
            self._shell_strings(node)
        elif func in HTTP_WRITES:
            self._http_call(node, func)
        else:
            namespace, _, method = func.rpartition(".")
            if namespace and is_namespace(namespace):
                if method in KEY_LOOKUPS and args:
                    self._namespace_lookup(node, namespace, args[0])
                elif method not in NAMESPACE_HARMLESS and self._namespace_is_control(namespace):
                    self._dynamic_write(node)

    def _attribute_by_name(
        self, node: ast.Call, func: str, obj: ast.AST, name: ast.AST, *, fetch: bool
    ) -> None:
        """``getattr``-like calls: a computed name is dispatch chosen at run time."""
        attr = const_str(name)
        owner = self.resolve(obj)
        if not is_literal(name):
            self.add(node, Category.DANGEROUS, Severity.HIGH,
                     f"{func} with a non-literal attribute name", func)
            if self._on_control_object(owner):
                self._dynamic_write(node)
        if attr is not None and is_dunder(attr):
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
            if not is_literal(argument):
                self.add(node, Category.DANGEROUS, Severity.HIGH,
                         f"{short} with a non-literal name", func)
            name = const_str(argument)
            if name is None:
                continue
            last = name.rpartition(".")[2]
            if last in WRITE_METHOD_NAMES:
                self.add(node, Category.CONTROL_WRITE, Severity.CRITICAL,
                         f"{short}({name!r}) dispatches to a write method", name)
                if last in RUNTIME_WRITES:
                    self.dynamic_writes = True
            if is_dunder(last):
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
        extra = keyword_node(node, "args")
        extra_args = list(extra.elts) if isinstance(extra, ast.Tuple | ast.List) else []
        passed += [(k.value, extra_args) for k in node.keywords if k.arg in CALLBACK_KEYWORDS]
        others = [*node.args, *(k.value for k in node.keywords)]
        for candidate, later in passed:
            types = [self.resolve(a) for a in later if not isinstance(a, ast.Starred)]
            if mapper:
                types = [element_of(t) for t in types]
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
            channel = const_str(node.args[0]) if node.args else keyword_str(node, "name")
            value_node = node.args[1] if len(node.args) > 1 else keyword_node(node, "value")
            self.planned.append(planned_write(line, channel, value_node))
            return
        mapping = node.args[0] if node.args else keyword_node(node, "writes")
        if isinstance(mapping, ast.Dict) and None not in mapping.keys:
            for key, value in zip(mapping.keys, mapping.values, strict=True):
                self.planned.append(planned_write(line, const_str(key), value))
        elif isinstance(mapping, ast.List | ast.Tuple) and all(
            isinstance(item, ast.Tuple) and len(item.elts) == 2 for item in mapping.elts
        ):
            for item in mapping.elts:
                assert isinstance(item, ast.Tuple)
                self.planned.append(planned_write(line, const_str(item.elts[0]), item.elts[1]))
        else:
            self.planned.append(PlannedWrite(line, None, None, computed=True))

    def _nested_code(self, node: ast.Call, argument: ast.AST) -> None:
        """Analyze constant code given to exec/eval/compile, reporting at the call's line;
        it runs in the caller's namespace, so it sees the caller's bindings."""
        code = const_str(argument)
        if code is None:
            return
        if self.depth >= MAX_NESTED_CODE:
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
            text = const_str(sub) if isinstance(sub, ast.Constant | ast.BinOp) else None
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
            method = const_str(method_node) if method_node is not None else None
            mutating = method is None or method.upper() not in ("GET", "HEAD", "OPTIONS")
        elif func in ("urllib.request.urlopen", "urllib.request.Request"):
            method = next(
                (const_str(k.value) for k in node.keywords if k.arg == "method"), None
            )
            mutating = len(node.args) >= 2 or "data" in keywords or (
                method is not None and method.upper() not in ("GET", "HEAD")
            ) or any(k.arg is None for k in node.keywords)
        else:
            mutating = True
        if mutating:
            self.add(node, Category.CONTROL_WRITE, Severity.HIGH,
                     "HTTP request that can change state", func)


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
    analyzer = Analyzer(depth, bindings)
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
