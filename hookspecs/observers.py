"""Observer hooks: notifications and audit export. They cannot change what happens."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from osprey_core.hookspecs import hookspec

#: Every ``RunEvent.kind`` a run emits (docs/events.md says what each one's ``data`` holds).
#: Kinds are only ever added, so an observer may ignore the ones it does not know.
RUN_EVENT_KINDS: tuple[str, ...] = (
    "submitted", "state", "step_started", "step_succeeded", "step_failed",
    "plan_edited", "artifact_edited", "approval_refused",
)


@dataclass(frozen=True, slots=True)
class RunEvent:
    """Something happened in a run: a state change, a step started or finished, ...
    ``kind`` is one of :data:`RUN_EVENT_KINDS`."""

    run_id: str
    kind: str
    at: datetime
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ApprovalEvent:
    """An approval was requested or decided; ``artifact_sha256`` names what it covers."""

    approval_id: str
    run_id: str
    kind: str
    status: str
    artifact_sha256: str
    summary: str
    at: datetime
    actor: str | None = None
    interface: str | None = None
    reason: str | None = None


@hookspec
def on_run_event(event: RunEvent) -> None:
    """Called for every run event after it is stored. Exceptions are logged, not raised."""


@hookspec
def on_approval_requested(event: ApprovalEvent) -> None:
    """Called once a pause is durably stored, e.g. to notify an operator on chat or email."""


@hookspec
def on_approval_decided(event: ApprovalEvent) -> None:
    """Called after a decision is committed and audited, e.g. to export audit records."""
