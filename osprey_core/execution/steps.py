"""The ``python`` and ``python_write`` plan steps: the execution service inside a run.

``prepare`` generates and analyses the code, so the approval request carries the exact code
and its sha256; ``execute`` re-checks that hash and runs exactly that code. When an attempt
fails, regenerated code is put to the approval policies again: it runs only if they allow
it without a human; otherwise the step ends and says so.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from osprey_core.errors import StepRefused
from osprey_core.execution.models import AttemptRecord, ExecutionMode, ExecutionRequest
from osprey_core.execution.service import (
    EDITED,
    GIVEN,
    Authorization,
    Decision,
    ExecutionError,
    ExecutionService,
    Proposal,
    code_hash,
    proposal_summary,
)
from osprey_core.hookspecs.approval_policies import ApprovalPolicy, Verdict, Vote
from osprey_core.hookspecs.capabilities import Capability, PreparedAction, StepContext

if TYPE_CHECKING:
    from rich.console import RenderableType

#: Requests the offline planner routes to generated code.
_ANALYSIS_WORDS = re.compile(
    r"\b(plot|graph|chart|fit|histogram|analy[sz]e|analysis|statistics?|average|mean|"
    r"correlat\w*|python|compute|calculate|trend)\b", re.IGNORECASE)
#: Step results keep this much of the output; the logs in the execution folder keep it all.
_OUTPUT_TAIL = 4000


class PythonParameters(BaseModel):
    """What the planner asks of generated code."""

    model_config = ConfigDict(extra="forbid")

    objective: str = Field("", description="What the code must compute, plot or change.")
    expected_results: dict[str, str] = Field(
        default_factory=dict, description="Keys the code puts in `results`, with meaning.")
    capability_hints: list[str] = Field(
        default_factory=list, description="Channels or methods to use.")
    limits: dict[str, float] = Field(
        default_factory=dict, description="Sandbox limits to tighten (e.g. wall_seconds).")
    code: str | None = Field(None, description="Run this code instead of generating it.")


class PythonStep(Capability):
    """Generated Python, read-only: analysis, fits and figures from channel data."""

    name = "python"
    description = ("Write and run Python in the sandbox to analyse channel data: statistics, "
                   "fits, plots (saved as figures), computed results. Read-only.")
    provides = ("analysis_results",)
    parameters = PythonParameters
    runs_code = True
    editable = True
    approval_kind = "python_code"
    mode: ClassVar[ExecutionMode] = ExecutionMode.READ

    def match(self, query: str) -> dict[str, Any] | None:
        return {"objective": query} if _ANALYSIS_WORDS.search(query) else None

    def request(self, step: StepContext) -> ExecutionRequest:
        params: PythonParameters = step.parameters
        return ExecutionRequest(query=step.query, objective=params.objective,
                                expected_results=params.expected_results,
                                capability_hints=params.capability_hints, mode=self.mode,
                                limits=params.limits, code=params.code)

    async def prepare(self, step: StepContext) -> PreparedAction:
        service = _service(step)
        request = self.request(step)
        generator = None if request.code is not None else service.make_generator()
        proposal = await service.propose(request, generator=generator, feedback=[],
                                         attempts=[])
        return PreparedAction(proposal.artifact(), proposal.summary())

    async def revise(self, step: StepContext, edited: dict[str, Any]) -> PreparedAction:
        from osprey_core.analysis import analyze

        code = edited.get("code")
        if not isinstance(code, str) or not code.strip():
            raise ExecutionError("the edit must give the new code as a non-empty 'code' string")
        request = _request_from(step.artifact or {}, self.mode)
        proposal = Proposal(request, code, analyze(code, filename="edited code"), [],
                            EDITED)
        return PreparedAction(proposal.artifact(), proposal.summary())

    async def execute(self, step: StepContext) -> Any:
        from osprey_core.analysis import analyze

        artifact = dict(step.artifact or {})
        code = artifact.get("code")
        if not isinstance(code, str) or code_hash(code) != artifact.get("code_sha256"):
            raise ExecutionError("the code does not match the sha256 it was approved under; "
                                 "nothing was run")
        request = _request_from(artifact, self.mode)
        earlier = [AttemptRecord.model_validate(item) for item in artifact.get("attempts", [])]
        proposal = Proposal(request, code, analyze(code), earlier, str(artifact.get("generator")))
        how = f"approved ({step.approval_id})" if step.approval_id else "allowed by policy"
        service = _service(step)
        result = await service.run(
            request, lambda regenerated: _authorize(step, regenerated), first=proposal,
            first_authorization=Authorization(Decision.RUN, [how], step.approval_id,
                                              artifact["code_sha256"]))
        if not result.ok:
            raise ExecutionError(f"{result.error} after {len(result.attempts)} attempt(s); "
                                 f"execution folder: {result.folder}")
        data = result.model_dump(mode="json")
        data["stdout"] = result.stdout[-_OUTPUT_TAIL:]
        data["stderr"] = result.stderr[-_OUTPUT_TAIL:]
        return data

    def render(self, result: Any) -> RenderableType | str:
        """Outcome, the code, computed results as tables, figure/notebook/folder paths."""
        from osprey_core.display.python import python_result

        return python_result(result)


class PythonWriteStep(PythonStep):
    """Generated Python that may write to the machine: always approved for its exact code."""

    name = "python_write"
    description = ("Write and run Python that changes the machine through the runtime API "
                   "(write_channel). Needs approval of the exact code; limits apply.")
    provides = ("write_results",)
    side_effects = True
    approval_kind = "python_write"
    mode = ExecutionMode.WRITE

    def match(self, query: str) -> dict[str, Any] | None:
        return None  # writing code is never chosen offline: the planner or CLI asks for it

    async def prepare(self, step: StepContext) -> PreparedAction:
        return _refuse_forbidden_writes(step, await super().prepare(step))

    async def revise(self, step: StepContext, edited: dict[str, Any]) -> PreparedAction:
        return _refuse_forbidden_writes(step, await super().revise(step, edited))


def _refuse_forbidden_writes(step: StepContext, prepared: PreparedAction) -> PreparedAction:
    """Refuse code whose writes the control system would block whatever happens (writes
    disabled; a literal channel without a writable limits entry; a literal value outside
    its limits) before anyone is asked to approve it. Writes whose channel is computed at
    run time are judged by the broker when they happen."""
    from osprey_core.control.system import UNKNOWN

    analysis = prepared.artifact.get("analysis", {})
    if not analysis.get("writes"):
        return prepared
    control_system = step.services["control_system"]
    refused = []
    for write in analysis.get("planned_writes", []):
        value = UNKNOWN if write.get("computed") else write.get("value")
        if write.get("channel") is not None and (
                reason := control_system.refusal(write["channel"], value)):
            refused.append(f"line {write.get('line')}: {write['channel']}: {reason}")
    if not refused and not control_system.writes_enabled:
        refused.append("the code writes, but writes are disabled "
                       "(control_system.writes_enabled is false)")
    if refused:
        raise StepRefused("; ".join(refused) + "; nothing was asked or run")
    return prepared


class CodePolicy(ApprovalPolicy):
    """The analyzer decides who must look: writes and dangerous constructs ask a human,
    code the analyzer cannot parse is refused."""

    name = "python_code"
    description = "Asks for a human when generated code writes or uses dangerous constructs."

    def evaluate(self, action: Any) -> Verdict:
        analysis = action.artifact.get("analysis") if action.kind == "step" else None
        if not isinstance(analysis, dict) or "code_sha256" not in action.artifact:
            return Verdict(Vote.ABSTAIN, "not generated code")
        if analysis.get("parse_error"):
            return Verdict(Vote.DENY, "the analyzer cannot parse the code (fail closed)")
        if action.settings.mode_for(action.capability) == "disabled":
            return Verdict(Vote.ABSTAIN, "approval is disabled for this capability")
        if action.artifact.get("mode") == "write" or analysis.get("writes"):
            return Verdict(Vote.REQUIRE_APPROVAL, "the code writes to the control system")
        if analysis.get("dangerous"):
            return Verdict(Vote.REQUIRE_APPROVAL, "the code uses dangerous constructs")
        return Verdict(Vote.ABSTAIN, "read-only code without dangerous constructs")


def _request_from(artifact: dict[str, Any], mode: ExecutionMode) -> ExecutionRequest:
    """The request behind an artifact; code a person wrote stays the request's code, so a
    failure never has it regenerated."""
    given = artifact.get("generator") in (GIVEN, EDITED)
    return ExecutionRequest.model_validate({**artifact.get("request", {}), "mode": mode,
                                            "code": artifact.get("code") if given else None})


def _service(step: StepContext) -> ExecutionService:
    services = step.services
    return ExecutionService(
        services.config, services.plugins,
        control_system=lambda: services.control_system,
        archiver=lambda: services.archiver, actor=step.user,
        interface=step.interface or "api", run_id=step.run_id, audit=services.get("audit"),
    )


async def _authorize(step: StepContext, proposal: Proposal) -> Authorization:
    """Regenerated code faces the same policies, through the orchestrator's ``rule``
    service; only an outright allow lets it run."""
    from osprey_core.approvals import Outcome

    ruling = step.services.rule(proposal.artifact())
    decision = {Outcome.ALLOW: Decision.RUN, Outcome.ASK: Decision.ASK}.get(
        ruling.outcome, Decision.REFUSE)
    reasons = ruling.reasons if decision is not Decision.ASK else [
        "regenerated code needs a human's approval", *ruling.reasons]
    return Authorization(decision, reasons, code_sha256=proposal.code_sha256)


__all__ = ["CodePolicy", "PythonParameters", "PythonStep", "PythonWriteStep",
           "proposal_summary"]
