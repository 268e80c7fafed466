"""Every fenced code block in README.md and docs/ is run or checked, so the docs cannot drift.

One test per Markdown file runs its blocks in order, in a fresh working directory and
``OSPREY_HOME``; Python blocks of a file share one namespace, like a reader's session.

=============  ==========================================================================
block          what happens
=============  ==========================================================================
python         executed (top-level ``await`` allowed); plugin hooks it defines are
               registered on a plugin host and every registry is loaded. A block that is
               only a ``def ...:`` line is compared with the hook spec of that name.
console, sh,   each command is run: ``osprey ...`` through the real CLI (in process; a
bash, none     usage error fails, an ordinary refusal such as an unknown id does not),
               ``python -c`` as a subprocess. Lines of a console block not starting with
               ``$`` are its sample output.
text           lines starting with ``osprey`` are command synopses: every ``--option`` must
               be in that command's ``--help``. Anything else must be marked as output.
yaml           parsed; an ``osprey.yml`` fragment (top-level keys are config sections) is
               loaded by the config loader; other files say what they are (below).
json, csv,     parsed; a ``mermaid`` block must equal the run machine's diagram.
toml, mermaid
=============  ==========================================================================

Markers, an HTML comment on the line right before the fence:

* ``<!-- not-tested: REASON -->``: cannot run here (a facility, hardware, an API key, ...).
* ``<!-- output -->``: sample output or an illustration, nothing to run.
* ``<!-- given: NAME, ... -->``: what the block needs from the test (see ``GIVEN``).
* ``<!-- yaml: limits | machine | logbook-source -->``: the file a YAML block is.
"""

from __future__ import annotations

