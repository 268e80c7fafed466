"""Approval decisions: approve, reject, edit and expire, each single-use and audited.

A decision is a compare-and-set on the approval and on the run's state in one
transaction, so exactly one of two concurrent deciders wins. Before an approval takes
effect, the artifact is checked against its hash and the policies are asked again (one
may have been tightened while the run waited); every refusal is in the audit log.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import Any

from osprey_core.approvals import Outcome
from osprey_core.errors import ApprovalError, OspreyError, RunError, shorten
from osprey_core.models import (
    ApprovalKind,
    ApprovalRecord,
    ApprovalStatus,
    AuditRecord,
    Plan,
    RunRecord,
    sha256_of,
)
from osprey_core.orchestration.controller import RunController, plan_summary, with_artifact
from osprey_core.orchestration.recorder import write_plan_file
from osprey_core.orchestration.runtime import Runtime
from osprey_core.run_machine import PAUSED
from osprey_core.store import ConflictError


class Decisions:
    """What deciders call: the pending requests, decisions, edits and expiry."""

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime

    async def pending(self, *, session: str | None = None) -> list[ApprovalRecord]:
        await self.expire_overdue()
        return self.rt.store.list_approvals(status=ApprovalStatus.PENDING, session=session)

    async def decide(self, approval_id: str, *, approve: bool, actor: str, interface: str,
                     reason: str | None = None, session: str | None = None) -> RunRecord:
        """Approve or reject; a refused decision raises :class:`ApprovalError` and is
        written to the audit log as ``approval_refused``."""
        with self._refusals_audited(approval_id, "approve" if approve else "reject", actor,
                                    interface):
            return await self._decide(approval_id, approve=approve, actor=actor,
                                      interface=interface, reason=reason, session=session)

    async def _decide(self, approval_id: str, *, approve: bool, actor: str, interface: str,
                      reason: str | None, session: str | None) -> RunRecord:
        approval, run = self._open_approval(approval_id, session)
        with RunController(self.rt, run) as controller:
            await self._refuse_if_overdue(approval, controller)
            if approve:
                if problem := self._tamper_problem(approval, controller.run):
                    self._refuse(controller, approval, actor, interface, problem)
                    refused = ApprovalError(problem)
                    refused.audited = True
                    raise refused
                if problem := self._policy_problem(approval, controller):
                    # A policy tightened while the run waited wins over the human: fail closed.
                    controller.audit("approval_refused", actor, interface,
                                     approval_id=approval.id,
                                     sha256=approval.artifact_sha256, reason=problem)
                    trigger = functools.partial(controller.fail_with, problem)
                else:
                    controller.stage_decision(approval, ApprovalStatus.APPROVED, actor, interface,
                                              reason)
                    trigger = controller.approve
            else:
                controller.stage_decision(approval, ApprovalStatus.REJECTED, actor, interface,
                                          reason)
                controller.run.error = f"rejected by {actor}" + (f": {reason}" if reason else "")
                trigger = controller.reject
            try:
                await trigger()
            except ConflictError as exc:
                raise ApprovalError(
                    f"approval {approval.id} was decided elsewhere first: {exc}") from None
            return controller.run

    async def edit(self, approval_id: str, data: Any, *, actor: str, interface: str,
                   session: str | None = None) -> ApprovalRecord:
        """Replace a pending plan or step artifact with an edited one, which is validated
        and needs its own approval; the old request is superseded. A refused edit raises
        :class:`ApprovalError` and is audited like a refused decision."""
        with self._refusals_audited(approval_id, "edit", actor, interface):
            return await self._edit(approval_id, data, actor=actor, interface=interface,
                                    session=session)

    async def _edit(self, approval_id: str, data: Any, *, actor: str, interface: str,
                    session: str | None) -> ApprovalRecord:
        approval, run = self._open_approval(approval_id, session)
        with RunController(self.rt, run) as controller:
            await self._refuse_if_overdue(approval, controller)
            if approval.kind is ApprovalKind.PLAN:
                return await self._edit_plan(controller, approval, data, actor, interface)
            return await self._edit_step(controller, approval, data, actor, interface)

    async def _edit_step(self, controller: RunController, approval: ApprovalRecord, data: Any,
                         actor: str, interface: str) -> ApprovalRecord:
        run = controller.run
        assert run.plan is not None and approval.step_index is not None
        index = approval.step_index
        capability = self.rt.capability(run.plan.steps[index].capability)
        if not self.rt.info(capability.name).editable:
            raise ApprovalError(f"approval {approval.id}: '{capability.name}' artifacts "
                                "cannot be edited; approve or reject it")
        if not isinstance(data, dict):
            raise ApprovalError(f"approval {approval.id}: an edited artifact is a JSON object, "
                                f"not {type(data).__name__}")
        context = with_artifact(controller.step_context(index, capability), approval.artifact, None)
        try:
            revised = await capability.revise(context, data)
        except OspreyError as exc:
            raise ApprovalError(f"approval {approval.id}: the edit is refused: {exc}") from None
        ruling = self.rt.rule(controller.step_action(capability, revised.artifact))
        if ruling.outcome is Outcome.DENY:
            raise ApprovalError("the edited artifact is refused by policy: "
                                + "; ".join(ruling.reasons))
        controller.stage_decision(approval, ApprovalStatus.SUPERSEDED, actor, interface,
                                  "replaced by an edited artifact")
        # Edited by a human, so it is always shown to a human again, even if policy allows it.
        controller.stage_approval(ApprovalKind.STEP, index,
                                   self.rt.info(capability.name).approval_kind,
                                   revised.artifact, revised.summary,
                                   [*ruling.reasons, f"edited by {actor}"])
        controller.audit("artifact_edited", actor, interface, approval_id=run.approval_id,
                         sha256=sha256_of(revised.artifact), replaces=approval.id,
                         previous_sha256=approval.artifact_sha256, step=index + 1)
        controller.save("artifact_edited", {"approval": run.approval_id}, durable=True)
        return self.rt.store.get_approval(run.approval_id or "")

    async def _edit_plan(self, controller: RunController, approval: ApprovalRecord,
                         plan_data: Any, actor: str, interface: str) -> ApprovalRecord:
        from osprey_core.planning import validate_plan

        run = controller.run
        plan = validate_plan(plan_data, self.rt.host.capabilities(), sorted(run.context),
                             self.rt.plan_limits())
        ruling = self.rt.rule(controller.plan_action(plan))
        if ruling.outcome is Outcome.DENY:
            raise ApprovalError("the edited plan is refused by policy: "
                                + "; ".join(ruling.reasons))
        controller.stage_decision(approval, ApprovalStatus.SUPERSEDED, actor, interface,
                                  "replaced by an edited plan")
        controller.set_plan(plan)
        controller.stage_approval(ApprovalKind.PLAN, None, "plan",
                                   plan.model_dump(mode="json"),
                                   plan_summary(self.rt, run, plan), ruling.reasons)
        controller.audit("plan_edited", actor, interface, approval_id=run.approval_id,
                         sha256=run.plan_sha256, replaces=approval.id,
                         previous_sha256=approval.artifact_sha256)
        controller.save("plan_edited", {"approval": run.approval_id}, durable=True)
        write_plan_file(self.rt.plan_file(run.id), plan)
        return self.rt.store.get_approval(run.approval_id or "")

    @contextlib.contextmanager
    def _refusals_audited(self, approval_id: str, attempted: str, actor: str,
                          interface: str) -> Iterator[None]:
        """Write every refused decision or edit to the audit log (unknown id, another
        session's request, already decided, expired, tampered, refused by policy)."""
        from osprey_core.planning.base import PlanValidationError
        from osprey_core.store import StoreError

        try:
            yield
        except (ApprovalError, PlanValidationError, RunError) as exc:
            if not getattr(exc, "audited", False):
                try:
                    run_id: str | None = self.rt.store.get_approval(approval_id).run_id
                except StoreError:
                    run_id = None
                entry = AuditRecord(
                    at=self.rt.now(), actor=actor, interface=interface,
                    action="approval_refused", run_id=run_id,
                    approval_id=shorten(approval_id, 80),
                    details={"attempted": attempted, "reason": shorten(str(exc), 2000)})
                with self.rt.store.transaction() as store:
                    store.append_audit(entry)
            raise

    def _open_approval(self, approval_id: str,
                       session: str | None) -> tuple[ApprovalRecord, RunRecord]:
        from osprey_core.store_errors import StoreError, StoreStorageError

        try:
            approval = self.rt.store.get_approval(approval_id)
        except StoreStorageError:
            raise  # the store cannot answer: that says nothing about the approval
        except StoreError:
            raise ApprovalError(f"unknown approval '{shorten(approval_id, 80)}'") from None
        if session is not None and approval.session != session:
            raise ApprovalError(f"approval {approval.id} belongs to another session, "
                                f"not '{shorten(session, 80)}'")
        if approval.status is not ApprovalStatus.PENDING:
            by = f" by {approval.decided_by}" if approval.decided_by else ""
            raise ApprovalError(f"approval {approval.id} is already {approval.status}{by}")
        run = self.rt.store.get_run(approval.run_id)
        if run.state not in PAUSED or run.approval_id != approval.id:
            raise ApprovalError(f"run {run.id} is {run.state}, not waiting for {approval.id}")
        return approval, run

    async def _refuse_if_overdue(self, approval: ApprovalRecord,
                                 controller: RunController) -> None:
        """Past its deadline a request expires (a rejection): no decision or edit applies."""
        if self.rt.now() < approval.expires_at:
            return
        try:
            await self._expire(approval, controller)
        except ConflictError as exc:
            raise ApprovalError(
                f"approval {approval.id} was decided elsewhere first: {exc}") from None
        raise ApprovalError(f"approval {approval.id} expired at "
                            f"{approval.expires_at.isoformat()}; it counts as rejected")

    def _tamper_problem(self, approval: ApprovalRecord, run: RunRecord) -> str | None:
        if not approval.artifact_intact():
            return (f"approval {approval.id}: the stored artifact no longer matches its sha256 "
                    f"{approval.artifact_sha256}; nothing was run")
        if approval.kind is ApprovalKind.PLAN:
            # What runs is the run's plan, so it must be exactly the approved artifact.
            stored = run.plan.sha256() if run.plan is not None else "missing"
            if stored != approval.artifact_sha256:
                return (f"approval {approval.id}: the plan stored with run {run.id} no longer "
                        f"matches the requested plan (sha256 {stored}, approved artifact "
                        f"{approval.artifact_sha256}); nothing was run")
            path = self.rt.plan_file(approval.run_id)
            try:
                text = path.read_text(encoding="utf-8")
            except FileNotFoundError:
                text = ""
            except (OSError, UnicodeDecodeError):
                text = "unreadable"
            if not text.strip() and run.plan is not None:
                # Lost to a crash (the copy is not synced), not edited: restore it from the
                # store, whose plan was just checked against the approved hash.
                write_plan_file(path, run.plan)
                return None
            try:
                on_disk = sha256_of(Plan.model_validate_json(text).model_dump(mode="json"))
            except ValueError:
                on_disk = "unreadable"
            if on_disk != approval.artifact_sha256:
                return (f"approval {approval.id}: plan file {path} was changed after the request "
                        f"(sha256 {on_disk}, approved artifact {approval.artifact_sha256}); "
                        "nothing was run. Use 'osprey approvals edit' to change a plan.")
        return None

    def _policy_problem(self, approval: ApprovalRecord, controller: RunController) -> str | None:
        """Ask the policies again about what waits: one may have been tightened meanwhile."""
        run = controller.run
        if run.plan is None:
            return f"run {run.id} has no plan; nothing was run"
        if approval.kind is ApprovalKind.PLAN:
            what, ruling = "plan", self.rt.rule(controller.plan_action(run.plan))
        else:
            index = approval.step_index or 0
            capability = self.rt.capability(run.plan.steps[index].capability)
            what = f"step {index + 1} ({capability.name})"
            ruling = self.rt.rule(controller.step_action(capability, approval.artifact))
        if ruling.outcome is Outcome.DENY:
            return f"{what} refused by policy: " + "; ".join(ruling.reasons)
        return None

    def _refuse(self, controller: RunController, approval: ApprovalRecord, actor: str,
                interface: str, problem: str) -> None:
        controller.audit("approval_refused", actor, interface, approval_id=approval.id,
                         sha256=approval.artifact_sha256, reason=problem)
        controller.save("approval_refused", {"approval": approval.id})

    async def expire_overdue(self) -> list[str]:
        """Expire every pending approval past its deadline; returns their ids."""
        expired = []
        for approval in self.rt.store.list_approvals(status=ApprovalStatus.PENDING):
            if self.rt.now() < approval.expires_at:
                continue
            run = self.rt.store.get_run(approval.run_id)
            if run.state in PAUSED and run.approval_id == approval.id:
                try:
                    with RunController(self.rt, run) as controller:
                        await self._expire(approval, controller)
                except ConflictError:
                    continue  # decided (or expired) by another process meanwhile
                expired.append(approval.id)
        return expired

    async def _expire(self, approval: ApprovalRecord, controller: RunController) -> None:
        controller.stage_decision(approval, ApprovalStatus.EXPIRED, "system", "clock",
                                  "no decision before the deadline")
        controller.run.error = f"approval {approval.id} expired unanswered"
        await controller.expire()
