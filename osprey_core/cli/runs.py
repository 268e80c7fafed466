"""``osprey runs``: list, inspect, resume and cancel runs."""

from __future__ import annotations

import typer

from osprey_core.cli.output import print_json, print_table
from osprey_core.cli.render import run_payload, show_run
from osprey_core.cli.state import cli_state
from osprey_core.run_machine import RunState

runs_app = typer.Typer(help="List, inspect, resume and cancel runs.", no_args_is_help=True)


@runs_app.command("list")
def list_runs(
    ctx: typer.Context,
    session: str | None = typer.Option(None, "--session", "-s"),
    state: list[RunState] | None = typer.Option(None, "--state", help="Filter by state."),
    limit: int = typer.Option(50, "--limit", min=1),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """List runs, newest first."""
    osprey = cli_state(ctx).osprey()
    osprey.refresh()
    runs = osprey.runs(session=session, states=set(state) if state else None, limit=limit)
    if as_json:
        print_json([run_payload(osprey, run) for run in runs])
        return
    rows = [(run.id, run.state, run.session, run.user, f"{run.created_at:%Y-%m-%d %H:%M:%S}",
             run.query[:60]) for run in runs]
    print_table("runs", ("id", "state", "session", "user", "created", "request"), rows)


@runs_app.command("show")
def show(ctx: typer.Context, run_id: str,
         events: bool = typer.Option(False, "--events", help="Also list the run's events."),
         as_json: bool = typer.Option(False, "--json")) -> None:
    """Show a run: state, plan, steps and (with --events) everything that happened."""
    osprey = cli_state(ctx).osprey()
    run = osprey.get_run(run_id)
    steps = osprey.steps(run_id)
    history = osprey.events(run_id) if events else []
    if as_json:
        payload = run_payload(osprey, run)
        payload["steps"] = [step.model_dump(mode="json") for step in steps]
        if events:
            payload["events"] = [event.model_dump(mode="json") for event in history]
        print_json(payload)
        return
    typer.echo(f"run {run.id}: {run.state}  (session {run.session}, user {run.user})")
    typer.echo(f"request: {run.query}")
    if run.plan is not None:
        typer.echo(f"plan {run.plan_sha256} ({osprey.plan_file(run.id)}):")
        status = {step.index: step.status for step in steps}
        for number, step in enumerate(run.plan.steps, start=1):
            mark = status.get(number - 1, "pending")
            typer.echo(f"  {number}. [{mark}] {step.capability} {step.parameters} -> "
                       f"{step.output}")
    if run.response:
        typer.echo(f"response: {run.response}")
    if run.error:
        typer.echo(f"error: {run.error}")
    for event in history:
        typer.echo(f"  {event.at:%H:%M:%S.%f} {event.kind} {event.data}")


@runs_app.command("resume")
def resume(
    ctx: typer.Context, run_id: str,
    indeterminate: str | None = typer.Option(
        None, "--indeterminate", help="For a side-effecting step caught mid-way by a crash: "
        "'applied' (it took effect) or 'not_applied' (run it again, asking again)."),
    user: str | None = typer.Option(None, "--user", "-u"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Resume an interrupted run; finished steps never run again."""
    if indeterminate not in (None, "applied", "not_applied"):
        raise typer.BadParameter("use 'applied' or 'not_applied'", param_hint="--indeterminate")
    osprey = cli_state(ctx).osprey()
    run = osprey.resume(run_id, user=user, interface="cli",
                        indeterminate=indeterminate)  # type: ignore[arg-type]
    show_run(osprey, run, as_json=as_json)


@runs_app.command("cancel")
def cancel(ctx: typer.Context, run_id: str,
           reason: str | None = typer.Option(None, "--reason", "-r"),
           user: str | None = typer.Option(None, "--user", "-u")) -> None:
    """Cancel a paused or interrupted run; its pending approval is withdrawn."""
    run = cli_state(ctx).osprey().cancel(run_id, user=user, interface="cli", reason=reason)
    typer.echo(f"run {run.id} {run.state}")
