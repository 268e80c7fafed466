"""What every planner takes and returns, and how planning fails."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from osprey_core.errors import OspreyError

if TYPE_CHECKING:
    from osprey_core.hookspecs.capabilities import Capability
    from osprey_core.hookspecs.data_providers import ContextBlock
    from osprey_core.models import Plan


@dataclass(frozen=True, slots=True)
class PlanRequest:
    """One request to plan: the query, the shortlisted capabilities and what is known."""

    query: str
    #: The shortlist (see :func:`~osprey_core.planning.rank_capabilities`) the planner
    #: may choose from; validation still accepts any registered capability.
    capabilities: Sequence[Capability]
    #: Keys of the request context (data provider results and the like) steps may read.
    context_keys: Sequence[str] = ()
    user: str = ""
    session: str = ""
    #: Context the data providers gathered for this request: data for the planner to
    #: consider, quoted in its prompt, never instructions to follow.
    context: Sequence[ContextBlock] = ()


class Planner(Protocol):
    """Turns a request into a validated plan, or raises an :class:`OspreyError`."""

    async def plan(self, request: PlanRequest) -> Plan: ...


class PlanningError(OspreyError):
    """No valid plan could be produced; the message says how often and why."""

    def __init__(self, message: str, *, attempts: int = 0, last_error: str = "") -> None:
        super().__init__(message)
        self.attempts = attempts
        self.last_error = last_error


class PlanValidationError(OspreyError):
    """A plan broke the rules; ``problems`` lists every violation, one sentence each."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        count = len(self.problems)
        lines = "\n".join(f"- {problem}" for problem in self.problems)
        super().__init__(f"the plan is invalid ({count} problem{'s' * (count != 1)}):\n{lines}")
