"""The web console: approvals, runs and channel values for the people in the control room.

Server-rendered pages (Jinja2, autoescaped) over the app's one ``Osprey``; a small script
(``static/console.js``) adds expiry countdowns and live updates through the API's event
stream. Sign-in, sessions and CSRF are :mod:`osprey_core.service.auth`'s; decisions go
through the same function as ``POST /api/v1/approvals/{id}/...``, with the interface
``console``. No route here is part of the JSON API's schema.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader, StrictUndefined

from osprey_core.display.text import when
from osprey_core.errors import OspreyError
from osprey_core.run_machine import PAUSED
from osprey_core.service import console_views as views
from osprey_core.service.api_runs import answer_text
from osprey_core.service.auth import (
    Identity,
    check_csrf,
    console_session,
    csrf_token,
    end_console_session,
    identity,
    set_csrf_cookie,
    signin_csrf,
)
from osprey_core.service.context import ServiceState, service_state
from osprey_core.service.decisions import decide, duty_conflict, missing_role
from osprey_core.service.decisions import edit as edit_approval
from osprey_core.service.errors import ServiceError, from_osprey_error
from osprey_core.store_errors import StoreStorageError

if TYPE_CHECKING:
    from osprey_core.control.types import ReadBatch
    from osprey_core.models import ApprovalRecord

HERE = Path(__file__).parent
#: Decisions made here are audited as made through the console.
INTERFACE = "console"
#: Most channels one read of the channel page asks for.
MAX_CHANNELS = 20
#: Newest runs the runs page lists.
RUNS_SHOWN = 100
#: Messages a redirect may show, by code (a query string never carries free text).
NOTICES = {
    "approved": "Approved: the run went on (its state is below).",
    "rejected": "Rejected. The run is cancelled and will not be replanned.",
    "edited": "Your edit was analysed; it needs approval again (below).",
    "signed-out": "Signed out.",
}

#: Every page: never cached (decisions must see the present), nothing but this server's own
#: files, and never inside another site's frame (no click on Approve through a disguise).
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'self'; img-src 'self'; object-src 'none'; "
                               "base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}

router = APIRouter(include_in_schema=False)
router.mount("/console/static", StaticFiles(directory=HERE / "static"), name="console_static")
_environment = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=True,
                           undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
_environment.globals.update(when=when, first_line=views.first_line, paused=PAUSED)
templates = Jinja2Templates(env=_environment)


async def _who(request: Request, state: ServiceState, *,
               fragment: bool = False) -> Identity | Response:
    """The signed-in identity; else the answer to send instead: the sign-in page (a page)
    or a bare 401 (a fragment, which the script answers by reloading), or the refusal
    (a state-changing request without its CSRF token)."""
    try:
        return await identity(request, state)
    except ServiceError as error:
        if error.status == 401:
            if fragment:
                return Response(status_code=401, headers={"Cache-Control": "no-store"})
            return _signin_redirect(request)
        return _page(request, "error.html", None, status=error.status,
                     title="Refused", problem=error.message)


def _page(request: Request, name: str, who: Identity | None, *, status: int = 200,
          **context: Any) -> HTMLResponse:
    notice = NOTICES.get(request.query_params.get("notice", ""))
    # The server's clock: countdowns count against it, not against the browser's.
    now = service_state(request).osprey.runtime.now()
    base = {"identity": who, "roles": sorted(who.roles) if who else [],
            "csrf_token": csrf_token(request), "notice": notice, "problem": None,
            "section": "", "server_now": now.isoformat()}
    return templates.TemplateResponse(request, name, {**base, **context}, status_code=status,
                                       headers=PAGE_HEADERS)


def _signin_redirect(request: Request) -> RedirectResponse:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"{request.url_for('console_signin_page').path}"
                            f"?next={quote(target)}", status_code=303)


def _approve_refusal(state: ServiceState, who: Identity,
                     approval: ApprovalRecord) -> str | None:
    """Why the server would refuse ``who``'s approval (shown at the disabled button)."""
    reason = missing_role(who) or duty_conflict(state, who, approval)
    return f"You cannot approve this: {reason}." if reason else None


def artifact_path(run_id: str, name: str) -> str:
    """Where the API serves one of a run's execution artifacts."""
    return f"/api/v1/runs/{quote(run_id)}/artifacts/{quote(name)}"


# -- entry, sign-in, sign-out ------------------------------------------------------------


