"""The root command group, with plugins' sub-apps turned into click groups only when used.

Typer converts every command of every sub-app (signatures, annotations, options) before
anything runs: with some sixty commands that is about a fifth of ``osprey --help``. The root
listing only needs each sub-app's name and first help line, and ``osprey runs list`` only
the ``runs`` group, so the rest waits until a command, its help or completion asks for it.
"""

from __future__ import annotations

from typing import Any

import click
import typer
from typer.core import TyperGroup
from typer.main import get_command, get_group_from_info, solve_typer_info_defaults
from typer.models import TyperInfo


class LazyGroup(TyperGroup):
    """A group holding sub-apps as :class:`TyperInfo` until one is looked up."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pending: dict[str, TyperInfo] = {}
        self.conversion: dict[str, Any] = {}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*self.commands, *self.pending]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if (info := self.pending.pop(cmd_name, None)) is not None:
            self.commands[cmd_name] = get_group_from_info(info, **self.conversion)
        return super().get_command(ctx, cmd_name)

    def resolve_command(self, ctx: click.Context, args: list[str],
                        ) -> tuple[str | None, click.Command | None, list[str]]:
        if args and args[0] not in self.commands and args[0] not in self.pending:
            for name in list(self.pending):  # a typo: "did you mean" considers every name
                self.get_command(ctx, name)
        return super().resolve_command(ctx, args)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The listing, from each pending sub-app's help text, converting none of them."""
        names = self.list_commands(ctx)
        if not names:
            return
        limit = formatter.width - 6 - max(len(name) for name in names)
        rows = []
        for name in names:
            if name in self.pending:
                text = solve_typer_info_defaults(self.pending[name]).help
                listed = click.Command(name, help=text if isinstance(text, str) else None)
                rows.append((name, listed.get_short_help_str(limit)))
            elif not (command := self.commands[name]).hidden:
                rows.append((name, command.get_short_help_str(limit)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)


def root_command(app: typer.Typer) -> click.Command:
    """``app`` (made with ``cls=LazyGroup``) as a click command whose sub-apps are converted
    on first use; any sub-app without a name of its own is converted at once."""
    named = {info: solve_typer_info_defaults(info).name for info in app.registered_groups}
    if not all(isinstance(name, str) and name for name in named.values()):
        return get_command(app)
    groups, app.registered_groups = app.registered_groups, []
    try:
        command = get_command(app)
    finally:
        app.registered_groups = groups
    if not isinstance(command, LazyGroup):
        return get_command(app)
    command.conversion = {"pretty_exceptions_short": app.pretty_exceptions_short,
                          "rich_markup_mode": app.rich_markup_mode,
                          "suggest_commands": app.suggest_commands}
    command.pending = {str(name): info for info, name in named.items()}
    return command
