"""The ``osprey`` command line: ``main()`` loads plugins, then lets them add commands.

Every built-in command lives in its own module and is added by the built-in plugin
``osprey_core.plugins.core_commands`` through the same ``register_commands`` hook a
third-party plugin uses.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from osprey_core.errors import OspreyError

if TYPE_CHECKING:
    from osprey_core.plugin_host import PluginHost

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


def build_app(host: PluginHost) -> typer.Typer:
    """The root app with every plugin's commands; the config loads lazily per command."""
    from osprey_core.cli.state import CliState

    app = typer.Typer(
        name="osprey",
        help="Run AI agents safely in accelerators, beamlines and other high-stakes facilities.",
        no_args_is_help=True,
        # Plain help like git or pip: rich help formatting costs ~100 ms on every --help.
        rich_markup_mode=None,
        pretty_exceptions_enable=False,
        add_completion=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )

    @app.callback()
    def root(
        ctx: typer.Context,
        # OSPREY_CONFIG is read by load_config, not by Typer, so errors name the real source.
        config: Path | None = typer.Option(
            None, "--config", "-c", dir_okay=False,
            help="Config file (default: $OSPREY_CONFIG, else ./osprey.yml if present).",
        ),
    ) -> None:
        ctx.obj = CliState(host=host, config_path=config)
        # Close the store and the event loop (and any control-system connection) in order,
        # rather than leaving them to garbage collection at interpreter exit.
        ctx.call_on_close(ctx.obj.close)

    host.add_commands(app)
    return app


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point; exit codes: 0 ok, 1 failure, 2 usage or config error."""
    from osprey_core.plugin_host import load_plugins

    try:
        host = load_plugins()
        build_app(host)(args=argv, prog_name="osprey")
    except OspreyError as exc:
        typer.echo(f"Error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except OSError as exc:  # a file osprey does not manage itself (an argument, a device)
        from osprey_core.errors import os_error_text

        where = f" ({exc.filename})" if exc.filename else ""
        typer.echo(f"Error: {os_error_text(exc)}{where}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        typer.echo("Interrupted.", err=True)
        sys.exit(130)
