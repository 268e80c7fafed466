"""How runs and approvals look on the terminal, shared by every command that shows them."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer

from osprey_core.cli.output import print_json
from osprey_core.run_machine import PAUSED, RunState

if TYPE_CHECKING:
    from osprey_core.api import Osprey
    from osprey_core.models import ApprovalRecord, RunRecord

EXIT_AWAITING_APPROVAL = 3


def run_exit_code(run: RunRecord) -> int:
    """0 done, 3 waiting for a human, 1 anything else (failed, rejected, expired, ...)."""
    if run.state is RunState.DONE:
        return 0
    return EXIT_AWAITING_APPROVAL if run.state in PAUSED else 1


def run_payload(osprey: Osprey, run: RunRecord) -> dict[str, Any]:
    payload: dict[str, Any] = run.model_dump(mode="json", exclude={"owner_pid", "owner_boot"})
    if run.state in PAUSED and run.approval_id:
        payload["approval"] = osprey.approval(run.approval_id).model_dump(mode="json")
    return payload


def show_run(osprey: Osprey, run: RunRecord, *, as_json: bool) -> None:
    """Print the outcome and exit with the run's code."""
    if as_json:
        print_json(run_payload(osprey, run))
    elif run.state is RunState.DONE:
        typer.echo(run.response or "")
    elif run.state in PAUSED and run.approval_id:
        show_approval(osprey.approval(run.approval_id))
        typer.echo(f"\nrun {run.id} is waiting for approval {run.approval_id}. Decide with:")
        typer.echo(f"  osprey approvals approve {run.approval_id} [--reason TEXT]")
        typer.echo(f"  osprey approvals reject {run.approval_id} [--reason TEXT]")
    else:
        typer.echo(f"run {run.id} {run.state}: {run.error or 'no details'}", err=True)
    raise typer.Exit(run_exit_code(run))


def show_approval(approval: ApprovalRecord) -> None:
    typer.echo(f"approval {approval.id} ({approval.action}, run {approval.run_id}, "
               f"{approval.status})")
    typer.echo(approval.summary)
    for reason in approval.reasons:
        typer.echo(f"  why: {reason}")
    typer.echo(f"sha256 {approval.artifact_sha256}; "
               f"expires {approval.expires_at:%Y-%m-%d %H:%M:%S %Z}")