@router.get("/")
async def root(request: Request) -> RedirectResponse:
    """A person opening the server's address lands in the console."""
    return RedirectResponse(request.url_for("console_approvals").path, status_code=307)


@router.get("/console", name="console_home")
@router.get("/console/", name="console_home_slash")
async def home(request: Request) -> RedirectResponse:
    return RedirectResponse(request.url_for("console_approvals").path, status_code=307)


def _safe_next(target: str | None) -> str | None:
    """Only a path inside the console: sign-in never redirects to another site."""
    if not target:
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path.startswith("/console/"):
        return None
    return target


@router.get("/console/signin", name="console_signin_page")
async def signin_page(request: Request, next: str | None = None) -> Response:
    return _signin_form(request, _safe_next(next))


def _signin_form(request: Request, next_url: str | None, *, status: int = 200,
                 problem: str | None = None) -> Response:
    """The sign-in form with its CSRF token (cookie and field)."""
    token = signin_csrf(request)
    page = _page(request, "signin.html", None, status=status, problem=problem,
                 csrf_token=token, next_url=next_url or "")
    set_csrf_cookie(request, page, token)
    return page


@router.post("/console/signin", name="console_signin")
async def signin(request: Request, token: str = Form(...), next: str = Form("")) -> Response:
    """Checks the form's CSRF token, then the API token; sets the session cookie."""
    target = _safe_next(next) or request.url_for("console_approvals").path
    response = RedirectResponse(target, status_code=303)
    try:
        await check_csrf(request)
        console_session(request, response, token)
    except ServiceError as error:
        return _signin_form(request, _safe_next(next), status=error.status,
                            problem=f"Not signed in: {error.message}.")
    return response


@router.post("/console/signout", name="console_signout")
async def signout(request: Request, state: ServiceState = Depends(service_state)) -> Response:
    """Ends the session (the CSRF token is checked: no page elsewhere can sign you out)."""
    who = await _who(request, state)
    if not isinstance(who, Identity):
        return who
    response = RedirectResponse(
        f"{request.url_for('console_signin_page').path}?notice=signed-out", status_code=303)
    end_console_session(response)
    return response


# -- approvals ---------------------------------------------------------------------------


def _pending(state: ServiceState) -> list[ApprovalRecord]:
    """Requests still open, oldest first: a store read (no run lock), leaving out any
    whose time ran out (the next call that moves runs marks them expired)."""
    from osprey_core.models import ApprovalStatus

    now = state.osprey.runtime.now()
    return [approval for approval in state.osprey.approvals(status=ApprovalStatus.PENDING)
            if approval.expires_at > now]


async def _view(request: Request, state: ServiceState, template: str,
                context: Callable[[], dict[str, Any]], *, fragment: bool = False) -> Response:
    """``template`` for the signed-in person, with ``context`` computed once they are."""
    who = await _who(request, state, fragment=fragment)
    if not isinstance(who, Identity):
        return who
    return _page(request, template, who, **await state.read(context))


@router.get("/console/approvals", name="console_approvals")
async def approvals_page(request: Request,
                         state: ServiceState = Depends(service_state)) -> Response:
    return await _view(request, state, "approvals.html",
                       lambda: {"section": "approvals", "pending": _pending(state)})


@router.get("/console/fragments/approvals", name="console_approvals_fragment")
async def approvals_fragment(request: Request,
                             state: ServiceState = Depends(service_state)) -> Response:
    """The pending list alone, for the live update of the approvals page."""
    return await _view(request, state, "_approvals.html",
                       lambda: {"pending": _pending(state)}, fragment=True)


def _problem_page(request: Request, who: Identity, status: int, title: str) -> HTMLResponse:
    return _page(request, "error.html", who, status=status, title=title, problem=title)


async def _read(state: ServiceState, names: list[str]) -> ReadBatch:
    """One read of ``names`` through the configured control system, within its timeouts;
    a failure is reported per channel, never as a broken page."""
    from osprey_core.control.capabilities import deadline
    from osprey_core.control.types import ReadBatch

    system = state.osprey.runtime.control_system
    try:
        return await asyncio.wait_for(system.read_many(names), deadline(system))
    except Exception as exc:
        problem = exc if str(exc) else TimeoutError("no answer in time")
        return ReadBatch(errors=dict.fromkeys(names, problem))


def _edit_text(approval: ApprovalRecord, code: views.CodeView | None) -> tuple[str, str]:
    """What the edit box starts with, and its label."""
    if code is not None:
        return code.code, "Edit the code"
    what = "the plan" if approval.kind == "plan" else "the artifact"
    return json.dumps(approval.artifact, indent=2, ensure_ascii=False), f"Edit {what} (JSON)"


