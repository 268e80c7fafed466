"""Meta-tests: every hook is documented with its real signature and exercised by a test.

Hooks change only by addition, so forgetting the docs or the tests for a new hook is the
likely mistake; these checks turn it into a failing test naming the hook.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from osprey_core.hookspecs import PROJECT_NAME, SPEC_MODULES
from osprey_core.plugin_host import get_plugin_manager

ROOT = Path(__file__).resolve().parent.parent
HOOK_DOCS = ROOT / "docs" / "plugin-hooks.md"
TESTS = Path(__file__).resolve().parent


def hook_specs() -> dict[str, Callable[..., object]]:
    """Every hook function declared in the spec modules, by name."""
    specs: dict[str, Callable[..., object]] = {}
    for module_name in SPEC_MODULES:
        module = importlib.import_module(f"osprey_core.hookspecs.{module_name}")
        for name, value in vars(module).items():
            if inspect.isfunction(value) and hasattr(value, f"{PROJECT_NAME}_spec"):
                specs[name] = value
    return specs


def expected_signature(function: Callable[..., object]) -> str:
    """``def name(arg: Type, ...) -> Ret:`` as written in the source (string annotations)."""
    signature = inspect.signature(function)
    params = []
    for param in signature.parameters.values():
        text = param.name
        if param.annotation is not inspect.Parameter.empty:
            text += f": {param.annotation}"
        if param.default is not inspect.Parameter.empty:
            text += f" = {param.default!r}"
        params.append(text)
    result = "" if signature.return_annotation is inspect.Signature.empty else (
        f" -> {signature.return_annotation}"
    )
    return f"def {function.__name__}({', '.join(params)}){result}:"


def documented_signatures(markdown: str) -> dict[str, list[str]]:
    """For each ``### name`` section, the lines of its first python block (the signature).

    Later blocks are examples, where ``def name(register):`` is expected and unchecked.
    """
    sections: dict[str, list[str] | None] = {}
    current: str | None = None
    block: list[str] | None = None
    for line in markdown.splitlines():
        if block is not None:
            if line.startswith("```"):
                if current is not None and sections[current] is None:
                    sections[current] = block
                block = None
            else:
                block.append(line.rstrip())
        elif line.startswith("```python"):
            block = []
        elif line.startswith("#"):
            heading = re.fullmatch(r"### (\w+)\s*", line)
            current = heading.group(1) if heading else None
            if current is not None:
                sections.setdefault(current, None)
    return {name: lines or [] for name, lines in sections.items()}


def _marker_hook(node: ast.AST, where: str) -> str | None:
    """The hook named by a ``pytest.mark.exercises_hook("...")`` call, else None."""
    if not (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "exercises_hook"
        and isinstance(node.func.value, ast.Attribute)
        and node.func.value.attr == "mark"
    ):
        return None
    args = node.args
    if len(args) != 1 or not isinstance(args[0], ast.Constant) or not isinstance(
        args[0].value, str
    ):
        raise AssertionError(f"{where}: exercises_hook needs one literal hook name")
    return args[0].value


def exercised_hooks(source: str, filename: str) -> dict[str, list[str]]:
    """Hook names whose ``exercises_hook`` marker is applied to a test -> where.

    A marker counts when it decorates a test (directly, or through a module-level alias
    such as ``uses_commands = pytest.mark.exercises_hook(...)``) or is in ``pytestmark``.
    """
    tree = ast.parse(source, filename)
    aliases: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(
            node.targets[0], ast.Name
        ):
            hook = _marker_hook(node.value, f"{filename}:{node.lineno}")
            if hook is not None:
                aliases[node.targets[0].id] = hook

    found: dict[str, list[str]] = {}

    def collect(applied: ast.AST) -> None:
        for candidate in ast.walk(applied):
            where = f"{filename}:{getattr(candidate, 'lineno', '?')}"
            hook = _marker_hook(candidate, where)
            if hook is None and isinstance(candidate, ast.Name):
                hook = aliases.get(candidate.id)
            if hook is not None:
                found.setdefault(hook, []).append(where)

    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            for decorator in node.decorator_list:
                collect(decorator)
        elif isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "pytestmark" for target in node.targets
        ):
            collect(node.value)
    return found


def marker_hooks(source: str, filename: str) -> dict[str, list[str]]:
    """Every ``exercises_hook`` marker in the source, applied or not -> where."""
    found: dict[str, list[str]] = {}
    for node in ast.walk(ast.parse(source, filename)):
        where = f"{filename}:{getattr(node, 'lineno', '?')}"
        if (hook := _marker_hook(node, where)) is not None:
            found.setdefault(hook, []).append(where)
    return found


def scan_tests(
    scan: Callable[[str, str], dict[str, list[str]]],
) -> dict[str, list[str]]:
    merged: dict[str, list[str]] = {}
    for path in sorted(TESTS.glob("test_*.py")):
        for hook, places in scan(path.read_text(encoding="utf-8"), path.name).items():
            merged.setdefault(hook, []).extend(places)
    return merged


SPECS = hook_specs()


def test_spec_modules_declare_every_hook_the_manager_knows() -> None:
    manager_hooks = {
        name for name in vars(get_plugin_manager().hook) if not name.startswith("_")
    }
    assert set(SPECS) == manager_hooks
    assert len(SPECS) >= 14


@pytest.mark.parametrize("hook", sorted(SPECS))
def test_hook_is_documented_with_its_signature(hook: str) -> None:
    documented = documented_signatures(HOOK_DOCS.read_text(encoding="utf-8"))
    assert hook in documented, f"docs/plugin-hooks.md has no '### {hook}' section"
    expected = expected_signature(SPECS[hook])
    assert documented[hook] == [expected], (
        f"the first python block of '### {hook}' in docs/plugin-hooks.md must be exactly "
        f"{expected!r}, found {documented[hook]!r}"
    )


def test_docs_describe_no_hook_that_does_not_exist() -> None:
    documented = documented_signatures(HOOK_DOCS.read_text(encoding="utf-8"))
    stale = {name for name in documented if name.startswith(("register_", "on_"))} - set(SPECS)
    assert not stale, f"docs/plugin-hooks.md documents unknown hooks: {sorted(stale)}"


@pytest.mark.parametrize("hook", sorted(SPECS))
def test_hook_is_exercised_by_a_test(hook: str) -> None:
    assert hook in scan_tests(exercised_hooks), (
        f"no test is marked @pytest.mark.exercises_hook({hook!r})"
    )


def test_exercises_hook_names_real_hooks() -> None:
    unknown = {
        hook: places for hook, places in scan_tests(marker_hooks).items() if hook not in SPECS
    }
    assert not unknown, f"exercises_hook names hooks that do not exist: {unknown}"


# -- the checkers themselves must be able to fail ----------------------------------------


def test_expected_signature_uses_source_annotations() -> None:
    def on_thing(event: Event, *, count: int = 2) -> None:  # noqa: F821
        """Annotations stay strings under ``from __future__ import annotations``."""

    assert expected_signature(on_thing) == "def on_thing(event: Event, count: int = 2) -> None:"
    assert expected_signature(SPECS["register_connectors"]) == (
        "def register_connectors(register: Callable[[type[ControlSystemConnector]], None])"
        " -> None:"
    )


def test_documented_signatures_takes_the_first_python_block_of_hook_sections() -> None:
    markdown = "\n".join([
        "### on_run_event",
        "def on_run_event(outside: Block) -> None:",
        "```text",
        "def on_run_event(wrong: Text) -> None:",
        "```",
        "```python",
        "def on_run_event(event: RunEvent) -> None:",
        "```",
        "```python",
        "def on_run_event(event): ...",
        "```",
        "## Other",
        "```python",
        "def after_heading(): ...",
        "```",
        "### register_services",
        "```python",
        "# ### not_a_heading",
        "def register_services(register: Callable[[ServiceSpec], None]) -> int:",
        "```",
        "### on_approval_decided",
        "No signature block.",
    ])
    assert documented_signatures(markdown) == {
        "on_run_event": ["def on_run_event(event: RunEvent) -> None:"],
        "register_services": [
            "# ### not_a_heading",
            "def register_services(register: Callable[[ServiceSpec], None]) -> int:",
        ],
        "on_approval_decided": [],
    }


def test_exercised_hooks_counts_only_markers_applied_to_tests() -> None:
    source = "\n".join([
        "import pytest",
        "pytestmark = [pytest.mark.exercises_hook('on_run_event')]",
        "@pytest.mark.exercises_hook('register_services')",
        "def test_a(): ...",
        "class TestB:",
        "    @pytest.mark.exercises_hook('register_services')",
        "    async def test_c(self): ...",
        "unused = pytest.mark.exercises_hook('register_commands')",
        "uses_archivers = pytest.mark.exercises_hook('register_archivers')",
        "@uses_archivers",
        "def test_d(): ...",
    ])
    assert exercised_hooks(source, "t.py") == {
        "on_run_event": ["t.py:2"],
        "register_services": ["t.py:3", "t.py:6"],
        "register_archivers": ["t.py:10"],
    }
    assert set(marker_hooks(source, "t.py")) == {
        "on_run_event", "register_services", "register_commands", "register_archivers"
    }
    with pytest.raises(AssertionError, match=r"t\.py:2: exercises_hook needs one literal"):
        exercised_hooks("import pytest\n@pytest.mark.exercises_hook(NAME)\ndef test(): ...",
                        "t.py")


@pytest.mark.parametrize("page", ["plugin-hooks.md", "testing-kit.md"])
def test_python_blocks_in_docs_are_valid_python(page: str) -> None:
    text = (ROOT / "docs" / page).read_text(encoding="utf-8")
    blocks = re.findall(r"^```python\n(.*?)^```$", text, flags=re.MULTILINE | re.DOTALL)
    assert blocks
    for block in blocks:
        # A signature block is a lone ``def ...:`` line; give it a body to parse it.
        source = block + "    ...\n" if block.rstrip().endswith(":") else block
        try:
            ast.parse(source)
        except SyntaxError as exc:
            pytest.fail(f"docs/{page}: python block does not parse ({exc}):\n{block}")
