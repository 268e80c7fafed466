"""The orchestrator: what interfaces call to submit, decide, resume, cancel and recover.

Durability rules kept by the package:

* every state change is committed before the state's own callback runs; a pause commits
  its approval request in the same transaction, before anything announces it;
* a decision is a compare-and-set on the approval and on the run state in one
  transaction, so exactly one of two concurrent deciders wins;
* what runs is the stored, approved artifact (hash checked), never something regenerated;
* a finished step never runs again; a side-effecting step caught mid-way by a crash is
  ``indeterminate`` until an operator says whether it took effect.
"""

from __future__ import annotations

from typing import Literal

from osprey_core.errors import RunError
from osprey_core.hookspecs.observers import RunEvent
from osprey_core.models import AuditRecord, EventRecord, Plan, RunRecord, StepStatus
from osprey_core.orchestration.controller import RunController
from osprey_core.orchestration.decisions import Decisions
from osprey_core.orchestration.runtime import claim, new_id
from osprey_core.run_machine import ACTIVE, PAUSED, TERMINAL, RunState
from osprey_core.store import ConflictError

PLANNING_PREFIX = "/planning"


def split_planning_prefix(query: str) -> tuple[str, bool]:
    """``"/planning raise the corrector"`` -> ``("raise the corrector", True)``."""
    stripped = query.strip()
    head, _, rest = stripped.partition(" ")
    if head.lower() == PLANNING_PREFIX:
        return rest.strip(), True
    return stripped, False


class Orchestrator(Decisions):
    """Submit, decide, edit, resume, cancel and recover runs."""

    # -- submitting ----------------------------------------------------------------------

    async def submit(self, query: str, *, session: str = "default", user: str = "operator",
                     planning: bool | None = None, interface: str = "api",
                     plan: Plan | None = None) -> RunRecord:
        """Run ``query`` until it is done, fails or pauses. ``plan`` skips the planner: it
        is validated like a planned one and still goes through every approval."""
        text, prefixed = split_planning_prefix(query)
        if not text:
            raise RunError("the request is empty")
        if plan is not None:
            from osprey_core.planning import validate_plan

            plan = validate_plan(plan, self.rt.host.capabilities(), ["query"],
                                 self.rt.plan_limits())
        now = self.rt.now()
        run = RunRecord(
            id=new_id("run"), session=session, user=user, query=text,
            planning=bool(planning or prefixed or self.rt.planning_settings().enabled),
            interface=interface, context={"query": text}, created_at=now, updated_at=now,
        )
        claim(run, now, self.rt.lease)
        submitted = AuditRecord(at=now, actor=user, interface=interface, action="run_submitted",
                                run_id=run.id, details={"query": text, "planning": run.planning})
        with self.rt.store.transaction(durable=False) as store:  # synced with the pause/end
            store.insert_run(run)
            store.append_audit(submitted)
            store.append_event(EventRecord(run_id=run.id, at=now, kind="submitted",
                                           data={"query": text}))
        self.rt.host.notify_run_event(RunEvent(run.id, "submitted", now, {"query": text}))
        with RunController(self.rt, run) as controller:
            controller.given_plan = plan
            await controller.classify()
            return controller.run

    # -- resuming, cancelling, recovering ------------------------------------------------

    async def resume(self, run_id: str, *, actor: str, interface: str,
                     indeterminate: Literal["applied", "not_applied"] | None = None) -> RunRecord:
        await self.recover()
        run = self.rt.store.get_run(run_id)
        if run.state in PAUSED:
            raise RunError(f"run {run.id} is waiting for approval {run.approval_id}; "
                           "approve or reject it instead")
        if run.state is not RunState.INTERRUPTED:
            raise RunError(f"run {run.id} is {run.state}; only interrupted runs resume")
        with RunController(self.rt, run) as controller:
            for step in self.rt.store.steps(run.id):
                if step.status is not StepStatus.INDETERMINATE:
                    continue
                if indeterminate is None:
                    raise RunError(
                        f"step {step.index + 1} ({step.capability}) of run {run.id} started but "
                        "did not finish, so it may have taken effect. Check the machine, then "
                        "resume with --indeterminate applied (treat it as done) or not_applied "
                        "(run it again, with a fresh approval if the policy asks)")
                outcome = StepStatus.SUCCEEDED if indeterminate == "applied" else StepStatus.PENDING
                resolved = step.model_copy(update={"status": outcome})
                controller.stage(lambda store, resolved=resolved: store.save_step(resolved))
                controller.audit("step_resolved", actor, interface, step=step.index + 1,
                                 capability=step.capability, outcome=indeterminate)
                if outcome is StepStatus.PENDING and run.approval_id is not None:
                    run.approval_id = None  # a re-run needs a fresh approval
            controller.audit("run_resumed", actor, interface)
            await controller.resume()
            return controller.run

    async def cancel(self, run_id: str, *, actor: str, interface: str,
                     reason: str | None = None) -> RunRecord:
        await self.recover()
        run = self.rt.store.get_run(run_id)
        if run.state in TERMINAL:
            raise RunError(f"run {run.id} has already ended ({run.state})")
        if run.state in ACTIVE:
            raise RunError(f"run {run.id} is {run.state} in process {run.owner_pid}; "
                           "it cannot be cancelled from here")
        with RunController(self.rt, run) as controller:
            text = reason or f"cancelled by {actor}"
            controller.withdraw_pending(actor, interface, text)
            controller.audit("run_cancelled", actor, interface, reason=reason)
            controller.run.error = text
            await controller.cancel()
            return controller.run

    async def recover(self) -> list[str]:
        """Mark runs whose process died mid-work as interrupted; returns their ids."""
        interrupted = []
        for run in self.rt.store.list_runs(states=set(ACTIVE), limit=10_000):
            if self.rt.working(run, self.rt.now()):
                continue
            with RunController(self.rt, run) as controller:
                controller.take_over = True
                for step in self.rt.store.steps(run.id):
                    if step.status is StepStatus.RUNNING:
                        status = (StepStatus.INDETERMINATE if step.side_effects
                                  else StepStatus.PENDING)
                        marked = step.model_copy(update={"status": status})
                        controller.stage(lambda store, marked=marked: store.save_step(marked))
                controller.audit("run_interrupted", "system", "recovery",
                                 previous_state=str(run.state), owner_pid=run.owner_pid)
                try:
                    await controller.interrupt()
                except ConflictError:
                    continue  # another process recovered it meanwhile
                interrupted.append(run.id)
        return interrupted
