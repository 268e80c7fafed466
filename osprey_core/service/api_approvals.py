"""Approvals: list, show (the exact artifact and its sha256), approve, reject, edit.

Deciding goes through :mod:`osprey_core.service.decisions` (the approver role,
separation of duties, the sha256 the caller saw), then the ``Osprey`` API, whose
compare-and-set makes every decision single-use.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query

from osprey_core.cli.render import run_payload
from osprey_core.errors import ApprovalError
from osprey_core.models import ApprovalRecord, ApprovalStatus
from osprey_core.service import decisions
from osprey_core.service.auth import Identity, identity, require
from osprey_core.service.context import ServiceState, service_state
from osprey_core.service.errors import not_found
from osprey_core.service.schemas import Approval, DecisionRequest, EditRequest, Outcome, Run
from osprey_core.service.settings import Role

router = APIRouter(prefix="/api/v1/approvals", tags=["approvals"])
INTERFACE = "http"
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"description": "no or bad credentials"},
    403: {"description": "role missing, or separation of duties"},
    404: {"description": "unknown approval"},
    409: {"description": "stale sha256, already decided, expired, or the run moved on"}}


def view(state: ServiceState, approval: ApprovalRecord) -> Approval:
    """The stored record plus whether it is editable and whether it changes the machine."""
    osprey = state.osprey
    return Approval(**approval.model_dump(), editable=osprey.editable(approval),
                    changes_machine=decisions.changes_machine(osprey, approval))


@router.get("", response_model=list[Approval], responses=ERRORS)
async def list_approvals(status: ApprovalStatus | None = None, session: str | None = None,
                         run: str | None = Query(None, description="Only this run's."),
                         who: Identity = Depends(require(Role.VIEWER)),
                         state: ServiceState = Depends(service_state)) -> list[Approval]:
    """Approval requests, oldest first (overdue ones expire first)."""
    osprey = await state.refresh()
    return await state.read(lambda: [
        view(state, record)
        for record in osprey.approvals(status=status, session=session, run_id=run)])


@router.get("/{approval_id}", response_model=Approval, responses=ERRORS)
async def show(approval_id: str, who: Identity = Depends(require(Role.VIEWER)),
               state: ServiceState = Depends(service_state)) -> Approval:
    """One request: the exact artifact, its sha256, summary, reasons, expiry, editable."""
    osprey = await state.refresh()
    try:
        return await state.read(lambda: view(state, osprey.approval(approval_id)))
    except ApprovalError:
        raise not_found(f"approval {approval_id!r}") from None


@router.post("/{approval_id}/approve", response_model=Run, responses=ERRORS)
async def approve(approval_id: str, body: DecisionRequest,
                  who: Identity = Depends(identity),
                  state: ServiceState = Depends(service_state)) -> dict[str, Any]:
    """Approve exactly the artifact with this sha256; the run goes on to its next pause
    or its end."""
    return await _decide(state, who, approval_id, body, approve=True)


@router.post("/{approval_id}/reject", response_model=Run, responses=ERRORS)
async def reject(approval_id: str, body: DecisionRequest,
                 who: Identity = Depends(identity),
                 state: ServiceState = Depends(service_state)) -> dict[str, Any]:
    """Reject: the run ends as rejected; nothing is replanned."""
    return await _decide(state, who, approval_id, body, approve=False)


@router.post("/{approval_id}/edit", response_model=Outcome, responses=ERRORS)
async def edit(approval_id: str, body: EditRequest, who: Identity = Depends(identity),
               state: ServiceState = Depends(service_state)) -> Outcome:
    """Replace a pending plan or editable artifact: it is validated and analysed, and the
    new request needs its own approval."""
    async with state.driving():
        new = await decisions.edit(state, who, approval_id, body.artifact, interface=INTERFACE,
                                   sha256=body.sha256)
    return Outcome(approval=view(state, new), superseded=approval_id)


async def _decide(state: ServiceState, who: Identity, approval_id: str,
                  body: DecisionRequest, *, approve: bool) -> dict[str, Any]:
    # The role is checked (and a refusal audited) by decisions, not by a dependency, so
    # a viewer's attempt is in the audit log too.
    async with state.driving() as osprey:
        run = await decisions.decide(state, who, approval_id, approve=approve,
                                     interface=INTERFACE, reason=body.reason,
                                     sha256=body.sha256)
    return run_payload(osprey, run)
