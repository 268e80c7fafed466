"""``osprey runs``: list, inspect, resume and cancel runs."""

from __future__ import annotations

import enum
import json
from typing import TYPE_CHECKING, Any

import typer

from osprey_core.cli.output import print_json, print_table
from osprey_core.cli.render import run_payload, show_answer, show_run
from osprey_core.cli.state import cli_state
from osprey_core.run_machine import PAUSED, TERMINAL, RunState

if TYPE_CHECKING:
    from osprey_core.api import Osprey
    from osprey_core.models import RunRecord

runs_app = typer.Typer(help="List, inspect, resume and cancel runs.", no_args_is_help=True)

RUN_ID = typer.Argument(..., metavar="RUN_ID", help="e.g. run-0123456789ab")
USER = typer.Option(None, "--user", "-u", help="Who acts (default: your login name).")
JSON = typer.Option(False, "--json", help="Print JSON.")


class Indeterminate(enum.StrEnum):
    """What an operator found out about a side-effecting step a crash caught mid-way."""

    APPLIED = "applied"
    NOT_APPLIED = "not_applied"


@runs_app.command("list")
def list_runs(
    ctx: typer.Context,
    session: str | None = typer.Option(None, "--session", "-s", help="Only this session."),
    state: list[RunState] | None = typer.Option(None, "--state", help="Only runs in this "
                                                "state (repeatable)."),
    limit: int = typer.Option(50, "--limit", min=1, help="At most this many runs."),
    as_json: bool = JSON,
) -> None:
    """List runs, newest first."""
    osprey = cli_state(ctx).osprey()
    osprey.refresh()  # runs whose process died show as interrupted
    runs = osprey.runs(session=session, states=set(state) if state else None, limit=limit)
    if as_json:
        print_json([run_payload(osprey, run) for run in runs])
        return
    from osprey_core.display.text import clipped, when

    rows = [(run.id, run.state, run.session, run.user, when(run.created_at),
             (run.approval_id or "") if run.state in PAUSED else "",
             clipped(run.query, 60)) for run in runs]
    print_table("runs", ("id", "state", "session", "user", "created", "waiting for",
                         "request"), rows)


@runs_app.command("show")
def show(ctx: typer.Context, run_id: str = RUN_ID,
         events: bool = typer.Option(False, "--events", help="Also list the run's events."),
         as_json: bool = JSON) -> None:
    """Show a run: state, plan, steps, approvals and (with --events) everything that happened."""
    osprey = cli_state(ctx).osprey()
    osprey.refresh()
    run = osprey.get_run(run_id)
    steps = osprey.steps(run_id)
    approvals = osprey.approvals(run_id=run_id)
    history = osprey.events(run_id) if events else []
    if as_json:
        payload = run_payload(osprey, run)
        payload["steps"] = [step.model_dump(mode="json") for step in steps]
        payload["approvals"] = [approval.model_dump(mode="json") for approval in approvals]
        if events:
            payload["events"] = [event.model_dump(mode="json") for event in history]
        print_json(payload)
        return
    from osprey_core.display.text import when

    _describe(osprey, run, {step.index: str(step.status) for step in steps})
    for approval in approvals:
        by = f" by {approval.decided_by}" if approval.decided_by else ""
        typer.echo(f"approval {approval.id} ({approval.action}): {approval.status}{by}")
    if history:
        typer.echo("events:")
    for event in history:
        typer.echo(f"  {when(event.at)} {event.kind} {_json(event.data)}")


@runs_app.command("resume")
def resume(
    ctx: typer.Context, run_id: str = RUN_ID,
    indeterminate: Indeterminate | None = typer.Option(
        None, "--indeterminate", case_sensitive=False,
        help="For a side-effecting step a crash caught mid-way, after checking the machine: "
        "'applied' (it took effect: treat it as done) or 'not_applied' (run it again, "
        "asking for approval again if the policy wants one)."),
    user: str | None = USER,
    as_json: bool = JSON,
) -> None:
    """Resume an interrupted run; finished steps never run again.

    Exit 0 when the run is done, 3 when it waits for approval, 1 otherwise.
    """
    osprey = cli_state(ctx).osprey()
    from osprey_core.cli.progress import driving

    run = driving(osprey, lambda: osprey.resume(
        run_id, user=user, interface="cli",
        indeterminate=None if indeterminate is None else indeterminate.value))
    show_run(osprey, run, as_json=as_json)


@runs_app.command("cancel")
def cancel(ctx: typer.Context, run_id: str = RUN_ID,
           reason: str | None = typer.Option(None, "--reason", "-r",
                                             help="Why (kept in the audit log)."),
           user: str | None = USER, as_json: bool = JSON) -> None:
    """Cancel a paused or interrupted run; its pending approval is withdrawn."""
    osprey = cli_state(ctx).osprey()
    waiting_for = osprey.get_run(run_id).approval_id
    run = osprey.cancel(run_id, user=user, interface="cli", reason=reason)
    if as_json:
        print_json(run_payload(osprey, run))
        return
    typer.echo(f"run {run.id} {run.state}")
    if waiting_for is not None and osprey.approval(waiting_for).status == "withdrawn":
        typer.echo(f"approval {waiting_for} withdrawn")


def _describe(osprey: Osprey, run: RunRecord, status: dict[int, str]) -> None:
    from osprey_core.display.text import arguments, when

    typer.echo(f"run {run.id}: {run.state}")
    typer.echo(f"  session {run.session}, user {run.user}, via {run.interface}, "
               f"planning mode {'on' if run.planning else 'off'}")
    typer.echo(f"  created {when(run.created_at)}, updated {when(run.updated_at)}")
    typer.echo(f"request: {run.query}")
    if run.plan is not None:
        typer.echo(f"plan (sha256 {run.plan_sha256}, file {osprey.plan_file(run.id)}):")
        not_started = "not run" if run.state in TERMINAL else "pending"
        for index, step in enumerate(run.plan.steps):
            inputs = f"reads {', '.join(step.inputs)}" if step.inputs else ""
            what = " ".join(part for part in (step.capability, arguments(step.parameters),
                                              inputs) if part)
            typer.echo(f"  {index + 1}. [{status.get(index, not_started)}] {what} -> "
                       f"{step.output}")
    if run.state is RunState.DONE:
        typer.echo("answer:")
        show_answer(osprey, run)
    elif run.response:
        typer.echo(f"response: {run.response}")
    if run.error:
        typer.echo(f"error: {run.error}")


def _json(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, default=str, separators=(",", ":"))
