"""``osprey approvals``: list, inspect and decide approval requests."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from osprey_core.cli.output import print_json, print_table
from osprey_core.cli.render import show_approval, show_run
from osprey_core.cli.state import cli_state
from osprey_core.errors import OspreyError

approvals_app = typer.Typer(help="List, inspect and decide approval requests.",
                            no_args_is_help=True)

REASON = typer.Option(None, "--reason", "-r", help="Why (kept in the audit log).")
USER = typer.Option(None, "--user", "-u", help="Who decides (default: login name).")
SESSION = typer.Option(None, "--session", "-s", help="Refuse unless the request belongs to "
                       "this session.")


@approvals_app.command("list")
def list_approvals(
    ctx: typer.Context,
    pending: bool = typer.Option(False, "--pending", help="Only requests awaiting a decision."),
    session: str | None = typer.Option(None, "--session", "-s"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """List approval requests, newest last."""
    from osprey_core.models import ApprovalStatus

    osprey = cli_state(ctx).osprey()
    osprey.refresh()
    records = osprey.approvals(status=ApprovalStatus.PENDING if pending else None,
                               session=session)
    if as_json:
        print_json([record.model_dump(mode="json") for record in records])
        return
    rows = [(r.id, r.status, r.action, r.run_id, r.session, r.requested_by,
             f"{r.expires_at:%Y-%m-%d %H:%M}", r.decided_by or "") for r in records]
    print_table("approvals", ("id", "status", "kind", "run", "session", "asked by", "expires",
                              "decided by"), rows)


@approvals_app.command("show")
def show(ctx: typer.Context, approval_id: str,
         as_json: bool = typer.Option(False, "--json")) -> None:
    """Show one request: summary, reasons, the exact artifact and its hash."""
    approval = cli_state(ctx).osprey().approval(approval_id)
    if as_json:
        print_json(approval.model_dump(mode="json"))
        return
    show_approval(approval)
    typer.echo("artifact:")
    typer.echo(json.dumps(approval.artifact, indent=2))


@approvals_app.command("approve")
def approve(ctx: typer.Context, approval_id: str, reason: str | None = REASON,
            user: str | None = USER, session: str | None = SESSION,
            as_json: bool = typer.Option(False, "--json")) -> None:
    """Approve exactly the stored artifact and continue the run."""
    osprey = cli_state(ctx).osprey()
    run = osprey.approve(approval_id, user=user, interface="cli", reason=reason,
                         session=session)
    show_run(osprey, run, as_json=as_json)


@approvals_app.command("reject")
def reject(ctx: typer.Context, approval_id: str, reason: str | None = REASON,
           user: str | None = USER, session: str | None = SESSION) -> None:
    """Reject: the run ends as rejected and is never replanned."""
    osprey = cli_state(ctx).osprey()
    run = osprey.reject(approval_id, user=user, interface="cli", reason=reason,
                        session=session)
    typer.echo(f"rejected {approval_id}; run {run.id} is {run.state}")


@approvals_app.command("edit")
def edit(ctx: typer.Context, approval_id: str,
         plan_file: Path = typer.Argument(..., exists=True, dir_okay=False,
                                          help="Edited plan (JSON)."),
         user: str | None = USER, session: str | None = SESSION) -> None:
    """Replace a pending plan with an edited one; it is validated and needs a new approval."""
    try:
        data = json.loads(plan_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise OspreyError(f"{plan_file}: not a readable JSON plan: {exc}") from None
    osprey = cli_state(ctx).osprey()
    approval = osprey.edit(approval_id, data, user=user, interface="cli", session=session)
    show_approval(approval)
    typer.echo(f"\n{approval_id} is superseded; approve the edited plan with:")
    typer.echo(f"  osprey approvals approve {approval.id}")
    raise typer.Exit(3)
