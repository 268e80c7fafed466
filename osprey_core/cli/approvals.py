"""``osprey approvals``: list, inspect and decide approval requests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from osprey_core.cli.output import print_json, print_table
from osprey_core.cli.render import EXIT_AWAITING_APPROVAL, show_approval, show_artifact, show_run
from osprey_core.cli.state import cli_state
from osprey_core.errors import OspreyError

if TYPE_CHECKING:
    from osprey_core.api import Osprey
    from osprey_core.service.client import RemoteOsprey

approvals_app = typer.Typer(help="List, inspect and decide approval requests.",
                            no_args_is_help=True)

APPROVAL_ID = typer.Argument(..., metavar="APPROVAL_ID", help="e.g. apv-0123456789ab")
REASON = typer.Option(None, "--reason", "-r", help="Why (kept in the audit log).")
USER = typer.Option(None, "--user", "-u", help="Who decides (default: your login name).")
SESSION = typer.Option(None, "--session", "-s", help="Refuse unless the request belongs to "
                       "this session.")
JSON = typer.Option(False, "--json", help="Print JSON.")
SERVER = typer.Option(None, "--server", envvar="OSPREY_SERVER", metavar="URL",
                      help="Work on the approvals of an 'osprey serve' at URL instead of the "
                      "local store; the API token is read from OSPREY_TOKEN.")


def _remote(ctx: typer.Context, server: str | None,
            user: str | None = None) -> RemoteOsprey | None:
    """The server's client when ``--server`` (or ``OSPREY_SERVER``) is given, else
    ``None``. The server knows who decides from the token, so ``--user`` does not apply."""
    if server is None:
        return None
    if user is not None:
        raise typer.BadParameter("the server knows who decides from the token in "
                                 "OSPREY_TOKEN; --user applies to the local store only",
                                 param_hint="--user")
    from osprey_core.service.client import RemoteOsprey

    remote = RemoteOsprey.from_env(server, host=cli_state(ctx).host)
    ctx.call_on_close(remote.close)
    return remote


def _records(ctx: typer.Context, server: str | None) -> Osprey | RemoteOsprey:
    """The server's approvals with ``--server`` (no local database is opened), else the
    local store's."""
    return _remote(ctx, server) or cli_state(ctx).osprey()


@approvals_app.command("list")
def list_approvals(
    ctx: typer.Context,
    pending: bool = typer.Option(False, "--pending", help="Only requests awaiting a decision."),
    session: str | None = typer.Option(None, "--session", "-s", help="Only this session."),
    run_id: str | None = typer.Option(None, "--run", help="Only this run's requests."),
    as_json: bool = JSON,
    server: str | None = SERVER,
) -> None:
    """List approval requests, oldest first."""
    from osprey_core.models import ApprovalStatus

    osprey = _records(ctx, server)
    osprey.refresh()  # overdue requests show as expired, not as pending
    records = osprey.approvals(status=ApprovalStatus.PENDING if pending else None,
                               session=session, run_id=run_id)
    if as_json:
        print_json([record.model_dump(mode="json") for record in records])
        return
    from osprey_core.display.text import when

    rows = [(r.id, r.status, r.action, _first_line(r.summary), r.run_id, r.session,
             r.requested_by, when(r.expires_at, seconds=False), r.decided_by or "")
            for r in records]
    print_table("approvals", ("id", "status", "kind", "summary", "run", "session", "asked by",
                              "expires", "decided by"), rows)


def _first_line(summary: str, width: int = 80) -> str:
    """What the request is about, in one line (``approvals show`` has it all)."""
    lines = [line.strip() for line in summary.splitlines() if line.strip()]
    text = " / ".join(lines[:3]) if lines else ""
    return text if len(text) <= width else text[: width - 1] + "…"


@approvals_app.command("show")
def show(ctx: typer.Context, approval_id: str = APPROVAL_ID, as_json: bool = JSON,
         server: str | None = SERVER) -> None:
    """Show one request: summary, reasons, the exact artifact and its sha256."""
    osprey = _records(ctx, server)
    osprey.refresh()
    approval = osprey.approval(approval_id)
    if as_json:
        print_json(approval.model_dump(mode="json"))
        return
    show_approval(approval)
    show_artifact(approval)


