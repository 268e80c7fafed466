"""``osprey chat``: an interactive session with approvals answered inline."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from osprey_core.cli.render import show_approval
from osprey_core.cli.state import cli_state
from osprey_core.errors import OspreyError
from osprey_core.run_machine import PAUSED, RunState

if TYPE_CHECKING:  # runtime imports wait for use: every `osprey` call loads this module
    from osprey_core.api import Osprey
    from osprey_core.models import RunRecord

PROMPT = "approve? [yes/no/show/edit] "
YES, NO = {"y", "yes", "approve"}, {"n", "no", "reject"}


def chat(
    ctx: typer.Context,
    session: str = typer.Option("chat", "--session", "-s", help="Conversation/thread id."),
    user: str | None = typer.Option(None, "--user", "-u", help="Who is asking (audit)."),
    planning: bool = typer.Option(False, "--planning", help="Review every plan first."),
) -> None:
    """Talk to the agent; approval requests are answered inline (yes / no / show / edit)."""
    osprey = cli_state(ctx).osprey()
    typer.echo("osprey chat: type a request ('/planning ...' to review the plan first), "
               "'exit' to leave. Unanswered approvals stay pending.")
    while (line := _ask("you> ")) is not None:
        if line.strip().lower() in {"exit", "quit"}:
            break
        if not line.strip():
            continue
        try:
            run = osprey.run(line, session=session, user=user, planning=planning or None,
                             interface="chat")
            run = settle(osprey, run, user=user, ask=_ask)
        except OspreyError as exc:
            typer.echo(f"error: {exc}")
            continue
        _report(run)


def settle(osprey: Osprey, run: RunRecord, *, user: str | None,
           ask: Callable[[str], str | None]) -> RunRecord:
    """Answer approval requests until the run ends or the operator walks away."""
    while run.state in PAUSED and run.approval_id:
        approval = osprey.approval(run.approval_id)
        show_approval(approval)
        answer = ask(PROMPT)
        if answer is None:
            typer.echo(f"left pending; decide later with: osprey approvals approve {approval.id}")
            return run
        choice = answer.strip().lower()
        if choice in YES:
            run = osprey.approve(approval.id, user=user, interface="chat", session=run.session)
        elif choice in NO:
            reason = ask("reason (optional)> ") or None
            run = osprey.reject(approval.id, user=user, interface="chat", reason=reason,
                                session=run.session)
        elif choice == "show":
            typer.echo(json.dumps(approval.artifact, indent=2))
        elif choice == "edit" and approval.kind == "plan":
            _edit(osprey, approval.id, run.session, user, ask)
            run = osprey.get_run(run.id)
        else:
            typer.echo("Please answer yes, no, show or edit. Nothing was decided.")
    return run


def _edit(osprey: Osprey, approval_id: str, session: str, user: str | None,
          ask: Callable[[str], str | None]) -> None:
    path = ask(f"edit {osprey.plan_file(osprey.approval(approval_id).run_id)} or a copy, "
               "then give its path (empty to keep the plan)> ")
    if not path:
        return
    try:
        data = json.loads(Path(path).expanduser().read_text(encoding="utf-8"))
        osprey.edit(approval_id, data, user=user, interface="chat", session=session)
    except (OSError, json.JSONDecodeError, OspreyError) as exc:
        typer.echo(f"edit refused, the plan is unchanged: {exc}")


def _report(run: RunRecord) -> None:
    if run.state is RunState.DONE:
        typer.echo(f"osprey> {run.response}")
    elif run.state not in PAUSED:
        typer.echo(f"osprey> run {run.state}: {run.error or ''}")


def _ask(prompt: str) -> str | None:
    try:
        return input(prompt)
    except EOFError:
        return None
