"""What a run writes: every change is staged, then committed with the run's state.

:class:`RunRecorder` is the half of a run's controller that touches the store: state
commits (a compare-and-set on the state and the owner), the run's context and plan, the
audit log, and approval requests and decisions. A pause commits its approval request in
the same transaction as the state, before anything announces it.

Every commit claims the run for this process with a fresh lease; while the controller is
open, a heartbeat renews it (a compare-and-set on state and owner too), so workers on
other hosts know the run is being worked on.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from osprey_core.approvals import Action
from osprey_core.fileio import atomic_write_text
from osprey_core.hookspecs.capabilities import Capability
from osprey_core.hookspecs.observers import ApprovalEvent, RunEvent
from osprey_core.models import (
    ApprovalKind,
    ApprovalRecord,
    ApprovalStatus,
    AuditRecord,
    EventRecord,
    Plan,
    RunRecord,
    sha256_of,
)
from osprey_core.orchestration.runtime import Runtime, claim, new_id
from osprey_core.run_machine import ACTIVE, PAUSED, TERMINAL, RunState
from osprey_core.store import ConflictError, RunStore, StoreError, owner_key

#: States whose commit is synced to disk before anything else happens.
DURABLE_STATES = PAUSED | TERMINAL | {RunState.INTERRUPTED}
Write = Callable[[RunStore], None]


class RunRecorder:
    """Stages and commits one run's writes; :class:`RunController` adds the behaviour."""

    state: RunState

    def __init__(self, runtime: Runtime, run: RunRecord) -> None:
        self.rt = runtime
        self.run = run
        self._staged: list[Write] = []
        #: The owner the store holds for this run as this controller last saw it: every
        #: commit is a compare-and-set on it, so a run another process took over (after
        #: recovery) is never written by this one.
        self._seen_owner = owner_key(run)
        self._durable = False
        self._after_commit: list[Callable[[], None]] = []
        #: Set by recovery: commit only if, read in the commit's own transaction, the
        #: run's owner is still gone (its lease may have been renewed since it was listed).
        self.take_over = False
        #: Whether this controller has committed, so the owner it saw is this process.
        self._claimed = False
        self._heartbeat: asyncio.Task[None] | None = None

    def start_heartbeat(self) -> None:
        """Renew this process's lease every third of it while the run is active (from the
        running event loop; without one there is nothing long-lived to renew for)."""
        with contextlib.suppress(RuntimeError):
            self._heartbeat = asyncio.get_running_loop().create_task(self._beat())

    def stop_heartbeat(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            self._heartbeat = None

    async def _beat(self) -> None:
        period = self.rt.lease.total_seconds() / 3
        while True:
            await asyncio.sleep(period)
            if (not self._claimed or self.run.state not in ACTIVE
                    or self.rt.store.conn.in_transaction):
                continue
            until = self.rt.now() + self.rt.lease
            try:
                renewed = self.rt.store.renew_lease(self.run.id, self._seen_owner,
                                                    self.run.state, until)
            except StoreError:
                continue  # the server is away: the next commit reports it
            if not renewed:
                return  # moved on or taken over: the next commit's compare-and-set says so
            self.run.lease_until = until

    def stage(self, write: Write, after_commit: Callable[[], None] | None = None) -> None:
        """Queue a write for the next commit (and a notification for after it)."""
        self._staged.append(write)
        if after_commit is not None:
            self._after_commit.append(after_commit)

    async def persist(self) -> None:
        """First entry callback of every state: commit the state with staged writes."""
        previous = self.run.state
        self._commit(expect_state=previous, new_state=RunState(self.state),
                     event=("state", {"from": str(previous), "to": str(self.state)}))

    def set_context(self, key: str, value: Any) -> None:
        """Add a value to the run's context, stored with the next commit."""
        self.run.context[key] = value
        self.stage(lambda store: store.put_context(self.run.id, key, value))

    def set_plan(self, plan: Plan) -> None:
        """Make ``plan`` the run's plan, stored with the next commit."""
        self.run.plan, self.run.plan_sha256 = plan, plan.sha256()
        self.stage(lambda store: store.put_plan(self.run.id, plan))

    def save(self, kind: str, data: dict[str, Any], *, durable: bool = False) -> None:
        """Commit staged writes and the run record without a state change."""
        self._durable = self._durable or durable
        self._commit(expect_state=self.run.state, new_state=self.run.state, event=(kind, data))

    def _commit(self, *, expect_state: RunState, new_state: RunState,
                event: tuple[str, dict[str, Any]]) -> None:
        # Synced to disk before anything leaves the process: a pause before it is
        # announced, a side effect before it touches the machine, the end before the user
        # hears of it. Other commits are atomic and become durable with the next synced
        # one; losing them to a power cut rolls the run back to a consistent earlier state.
        durable = self._durable or new_state in DURABLE_STATES
        self._durable = False
        now = self.rt.now()
        self.run.state = new_state
        self.run.updated_at = now
        claim(self.run, now, self.rt.lease)
        staged, self._staged = self._staged, []
        notify, self._after_commit = self._after_commit, []
        record = EventRecord(run_id=self.run.id, at=now, kind=event[0], data=event[1])
        with self.rt.store.transaction(durable=durable) as store:
            if self.take_over and self.rt.working(store.get_run(self.run.id), now):
                raise ConflictError(f"run '{self.run.id}' is still held by a live worker")
            store.update_run(self.run, expect_state=expect_state, expect_owner=self._seen_owner)
            for write in staged:
                write(store)
            store.append_event(record)
        self._seen_owner, self._claimed = owner_key(self.run), True
        self.rt.abandoned.discard(self.run.id)
        self.rt.host.notify_run_event(RunEvent(self.run.id, event[0], now, event[1]))
        for callback in notify:
            callback()

    def audit(self, what: str, actor: str, interface: str, *, approval_id: str | None = None,
              sha256: str | None = None, durable: bool = False, **details: Any) -> None:
        """Stage an audit record; ``durable`` syncs its commit to disk (side effects)."""
        self._durable = self._durable or durable
        entry = AuditRecord(at=self.rt.now(), actor=actor, interface=interface, action=what,
                            run_id=self.run.id, approval_id=approval_id, sha256=sha256,
                            details=details)
        self.stage(lambda store: store.append_audit(entry))

    def step_audit(self, what: str, details: dict[str, Any]) -> None:
        """The audit log as capabilities see it (code runs, sandbox broker decisions)."""
        details = dict(details)
        self.audit(what, self.run.user, self.run.interface,
                   approval_id=details.pop("approval_id", None),
                   sha256=details.pop("sha256", None), **details)


    # -- approvals -----------------------------------------------------------------------

    def plan_action(self, plan: Plan) -> Action:
        return Action(kind="plan", run_id=self.run.id, session=self.run.session,
                      user=self.run.user, planning_mode=self.run.planning,
                      settings=self.rt.approval_settings(), artifact=plan.model_dump(mode="json"))

    def step_action(self, capability: Capability, artifact: dict[str, Any]) -> Action:
        info = self.rt.info(capability.name)
        return Action(kind="step", run_id=self.run.id, session=self.run.session,
                      user=self.run.user, planning_mode=self.run.planning,
                      settings=self.rt.approval_settings(), artifact=dict(artifact),
                      capability=info.name, side_effects=info.side_effects,
                      runs_code=info.runs_code, approval_kind=info.approval_kind)

    def stage_approval(self, kind: ApprovalKind, index: int | None, action: str,
                        artifact: dict[str, Any], summary: str, reasons: list[str]) -> None:
        now = self.rt.now()
        approval = ApprovalRecord(
            id=new_id("apv"), run_id=self.run.id, session=self.run.session, kind=kind,
            step_index=index, action=action, artifact=artifact,
            artifact_sha256=sha256_of(artifact), summary=summary, reasons=reasons,
            requested_by=self.run.user, created_at=now,
            expires_at=now + timedelta(seconds=self.rt.approval_settings().expiry_seconds),
        )
        self.run.approval_id = approval.id
        self.stage(lambda store: store.insert_approval(approval),
                   after_commit=lambda: self.rt.host.notify_approval_requested(
                       approval_event(approval, approval.requested_by, self.run.interface)))
        self.audit("approval_requested", self.run.user, self.run.interface,
                   approval_id=approval.id, sha256=approval.artifact_sha256, kind=str(kind),
                   approval_kind=action, step=None if index is None else index + 1)

    def stage_decision(self, approval: ApprovalRecord, status: ApprovalStatus, actor: str,
                       interface: str, reason: str | None) -> ApprovalRecord:
        decided = approval.model_copy(update={
            "status": status, "decided_by": actor, "decided_via": interface,
            "decided_at": self.rt.now(), "decision_reason": reason})
        self.stage(lambda store: store.close_approval(decided),
                   after_commit=lambda: self.rt.host.notify_approval_decided(
                       approval_event(decided, actor, interface)))
        self.audit(f"approval_{status}", actor, interface, approval_id=approval.id,
                   sha256=approval.artifact_sha256, reason=reason)
        return decided

    def withdraw_pending(self, actor: str, interface: str, reason: str) -> None:
        if self.run.state in PAUSED and self.run.approval_id is not None:
            approval = self.rt.store.get_approval(self.run.approval_id)
            if approval.status is ApprovalStatus.PENDING:
                self.stage_decision(approval, ApprovalStatus.WITHDRAWN, actor, interface, reason)




def approval_event(approval: ApprovalRecord, actor: str | None, interface: str) -> ApprovalEvent:
    return ApprovalEvent(
        approval_id=approval.id, run_id=approval.run_id, kind=approval.action,
        status=str(approval.status), artifact_sha256=approval.artifact_sha256,
        summary=approval.summary, at=approval.decided_at or approval.created_at,
        actor=actor, interface=interface, reason=approval.decision_reason,
    )


def write_plan_file(path: Path, plan: Plan) -> None:
    """The reviewable copy of a plan. Atomic but not synced: the store holds the plan that
    runs; after a power cut a missing copy is rewritten from it (see _tamper_problem)."""
    atomic_write_text(path, plan.model_dump_json(indent=2) + "\n", durable=False)
