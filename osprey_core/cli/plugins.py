"""``osprey plugins``: what is installed, where it came from, and whether it loaded."""

from __future__ import annotations

import typer

from osprey_core.cli.output import print_json, print_table
from osprey_core.cli.state import cli_state
from osprey_core.errors import ConfigError
from osprey_core.plugin_host import Status
from osprey_core.registry import did_you_mean


def list_plugins(
    ctx: typer.Context,
    show_all: bool = typer.Option(False, "--all", help="Also list blocked plugins."),
    hook: str | None = typer.Option(None, "--hook", help="Only plugins implementing HOOK."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List plugins: name, distribution, version, source, hooks and status."""
    host = cli_state(ctx).host
    if hook is not None and hook not in (names := host.hook_names()):
        raise ConfigError(f"--hook: unknown hook '{hook}'{did_you_mean(hook, names)}; "
                          f"hooks: {', '.join(names)}")
    plugins = [
        info for info in host.plugins
        if (show_all or info.status is not Status.BLOCKED) and (hook is None or hook in info.hooks)
    ]
    if as_json:
        print_json([info.as_dict() for info in plugins])
        return
    rows = [
        (
            info.name,
            info.distribution or "-",
            info.version or "-",
            info.source,
            "\n".join(info.hooks),
            _status_text(info.status, info.error, info.hook_errors),
        )
        for info in plugins
    ]
    print_table("osprey plugins", ("name", "distribution", "version", "source", "hooks",
                                   "status"), rows)


def _status_text(status: Status, error: str | None, hook_errors: list[str]) -> str:
    if status is Status.FAILED:
        return f"failed: {error}"
    if hook_errors:
        return f"{status} (hook errors: {'; '.join(hook_errors)})"
    return str(status)
