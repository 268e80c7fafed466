"""A run's controller: the state machine's model, with a side effect for each state.

The states and the transition table are in :mod:`osprey_core.run_machine`; here are the
guards (``is_*``/``has_*``) and the ``on_enter_<state>`` callbacks: gather context,
shortlist capabilities, plan, run steps until one needs a human, and respond. What they
write goes through :class:`~osprey_core.orchestration.recorder.RunRecorder`.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

from osprey_core.approvals import Action, Outcome
from osprey_core.display.text import arguments
from osprey_core.errors import OspreyError, RunError, StepRefused
from osprey_core.hookspecs.capabilities import Capability, StepContext, StepServices
from osprey_core.models import (
    ApprovalKind,
    ApprovalRecord,
    ApprovalStatus,
    Plan,
    RunRecord,
    StepRecord,
    StepStatus,
    canonical_json,
    sha256_of,
)
from osprey_core.orchestration.recorder import RunRecorder, write_plan_file
from osprey_core.orchestration.runtime import Runtime
from osprey_core.store_errors import ConflictError, StoreStorageError


class RunController(RunRecorder):
    """The state machine's model for one run."""

    def __init__(self, runtime: Runtime, run: RunRecord) -> None:
        super().__init__(runtime, run)
        #: A plan given with the request (``osprey python run``) instead of a planned one.
        self.given_plan: Plan | None = None
        runtime.machine.add_model(self, initial=str(run.state))

    def __enter__(self) -> RunController:
        self.start_heartbeat()
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Stop renewing the lease; leave the shared machine, which would otherwise keep
        this controller alive. A run left by an error (the store went away mid-run) is
        abandoned: if the store says this process holds it, recovery interrupts it. Not
        when another holder won the run (a conflict), nor when recovering it failed: the
        run is then someone else's, possibly another instance's in this very process."""
        self.stop_heartbeat()
        self.rt.machine.remove_model(self)
        error = exc_info[0]
        if (isinstance(error, type) and not issubclass(error, ConflictError)
                and not self.take_over):
            self.rt.abandoned.add(self.run.id)

    # -- guards --------------------------------------------------------------------------

    def is_planning_mode(self) -> bool:
        return self.run.planning

    def has_plan(self) -> bool:
        return self.run.plan is not None

    # -- side effects, one per state -----------------------------------------------------

    async def on_enter_received(self) -> None:
        await self.classify()

    async def on_enter_classifying(self) -> None:
        from osprey_core.planning import rank_capabilities
        from osprey_core.providers import PROVIDER_CONTEXT

        # Kept in the run (committed with the next state): a resumed run plans from the
        # same context and never asks the providers again.
        if (self.rt.config.section("providers").enabled and self.given_plan is None
                and PROVIDER_CONTEXT not in self.run.context):
            gathered = await self.rt.provider_service(self.run).gather()
            if gathered.outcomes:
                self.set_context(PROVIDER_CONTEXT, gathered.to_json())
        capabilities = list(self.rt.host.capabilities())
        limit = self.rt.planning_settings().max_candidates
        shortlist = rank_capabilities(self.run.query, capabilities, limit)
        self.run.candidates = [capability.name for capability in shortlist]
        await self.plan()

    async def on_enter_planning(self) -> None:
        from osprey_core.planning import PlanRequest
        from osprey_core.providers import context_by_type, gathered_blocks

        shortlist = [self.rt.capability(name) for name in self.run.candidates]
        blocks = gathered_blocks(self.run)
        # A gathered block's context type is a context key too: a step can require and read it.
        keys = sorted({*self.run.context, *context_by_type(blocks)})
        request = PlanRequest(query=self.run.query, capabilities=shortlist, context_keys=keys,
                              user=self.run.user, session=self.run.session, context=blocks,
                              limits=self.rt.plan_limits())
        try:
            plan = self.given_plan or await self.rt.planner().plan(request)
            request.limits.check(plan)  # a planner plugin may not have checked
        except OspreyError as exc:
            await self.fail_with(f"planning failed: {exc}")
            return
        except Exception as exc:  # a planner bug must fail the run, not strand it
            await self.fail_with(f"planning failed: {type(exc).__name__}: {exc}")
            return
        self.set_plan(plan)
        try:
            write_plan_file(self.rt.plan_file(self.run.id), plan)
        except OspreyError as exc:  # the disk refused the reviewable copy
            await self.fail_with(f"planning failed: {exc}")
            return
        if self.run.planning:
            ruling = self.rt.rule(self.plan_action(plan))
            if ruling.outcome is Outcome.DENY:
                await self.fail_with("plan refused by policy: " + "; ".join(ruling.reasons))
                return
            self.stage_approval(ApprovalKind.PLAN, None, "plan", plan.model_dump(mode="json"),
                                 plan_summary(self.rt, self.run, plan), ruling.reasons)
        await self.submit_plan()

    async def on_enter_awaiting_plan_approval(self) -> None:
        """Nothing to do: the request was committed by ``persist`` and is announced."""

    async def on_enter_awaiting_step_approval(self) -> None:
        """Nothing to do: the request was committed by ``persist`` and is announced."""

    async def on_enter_executing(self) -> None:
        try:
            trigger = await self._advance()
        except StoreStorageError:
            raise  # nothing can be recorded: the run is abandoned, and recovery says so
        except OspreyError as exc:
            await self.fail_with(str(exc))
            return
        except Exception as exc:  # a capability's prepare() or a bug: fail, never strand
            await self.fail_with(f"{type(exc).__name__}: {exc}")
            return
        await getattr(self, trigger)()

    async def on_enter_responding(self) -> None:
        assert self.run.plan is not None
        index = self.run.next_step
        step = self.run.plan.steps[index]
        capability = self.rt.capability(step.capability)
        try:
            result = await self._run_step(index, capability, self.step_context(index, capability),
                                          commit=False)
        except OspreyError as exc:
            await self.fail_with(str(exc))
            return
        self.run.response = result if isinstance(result, str) else canonical_json(result)
        await self.finish()  # commits the answer with the final state

    async def fail_with(self, message: str) -> None:
        self.run.error = message
        self.withdraw_pending("system", "orchestrator", message)
        self.audit("run_failed", "system", "orchestrator", error=message)
        await self.fail()

    # -- steps ---------------------------------------------------------------------------

    async def _advance(self) -> str:
        """Run steps until the plan needs a human, responds, or a step fails."""
        assert self.run.plan is not None
        done = {record.index: record for record in self.rt.store.steps(self.run.id)}
        while self.run.next_step < len(self.run.plan.steps):
            index = self.run.next_step
            step = self.run.plan.steps[index]
            capability = self.rt.capability(step.capability)
            if self.rt.info(capability.name).terminal:
                return "respond"
            record = done.get(index)
            if record is not None and record.status is StepStatus.SUCCEEDED:
                self.run.next_step += 1  # finished steps never run again
                continue
            if record is not None and record.status is StepStatus.INDETERMINATE:
                raise RunError(f"step {index + 1} ({capability.name}) is indeterminate; "
                               "an operator must resolve it")
            context = self.step_context(index, capability)
            approved = self._approved_artifact(index)
            if approved is None:
                try:
                    prepared = await capability.prepare(context)
                except StepRefused as exc:
                    raise self._refused(index, capability,
                                        f"before asking for approval: {exc}") from None
                artifact, summary = prepared.artifact, prepared.summary
            else:
                artifact, summary = approved.artifact, approved.summary
                if self._lapsed(approved):
                    approved = None  # the same artifact, asked again below if policy asks
            ruling = self.rt.rule(self.step_action(capability, artifact))
            if ruling.outcome is Outcome.DENY:
                raise self._refused(index, capability,
                                    "by policy: " + "; ".join(ruling.reasons))
            if ruling.outcome is Outcome.ASK and approved is None:
                self.stage_approval(ApprovalKind.STEP, index,
                                     self.rt.info(capability.name).approval_kind,
                                     artifact, summary, ruling.reasons)
                return "pause_for_step"
            await self._run_step(index, capability, with_artifact(
                context, artifact, None if approved is None else approved.id))
        return "respond"

    def _refused(self, index: int, capability: Capability, why: str) -> RunError:
        """A step the policies or the configuration forbid: refused before anyone is asked
        to approve it (no approval is requested), with the refusal in the audit log."""
        message = f"step {index + 1} ({capability.name}) refused {why}"
        self.audit("step_refused", self.run.user, self.run.interface, step=index + 1,
                   capability=capability.name, reason=message)
        return RunError(message)

    def _lapsed(self, approval: ApprovalRecord) -> bool:
        """Has an approved step missed its chance to start? It must start before the
        request's expiry or within ``approval.execution_window_seconds`` of the decision,
        whichever is later; after a crash and a late resume it is asked for again."""
        window = timedelta(seconds=self.rt.approval_settings().execution_window_seconds)
        decided = approval.decided_at or approval.created_at
        deadline = max(approval.expires_at, decided + window)
        if self.rt.now() <= deadline:
            return False
        self.run.approval_id = None
        self.audit("approval_lapsed", "system", "orchestrator", approval_id=approval.id,
                   sha256=approval.artifact_sha256, deadline=deadline.isoformat(),
                   step=(approval.step_index or 0) + 1)
        return True

    def _approved_artifact(self, index: int) -> ApprovalRecord | None:
        if self.run.approval_id is None:
            return None
        approval = self.rt.store.get_approval(self.run.approval_id)
        if (approval.kind is not ApprovalKind.STEP or approval.step_index != index
                or approval.status is not ApprovalStatus.APPROVED):
            return None
        if not approval.artifact_intact():
            raise RunError(f"approved artifact of {approval.id} no longer matches its hash; "
                           "nothing was run")
        return approval

    async def _run_step(self, index: int, capability: Capability, context: StepContext,
                        *, commit: bool = True) -> Any:
        """Run one step and record it; a side-effecting step is durably marked running
        first. With ``commit=False`` the result rides on the next state change's commit."""
        assert self.run.plan is not None
        step = self.run.plan.steps[index]
        side_effects = self.rt.info(capability.name).side_effects
        artifact_hash = sha256_of(dict(context.artifact)) if context.artifact else None
        record = StepRecord(
            run_id=self.run.id, index=index, capability=capability.name,
            status=StepStatus.RUNNING, side_effects=side_effects,
            idempotency_key=f"{self.run.id}:{index}", artifact_sha256=artifact_hash,
            started_at=self.rt.now(),
        )
        if side_effects:
            # A crash from here on leaves it running, so recovery marks it indeterminate.
            self.stage(lambda store: store.save_step(record))
            self.audit("step_started", self.run.user, self.run.interface, sha256=artifact_hash,
                       durable=True, step=index + 1, capability=capability.name)
            self.save("step_started", {"step": index + 1, "capability": capability.name})
        try:
            result = await capability.execute(context)
            canonical_json(result)  # results are stored as JSON: refuse anything else now
        except Exception as exc:
            failed = record.model_copy(update={"status": StepStatus.FAILED,
                                               "error": f"{type(exc).__name__}: {exc}",
                                               "finished_at": self.rt.now()})
            self.stage(lambda store: store.save_step(failed))
            self.save("step_failed", {"step": index + 1, "error": failed.error})
            raise RunError(f"step {index + 1} ({capability.name}) failed: {failed.error}") from exc
        finished = record.model_copy(update={"status": StepStatus.SUCCEEDED, "result": result,
                                             "finished_at": self.rt.now()})
        self.set_context(step.output, result)
        self.run.next_step = index + 1
        self.stage(lambda store: store.save_step(finished))
        if side_effects:
            self.audit("step_succeeded", self.run.user, self.run.interface, sha256=artifact_hash,
                       durable=True, step=index + 1, capability=capability.name)
        if commit:
            self.save("step_succeeded", {"step": index + 1, "capability": capability.name})
        return result

    def step_context(self, index: int, capability: Capability) -> StepContext:
        assert self.run.plan is not None
        step = self.run.plan.steps[index]
        parameters: Any = step.parameters
        if capability.parameters is not None:
            parameters = capability.parameters.model_validate(step.parameters)
        return StepContext(
            run_id=self.run.id, index=index, query=self.run.query, user=self.run.user,
            session=self.run.session, parameters=parameters,
            inputs=self.step_inputs(step.inputs),
            services=StepServices(
                config=self.rt.private_config, plugins=self.rt.plugin_view,
                capabilities=tuple(self.rt.capability_info.values()), audit=self.step_audit,
                # What the policies say about another artifact for this very step (code a
                # generator rewrote after a failure), judged on the live settings.
                rule=lambda artifact: self.rt.rule(self.step_action(capability, artifact)),
                control_system=lambda: self.rt.control_system,
                archiver=lambda: self.rt.archiver,
                providers=lambda: self.rt.provider_service(self.run)),
            interface=self.run.interface,
        )


    def step_inputs(self, keys: list[str]) -> dict[str, Any]:
        """A step's inputs: run-context entries (earlier outputs, request context), else the
        data gathered from providers for the context type of that name."""
        inputs = {key: self.run.context[key] for key in keys if key in self.run.context}
        if missing := [key for key in keys if key not in inputs]:
            from osprey_core.providers import context_by_type, gathered_blocks

            typed = context_by_type(gathered_blocks(self.run))
            inputs.update({key: typed.get(key) for key in missing})
        return {key: inputs[key] for key in keys}


def with_artifact(context: StepContext, artifact: dict[str, Any],
                  approval_id: str | None) -> StepContext:
    return replace(context, artifact=artifact, approval_id=approval_id)


def plan_summary(rt: Runtime, run: RunRecord, plan: Plan) -> str:
    """Every step with its parameters, and which steps will ask again before running."""
    lines = [f"Plan for: {run.query}"]
    for number, step in enumerate(plan.steps, start=1):
        info = rt.info(step.capability)
        preview = Action(kind="step", run_id=run.id, session=run.session, user=run.user,
                         planning_mode=True, settings=rt.approval_settings(),
                         artifact={"capability": step.capability, "parameters": step.parameters},
                         capability=step.capability, side_effects=info.side_effects,
                         runs_code=info.runs_code)
        asks = rt.rule(preview).outcome is not Outcome.ALLOW
        params = arguments(step.parameters)
        inputs = f" reads {', '.join(step.inputs)}" if step.inputs else ""
        note = "  [asks again before running]" if asks else ""
        what = " ".join(part for part in (step.capability, params) if part)
        lines.append(f"  {number}. {what}{inputs} -> {step.output}{note}")
    return "\n".join(lines)