@approvals_app.command("approve")
def approve(ctx: typer.Context, approval_id: str = APPROVAL_ID, reason: str | None = REASON,
            user: str | None = USER, session: str | None = SESSION,
            as_json: bool = JSON, server: str | None = SERVER) -> None:
    """Approve exactly the stored artifact and continue the run.

    Exit 0 when the run is done, 3 when it waits for another approval, 1 otherwise.
    """
    if (remote := _remote(ctx, server, user)) is not None:
        show_run(remote, remote.approve(approval_id, reason=reason, session=session),
                 as_json=as_json)
    osprey = cli_state(ctx).osprey()
    from osprey_core.cli.progress import driving

    run = driving(osprey, lambda: osprey.approve(approval_id, user=user, interface="cli",
                                                 reason=reason, session=session))
    show_run(osprey, run, as_json=as_json)


@approvals_app.command("reject")
def reject(ctx: typer.Context, approval_id: str = APPROVAL_ID, reason: str | None = REASON,
           user: str | None = USER, session: str | None = SESSION,
           as_json: bool = JSON, server: str | None = SERVER) -> None:
    """Reject: the run ends as rejected and is never replanned."""
    from osprey_core.cli.render import run_payload

    osprey: Osprey | RemoteOsprey
    if (remote := _remote(ctx, server, user)) is not None:
        osprey, run = remote, remote.reject(approval_id, reason=reason, session=session)
    else:
        local: Osprey = cli_state(ctx).osprey()
        osprey, run = local, local.reject(approval_id, user=user, interface="cli",
                                          reason=reason, session=session)
    if as_json:
        print_json(run_payload(osprey, run))
    else:
        typer.echo(f"rejected {approval_id}; run {run.id} is {run.state}")


@approvals_app.command("edit")
def edit(ctx: typer.Context, approval_id: str = APPROVAL_ID,
         edited_file: Path = typer.Argument(
             ..., metavar="FILE", exists=True, dir_okay=False,
             help="The edited plan or artifact (JSON); for code approvals a .py file "
                  "replaces the code."),
         user: str | None = USER, session: str | None = SESSION,
         as_json: bool = JSON, server: str | None = SERVER) -> None:
    """Replace a pending plan or editable artifact; it is validated and needs a new approval.

    Exits 3: the edit waits for its own approval. Edit a copy of the stored plan file or
    of the artifact shown by 'osprey approvals show --json': the pending request is bound
    to the exact stored contents.
    """
    from osprey_core.planning import PlanValidationError

    data = read_edit_file(edited_file)
    remote = _remote(ctx, server, user)
    try:
        if remote is not None:
            approval = remote.edit(approval_id, data, session=session)
        else:
            approval = cli_state(ctx).osprey().edit(approval_id, data, user=user,
                                                    interface="cli", session=session)
    except PlanValidationError as exc:
        raise OspreyError(f"{edited_file}: {exc}\nNothing changed: {approval_id} is still "
                          "pending.") from None
    if as_json:
        print_json(approval.model_dump(mode="json"))
    else:
        show_approval(approval)
        typer.echo(f"\n{approval_id} is superseded; decide on the edited {approval.action} "
                   "with:")
        typer.echo(f"  osprey approvals approve {approval.id} [--reason TEXT]")
        typer.echo(f"  osprey approvals reject {approval.id} [--reason TEXT]")
    raise typer.Exit(EXIT_AWAITING_APPROVAL)


def read_edit_file(path: Path) -> Any:
    """An operator's edit: new code from a ``.py`` file, else a plan or artifact as JSON."""
    if path.suffix == ".py":
        return {"code": read_text_file(path, "code", "Python source")}
    return read_plan_file(path)


def read_text_file(path: Path, what: str, kind: str) -> str:
    """The UTF-8 text in ``path``, or an error naming the file."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise OspreyError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); "
                          f"a {what} is a {kind} file") from None
    except OSError as exc:
        raise OspreyError(f"{path}: cannot read the {what}: {exc.strerror or exc}") from None


def read_plan_file(path: Path) -> Any:
    """The JSON in ``path``, or an error naming the file and where it went wrong."""
    text = read_text_file(path, "plan", "JSON")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise OspreyError(f"{path}:{exc.lineno}:{exc.colno}: not valid JSON: {exc.msg}") from None
