"""``osprey chat``: an interactive session with approvals answered inline.

Each approval request is shown once, then answered with ``yes``, ``no`` (with an optional
reason), ``show`` (the exact artifact) or, where the request can be edited, ``edit`` (from a
file). Anything else decides nothing and asks again; end of input or Ctrl-C leaves the
request pending in the store and prints how to decide it later. Lines are edited with
readline, and the history is kept in ``<home>/chat_history``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from osprey_core.cli.render import decision_commands, show_answer, show_approval, show_artifact
from osprey_core.cli.state import cli_state
from osprey_core.errors import OspreyError
from osprey_core.replies import NO, YES
from osprey_core.run_machine import PAUSED, RunState

if TYPE_CHECKING:  # runtime imports wait for use: every `osprey` call loads this module
    from osprey_core.api import Osprey
    from osprey_core.models import ApprovalRecord, RunRecord

Ask = Callable[[str], str | None]

HISTORY_FILE = "chat_history"
HISTORY_LENGTH = 1000
QUIT = {"exit", "quit"}


def chat(
    ctx: typer.Context,
    session: str = typer.Option("chat", "--session", "-s", help="Conversation/thread id."),
    user: str | None = typer.Option(None, "--user", "-u", help="Who is asking and deciding, "
                                    "for the audit log (default: your login name)."),
    planning: bool = typer.Option(False, "--planning", help="Review every plan first."),
) -> None:
    """Talk to the agent; approval requests are answered inline (yes / no / show / edit).

    Ctrl-C at an approval prompt leaves the request pending and says how to decide it;
    Ctrl-C while a step runs stops the chat and says how to resume the run.
    """
    from functools import partial

    from osprey_core.cli.progress import driving

    osprey = cli_state(ctx).osprey()
    _history(osprey.config.home / HISTORY_FILE)
    typer.echo("osprey chat: type a request ('/planning ...' to review the plan first), "
               "'exit' to leave. Unanswered approvals stay pending.")
    while True:
        try:
            line = _ask("you> ")
        except KeyboardInterrupt:
            line = None
        if line is None:
            typer.echo()
            break
        text = line.strip()
        if text.lower() in QUIT:
            break
        if not text:
            continue
        try:
            run = driving(osprey, partial(osprey.run, text, session=session, user=user,
                                          planning=planning or None, interface="chat"))
            run = settle(osprey, run, user=user, ask=_ask)
        except OspreyError as exc:
            typer.echo(f"error: {exc}")
            continue
        _report(osprey, run)


def settle(osprey: Osprey, run: RunRecord, *, user: str | None, ask: Ask) -> RunRecord:
    """Answer approval requests until the run ends or the operator walks away."""
    shown: str | None = None
    while run.state in PAUSED and run.approval_id:
        approval = osprey.approval(run.approval_id)
        if approval.id != shown:
            show_approval(approval)
            shown = approval.id
        choices = "yes/no/show/edit" if osprey.editable(approval) else "yes/no/show"
        try:
            answer = ask(f"approve? [{choices}] ")
            if answer is not None:
                run = _answer(osprey, run, approval, answer.strip(), user, ask)
        except KeyboardInterrupt:  # at any of its prompts (a reason, an edit's path)
            answer = None
        except OspreyError as exc:  # expired, decided elsewhere, tampered: say so, look again
            typer.echo(f"error: {exc}")
            run = osprey.get_run(run.id)
        if answer is None:
            typer.echo(f"\nleft pending; decide later with: osprey approvals approve "
                       f"{approval.id} (or reject)")
            for line in decision_commands(osprey, approval):
                typer.echo(f"  {line}")
            return run
    return run


def _answer(osprey: Osprey, run: RunRecord, approval: ApprovalRecord, answer: str,
            user: str | None, ask: Ask) -> RunRecord:
    from osprey_core.cli.progress import driving

    choice = answer.lower()
    if choice in YES:
        return driving(osprey, lambda: osprey.approve(approval.id, user=user, interface="chat",
                                                      session=run.session))
    if choice in NO:
        reason = (ask("reason (optional)> ") or "").strip() or None
        return osprey.reject(approval.id, user=user, interface="chat", reason=reason,
                             session=run.session)
    if choice == "show":
        show_artifact(approval)
    elif choice == "edit" and not osprey.editable(approval):
        typer.echo(f"this {approval.action} approval cannot be edited; approve or reject it. "
                   "Nothing was decided.")
    elif choice == "edit":
        _edit(osprey, approval, user, ask)
        return osprey.get_run(run.id)
    else:
        choices = "yes, no, show or edit" if osprey.editable(approval) else "yes, no or show"
        typer.echo(f"{answer!r} is not an answer: type {choices}. Nothing was decided.")
    return run


def _edit(osprey: Osprey, approval: ApprovalRecord, user: str | None, ask: Ask) -> None:
    from osprey_core.cli.approvals import read_edit_file

    what = "plan" if approval.kind == "plan" else approval.action
    source = (f"a copy of {osprey.plan_file(approval.run_id)} (not the file itself)"
              if approval.kind == "plan" else
              "a .py file with the new code" if "code" in approval.artifact else
              "a JSON copy of the artifact ('show' prints it)")
    path = ask(f"edit {source}, then give its path (empty: keep the {what})> ")
    if not path or not path.strip():
        typer.echo(f"the {what} is unchanged.")
        return
    try:
        data = read_edit_file(Path(path.strip()).expanduser())
        osprey.edit(approval.id, data, user=user, interface="chat", session=approval.session)
    except OspreyError as exc:
        typer.echo(f"edit refused, the {what} is unchanged: {exc}")
        return
    typer.echo(f"{approval.id} is superseded by the edited {what}:")


def _report(osprey: Osprey, run: RunRecord) -> None:
    if run.state is RunState.DONE:
        show_answer(osprey, run, prefix="osprey> ")
    elif run.state not in PAUSED:
        typer.echo(f"osprey> run {run.id} {run.state}: {run.error or 'no details'}")


def _ask(prompt: str) -> str | None:
    """A line from the operator (``None`` at end of input); Ctrl-C propagates."""
    try:
        return input(prompt)
    except EOFError:
        return None


def _history(path: Path) -> None:
    """Line editing and a history kept across sessions, on a terminal with readline."""
    import sys

    if not sys.stdin.isatty():
        return
    try:
        import readline
    except ImportError:  # a Python without readline: plain input() still works
        return
    import atexit
    from contextlib import suppress

    with suppress(OSError):  # no history yet, or unreadable: start a new one
        readline.read_history_file(path)
    readline.set_history_length(HISTORY_LENGTH)

    def save() -> None:
        with suppress(OSError):  # losing the history never stops the chat
            path.parent.mkdir(parents=True, exist_ok=True)
            readline.write_history_file(path)

    atexit.register(save)
