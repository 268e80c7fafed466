"""Runs: submit, list, show (steps, rendered answer, artifacts), events, resume, cancel."""

from __future__ import annotations

import mimetypes
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from fastapi import APIRouter, Depends, Query
from fastapi.responses import FileResponse
from pydantic import Field

from osprey_core.cli.render import run_payload
from osprey_core.run_machine import RunState
from osprey_core.service.auth import Identity, require
from osprey_core.service.context import ServiceState, service_state
from osprey_core.service.errors import ServiceError, not_found
from osprey_core.service.schemas import (
    Artifact,
    Body,
    Event,
    ReasonRequest,
    Run,
    RunDetail,
    RunRequest,
)
from osprey_core.service.settings import Role

if TYPE_CHECKING:
    from osprey_core.api import Osprey
    from osprey_core.models import RunRecord

router = APIRouter(prefix="/api/v1/runs", tags=["runs"])
INTERFACE = "http"
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "no or bad credentials"}, 403: {"description": "role missing"},
    404: {"description": "unknown run"}, 409: {"description": "not in a state that allows it"}}


class ResumeRequest(Body):
    indeterminate: Literal["applied", "not_applied"] | None = Field(
        None, description="A step a crash caught mid-way: did its effect happen?")


@router.post("", response_model=Run, responses=ERRORS)
async def submit(body: RunRequest, who: Identity = Depends(require(Role.OPERATOR)),
                 state: ServiceState = Depends(service_state)) -> dict[str, Any]:
    """Run a request until it is done, fails or pauses for an approval (as ``osprey run``)."""
    async with state.driving() as osprey:
        run = await osprey.arun(body.query, session=body.session, user=who.name,
                                planning=body.planning, interface=INTERFACE)
    return run_payload(osprey, run)


@router.get("", response_model=list[Run], responses=ERRORS)
async def list_runs(session: str | None = None,
                    state_filter: list[RunState] | None = Query(None, alias="state"),
                    limit: int = Query(50, ge=1, le=1000),
                    who: Identity = Depends(require(Role.VIEWER)),
                    state: ServiceState = Depends(service_state)) -> list[dict[str, Any]]:
    """Runs, newest first (runs whose process died show as interrupted)."""
    osprey = await state.refresh()

    def read() -> list[dict[str, Any]]:
        runs = osprey.runs(session=session, states=set(state_filter) if state_filter else None,
                           limit=limit)
        return [run_payload(osprey, run) for run in runs]

    return await state.read(read)


@router.get("/{run_id}", response_model=RunDetail, responses=ERRORS)
async def show(run_id: str, who: Identity = Depends(require(Role.VIEWER)),
               state: ServiceState = Depends(service_state)) -> dict[str, Any]:
    """A run with its steps, approvals, rendered answer and execution artifacts."""
    osprey = await state.refresh()

    def read() -> dict[str, Any]:
        run = _run(osprey, run_id)
        payload = run_payload(osprey, run)
        payload["steps"] = osprey.steps(run.id)
        payload["approvals"] = osprey.approvals(run_id=run.id)
        payload["answer"] = answer_text(osprey, run)
        payload["artifacts"] = [_artifact(path, root) for root in _folders(osprey, run.id)
                                for path in sorted(root.rglob("*")) if _is_file(path, root)]
        return payload

    return await state.read(read)


@router.get("/{run_id}/events", response_model=list[Event], responses=ERRORS)
async def events(run_id: str, who: Identity = Depends(require(Role.VIEWER)),
                 state: ServiceState = Depends(service_state)) -> list[Any]:
    """The run's stored events, oldest first (``/api/v1/events`` streams them live)."""
    return await state.read(lambda: list(state.osprey.events(_run(state.osprey, run_id).id)))


@router.get("/{run_id}/artifacts/{name:path}", response_class=FileResponse,
            responses={**ERRORS, 200: {"description": "the file"}})
