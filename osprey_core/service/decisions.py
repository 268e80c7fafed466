"""The one way an HTTP caller decides an approval (API, console, chat): the approver role,
separation of duties and the artifact's sha256 are checked here, each refusal written to
the audit log with the authenticated identity, then the ``Osprey`` API decides.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from osprey_core.errors import ApprovalError, shorten
from osprey_core.models import ApprovalKind, AuditRecord
from osprey_core.service.errors import ServiceError
from osprey_core.service.settings import Role
from osprey_core.store_errors import StoreError

if TYPE_CHECKING:
    from osprey_core.api import Osprey
    from osprey_core.models import ApprovalRecord, RunRecord
    from osprey_core.service.auth import Identity
    from osprey_core.service.context import ServiceState


async def decide(state: ServiceState, who: Identity, approval_id: str, *, approve: bool,
                 interface: str, reason: str | None = None,
                 sha256: str | None = None) -> RunRecord:
    """Approve or reject ``approval_id`` as ``who``: 403 without the approver role or when
    separation of duties forbids it, 409 when ``sha256`` (if given) is not the stored
    artifact's; the orchestrator's own refusals (unknown, decided, expired) raise
    :class:`ApprovalError` and are audited there."""
    osprey = state.osprey
    attempted = "approve" if approve else "reject"
    approval = _checked(state, who, approval_id, attempted, interface, sha256)
    if approve and approval is not None and (
            conflict := duty_conflict(state, who, approval)) is not None:
        refuse(osprey, who, approval_id, attempted, interface, 403, "separation_of_duties",
               conflict)
    decision = osprey.aapprove if approve else osprey.areject
    return await decision(approval_id, user=who.name, interface=interface, reason=reason)


async def edit(state: ServiceState, who: Identity, approval_id: str, artifact: Any, *,
               interface: str, sha256: str | None = None) -> ApprovalRecord:
    """Replace what ``approval_id`` waits for (a plan, code, an editable artifact) as
    ``who``, after the same role and sha256 checks as :func:`decide`; the orchestrator
    validates and analyses the edit and returns the new request, which needs its own
    approval."""
    _checked(state, who, approval_id, "edit", interface, sha256)
    return await state.osprey.aedit(approval_id, artifact, user=who.name, interface=interface)


def _checked(state: ServiceState, who: Identity, approval_id: str, attempted: str,
             interface: str, sha256: str | None) -> ApprovalRecord | None:
    """The approval, once ``who`` holds the role and ``sha256`` (if given) is its
    artifact's; ``None`` for an unknown id, which the orchestrator refuses and audits."""
    osprey = state.osprey
    if (missing := missing_role(who)) is not None:
        refuse(osprey, who, approval_id, attempted, interface, 403, "forbidden", missing)
    try:
        approval = osprey.approval(approval_id)
    except ApprovalError:
        return None
    if sha256 is not None and sha256 != approval.artifact_sha256:
        refuse(osprey, who, approval_id, attempted, interface, 409, "stale_sha256",
               f"approval {approval.id} is for sha256 {approval.artifact_sha256}, not "
               f"{shorten(sha256, 80)}: reload it and decide on what it asks now")
    return approval


def missing_role(who: Identity) -> str | None:
    """Why ``who`` cannot decide or edit any approval (``None``: they hold the role)."""
    if who.has(Role.APPROVER):
        return None
    held = ", ".join(sorted(who.roles)) or "none"
    return f"deciding an approval needs the approver role; {who.name} has {held}"


def duty_conflict(state: ServiceState, who: Identity, approval: ApprovalRecord) -> str | None:
    """Why separation of duties forbids ``who`` to approve ``approval`` (``None``: it does
    not); pages show it before anyone presses a button."""
    if not (state.settings.separation_of_duties and approval.requested_by == who.name
            and changes_machine(state.osprey, approval)):
        return None
    return (f"separation of duties: {who.name} asked for this {approval.action}, so "
            "someone else with the approver role must approve it")


def changes_machine(osprey: Osprey, approval: ApprovalRecord) -> bool:
    """Whether what ``approval`` waits for has side effects beyond the asker's own data: a
    step of such a capability, or a plan with one. Unknown capabilities count as writes."""
    if approval.kind is ApprovalKind.PLAN:
        steps = approval.artifact.get("steps") or []
        names = [step.get("capability") for step in steps if isinstance(step, dict)]
        return any(_side_effects(osprey, name) for name in names) or not names
    plan = osprey.get_run(approval.run_id).plan
    index = approval.step_index
    if plan is None or index is None or not 0 <= index < len(plan.steps):
        return True
    return _side_effects(osprey, plan.steps[index].capability)


def _side_effects(osprey: Osprey, name: object) -> bool:
    capabilities = osprey.host.capabilities()
    if not isinstance(name, str) or name not in capabilities:
        return True
    capability = capabilities.get(name)
    return bool(capability.side_effects) and not capability.own_data_only


def refuse(osprey: Osprey, who: Identity, approval_id: str, attempted: str, interface: str,
           status: int, code: str, message: str) -> None:
    """Audit a refused decision as ``approval_refused`` and raise it as an HTTP error."""
    store = osprey.runtime.store
    run_id: str | None = None
    sha: str | None = None
    try:
        approval = store.get_approval(approval_id)
        run_id, sha = approval.run_id, approval.artifact_sha256
    except StoreError:
        pass  # an unknown id is refused all the same, and audited as typed
    entry = AuditRecord(at=osprey.runtime.now(), actor=who.name, interface=interface,
                        action="approval_refused", run_id=run_id,
                        approval_id=shorten(approval_id, 80), sha256=sha,
                        details={"attempted": attempted, "reason": message})
    with store.transaction() as tx:
        tx.append_audit(entry)
    raise ServiceError(status, code, message)
