"""The execution service: generate → analyze → authorize → run in the sandbox, with retries.

One object per request source (a plan step, ``osprey python run``, an embedding tool). It
never decides on its own that code may run: the caller passes an ``authorize`` callback
(the approval engine) for every piece of code that was not approved beforehand, and a
refusal or a request for a human ends the loop; it never regenerates around a refusal.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from osprey_core.errors import OspreyError
from osprey_core.execution.models import (
    AttemptRecord,
    ExecutionMode,
    ExecutionRequest,
    ExecutionResult,
)

if TYPE_CHECKING:
    from osprey_core.analysis import Analysis
    from osprey_core.config import OspreyConfig
    from osprey_core.control.system import ControlSystem
    from osprey_core.hookspecs.code_generators import CodeGenerator, DryRun
    from osprey_core.hookspecs.execution_backends import ExecutionBackend, OutputCallback
    from osprey_core.plugin_host import PluginHost, PluginView
    from osprey_core.settings import ExecutionSettings

#: Feedback to the generator is trimmed to this many characters per attempt.
FEEDBACK_CHARS = 2000
#: ``Proposal.generator`` of code a person wrote (given to run, or edited at approval):
#: it runs as it is and is never regenerated after a failure.
GIVEN, EDITED = "given", "edited by an operator"


class ExecutionError(OspreyError):
    """Code could not be produced or run; the message says which attempt and why."""


class Decision(StrEnum):
    """What the approval engine said about a piece of code."""

    RUN = "run"
    ASK = "ask"
    REFUSE = "refuse"


@dataclass(frozen=True)
class Authorization:
    decision: Decision
    reasons: list[str] = field(default_factory=list)
    #: The human approval the code runs under (``None``: allowed by policy).
    approval_id: str | None = None
    #: The sha256 of the code the decision was about; the broker lets writes through only
    #: while the running code has exactly this hash.
    code_sha256: str | None = None


@dataclass(frozen=True)
class Proposal:
    """Code ready for a decision: exactly what is shown, approved and run."""

    request: ExecutionRequest
    code: str
    analysis: Analysis
    attempts: list[AttemptRecord]
    generator: str

    @property
    def code_sha256(self) -> str:
        return code_hash(self.code)

    def artifact(self) -> dict[str, Any]:
        """The approval artifact: the code, its hash, the mode and what the analyzer saw."""
        return {
            "capability": "python",
            "request": self.request.model_dump(mode="json", exclude={"code"}),
            "mode": str(self.request.mode),
            "code": self.code,
            "code_sha256": self.code_sha256,
            "generator": self.generator,
            "analysis": self.analysis.to_json(),
            "attempts": [attempt.model_dump(mode="json") for attempt in self.attempts],
        }

    def summary(self) -> str:
        return proposal_summary(self.artifact())


def code_hash(code: str) -> str:
    return hashlib.sha256(code.encode("utf-8")).hexdigest()


def proposal_summary(artifact: Mapping[str, Any]) -> str:
    """What an operator reads before approving: mode, findings, predicted writes, code."""
    analysis = artifact.get("analysis", {})
    lines = [f"Run generated Python in {artifact.get('mode', 'read')} mode "
             f"(sha256 {str(artifact.get('code_sha256', ''))[:12]})."]
    request = artifact.get("request", {})
    if request.get("expected_results"):
        expected = ", ".join(f"{key}: {meaning}"
                             for key, meaning in request["expected_results"].items())
        lines.append(f"Expected results: {expected}")
    targets = analysis.get("write_targets")
    for write in analysis.get("planned_writes", []):
        value = "a computed value" if write.get("computed") else repr(write.get("value"))
        lines.append(f"Writes {write.get('channel') or 'a channel named at run time'} "
                     f"= {value} (line {write.get('line')})")
    if analysis.get("writes") and targets is None:
        lines.append("Write targets cannot be predicted: any channel may be written.")
    for finding in analysis.get("findings", []):
        if finding.get("category") != "control_read":
            lines.append(f"line {finding['line']}: {finding['severity']} "
                         f"{finding['category']}: {finding['reason']}")
    lines += ["", "```python", str(artifact.get("code", "")).rstrip(), "```"]
    return "\n".join(lines)


def feedback_for(attempt: AttemptRecord, result: ExecutionResult | None) -> str:
    """What the generator hears about a failed attempt: the error and the findings."""
    parts = [f"Attempt {attempt.number} failed ({attempt.exit_reason or 'not run'})."]
    if attempt.error:
        parts.append(attempt.error)
    if result is not None and result.stderr.strip():
        parts.append("stderr (end):\n" + result.stderr.strip()[-FEEDBACK_CHARS:])
    for finding in attempt.findings:
        if finding["category"] != "control_read":
            parts.append(f"analyzer, line {finding['line']}: {finding['reason']}")
    return "\n".join(parts)[:FEEDBACK_CHARS]


Authorizer = Callable[[Proposal], Awaitable[Authorization]]


class ExecutionService:
    """Runs requests for one caller; see the module docstring for the safety rules."""

    def __init__(self, config: OspreyConfig, plugins: PluginHost | PluginView, *,
                 control_system: Callable[[], ControlSystem],
                 archiver: Callable[[], Any] | None = None,
                 actor: str = "operator", interface: str = "api", run_id: str | None = None,
                 audit: Callable[[str, dict[str, Any]], None] | None = None,
                 environ: Mapping[str, str] | None = None) -> None:
        self.config = config
        self.plugins = plugins
        self._control_system = control_system
        self._archiver = archiver
        self.actor, self.interface, self.run_id = actor, interface, run_id
        self._audit = audit
        self.environ = dict(os.environ if environ is None else environ)

    @property
    def settings(self) -> ExecutionSettings:
        return self.config.section("execution")

    # -- building blocks ---------------------------------------------------------------

    def generator_name(self) -> str:
        name = self.settings.generator
        if name == "auto":
            return "llm" if self.config.section("llm").base_url else "mock"
        return name

    def make_generator(self) -> CodeGenerator:
        from osprey_core.hookspecs.code_generators import GeneratorContext
        from osprey_core.sandbox.runtime import RUNTIME_API_DOC

        cls = self.plugins.code_generators().get(self.generator_name())
        context = GeneratorContext(
            llm=self.config.section("llm"), execution=self.settings, environ=self.environ,
            list_channels=self._list_channels, dry_run=self._dry_run,
            runtime_api=RUNTIME_API_DOC)
        return cls(context)

    def make_backend(self) -> ExecutionBackend:
        cls = self.plugins.execution_backends().get(self.settings.backend)
        return cls(self.settings, self.config.home)

    async def _list_channels(self, pattern: str = "*") -> list[str]:
        return await self._control_system().known_channels(pattern)

    async def _dry_run(self, code: str) -> DryRun:
        """A read-only trial run for agentic generators: writes are blocked by the broker."""
        from osprey_core.analysis import analyze
        from osprey_core.hookspecs.code_generators import DryRun

        analysis = analyze(code)
        request = ExecutionRequest(query="dry run", mode=ExecutionMode.READ)
        proposal = Proposal(request, code, analysis, [], "dry_run")
        result = await self.execute(proposal, Authorization(Decision.RUN, ["dry run"]),
                                    label="dry-run")  # read mode: the broker blocks writes
        return DryRun(ok=result.ok, exit_reason=result.exit_reason, stdout=result.stdout,
                      stderr=result.stderr, results=result.results,
                      findings=analysis.to_json()["findings"])

    def audit(self, action: str, details: dict[str, Any]) -> None:
        if self._audit is not None:
            self._audit(action, details)

    # -- the loop ----------------------------------------------------------------------

    async def propose(self, request: ExecutionRequest, *, generator: CodeGenerator | None,
                      feedback: list[str], attempts: list[AttemptRecord]) -> Proposal:
        """Generate code until it parses (or attempts run out) and analyze it."""
        from osprey_core.analysis import analyze

        if request.code is not None:
            return Proposal(request, request.code, analyze(request.code, filename="code.py"),
                            attempts, GIVEN)
        assert generator is not None
        while True:
            number = len(attempts) + 1
            started = time.perf_counter()
            try:
                code = await generator.generate(request, list(feedback))
                if not isinstance(code, str):
                    raise ExecutionError(f"generator '{generator.name}' returned "
                                         f"{type(code).__name__}, not source code")
            except OspreyError as exc:
                attempts.append(AttemptRecord(number=number, code_sha256="",
                                              error=f"generation failed: {exc}"))
            except Exception as exc:  # a generator bug: report it, do not crash the run
                attempts.append(AttemptRecord(
                    number=number, code_sha256="",
                    error=f"generator '{generator.name}' crashed: {type(exc).__name__}: {exc}"))
            else:
                analysis = analyze(code)
                if not analysis.parse_error:
                    self.audit("code_generated", {"attempt": number, "sha256": code_hash(code),
                                                  "seconds": time.perf_counter() - started})
                    return Proposal(request, code, analysis, attempts, generator.name)
                attempts.append(AttemptRecord(
                    number=number, code_sha256=code_hash(code),
                    findings=[f.to_json() for f in analysis.findings],
                    error="the code cannot be parsed"))
            feedback.append(feedback_for(attempts[-1], None))
            if len(attempts) >= self.settings.max_attempts:
                raise ExecutionError(f"no usable code after {len(attempts)} attempt(s); "
                                     f"last: {attempts[-1].error}")

    async def run(self, request: ExecutionRequest, authorize: Authorizer, *,
                  first: Proposal | None = None, first_authorization: Authorization | None = None,
                  on_output: OutputCallback | None = None) -> ExecutionResult:
        """The whole loop. ``first`` is an already approved proposal (a plan step's)."""
        generator = None if request.code is not None else self.make_generator()
        attempts: list[AttemptRecord] = list(first.attempts) if first is not None else []
        feedback = [feedback_for(attempt, None) for attempt in attempts]
        proposal, authorization = first, first_authorization
        last: ExecutionResult | None = None
        while True:
            if proposal is None:
                proposal = await self.propose(request, generator=generator, feedback=feedback,
                                              attempts=attempts)
                if last is not None and proposal.code_sha256 in {
                        attempt.code_sha256 for attempt in attempts if attempt.exit_reason}:
                    return last.model_copy(update={"error": f"{last.error}; the generator "
                                                   "returned the same code again"})
            if authorization is None:
                authorization = await authorize(proposal)
            if authorization.decision is not Decision.RUN:
                raise ExecutionError(
                    f"attempt {len(attempts) + 1} (sha256 {proposal.code_sha256[:12]}) was "
                    f"not run: {'; '.join(authorization.reasons) or authorization.decision}. "
                    "A refusal or a request for approval ends the loop; nothing is regenerated "
                    "around it.")
            last = await self.execute(proposal, authorization, attempts=attempts,
                                      on_output=on_output)
            if last.ok or request.code is not None or last.exit_reason == "start_failed":
                return last  # success, a person's code, or a sandbox that cannot start
            attempts = list(last.attempts)
            feedback.append(feedback_for(attempts[-1], last))
            if len(attempts) >= self.settings.max_attempts:
                return last
            proposal, authorization = None, None

    async def execute(self, proposal: Proposal, authorization: Authorization, *,
                      attempts: list[AttemptRecord] | None = None,
                      on_output: OutputCallback | None = None,
                      label: str = "attempt") -> ExecutionResult:
        """Run one authorized proposal in the sandbox and collect its artifacts."""
        from osprey_core.hookspecs.execution_backends import ExitReason, SandboxJob
        from osprey_core.sandbox.artifacts import write_artifacts
        from osprey_core.sandbox.broker import Broker, BrokerPolicy

        attempts = list(attempts or [])
        number = len(attempts) + 1
        request, code = proposal.request, proposal.code
        backend = self.make_backend()
        if request.mode is ExecutionMode.WRITE and not backend.isolated:
            raise ExecutionError(f"the '{backend.name}' backend has no isolation; write mode "
                                 "is refused (use the nsjail backend)")
        limits = self.settings.limits.tightened(request.limits)
        folder = self._folder(label, number)
        sha = proposal.code_sha256
        broker = Broker(self._control_system(), self._archiver() if self._archiver else None,
                        BrokerPolicy(mode=request.mode, code_sha256=sha,
                                     approved_sha256=authorization.code_sha256,
                                     approval_id=authorization.approval_id,
                                     allowed_writes=proposal.analysis.write_targets,
                                     run_id=self.run_id, actor=self.actor,
                                     interface="sandbox"),
                        audit=self.audit)
        self.audit("code_execution_started", {
            "sha256": sha, "mode": str(request.mode), "backend": backend.name,
            "approval_id": authorization.approval_id, "authorized": authorization.reasons,
            "folder": str(folder), "attempt": number})
        started = time.perf_counter()
        child_fd = broker.open()
        serving = asyncio.create_task(broker.serve())
        try:
            outcome = await backend.run(SandboxJob(code=code, limits=limits, output_dir=folder,
                                                   env={}, broker_fd=child_fd), on_output)
        finally:
            report = await broker.close()
            serving.cancel()
        wall = time.perf_counter() - started
        artifacts = write_artifacts(folder, code=code, outcome=outcome,
                                    analysis=proposal.analysis.to_json(), broker=report,
                                    timings={"wall_seconds": wall}, limits=limits,
                                    request=request)
        ok = outcome.exit_reason is ExitReason.OK
        error = None if ok else _error_text(outcome, artifacts.error)
        attempts.append(AttemptRecord(number=number, code_sha256=sha,
                                      findings=[f.to_json() for f in proposal.analysis.findings],
                                      exit_reason=str(outcome.exit_reason), error=error))
        self.audit("code_execution_finished", {
            "sha256": sha, "exit_reason": str(outcome.exit_reason), "attempt": number,
            "blocked_writes": len(report.blocked), "writes": len(report.writes)})
        return ExecutionResult(
            ok=ok, code=code, code_sha256=sha, mode=request.mode,
            analysis=proposal.analysis.to_json(),
            approval={"approval_id": authorization.approval_id,
                      "reasons": authorization.reasons},
            results=artifacts.results if isinstance(artifacts.results, dict) else {},
            stdout=outcome.stdout, stderr=outcome.stderr,
            output_truncated=outcome.output_truncated, exit_reason=str(outcome.exit_reason),
            error=error, figures=[str(folder / name) for name in artifacts.figures],
            notebook=None if artifacts.notebook is None else str(artifacts.notebook),
            folder=str(folder), attempts=attempts,
            timings={"execution_seconds": round(wall, 4), **_backend_timing(outcome)},
            broker=report.to_json())

    def _folder(self, label: str, number: int) -> Path:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        name = f"{stamp}-{self.run_id or 'direct'}-{secrets.token_hex(3)}"
        folder = self.config.home / "executions" / name / f"{label}-{number}"
        folder.mkdir(parents=True)
        return folder


def _backend_timing(outcome: Any) -> dict[str, float]:
    return {"sandbox_wall_seconds": round(outcome.wall_seconds, 4)}


def _error_text(outcome: Any, error: Mapping[str, Any] | None) -> str:
    """One line for the failed attempt: the exception, or the limit that stopped it."""
    if error:
        return f"{error.get('type', 'Error')}: {error.get('message', '')}".strip()
    tail = outcome.stderr.strip().splitlines()[-1:] if outcome.stderr.strip() else []
    return f"stopped: {outcome.exit_reason}" + (f" ({tail[0][:200]})" if tail else "")


__all__ = ["Authorization", "Decision", "ExecutionError", "ExecutionService", "Proposal",
           "code_hash", "proposal_summary"]