async def _approval_page(request: Request, state: ServiceState, who: Identity,
                         approval_id: str, *, status: int = 200,
                         problem: str | None = None) -> HTMLResponse:
    osprey = state.osprey
    try:
        approval = osprey.approval(approval_id)
        if approval.status == "pending" and approval.expires_at <= osprey.runtime.now():
            async with state.driving():  # mark it expired, so it shows as it is
                await osprey.arefresh()
            approval = osprey.approval(approval_id)
    except OspreyError:
        return _problem_page(request, who, 404, f"No approval {approval_id!r}")
    code = views.code_view(approval.artifact) if "code" in approval.artifact else None
    limits_for = osprey.runtime.control_system.limits_for
    entries = views.write_entries(approval, limits_for)
    writes: list[views.WriteView] = []
    if entries:
        channels = list(dict.fromkeys(str(entry["channel"]) for entry in entries))
        writes = views.write_views(entries, await _read(state, channels), limits_for)
    pending = approval.status == "pending"
    edit_text, edit_label = _edit_text(approval, code)
    return _page(
        request, "approval.html", who, status=status, problem=problem, section="approvals",
        approval=approval, run=osprey.get_run(approval.run_id), code=code, writes=writes,
        steps=views.plan_steps(approval.artifact) if approval.kind == "plan" else [],
        show_status=False, artifact_json=json.dumps(approval.artifact, indent=2,
                                                    ensure_ascii=False),
        refusal=_approve_refusal(state, who, approval) if pending else None,
        decide_refusal=missing_role(who),
        edit_text=edit_text if pending and osprey.editable(approval) else None,
        edit_label=edit_label)


@router.get("/console/approvals/{approval_id}", name="console_approval")
async def approval_page(request: Request, approval_id: str,
                        state: ServiceState = Depends(service_state)) -> Response:
    who = await _who(request, state)
    if not isinstance(who, Identity):
        return who
    return await _approval_page(request, state, who, approval_id)


async def _decided(request: Request, state: ServiceState, who: Identity, approval_id: str,
                   attempt: Coroutine[Any, Any, Any], verb: str) -> tuple[Any, Response | None]:
    """Run a decision; a refusal shows the approval page again with the reason."""
    try:
        async with state.driving():
            return await attempt, None
    except OspreyError as exc:
        error = from_osprey_error(exc)
    except ServiceError as exc:
        error = exc
    page = await _approval_page(request, state, who, approval_id, status=error.status,
                                problem=f"Not {verb}: {error.message}")
    return None, page


def _after(request: Request, name: str, notice: str, **params: str) -> RedirectResponse:
    return RedirectResponse(f"{request.url_for(name, **params).path}?notice={notice}",
                            status_code=303)


@router.post("/console/approvals/{approval_id}/approve", name="console_approve")
async def approve(request: Request, approval_id: str, sha256: str = Form(...),
                  reason: str = Form(""),
                  state: ServiceState = Depends(service_state)) -> Response:
    """Approve the artifact the page showed (its sha256 came with the form)."""
    return await _decision(request, state, approval_id, sha256, reason, approve=True)


@router.post("/console/approvals/{approval_id}/reject", name="console_reject")
async def reject(request: Request, approval_id: str, sha256: str = Form(...),
                 reason: str = Form(""),
                 state: ServiceState = Depends(service_state)) -> Response:
    """Reject with a reason (required here: the audit log says why a run was stopped)."""
    return await _decision(request, state, approval_id, sha256, reason, approve=False)


async def _decision(request: Request, state: ServiceState, approval_id: str, sha256: str,
                    reason: str, *, approve: bool) -> Response:
    who = await _who(request, state)
    if not isinstance(who, Identity):
        return who
    verb = "approved" if approve else "rejected"
    if not approve and not reason.strip():
        return await _approval_page(request, state, who, approval_id, status=422,
                                    problem="Not rejected: give a reason for rejecting.")
    run, refused = await _decided(request, state, who, approval_id, decide(
        state, who, approval_id, approve=approve, interface=INTERFACE,
        reason=reason.strip() or None, sha256=sha256), verb)
    return refused or _after(request, "console_run", verb, run_id=run.id)


