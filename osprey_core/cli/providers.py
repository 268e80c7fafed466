"""``osprey providers``: list the data providers and try them on a request."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer

from osprey_core.cli.output import print_json, print_table
from osprey_core.cli.state import cli_state

if TYPE_CHECKING:
    from osprey_core.providers import GatherResult
    from osprey_core.settings import ProvidersSettings

providers_app = typer.Typer(help="List the data providers and try them on a request.",
                            no_args_is_help=True)

JSON = typer.Option(False, "--json", help="Print JSON.")


@providers_app.command("list")
def list_providers(ctx: typer.Context, as_json: bool = JSON) -> None:
    """Every registered provider: plugin, context type, timeout and whether it is asked."""
    state = cli_state(ctx)
    settings: ProvidersSettings = state.config().section("providers")
    registry = state.host.data_providers()
    rows = [{"name": entry.name, "plugin": entry.plugin,
             "context_type": getattr(entry.item, "context_type", ""),
             "timeout_seconds": settings.timeouts.get(entry.name, settings.timeout_seconds),
             "disabled": entry.name in settings.disabled}
            for entry in registry.entries()]
    unknown = sorted((set(settings.timeouts) | set(settings.disabled)) - set(registry.names()))
    for name in unknown:
        typer.echo(f"warning: providers settings name '{name}', but no data provider has "
                   "that name", err=True)
    if as_json:
        print_json({"enabled": settings.enabled, "providers": rows})
        return
    if not rows:
        typer.echo("No data providers are registered.")
        return
    print_table("data providers", ("name", "plugin", "context type", "timeout (s)", "asked"),
                [(row["name"], row["plugin"], row["context_type"], f"{row['timeout_seconds']:g}",
                  "no (disabled)" if row["disabled"] else "yes") for row in rows])
    if not settings.enabled:
        typer.echo("Context is not gathered before planning (providers.enabled is false).")


@providers_app.command("test")
def test_providers(
    ctx: typer.Context,
    query: str = typer.Argument(..., metavar="QUERY", help="The request to gather context for."),
    user: str | None = typer.Option(None, "--user", "-u", help="Whose request it is "
                                    "(default: your login name, as for 'osprey run')."),
    session: str = typer.Option("default", "--session", "-s", help="Conversation/thread id."),
    only: list[str] | None = typer.Option(None, "--only", metavar="NAME", help="Ask only this "
                                          "provider (repeatable)."),
    as_json: bool = JSON,
) -> None:
    """Gather context for QUERY as a run would: each provider's status, time and a preview.

    Exit 0 when no provider failed or timed out, 1 otherwise.
    """
    import asyncio

    from osprey_core.api import default_user
    from osprey_core.hookspecs.data_providers import ProviderRequest
    from osprey_core.providers import gather_context

    state = cli_state(ctx)
    config = state.config()
    registry = state.host.data_providers()
    for name in only or ():
        if name not in registry:
            raise typer.BadParameter(_unknown(name, registry.names()), param_hint="'--only'")
    request = ProviderRequest(query=query, user=user or default_user(), session=session,
                              config=config)
    result = asyncio.run(gather_context(registry, request, config.section("providers"),
                                        only=only or None))
    if as_json:
        print_json(result.to_json())
    else:
        _show(result)
    if result.failed or result.timed_out:
        raise typer.Exit(1)


def _unknown(name: str, known: list[str]) -> str:
    from osprey_core.registry import did_you_mean

    return (f"no data provider named '{name}'{did_you_mean(name, known)}; "
            f"registered: {', '.join(known) or 'none'}")


def _show(result: GatherResult) -> None:
    if not result.outcomes:
        typer.echo("No data providers are registered.")
        return
    rows: list[tuple[Any, ...]] = [
        (outcome.provider, outcome.status, f"{outcome.seconds:.3f}", outcome.preview())
        for outcome in result.outcomes]
    print_table("data providers", ("name", "status", "seconds", "preview / reason"), rows)
    counts = {"ok": len(result.succeeded), "empty": len(result.empty),
              "timeout": len(result.timed_out), "error": len(result.failed),
              "skipped": len(result.skipped)}
    summary = ", ".join(f"{count} {status}" for status, count in counts.items() if count)
    typer.echo(f"{summary} in {result.seconds:.3f} s")
