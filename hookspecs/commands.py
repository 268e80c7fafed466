"""CLI commands: plugins add sub-commands to ``osprey``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from osprey_core.hookspecs import hookspec

if TYPE_CHECKING:
    import typer


@hookspec
def register_commands(app: typer.Typer) -> None:
    """Add commands or sub-apps to the root ``osprey`` Typer app.

    Import heavy libraries inside the command functions, never at module level:
    every ``osprey`` invocation, ``--help`` included, runs this hook.
    """
