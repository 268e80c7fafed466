"""Records that cross a trust boundary: plans, steps, approvals, audit entries, events.

Everything that is stored as JSON or comes back from an LLM is one of these models and
is validated on the way in and on the way out.
"""

from __future__ import annotations

import enum
import hashlib
import json
import re
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from osprey_core.run_machine import RunState

KEY_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


def canonical_json(data: Any) -> str:
    """One byte-exact JSON form per value, so equal artifacts hash equally."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def sha256_of(data: Any) -> str:
    return hashlib.sha256(canonical_json(data).encode("utf-8")).hexdigest()


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PlanStep(Strict):
    """One step: which capability, with which parameters, reading which earlier outputs."""

    capability: str = Field(min_length=1)
    parameters: dict[str, Any] = Field(default_factory=dict)
    #: Context keys this step reads: request context or outputs of earlier steps.
    inputs: list[str] = Field(default_factory=list)
    #: Key under which this step's result is stored for later steps.
    output: str
    description: str = ""

    @field_validator("output")
    @classmethod
    def _output_is_a_key(cls, value: str) -> str:
        if not KEY_PATTERN.match(value):
            raise ValueError("must be a lower-case identifier (letters, digits, '_')")
        return value


class Plan(Strict):
    steps: list[PlanStep]
    reasoning: str = ""

    def sha256(self) -> str:
        return sha256_of(self.model_dump(mode="json"))


class ApprovalKind(enum.StrEnum):
    PLAN = "plan"
    STEP = "step"


class ApprovalStatus(enum.StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"
    #: Replaced by an edited artifact that needs its own approval.
    SUPERSEDED = "superseded"
    #: The run ended (cancelled, failed) before anyone decided.
    WITHDRAWN = "withdrawn"


class StepStatus(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    #: A side-effecting step that started but did not finish: an operator must decide.
    INDETERMINATE = "indeterminate"
    SKIPPED = "skipped"


class ApprovalRecord(Strict):
    """A durable pause: exactly what is to be approved, and what happened to it."""

    id: str
    run_id: str
    session: str
    kind: ApprovalKind
    step_index: int | None = None
    #: Approval kind as the operator sees it: plan, code, channel_write, memory_save, ...
    action: str
    artifact: dict[str, Any]
    artifact_sha256: str
    summary: str
    reasons: list[str] = Field(default_factory=list)
    requested_by: str
    created_at: datetime
    expires_at: datetime
    status: ApprovalStatus = ApprovalStatus.PENDING
    decided_by: str | None = None
    decided_via: str | None = None
    decided_at: datetime | None = None
    decision_reason: str | None = None

    def artifact_intact(self) -> bool:
        return sha256_of(self.artifact) == self.artifact_sha256


class StepRecord(Strict):
    run_id: str
    index: int
    capability: str
    status: StepStatus = StepStatus.PENDING
    side_effects: bool = False
    idempotency_key: str
    artifact_sha256: str | None = None
    result: Any = None
    error: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


class AuditRecord(Strict):
    id: int | None = None
    at: datetime
    actor: str
    interface: str
    action: str
    run_id: str | None = None
    approval_id: str | None = None
    sha256: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)


class EventRecord(Strict):
    id: int | None = None
    run_id: str
    at: datetime
    kind: str
    data: dict[str, Any] = Field(default_factory=dict)


class RunRecord(BaseModel):
    """One user request from receipt to its end; stored after every state change."""

    model_config = ConfigDict(extra="forbid")

    id: str
    session: str
    user: str
    query: str
    state: RunState = RunState.RECEIVED
    planning: bool = False
    interface: str = "api"
    candidates: list[str] = Field(default_factory=list)
    plan: Plan | None = None
    plan_sha256: str | None = None
    #: Request context plus each finished step's output, keyed by the step's output key.
    context: dict[str, Any] = Field(default_factory=dict)
    next_step: int = 0
    approval_id: str | None = None
    response: str | None = None
    error: str | None = None
    #: The process working on the run (pid, boot id, process start time in clock ticks):
    #: only a run whose owner is gone is recovered.
    owner_pid: int | None = None
    owner_boot: str | None = None
    owner_start: int | None = None
    #: The owner's host (its name, or OSPREY_WORKER_HOST): only on that host are pid and
    #: boot id checked; elsewhere the owner counts as alive until ``lease_until``.
    owner_host: str | None = None
    #: Until when the owner's claim holds, renewed while it works on the run.
    lease_until: datetime | None = None
    created_at: datetime
    updated_at: datetime
