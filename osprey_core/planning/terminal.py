"""The contract between planners and the terminal capabilities they rely on.

Validation appends ``respond`` to plans that do not end by answering, and the offline
planner falls back to ``clarify``; both need the names and parameter shapes, which the
built-in ``core_capabilities`` plugin implements.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

RESPOND = "respond"
CLARIFY = "clarify"


class RespondParameters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    message: str = Field("", description="Text placed before the results.")


class ClarifyParameters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    unclear: str = Field(description="What in the request was not understood.")
    options: list[str] = Field(
        default_factory=list, description="What the agent can do, one entry per capability.")