async def artifact(run_id: str, name: str, who: Identity = Depends(require(Role.VIEWER)),
                   state: ServiceState = Depends(service_state)) -> FileResponse:
    """One file of the run's executions, by the name its listing gives."""
    run = await state.read(lambda: _run(state.osprey, run_id))
    for root in _folders(state.osprey, run.id):
        path = root.parent / name
        if _is_file(path, root):
            return FileResponse(path, media_type=_media_type(path),
                                filename=path.name, content_disposition_type="inline")
    raise not_found(f"artifact {name!r} in run {run.id}")


@router.post("/{run_id}/resume", response_model=Run, responses=ERRORS)
async def resume(run_id: str, body: ResumeRequest | None = None,
                 who: Identity = Depends(require(Role.OPERATOR)),
                 state: ServiceState = Depends(service_state)) -> dict[str, Any]:
    """Continue an interrupted run (``indeterminate`` settles a step a crash caught)."""
    await state.read(lambda: _own(state.osprey, run_id, who, "resume"))
    async with state.driving() as osprey:
        run = await osprey.aresume(run_id, user=who.name, interface=INTERFACE,
                                   indeterminate=body.indeterminate if body else None)
    return run_payload(osprey, run)


@router.post("/{run_id}/cancel", response_model=Run, responses=ERRORS)
async def cancel(run_id: str, body: ReasonRequest | None = None,
                 who: Identity = Depends(require(Role.OPERATOR)),
                 state: ServiceState = Depends(service_state)) -> dict[str, Any]:
    """Cancel a run that has not ended; a pending approval is withdrawn."""
    reason = body.reason if body else None
    await state.read(lambda: _own(state.osprey, run_id, who, "cancel"))
    async with state.driving() as osprey:
        run = await osprey.acancel(run_id, user=who.name, interface=INTERFACE, reason=reason)
    return run_payload(osprey, run)


# -- helpers ------------------------------------------------------------------------------


def _run(osprey: Osprey, run_id: str) -> RunRecord:
    from osprey_core.store_errors import StoreError, StoreStorageError

    try:
        return osprey.get_run(run_id)
    except StoreStorageError:
        raise  # the store cannot answer (503), which says nothing about the run
    except StoreError:
        raise not_found(f"run {run_id!r}") from None


def _own(osprey: Osprey, run_id: str, who: Identity, what: str) -> None:
    """Operators move their own runs; admins any."""
    run = _run(osprey, run_id)
    if run.user != who.name and not who.has(Role.ADMIN):
        raise ServiceError(403, "not_your_run", f"run {run.id} was submitted by {run.user}; "
                           f"only they or an admin may {what} it")


def answer_text(osprey: Osprey, run: RunRecord) -> str | None:
    """A done run's answer as the terminal shows it, each result rendered by the
    capability that made it, as plain text; ``None`` before the run is done."""
    from osprey_core.display.console import as_text
    from osprey_core.display.runs import answer, lookup

    if run.state is not RunState.DONE:
        return None
    return "\n\n".join(as_text(part) for part in answer(run, lookup(osprey.host))).strip()


def _folders(osprey: Osprey, run_id: str) -> list[Path]:
    """The run's execution folders (``<home>/executions/<stamp>-<run id>-<hex>/``)."""
    executions = (osprey.config.home / "executions").resolve()
    if not executions.is_dir():
        return []
    return sorted(path for path in executions.iterdir()
                  if path.is_dir() and not path.is_symlink()
                  and path.name.split("-", 1)[-1].startswith(f"{run_id}-"))


def _is_file(path: Path, root: Path) -> bool:
    """A regular file inside ``root`` after resolving links and ``..`` (nothing a name
    can say reaches outside the run's folder)."""
    try:
        resolved = path.resolve(strict=True)
    except (OSError, RuntimeError):
        return False
    return resolved.is_relative_to(root.resolve()) and resolved.is_file()


def _artifact(path: Path, root: Path) -> Artifact:
    return Artifact(name=path.relative_to(root.parent).as_posix(), size=path.stat().st_size,
                    media_type=_media_type(path))


def _media_type(path: Path) -> str:
    if path.suffix == ".ipynb":
        return "application/x-ipynb+json"
    return mimetypes.guess_type(path.name)[0] or "application/octet-stream"
