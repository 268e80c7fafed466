"""Built-in plugin: the core commands (``plugins``, ``config``, ``version``). Essential."""

from __future__ import annotations

import typer

from osprey_core.hookspecs import hookimpl


@hookimpl
def register_commands(app: typer.Typer) -> None:
    from osprey_core.cli.config import config_app
    from osprey_core.cli.plugins import list_plugins
    from osprey_core.cli.version import show_version

    app.command("plugins")(list_plugins)
    app.add_typer(config_app, name="config")
    app.command("version")(show_version)
