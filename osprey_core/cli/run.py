"""``osprey run``: one request, until it is done or needs a human."""

from __future__ import annotations

import typer

from osprey_core.cli.render import show_run
from osprey_core.cli.state import cli_state


def run_request(
    ctx: typer.Context,
    query: str = typer.Argument(..., help="The request; prefix with /planning to review "
                                "the plan first."),
    planning: bool = typer.Option(False, "--planning", help="Review the plan before anything "
                                  "runs."),
    session: str = typer.Option("default", "--session", "-s", help="Conversation/thread id."),
    user: str | None = typer.Option(None, "--user", "-u", help="Who is asking (audit)."),
    as_json: bool = typer.Option(False, "--json", help="Print the run as JSON."),
) -> None:
    """Run a request. Exit 0 done, 3 waiting for approval, 1 failed or rejected."""
    osprey = cli_state(ctx).osprey()
    run = osprey.run(query, session=session, user=user, planning=planning or None,
                     interface="cli")
    show_run(osprey, run, as_json=as_json)
