"""Request and response bodies of the JSON API (the OpenAPI schema is made from these).

Runs and approvals are the store's own records (``osprey_core.models``), as ``osprey run
--json`` and ``osprey approvals show --json`` print them; these models add only what the
API says beside them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from osprey_core.models import ApprovalRecord, Plan, StepRecord
from osprey_core.run_machine import RunState

#: Longest request text accepted (the body limit caps everything else).
MAX_QUERY_CHARS = 20_000
MAX_REASON_CHARS = 2_000


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RunRequest(Body):
    query: str = Field(min_length=1, max_length=MAX_QUERY_CHARS,
                       description="The request; '/planning ...' reviews the plan first.")
    session: str = Field("default", min_length=1, max_length=200,
                         description="Conversation/thread id.")
    planning: bool | None = Field(None, description="Review the plan before anything runs "
                                  "(default: the configuration's planning.enabled).")


class ReasonRequest(Body):
    reason: str | None = Field(None, max_length=MAX_REASON_CHARS,
                               description="Why (kept in the audit log).")


#: The artifact's sha256 as the caller saw it: a decision on anything else is refused.
Sha256 = Annotated[str, Field(min_length=64, max_length=64, description="The artifact's "
                              "sha256 as shown: anything else is refused (409).")]


class DecisionRequest(ReasonRequest):
    sha256: Sha256


class EditRequest(Body):
    sha256: Sha256
    artifact: dict[str, Any] = Field(description="The edited plan or artifact (for code: "
                                     "{\"code\": ...}); it is analysed and asks again.")


class Run(BaseModel):
    """A run as ``osprey run --json`` prints it; ``approval`` is what a paused run waits for."""

    id: str
    session: str
    user: str
    query: str
    state: RunState
    planning: bool
    interface: str
    candidates: list[str]
    plan: Plan | None
    plan_sha256: str | None
    context: dict[str, Any]
    next_step: int
    approval_id: str | None
    response: str | None
    error: str | None
    created_at: datetime
    updated_at: datetime
    approval: ApprovalRecord | None = None


class Artifact(BaseModel):
    """A file an execution of the run wrote (figure, notebook, results, code, output)."""

    name: str = Field(description="Path under the run's execution folders; download it at "
                      "/api/v1/runs/{id}/artifacts/{name}.")
    size: int
    media_type: str


class RunDetail(Run):
    steps: list[StepRecord]
    approvals: list[ApprovalRecord]
    answer: str | None = Field(description="A done run's answer as the terminal shows it "
                               "(each result rendered by its capability), as plain text.")
    artifacts: list[Artifact]


class Event(BaseModel):
    id: int
    run_id: str
    at: datetime
    kind: str
    data: dict[str, Any]


class Approval(ApprovalRecord):
    """An approval request with what a decider needs beside the stored record."""

    editable: bool = Field(description="Whether /edit accepts a replacement artifact.")
    changes_machine: bool = Field(description="Whether approving it can change the machine "
                                  "(separation of duties applies).")


class Outcome(BaseModel):
    """The result of an edit: the new approval request it needs."""

    approval: Approval
    superseded: str
