"""``osprey memory``: every command in a real subprocess over a real home, so what one
process saves another recalls (with memory on files and in PostgreSQL, ``store.url``), and
a damaged file is reported, kept and repaired (files only)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from support.cli import assert_exit
from support.dist import osprey_env
from support.postgres import MemoryEngine

#: Runs ``osprey`` with the ``memory`` sub-app registered even before the core commands
#: plugin registers it (then this adds nothing).
DRIVER = """
import sys

import osprey_core.plugins.core_commands as core_commands
from osprey_core.hookspecs import hookimpl

registered = core_commands.register_commands


@hookimpl
def register_commands(app):
    registered(app)
    if not any(group.name == "memory" for group in app.registered_groups):
        from osprey_core.cli.memory import memory_app

        app.add_typer(memory_app, name="memory")


core_commands.register_commands = register_commands

from osprey_core.cli import main

main(sys.argv[1:])
"""


class Cli:
    """``osprey memory ...`` in a new process each time (``in_process``: in this one, with
    errors mapped to exit codes as ``main()`` does; much faster)."""

    def __init__(self, root: Path, *, in_process: bool = False,
                 engine: MemoryEngine | None = None) -> None:
        self.root = root
        self.driver = root / "osprey_driver.py"
        self.driver.write_text(DRIVER, encoding="utf-8")
        self.home = root / "home"
        self.env = osprey_env(self.home, OSPREY_STRICT_PLUGINS="1", USER="ana",
                              LOGNAME="ana", **(engine.environ() if engine else {}))
        self.in_process = in_process

    def __call__(self, *args: str) -> subprocess.CompletedProcess[str]:
        if self.in_process:
            return self._invoke(list(args))
        return subprocess.run([sys.executable, str(self.driver), "memory", *args],
                              env=self.env, cwd=self.root, capture_output=True, text=True,
                              encoding="utf-8", timeout=60, check=False,
                              stdin=subprocess.DEVNULL)

    def _invoke(self, args: list[str]) -> subprocess.CompletedProcess[str]:
        from typer.testing import CliRunner

        from osprey_core.cli import build_app
        from osprey_core.cli.memory import memory_app
        from osprey_core.errors import OspreyError
        from osprey_core.plugin_host import load_plugins

        app = build_app(load_plugins(environ={"OSPREY_LOAD_PLUGINS": "",
                                              "OSPREY_STRICT_PLUGINS": "1"}))
        if not any(group.name == "memory" for group in app.registered_groups):
            app.add_typer(memory_app, name="memory")
        result = CliRunner().invoke(app, ["memory", *args], env=self.env)
        code, stderr = result.exit_code, result.stderr
        if isinstance(result.exception, OspreyError):
            code, stderr = result.exception.exit_code, f"Error: {result.exception}"
        elif result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        return subprocess.CompletedProcess(args, code, result.stdout, stderr)

    def ok(self, *args: str) -> str:
        result = self(*args)
        assert_exit(result, 0)
        return result.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "--json"))

    def memory_file(self, user: str) -> Path:
        from osprey_core.memory.store import MemoryStore

        return MemoryStore(self.home).path_for(user)


@pytest.fixture
def cli(tmp_path: Path, memory_engine: MemoryEngine) -> Cli:
    return Cli(tmp_path, engine=memory_engine)


@pytest.fixture
def file_cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path)


def test_saved_in_one_process_recalled_by_another(cli: Cli, memory_engine: MemoryEngine) -> None:
    saved = cli.json("add", "my default BPM set is BPM01-BPM04", "--tags", "bpm, orbit")
    assert (saved["text"], saved["tags"], saved["source"]) == (
        "my default BPM set is BPM01-BPM04", ["bpm", "orbit"], "cli")
    [hit] = cli.json("search", "which BPMs are mine")
    assert (hit["id"], hit["text"]) == (saved["id"], "my default BPM set is BPM01-BPM04")
    assert hit["score"] > 0
    assert cli.json("list", "--user", "bob") == []  # the default user is the login name
    table = cli.ok("list")
    assert saved["id"] in table and "BPM01-BPM04" in table
    assert memory_engine.snapshot()  # kept where store.url says, and only there
    assert (cli.home / "memory").exists() is (memory_engine.name == "file")


@pytest.fixture
def fast_cli(tmp_path: Path, memory_engine: MemoryEngine) -> Cli:
    return Cli(tmp_path, in_process=True, engine=memory_engine)


def test_show_edit_delete_and_clear_errors(fast_cli: Cli) -> None:
    cli = fast_cli
    entry_id = cli.json("add", "[bold]always[/bold] plot in mm", "--user", "José")["id"]
    assert "[bold]always[/bold]" in cli.ok("list", "--user", "José")  # markup shown as text
    assert cli.json("show", entry_id, "--user", "José")["text"] == (
        "[bold]always[/bold] plot in mm")
    edited = cli.json("edit", entry_id, "--text", "always plot in µm", "--tags", "plots",
                      "--user", "José")
    assert (edited["text"], edited["tags"]) == ("always plot in µm", ["plots"])
    assert "tags: plots" in cli.ok("show", entry_id, "--user", "José")

    missing = cli("show", "mem-nope", "--user", "José")
    assert_exit(missing, 1)
    assert "no memory with id 'mem-nope'" in missing.stderr
    assert_exit(cli("edit", entry_id, "--user", "José"), 2)  # nothing to change
    assert_exit(cli("search", " "), 2)
    assert_exit(cli("add", "x", "--user", ""), 2)
    too_long = cli("add", "x" * 2001)
    assert_exit(too_long, 1)
    assert "the limit is 2000 (memory.max_entry_chars)" in too_long.stderr

    assert "Deleted" in cli.ok("delete", entry_id, "--user", "José")
    assert cli.json("list", "--user", "José") == []
    assert_exit(cli("delete", entry_id, "--user", "José"), 1)


def test_export_and_import_move_memories_between_users(fast_cli: Cli, tmp_path: Path) -> None:
    cli = fast_cli
    cli.ok("add", "first")
    cli.ok("add", "second", "--tags", "x")
    printed = json.loads(cli.ok("export"))
    assert [entry["text"] for entry in printed["entries"]] == ["first", "second"]
    target = tmp_path / "ana.json"
    assert cli.json("export", str(target))["entries"] == 2
    refused = cli("export", str(target))
    assert_exit(refused, 1)
    assert "exists" in refused.stderr
    cli.ok("export", str(target), "--force")

    report = cli.json("import", str(target), "--user", "bob")
    assert len(report["added"]) == 2
    assert cli.json("list", "--user", "bob") == cli.json("list")
    assert cli.json("import", str(target), "--user", "bob")["added"] == []

    broken = tmp_path / "broken.json"
    document = json.loads(target.read_text(encoding="utf-8"))
    document["entries"][1]["text"] = ""
    broken.write_text(json.dumps(document), encoding="utf-8")
    result = cli("import", str(broken), "--user", "carol")
    assert_exit(result, 1)
    assert str(broken) in result.stderr and "entry 2" in result.stderr
    assert cli.json("list", "--user", "carol") == []
    not_json = tmp_path / "not.json"
    not_json.write_text("{", encoding="utf-8")
    assert_exit(cli("import", str(not_json)), 1)


def test_a_corrupt_file_is_reported_kept_and_repaired(file_cli: Cli) -> None:
    from osprey_core.memory.store import MemoryStore

    cli = file_cli
    store = MemoryStore(cli.home)
    for number in range(6):
        store.add("ana", f"note {number}")
    path = cli.memory_file("ana")
    damaged = path.read_bytes()[:-60]  # cut inside the last entry
    path.write_bytes(damaged)

    for args in (("list",), ("add", "new")):
        result = cli(*args)
        assert_exit(result, 1)
        assert str(path) in result.stderr and "osprey memory repair --user ana" in result.stderr
        assert path.read_bytes() == damaged

    report = cli.json("repair")
    assert (report["repaired"], report["kept"]) == (True, 5)
    assert Path(report["backup"]).read_bytes() == damaged
    assert [entry["text"] for entry in cli.json("list")] == [f"note {n}" for n in range(5)]
    store.add("ana", "after the repair")
    assert "nothing to repair" in cli.ok("repair")
