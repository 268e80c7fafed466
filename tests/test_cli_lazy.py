"""The root command converts plugins' sub-apps only when one is used: ``--help`` lists them
from their help text, a command converts its own group, a typo still gets a suggestion."""

from __future__ import annotations

import io
from contextlib import redirect_stdout

import pytest
import typer
from click.testing import CliRunner
from typer.main import get_command

from osprey_core.cli import build_app
from osprey_core.cli.lazy import LazyGroup, root_command
from osprey_core.plugin_host import load_plugins


@pytest.fixture(scope="module")
def root() -> LazyGroup:
    command = root_command(build_app(load_plugins(environ={})))
    assert isinstance(command, LazyGroup)
    return command


def run(root: LazyGroup, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(root, list(args), prog_name="osprey")
    return result.exit_code, result.output


def test_help_lists_every_sub_app_and_converts_none(root: LazyGroup) -> None:
    eager = CliRunner().invoke(get_command(build_app(load_plugins(environ={}))), ["--help"],
                               prog_name="osprey")
    code, lazy = run(root, "--help")
    assert (code, lazy) == (0, eager.output)  # the same listing, word for word
    assert {"runs", "approvals", "logbook", "store"} <= set(root.pending)


def test_a_command_converts_only_its_own_group(root: LazyGroup) -> None:
    code, output = run(root, "runs", "list", "--help")
    assert code == 0 and "List runs" in output
    assert "runs" in root.commands and "runs" not in root.pending
    assert "approvals" in root.pending


@pytest.mark.parametrize(("typo", "meant"), [("rnus", "runs"), ("tokns", "tokens")])
def test_a_typo_is_still_told_what_it_meant(root: LazyGroup, typo: str, meant: str) -> None:
    code, output = run(root, typo)
    assert code == 2 and f"Did you mean '{meant}'?" in output


def test_an_unnamed_sub_app_is_converted_at_once() -> None:
    app = typer.Typer(cls=LazyGroup)
    app.command("top")(lambda: None)
    inner = typer.Typer()
    inner.command("merged")(lambda: typer.echo("merged ran"))
    app.add_typer(inner)  # no name: its commands join the root's
    with redirect_stdout(io.StringIO()):
        command = root_command(app)
    assert "merged" in CliRunner().invoke(command, ["--help"]).output