@router.post("/console/approvals/{approval_id}/edit", name="console_edit")
async def edit(request: Request, approval_id: str, sha256: str = Form(...),
               artifact: str = Form(...),
               state: ServiceState = Depends(service_state)) -> Response:
    """Replace the code or plan; the edit is analysed and waits for its own approval."""
    who = await _who(request, state)
    if not isinstance(who, Identity):
        return who
    try:
        original = state.osprey.approval(approval_id)
    except OspreyError:
        return _problem_page(request, who, 404, f"No approval {approval_id!r}")
    if "code" in original.artifact:
        data: Any = {"code": artifact}
    else:
        try:
            data = json.loads(artifact)
        except json.JSONDecodeError as exc:
            return await _approval_page(
                request, state, who, approval_id, status=422,
                problem=f"Not edited: line {exc.lineno}, column {exc.colno}: not valid "
                        f"JSON: {exc.msg}. Nothing changed.")
    new, refused = await _decided(request, state, who, approval_id, edit_approval(
        state, who, approval_id, data, interface=INTERFACE, sha256=sha256), "edited")
    return refused or _after(request, "console_approval", "edited", approval_id=new.id)


# -- runs --------------------------------------------------------------------------------


@router.get("/console/runs", name="console_runs")
async def runs_page(request: Request,
                    state: ServiceState = Depends(service_state)) -> Response:
    return await _view(request, state, "runs.html", lambda: {
        "section": "runs", "runs": state.osprey.runs(limit=RUNS_SHOWN)})


@router.get("/console/fragments/runs", name="console_runs_fragment")
async def runs_fragment(request: Request,
                        state: ServiceState = Depends(service_state)) -> Response:
    """The runs list alone, for the live update of the runs page."""
    return await _view(request, state, "_runs.html",
                       lambda: {"runs": state.osprey.runs(limit=RUNS_SHOWN)}, fragment=True)


def _run_context(state: ServiceState, run_id: str) -> dict[str, Any] | None:
    osprey = state.osprey
    try:
        run = osprey.get_run(run_id)
    except StoreStorageError:
        raise  # the store cannot answer (503), which says nothing about the run
    except OspreyError:
        return None
    records = osprey.steps(run.id)
    plan = run.plan.model_dump(mode="json") if run.plan else None
    return {"run": run, "steps": views.plan_steps(plan, records), "show_status": True,
            "answer": answer_text(osprey, run) or "",
            "artifacts": views.execution_artifacts(run),
            "artifact_url": lambda name: artifact_path(run.id, name),
            "approvals": osprey.approvals(run_id=run.id),
            "events": views.event_views(osprey.events(run.id))}


@router.get("/console/runs/{run_id}", name="console_run")
async def run_page(request: Request, run_id: str,
                   state: ServiceState = Depends(service_state)) -> Response:
    who = await _who(request, state)
    if not isinstance(who, Identity):
        return who
    context = await state.read(lambda: _run_context(state, run_id))
    if context is None:
        return _problem_page(request, who, 404, f"No run {run_id!r}")
    return _page(request, "run.html", who, section="runs", **context)


@router.get("/console/fragments/runs/{run_id}", name="console_run_fragment")
async def run_fragment(request: Request, run_id: str,
                       state: ServiceState = Depends(service_state)) -> Response:
    who = await _who(request, state, fragment=True)
    if not isinstance(who, Identity):
        return who
    context = await state.read(lambda: _run_context(state, run_id))
    if context is None:
        return Response(status_code=404)
    return _page(request, "_run.html", who, **context)


# -- channels ----------------------------------------------------------------------------


@router.get("/console/channels", name="console_channels")
async def channels_page(request: Request, names: str = "",
                        state: ServiceState = Depends(service_state)) -> Response:
    who = await _who(request, state)
    if not isinstance(who, Identity):
        return who
    wanted = views.channel_names(names)
    context: dict[str, Any] = {"section": "channels", "names_text": " ".join(wanted),
                               "max_channels": MAX_CHANNELS, "readings": [], "read_at": "",
                               "connector": state.osprey.runtime.control_system.connector.name}
    if len(wanted) > MAX_CHANNELS:
        return _page(request, "channels.html", who, status=422, **context,
                     problem=f"{len(wanted)} channels asked; read at most {MAX_CHANNELS} "
                             "at a time.")
    if wanted:
        batch = await _read(state, wanted)
        context.update(readings=views.reading_views(wanted, batch),
                       read_at=when(datetime.now(UTC), millis=True))
    return _page(request, "channels.html", who, **context)
