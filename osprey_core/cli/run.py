"""``osprey run``: one request, until it is done or needs a human."""

from __future__ import annotations

import typer

from osprey_core.cli.render import show_run
from osprey_core.cli.state import cli_state


def run_request(
    ctx: typer.Context,
    query: str = typer.Argument(..., metavar="QUERY", help="The request; prefix it with "
                                "/planning to review the plan before anything runs."),
    planning: bool = typer.Option(False, "--planning", help="Review the plan before anything "
                                  "runs (like the /planning prefix)."),
    session: str = typer.Option("default", "--session", "-s", help="Conversation/thread id."),
    user: str | None = typer.Option(None, "--user", "-u", help="Who is asking, for the "
                                    "audit log (default: your login name)."),
    as_json: bool = typer.Option(False, "--json", help="Print the run as JSON."),
) -> None:
    """Run a request. Exit 0 done, 3 waiting for approval, 4 not understood (rephrase),
    1 failed or rejected, 130 interrupted (the run id and how to resume it are printed)."""
    from osprey_core.orchestration.orchestrator import split_planning_prefix

    if not split_planning_prefix(query)[0]:
        raise typer.BadParameter("the request is empty", param_hint="'QUERY'")
    if not session.strip():
        raise typer.BadParameter("the session id is empty", param_hint="'--session'")
    from osprey_core.cli.progress import driving

    osprey = cli_state(ctx).osprey()
    run = driving(osprey, lambda: osprey.run(query, session=session, user=user,
                                             planning=planning or None, interface="cli"))
    show_run(osprey, run, as_json=as_json)
