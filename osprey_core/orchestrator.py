"""The orchestrator: drives runs through the state machine, durably.

:class:`RunController` is the machine's model for one run: guards, persistence and the
``on_enter_*`` side effects. :class:`Orchestrator` is what interfaces call: submit a
request, decide or edit an approval, resume or cancel a run, recover after a crash.

Durability rules kept here:

* every state change is committed before the state's own callback runs; a pause commits
  its approval request in the same transaction, before anything announces it;
* a decision is a compare-and-set on the approval and on the run state in one
  transaction, so exactly one of two concurrent deciders wins;
* what runs is the stored, approved artifact (hash checked), never something regenerated;
* a finished step never runs again; a side-effecting step caught mid-way by a crash is
  ``indeterminate`` until an operator says whether it took effect.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import os
import typing
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from osprey_core.approvals import Action, Outcome, Ruling, rule
from osprey_core.errors import OspreyError, shorten
from osprey_core.fileio import atomic_write_text
from osprey_core.hookspecs.capabilities import (
    Capability,
    CapabilityInfo,
    StepContext,
    StepServices,
)
from osprey_core.hookspecs.observers import ApprovalEvent, RunEvent
from osprey_core.models import (
    ApprovalKind,
    ApprovalRecord,
    ApprovalStatus,
    AuditRecord,
    EventRecord,
    Plan,
    RunRecord,
    StepRecord,
    StepStatus,
    canonical_json,
    sha256_of,
)
from osprey_core.run_machine import ACTIVE, PAUSED, TERMINAL, RunState, new_machine
from osprey_core.settings import ApprovalMode, ApprovalSettings, LLMSettings, PlanningSettings
from osprey_core.store import ConflictError, RunStore, owner_key

if TYPE_CHECKING:
    from osprey_core.config import OspreyConfig
    from osprey_core.control.system import ControlSystem
    from osprey_core.hookspecs.archivers import ArchiverConnector
    from osprey_core.planning import Planner
    from osprey_core.planning.base import PlanLimits
    from osprey_core.plugin_host import PluginHost, PluginView

PLANNING_PREFIX = "/planning"
#: States whose commit is synced to disk before anything else happens.
DURABLE_STATES = PAUSED | TERMINAL | {RunState.INTERRUPTED}
Write = Callable[[RunStore], None]


class ApprovalError(OspreyError):
    """A decision was refused: unknown, already decided, expired, foreign or tampered."""

    #: True once the refusal is in the audit log (so it is written exactly once).
    audited = False


class RunError(OspreyError):
    """The run cannot do what was asked in its current state."""


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@functools.cache
def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def process_start(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks after boot), ``None`` if it is gone or a
    zombie. With the pid and boot id it names one process: a reused pid starts later."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = stat[stat.rfind(")") + 2:].split()
    if not fields or fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


@functools.cache
def own_start() -> int | None:
    return process_start(os.getpid())


def split_planning_prefix(query: str) -> tuple[str, bool]:
    """``"/planning raise the corrector"`` -> ``("raise the corrector", True)``."""
    stripped = query.strip()
    head, _, rest = stripped.partition(" ")
    if head.lower() == PLANNING_PREFIX:
        return rest.strip(), True
    return stripped, False


APPROVAL_MODES = frozenset(typing.get_args(ApprovalMode))


@dataclass
class Runtime:
    """Services shared by every run in this process."""

    host: PluginHost
    config: OspreyConfig
    store: RunStore
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    planner_factory: Callable[[Runtime], Planner] | None = None

    @functools.cached_property
    def machine(self) -> Any:
        """One state machine for every run: building one per run cost ~0.3 ms."""
        return new_machine()

    def __post_init__(self) -> None:
        # Nothing a plugin does from here on can change which capabilities and approval
        # policies exist; attempts are refused and audited.
        self.host.freeze()
        self.host.on_refused_change(self._audit_refused_change)

    @functools.cached_property
    def capability_info(self) -> dict[str, CapabilityInfo]:
        """The traits policies judge steps by, fixed at load: a step that changes a live
        capability object cannot make another capability look read-only."""
        return {capability.name: CapabilityInfo.of(capability)
                for capability in self.host.capabilities()}

    @functools.cached_property
    def plugin_view(self) -> PluginView:
        from osprey_core.plugin_host import PluginView

        return PluginView(self.host)

    @functools.cached_property
    def provider_config(self) -> OspreyConfig:
        """One private copy for the data providers, made once (a copy per request cost
        ~1 ms): what a provider does to it reaches neither the live settings nor a step."""
        return self.private_config()

    def private_config(self) -> OspreyConfig:
        """A fresh copy of the configuration for plugin code (a step, a provider): nothing
        it does to the copy reaches the live settings or any other step."""
        return copy.deepcopy(self.config)

    def _audit_refused_change(self, message: str) -> None:
        entry = AuditRecord(at=self.now(), actor="system", interface="plugin_host",
                            action="plugin_change_refused", details={"reason": message})
        if self.store.conn.in_transaction:
            raise RunError(f"refused plugin change during a commit: {message}")
        with self.store.transaction() as store:
            store.append_audit(entry)

    @property
    def plans_dir(self) -> Path:
        return self.config.home / "plans"

    def now(self) -> datetime:
        return self.clock()

    def approval_settings(self) -> ApprovalSettings:
        """Read fresh each time, so a policy tightened while a run waits applies on resume.
        A capability's own setting (:meth:`Capability.approval_mode`) is its default mode;
        an ``approval.capabilities`` entry naming it wins."""
        settings: ApprovalSettings = self.config.section("approval")
        defaults = self.capability_modes
        if not defaults:
            return settings
        return settings.model_copy(update={"capabilities": {**defaults,
                                                            **settings.capabilities}})

    @functools.cached_property
    def capability_modes(self) -> dict[str, str]:
        """Each capability's own default mode, asked once, of a private copy of the
        settings. Anything but a known mode is ignored: the configured mode applies."""
        config = self.private_config()
        return {capability.name: mode for capability in self.host.capabilities()
                if (mode := capability.approval_mode(config)) in APPROVAL_MODES}

    def planning_settings(self) -> PlanningSettings:
        return self.config.section("planning")

    def plan_limits(self) -> PlanLimits:
        from osprey_core.planning.base import PlanLimits

        settings = self.planning_settings()
        return PlanLimits(settings.max_steps, settings.max_plan_bytes)

    def llm_settings(self) -> LLMSettings:
        return self.config.section("llm")

    def planner(self) -> Planner:
        if self.planner_factory is not None:
            return self.planner_factory(self)
        from osprey_core.planning import make_planner

        return make_planner(self.llm_settings(), self.host.capabilities())

    def capability(self, name: str) -> Capability:
        return self.host.capabilities().get(name)

    def info(self, name: str) -> CapabilityInfo:
        """The load-time traits of capability ``name`` (what policies judge)."""
        if name not in self.capability_info:
            self.capability(name)  # the registry's error, with a did-you-mean
        return self.capability_info[name]

    def rule(self, action: Action) -> Ruling:
        return rule(self.host.approval_policies(), action)

    def plan_file(self, run_id: str) -> Path:
        return self.plans_dir / f"{run_id}.json"

    @functools.cached_property
    def control_system(self) -> ControlSystem:
        """The configured control system, built on first use; its write attempts are
        audited in this runtime's store."""
        from osprey_core.control.service import build_control_system, store_audit_sink

        return build_control_system(self.config, self.host, audit=store_audit_sink(self.store))

    @functools.cached_property
    def archiver(self) -> ArchiverConnector:
        """The configured archiver connector, built on first use."""
        from osprey_core.control.service import build_archiver

        return build_archiver(self.config, self.host)

    async def aclose(self) -> None:
        """Close the control system's connections, if it was built."""
        control_system = self.__dict__.pop("control_system", None)
        if control_system is not None:
            await control_system.close()


