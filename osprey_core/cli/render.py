"""How runs and approvals look on the terminal, shared by every command that shows them.

Exit codes of the commands that move a run (``run``, ``approvals approve``/``edit``,
``runs resume``): 0 the run is done, 3 it waits for a human decision, 4 the agent did not
understand the request and asks to rephrase (a ``clarify`` answer), 1 it ended any other
way (failed, rejected, expired, cancelled).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

import typer

from osprey_core.cli.output import print_json
from osprey_core.run_machine import PAUSED, RunState

if TYPE_CHECKING:
    from pathlib import Path

    from osprey_core.models import ApprovalRecord, RunRecord

class Records(Protocol):
    """What showing a run needs: the local :class:`~osprey_core.Osprey`, or the server's
    records through :class:`~osprey_core.service.client.RemoteOsprey` (``--server``)."""

    @property
    def host(self) -> Any: ...

    def approval(self, approval_id: str) -> ApprovalRecord: ...

    def editable(self, approval: ApprovalRecord) -> bool: ...

    def plan_file(self, run_id: str) -> Path: ...


EXIT_AWAITING_APPROVAL = 3
EXIT_NOT_UNDERSTOOD = 4


def run_exit_code(run: RunRecord) -> int:
    """0 done, 3 waiting for a human, 4 not understood (the answer asks to rephrase),
    1 anything else (failed, rejected, expired, ...)."""
    if run.state is RunState.DONE:
        return EXIT_NOT_UNDERSTOOD if not_understood(run) else 0
    return EXIT_AWAITING_APPROVAL if run.state in PAUSED else 1


def not_understood(run: RunRecord) -> bool:
    """The run ended by asking the user to rephrase (its last step is ``clarify``)."""
    return bool(run.plan and run.plan.steps and run.plan.steps[-1].capability == "clarify")


def show_answer(osprey: Records, run: RunRecord, *, prefix: str = "") -> None:
    """A done run's answer, each result rendered by the capability that made it."""
    from osprey_core.display.console import emit, make_console
    from osprey_core.display.runs import answer, lookup

    console = make_console()
    parts = answer(run, lookup(osprey.host))
    if prefix and parts and isinstance(parts[0], str):
        parts[0] = prefix + parts[0]
    elif prefix:
        emit(prefix.rstrip(), console=console)
    for index, part in enumerate(parts):
        if index and not isinstance(part, str):
            console.line()
        emit(part, console=console)


def run_payload(osprey: Records, run: RunRecord) -> dict[str, Any]:
    """The run as JSON data; a paused run carries the approval request it waits for."""
    payload: dict[str, Any] = run.model_dump(mode="json", exclude={"owner_pid", "owner_boot"})
    payload["approval"] = None
    if run.state in PAUSED and run.approval_id:
        payload["approval"] = osprey.approval(run.approval_id).model_dump(mode="json")
    return payload


def show_run(osprey: Records, run: RunRecord, *, as_json: bool) -> NoReturn:
    """Print the outcome of a run and exit with its code."""
    if as_json:
        print_json(run_payload(osprey, run))
    elif run.state is RunState.DONE:
        show_answer(osprey, run)
    elif run.state in PAUSED and run.approval_id:
        approval = osprey.approval(run.approval_id)
        show_approval(approval)
        typer.echo(f"\nrun {run.id} is waiting for approval {approval.id}. Decide with:")
        for line in decision_commands(osprey, approval):
            typer.echo(f"  {line}")
    else:
        typer.echo(f"run {run.id} {run.state}: {run.error or 'no details'}", err=True)
    raise typer.Exit(run_exit_code(run))


def decision_commands(osprey: Records, approval: ApprovalRecord) -> list[str]:
    """The commands that decide ``approval``, for pasting into a terminal."""
    lines = [f"osprey approvals approve {approval.id} [--reason TEXT]",
             f"osprey approvals reject {approval.id} [--reason TEXT]",
             f"osprey approvals show {approval.id}    (the exact artifact)"]
    if approval.kind == "plan":
        lines.append(f"osprey approvals edit {approval.id} FILE    (FILE: an edited copy of "
                     f"{osprey.plan_file(approval.run_id)})")
    elif osprey.editable(approval):
        what = "the edited code (.py)" if "code" in approval.artifact else (
            "the edited artifact as JSON, from 'approvals show --json'")
        lines.append(f"osprey approvals edit {approval.id} FILE    (FILE: {what})")
    return lines


def show_approval(approval: ApprovalRecord) -> None:
    """Header, summary, why it was asked, and what the decision is bound to."""
    from osprey_core.display.approvals import approval_lines

    for line in approval_lines(approval):
        typer.echo(line)


def show_artifact(approval: ApprovalRecord) -> None:
    """The exact artifact a decision applies to, as stored."""
    typer.echo(f"artifact (sha256 {approval.artifact_sha256}):")
    typer.echo(json.dumps(approval.artifact, indent=2, ensure_ascii=False))