import ast
import asyncio
import csv
import inspect
import io
import json
import re
import shlex
import shutil
import subprocess
import sys
import time
import tomllib
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from osprey_core import hookspecs
from osprey_core.config import load_config
from osprey_core.errors import OspreyError
from osprey_core.plugin_host import PluginHost, load_plugins

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
SAMPLE_LOGBOOK = ROOT / "osprey_core" / "logbook" / "data" / "sample_logbook.jsonl"
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>```+|~~~+)(?P<lang>[\w-]*)\s*$")
MARKER = re.compile(r"^<!--\s*(?P<kind>not-tested|output|given|yaml)\s*:?\s*(?P<arg>.*?)\s*-->$")
FAST_EMBEDDINGS = "docs_embeddings"
RUNS = {"python", "console", "sh", "bash", "", "text", "yaml", "json", "csv", "toml",
        "mermaid"}


@dataclass
class Block:
    path: Path
    line: int
    lang: str
    text: str
    markers: dict[str, str] = field(default_factory=dict)

    @property
    def marker(self) -> str | None:
        """The marker deciding how the block is treated (``given`` only adds to it)."""
        return next((kind for kind in self.markers if kind != "given"), None)

    @property
    def arg(self) -> str:
        return self.markers.get(self.marker or "", "")

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def blocks(path: Path) -> list[Block]:
    lines = path.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    index = 0
    while index < len(lines):
        if (match := FENCE.match(lines[index])) is None:
            index += 1
            continue
        start, body = index, []
        index += 1
        while index < len(lines) and lines[index].strip() != match["fence"]:
            body.append(lines[index].removeprefix(match["indent"]))
            index += 1
        markers: dict[str, str] = {}
        above = start - 1
        while above >= 0 and (marker := MARKER.match(lines[above].strip())) is not None:
            markers[marker["kind"]] = marker["arg"]
            above -= 1
        found.append(Block(path, start + 1, match["lang"], "\n".join(body) + "\n", markers))
        index += 1
    return found


# -- what blocks are given ------------------------------------------------------------------


@dataclass
class Session:
    """One Markdown file's run: its directory, environment, plugin host and namespace."""

    cwd: Path
    environ: dict[str, str]
    namespace: dict[str, Any] = field(default_factory=dict)
    _host: PluginHost | None = None

    @property
    def host(self) -> PluginHost:
        """Every installed plugin, plus a fast embedding model for the logbook (MiniLM's
        own tests are elsewhere; here it would cost about 20 s per ingest)."""
        if self._host is None:
            from osprey_core.testing.fakes import FakeEmbeddingModel, fake_plugin

            self._host = load_plugins(environ={})
            self._host.register(fake_plugin(name="docs_vectors", embedding_models=[
                FakeEmbeddingModel.named(FAST_EMBEDDINGS, dimension=32)]))
        return self._host

    @property
    def cli_environ(self) -> dict[str, str]:
        """For commands and configs built on :attr:`host` (blocks loading their own plugins
        see the plain environment)."""
        return {**self.environ, "OSPREY__LOGBOOK__EMBEDDINGS__MODEL": FAST_EMBEDDINGS}

    def config(self) -> Any:
        return load_config(self.host, environ=self.cli_environ)


def _logbook_store(session: Session) -> Any:
    from osprey_core.logbook.service import Logbook
    from osprey_core.logbook.sources import ingest_sources

    (session.cwd / "osprey.yml").write_text(json.dumps({"logbook": {
        "sources": {"ops": {"adapter": "jsonl", "location": str(SAMPLE_LOGBOOK)}}}}),
        encoding="utf-8")
    logbook = Logbook.from_config(session.config(), session.host)
    ingest_sources(logbook, session.config(), session.host)
    return logbook.store


def _archiver(session: Session) -> Any:
    """The simulated archiver, answering for any name (the docs use facility names)."""
    from osprey_core.control.service import build_archiver

    config = load_config(session.host, environ={**session.cli_environ,
                                                "OSPREY__MOCK__ANY_NAME_READS": "true"})
    return build_archiver(config, session.host, notice=None)


#: What a ``given`` marker may name: values for the block's namespace, or files.
GIVEN: dict[str, Callable[[Session], Any]] = {
    "host": lambda session: session.host,
    "config": lambda session: session.config(),
    "my_home": lambda session: Path(session.environ["OSPREY_HOME"]),
    "epoch_seconds": lambda session: time.time(),
    "archiver": _archiver,
    "store": _logbook_store,
    "osprey": lambda session: __import__("osprey_core").Osprey(),
}


def _give(session: Session, names: str) -> None:
    for name in filter(None, (part.strip() for part in names.split(","))):
        if name.endswith(".jsonl"):
            shutil.copy(SAMPLE_LOGBOOK, session.cwd / name)
        elif name.endswith(".py"):
            (session.cwd / name).write_text('results["mean"] = 1.0\n', encoding="utf-8")
        else:
            session.namespace[name] = GIVEN[name](session)


# -- checks per language --------------------------------------------------------------------


def run_python(block: Block, session: Session) -> None:
    if SIGNATURE.match(block.text.strip()):
        check_signature(block)
        return
    tree = ast.parse(block.text, block.where)
    code = compile(tree, block.where, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    result = eval(code, session.namespace)  # the docs' own code
    if inspect.iscoroutine(result):
        asyncio.run(result)
    register_hooks(block, session.namespace)


def check_signature(block: Block) -> None:
    """A hook's signature as the docs show it is the spec's (names, types, return)."""
    documented = ast.parse(block.text.strip() + " ...").body[0]
    assert isinstance(documented, ast.FunctionDef)
    for module in _hookspec_modules():
        spec = getattr(module, documented.name, None)
        if callable(spec):
            real = ast.parse(inspect.getsource(spec)).body[0]
            assert isinstance(real, ast.FunctionDef)
            assert (ast.unparse(documented.args), ast.unparse(documented.returns or ast.Constant(
                None))) == (ast.unparse(real.args), ast.unparse(real.returns or ast.Constant(
                    None))), f"{block.where}: {documented.name} is not the hook spec's signature"
            return
    raise AssertionError(f"{block.where}: no hook spec named {documented.name}")


def _hookspec_modules() -> Iterator[types.ModuleType]:
    import importlib
    import pkgutil

    for info in pkgutil.iter_modules(hookspecs.__path__):
        yield importlib.import_module(f"osprey_core.hookspecs.{info.name}")


def register_hooks(block: Block, namespace: dict[str, Any]) -> None:
    """Hook implementations a block defines go on a fresh host whose registries load."""
    hooks = {name: value for name, value in namespace.items()
             if callable(value) and hasattr(value, "osprey_impl")}
    if not hooks:
        return
    plugin = types.ModuleType(f"docs_plugin_{block.line}")
    plugin.__dict__.update(hooks)
    host = load_plugins(environ={"OSPREY_LOAD_PLUGINS": "", "OSPREY_STRICT_PLUGINS": "1"})
    host.register(plugin)
    for family in ("capabilities", "data_providers", "code_generators", "execution_backends",
                   "connectors", "archivers", "approval_policies", "logbook_adapters",
                   "embedding_models", "services"):
        getattr(host, family)().names()
    namespace.clear()  # each plugin example starts afresh


def run_commands(block: Block, session: Session) -> None:
    lines = block.text.splitlines()
    if block.lang == "console" or all(line.startswith("$") for line in lines if line.strip()):
        lines = [line[1:].strip() for line in lines if line.startswith("$")]
    for line in lines:
        command = shlex.split(line, comments=True)
        if not command:
            continue
        if command[0] == "osprey":
            run_osprey(block, session, command[1:])
        elif command[:2] == ["python", "-c"]:
            done = subprocess.run([sys.executable, *command[1:]], cwd=session.cwd,
                                  env=session.environ, capture_output=True, text=True,
                                  timeout=60, check=False)
            assert done.returncode == 0, f"{block.where}: {line}\n{done.stderr}"
        else:
            raise AssertionError(f"{block.where}: cannot run {line!r} here: mark the block "
                                 "<!-- not-tested: reason -->")


def run_osprey(block: Block, session: Session, args: list[str]) -> str:
    from typer.testing import CliRunner

    from osprey_core.cli import build_app

    result = CliRunner().invoke(build_app(session.host), args, env=session.cli_environ)
    output = result.output
    if isinstance(result.exception, OspreyError):
        output += str(result.exception)
    elif result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"{block.where}: osprey {shlex.join(args)} crashed") \
            from result.exception
    usage = result.exit_code == 2 and ("Usage:" in output or "No such" in output)
    assert not usage, f"{block.where}: osprey {shlex.join(args)}: {output}"
    return output


SIGNATURE = re.compile(r"^def \w+\(.*\)( -> .+)?:$")


def check_synopsis(block: Block, session: Session) -> None:
    for line in block.text.splitlines():
        if not line.startswith("osprey "):
            assert line.startswith(" ") or not line.strip(), (
                f"{block.where}: {line!r} is no command synopsis: mark the block "
                "<!-- output -->")
            continue
        words = re.sub(r"\s*\|\s*", "|", line).split()[1:]
        helps = [run_osprey(block, session, [*command, "--help"])
                 for command in _alternatives(_leading(words))]
        for option in re.findall(r"--[a-z][a-z-]*", line.split("#")[0]):
            # `approve|reject ID [--reason R]`: an option of at least one of them
            assert any(option in text for text in helps), f"{block.where}: {line.split()[:4]} " \
                                                          f"has no {option}"


def _leading(words: list[str]) -> list[str]:
    """The command words of a synopsis: up to the first argument or option."""
    taken = []
    for word in words:
        if not re.match(r"^[a-z][a-z|-]*$", word):
            break
        taken.append(word)
    return taken


def _alternatives(path: list[str]) -> list[list[str]]:
    """``approvals approve|reject`` is two commands."""
    commands: list[list[str]] = [[]]
    for word in path:
        commands = [[*command, choice] for command in commands for choice in word.split("|")]
    return commands


def check_yaml(block: Block, session: Session) -> None:
    data = yaml.safe_load(block.text)
    assert isinstance(data, dict), f"{block.where}: not a YAML mapping"
    target = session.cwd / "checked.yml"
    target.write_text(block.text, encoding="utf-8")
    if block.marker == "yaml":
        _check_yaml_file(block, target, data)
        return
    from osprey_core.config.model import CORE_KEYS

    known = CORE_KEYS | set(session.host.config_sections())
    unknown = set(data) - known
    assert not unknown, (f"{block.where}: {sorted(unknown)} are no config sections: mark the "
                         "block <!-- yaml: KIND --> or <!-- output -->")
    load_config(session.host, target, environ=session.cli_environ)


def _check_yaml_file(block: Block, target: Path, data: dict[str, Any]) -> None:
    if block.arg == "limits":
        from osprey_core.control.limits import LimitsDatabase

        LimitsDatabase.load(target)
    elif block.arg == "machine":
        from osprey_core.control.simulation.spec import load_machine

        load_machine(target)
    elif block.arg == "logbook-source":
        from osprey_core.settings import LogbookSourceSettings

        for source in data.values():
            LogbookSourceSettings.model_validate(source)
    else:
        raise AssertionError(f"{block.where}: unknown YAML kind {block.arg!r}")


def check_data(block: Block, session: Session) -> None:
    if block.lang == "json":
        json.loads(block.text)
    elif block.lang == "toml":
        tomllib.loads(block.text)
    elif block.lang == "csv":
        rows = list(csv.reader(io.StringIO(block.text), delimiter=";"))
        assert len({len(row) for row in rows}) == 1, f"{block.where}: ragged CSV"
    elif block.lang == "mermaid":
        from osprey_core.run_machine import mermaid_diagram

        assert block.text.strip() == mermaid_diagram().strip(), \
            f"{block.where}: the diagram is not the run machine's"


def check(block: Block, session: Session) -> None:
    if "given" in block.markers:
        _give(session, block.markers["given"])
    if block.lang == "python":
        run_python(block, session)
    elif block.lang in ("console", "sh", "bash", ""):
        run_commands(block, session)
    elif block.lang == "text":
        check_synopsis(block, session)
    elif block.lang == "yaml":
        check_yaml(block, session)
    else:
        check_data(block, session)


# -- the tests ------------------------------------------------------------------------------


@pytest.mark.parametrize("path", DOCS, ids=lambda path: str(path.relative_to(ROOT)))
def test_every_block_of_the_file_runs(path: Path, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    environ = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "LC_ALL": "C.UTF-8",
               "OSPREY_HOME": str(tmp_path / "home"), "OSPREY_CONFIG": "",
               "COLUMNS": "120", "NO_COLOR": "1"}
    for name in list(__import__("os").environ):
        if name.startswith("OSPREY"):
            monkeypatch.delenv(name)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    session = Session(tmp_path, environ)
    problems = []
    for block in blocks(path):
        if block.marker in ("not-tested", "output"):
            continue
        try:
            check(block, session)
        except Exception as exc:  # report every block of the file, not the first only
            text = str(exc).strip() or type(exc).__name__
            cause = f" ({type(exc.__cause__).__name__}: {exc.__cause__})" if exc.__cause__ else ""
            problems.append(f"{block.where}: {type(exc).__name__}: {text[:600]}{cause}")
    assert not problems, "\n".join(problems)


def test_every_block_is_run_or_marked() -> None:
    problems = []
    for path in DOCS:
        for block in blocks(path):
            if block.marker == "not-tested" and not block.arg:
                problems.append(f"{block.where}: not-tested without a reason")
            elif block.lang not in RUNS and block.marker not in ("not-tested", "output"):
                problems.append(f"{block.where}: a '{block.lang}' block is neither run nor "
                                "marked")
    assert not problems, "\n".join(problems)