class RunController:
    """The state machine's model for one run."""

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
        #: A plan given with the request (``osprey python run``) instead of a planned one.
        self.given_plan: Plan | None = None
        runtime.machine.add_model(self, initial=str(run.state))

    def __enter__(self) -> RunController:
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Leave the shared machine, which would otherwise keep this controller alive."""
        self.rt.machine.remove_model(self)

    # -- guards --------------------------------------------------------------------------

    def is_planning_mode(self) -> bool:
        return self.run.planning

    def has_plan(self) -> bool:
        return self.run.plan is not None

    # -- persistence ---------------------------------------------------------------------

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
        self.run.owner_pid, self.run.owner_boot = os.getpid(), boot_id()
        self.run.owner_start = own_start()
        staged, self._staged = self._staged, []
        notify, self._after_commit = self._after_commit, []
        record = EventRecord(run_id=self.run.id, at=now, kind=event[0], data=event[1])
        with self.rt.store.transaction(durable=durable) as store:
            store.update_run(self.run, expect_state=expect_state, expect_owner=self._seen_owner)
            for write in staged:
                write(store)
            store.append_event(record)
        self._seen_owner = owner_key(self.run)
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

    # -- side effects, one per state -----------------------------------------------------

    async def on_enter_received(self) -> None:
        await self.classify()

    async def on_enter_classifying(self) -> None:
        from osprey_core.planning import rank_capabilities
        from osprey_core.providers import PROVIDER_CONTEXT, ProviderService

        # Kept in the run (committed with the next state): a resumed run plans from the
        # same context and never asks the providers again.
        if (self.rt.config.section("providers").enabled and self.given_plan is None
                and PROVIDER_CONTEXT not in self.run.context):
            gathered = await ProviderService.for_run(self.rt, self.run).gather()
            if gathered.outcomes:
                self.set_context(PROVIDER_CONTEXT, gathered.to_json())
        capabilities = list(self.rt.host.capabilities())
        limit = self.rt.planning_settings().max_candidates
        shortlist = rank_capabilities(self.run.query, capabilities, limit)
        self.run.candidates = [capability.name for capability in shortlist]
        await self.plan()

    async def on_enter_planning(self) -> None:
        from osprey_core.planning import PlanRequest
        from osprey_core.providers import gathered_blocks

        shortlist = [self.rt.capability(name) for name in self.run.candidates]
        request = PlanRequest(query=self.run.query, capabilities=shortlist,
                              context_keys=sorted(self.run.context), user=self.run.user,
                              session=self.run.session, context=gathered_blocks(self.run),
                              limits=self.rt.plan_limits())
        try:
            plan = self.given_plan or await self.rt.planner().plan(request)
            request.limits.check(plan)  # a planner plugin may not have checked
        except OspreyError as exc:
            await self._fail(f"planning failed: {exc}")
            return
        except Exception as exc:  # a planner bug must fail the run, not strand it
            await self._fail(f"planning failed: {type(exc).__name__}: {exc}")
            return
        self.set_plan(plan)
        try:
            write_plan_file(self.rt.plan_file(self.run.id), plan)
        except OspreyError as exc:  # the disk refused the reviewable copy
            await self._fail(f"planning failed: {exc}")
            return
        if self.run.planning:
            ruling = self.rt.rule(self._plan_action(plan))
            if ruling.outcome is Outcome.DENY:
                await self._fail("plan refused by policy: " + "; ".join(ruling.reasons))
                return
            self._stage_approval(ApprovalKind.PLAN, None, "plan", plan.model_dump(mode="json"),
                                 plan_summary(self.rt, self.run, plan), ruling.reasons)
        await self.submit_plan()

    async def on_enter_awaiting_plan_approval(self) -> None:
        """Nothing to do: the request was committed by ``persist`` and is announced."""

    async def on_enter_awaiting_step_approval(self) -> None:
        """Nothing to do: the request was committed by ``persist`` and is announced."""

    async def on_enter_executing(self) -> None:
        try:
            trigger = await self._advance()
        except OspreyError as exc:
            await self._fail(str(exc))
            return
        except Exception as exc:  # a capability's prepare() or a bug: fail, never strand
            await self._fail(f"{type(exc).__name__}: {exc}")
            return
        await getattr(self, trigger)()

    async def on_enter_responding(self) -> None:
        assert self.run.plan is not None
        index = self.run.next_step
        step = self.run.plan.steps[index]
        capability = self.rt.capability(step.capability)
        try:
            result = await self._run_step(index, capability, self._context(index, capability),
                                          commit=False)
        except OspreyError as exc:
            await self._fail(str(exc))
            return
        self.run.response = result if isinstance(result, str) else canonical_json(result)
        await self.finish()  # commits the answer with the final state

    async def _fail(self, message: str) -> None:
        self.run.error = message
        self._withdraw_pending("system", "orchestrator", message)
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
            context = self._context(index, capability)
            approved = self._approved_artifact(index)
            if approved is None:
                prepared = await capability.prepare(context)
                artifact, summary = prepared.artifact, prepared.summary
            else:
                artifact, summary = approved.artifact, approved.summary
                if self._lapsed(approved):
                    approved = None  # the same artifact, asked again below if policy asks
            ruling = self.rt.rule(self._step_action(capability, artifact))
            if ruling.outcome is Outcome.DENY:
                raise RunError(f"step {index + 1} ({capability.name}) refused by policy: "
                               + "; ".join(ruling.reasons))
            if ruling.outcome is Outcome.ASK and approved is None:
                self._stage_approval(ApprovalKind.STEP, index,
                                     self.rt.info(capability.name).approval_kind,
                                     artifact, summary, ruling.reasons)
                return "pause_for_step"
            await self._run_step(index, capability, _with_artifact(
                context, artifact, None if approved is None else approved.id))
        return "respond"

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

    def _context(self, index: int, capability: Capability) -> StepContext:
        from osprey_core.providers import ProviderService

        assert self.run.plan is not None
        step = self.run.plan.steps[index]
        parameters: Any = step.parameters
        if capability.parameters is not None:
            parameters = capability.parameters.model_validate(step.parameters)
        return StepContext(
            run_id=self.run.id, index=index, query=self.run.query, user=self.run.user,
            session=self.run.session, parameters=parameters,
            inputs={key: self.run.context.get(key) for key in step.inputs},
            services=StepServices(
                config=self.rt.private_config, plugins=self.rt.plugin_view,
                capabilities=tuple(self.rt.capability_info.values()), audit=self.step_audit,
                # What the policies say about another artifact for this very step (code a
                # generator rewrote after a failure), judged on the live settings.
                rule=lambda artifact: self.rt.rule(self._step_action(capability, artifact)),
                control_system=lambda: self.rt.control_system,
                archiver=lambda: self.rt.archiver,
                providers=lambda: ProviderService.for_run(self.rt, self.run)),
            interface=self.run.interface,
        )

    # -- approvals -----------------------------------------------------------------------

    def _plan_action(self, plan: Plan) -> Action:
        return Action(kind="plan", run_id=self.run.id, session=self.run.session,
                      user=self.run.user, planning_mode=self.run.planning,
                      settings=self.rt.approval_settings(), artifact=plan.model_dump(mode="json"))

    def _step_action(self, capability: Capability, artifact: dict[str, Any]) -> Action:
        info = self.rt.info(capability.name)
        return Action(kind="step", run_id=self.run.id, session=self.run.session,
                      user=self.run.user, planning_mode=self.run.planning,
                      settings=self.rt.approval_settings(), artifact=dict(artifact),
                      capability=info.name, side_effects=info.side_effects,
                      runs_code=info.runs_code, approval_kind=info.approval_kind)

    def _stage_approval(self, kind: ApprovalKind, index: int | None, action: str,
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

    def _withdraw_pending(self, actor: str, interface: str, reason: str) -> None:
        if self.run.state in PAUSED and self.run.approval_id is not None:
            approval = self.rt.store.get_approval(self.run.approval_id)
            if approval.status is ApprovalStatus.PENDING:
                self.stage_decision(approval, ApprovalStatus.WITHDRAWN, actor, interface, reason)


def _with_artifact(context: StepContext, artifact: dict[str, Any],
                   approval_id: str | None) -> StepContext:
    from dataclasses import replace

    return replace(context, artifact=artifact, approval_id=approval_id)


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
        params = canonical_json(step.parameters)
        inputs = f" reads {', '.join(step.inputs)}" if step.inputs else ""
        note = "  [asks again before running]" if asks else ""
        lines.append(f"  {number}. {step.capability} {params}{inputs} -> {step.output}{note}")
    return "\n".join(lines)


class Orchestrator:
    """Submit, decide, edit, resume, cancel and recover runs."""

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime

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
            interface=interface, context={"query": text}, owner_pid=os.getpid(),
            owner_boot=boot_id(), owner_start=own_start(), created_at=now, updated_at=now,
        )
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

    # -- deciding ------------------------------------------------------------------------

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
                    trigger = functools.partial(controller._fail, problem)
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
        context = _with_artifact(controller._context(index, capability), approval.artifact, None)
        try:
            revised = await capability.revise(context, data)
        except OspreyError as exc:
            raise ApprovalError(f"approval {approval.id}: the edit is refused: {exc}") from None
        ruling = self.rt.rule(controller._step_action(capability, revised.artifact))
        if ruling.outcome is Outcome.DENY:
            raise ApprovalError("the edited artifact is refused by policy: "
                                + "; ".join(ruling.reasons))
        controller.stage_decision(approval, ApprovalStatus.SUPERSEDED, actor, interface,
                                  "replaced by an edited artifact")
        # Edited by a human, so it is always shown to a human again, even if policy allows it.
        controller._stage_approval(ApprovalKind.STEP, index,
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
        ruling = self.rt.rule(controller._plan_action(plan))
        if ruling.outcome is Outcome.DENY:
            raise ApprovalError("the edited plan is refused by policy: "
                                + "; ".join(ruling.reasons))
        controller.stage_decision(approval, ApprovalStatus.SUPERSEDED, actor, interface,
                                  "replaced by an edited plan")
        controller.set_plan(plan)
        controller._stage_approval(ApprovalKind.PLAN, None, "plan",
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
        from osprey_core.store import StoreError

        try:
            approval = self.rt.store.get_approval(approval_id)
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
            what, ruling = "plan", self.rt.rule(controller._plan_action(run.plan))
        else:
            index = approval.step_index or 0
            capability = self.rt.capability(run.plan.steps[index].capability)
            what = f"step {index + 1} ({capability.name})"
            ruling = self.rt.rule(controller._step_action(capability, approval.artifact))
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
            controller._withdraw_pending(actor, interface, text)
            controller.audit("run_cancelled", actor, interface, reason=reason)
            controller.run.error = text
            await controller.cancel()
            return controller.run

    async def recover(self) -> list[str]:
        """Mark runs whose process died mid-work as interrupted; returns their ids."""
        interrupted = []
        for run in self.rt.store.list_runs(states=set(ACTIVE), limit=10_000):
            if _owner_alive(run):
                continue
            with RunController(self.rt, run) as controller:
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


def _owner_alive(run: RunRecord) -> bool:
    """Is the process that holds ``run`` still running? Same boot, same pid, and the same
    start time (a pid reused by another process is not the owner)."""
    if run.owner_pid is None or run.owner_boot != boot_id():
        return False
    started = process_start(run.owner_pid)
    if started is None:
        return False
    return run.owner_start is None or started == run.owner_start
