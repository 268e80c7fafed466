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
    from osprey_core.cli.lazy import LazyGroup
    from osprey_core.cli.state import CliState

    app = typer.Typer(
        cls=LazyGroup,
        name="osprey",
        help="Run AI agents safely in accelerators, beamlines and other high-stakes facilities.",
        no_args_is_help=True,
        # Plain help like git or pip: rich help formatting costs ~100 ms on every --help.
        rich_markup_mode=None,
        pretty_exceptions_enable=False,
        # --install-completion / --show-completion (bash, zsh, fish, PowerShell).
        add_completion=True,
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
        verbose: int = typer.Option(0, "--verbose", "-v", count=True,
                                    help="More log output on stderr (-v info, -vv debug)."),
        quiet: bool = typer.Option(False, "--quiet", "-q",
                                   help="Only errors on stderr (no notices or warnings)."),
        utc: bool = typer.Option(False, "--utc", help="Show times in UTC instead of the "
                                 "local time zone (TZ)."),
        _version: bool = typer.Option(False, "--version", is_eager=True,
                                      callback=_print_version,
                                      help="Print the version and exit."),
    ) -> None:
        _logging(verbose, quiet)
        if utc:
            from osprey_core.display.text import use_utc

            use_utc(True)
        ctx.obj = CliState(host=host, config_path=config)
        # Close the store and the event loop (and any control-system connection) in order,
        # rather than leaving them to garbage collection at interpreter exit.
        ctx.call_on_close(ctx.obj.close)

    host.add_commands(app)
    return app


def _print_version(value: bool) -> None:
    if value:
        from osprey_core.cli.version import version_line

        typer.echo(version_line())
        raise typer.Exit()


def _logging(verbose: int, quiet: bool) -> None:
    """Standard logging on stderr: warnings by default, ``-v`` info, ``-vv`` debug,
    ``--quiet`` errors only (and no notices)."""
    import logging

    level = logging.ERROR if quiet else (logging.WARNING, logging.INFO)[min(verbose, 1)] \
        if verbose < 2 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if quiet:
        from osprey_core.control.service import silence_notices

        silence_notices()


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point; exit codes: 0 ok, 1 failure, 2 usage or config error."""
    from osprey_core.plugin_host import load_plugins

    try:
        from osprey_core.cli.lazy import root_command

        host = load_plugins()
        root_command(build_app(host))(args=argv, prog_name="osprey")
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
