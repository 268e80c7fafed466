"""What every planner takes and returns, and how planning fails."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from osprey_core.errors import OspreyError
from osprey_core.models import Plan, canonical_json

if TYPE_CHECKING:
    from osprey_core.hookspecs.capabilities import Capability
    from osprey_core.hookspecs.data_providers import ContextBlock


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
    #: How large a plan may be; planners validate with it.
    limits: PlanLimits = field(default_factory=lambda: PlanLimits())


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


@dataclass(frozen=True, slots=True)
class PlanLimits:
    """How large a plan may be (``planning.max_steps``, ``planning.max_plan_bytes``): a
    model's 10,000-step plan is refused, never run and never cut short silently."""

    max_steps: int = 50
    max_bytes: int = 262_144

    def check(self, plan: Plan | Mapping[str, Any]) -> None:
        """Raise :class:`PlanValidationError` if ``plan`` (a Plan or raw data) is too big."""
        data = plan.model_dump(mode="json") if isinstance(plan, Plan) else plan
        steps = data.get("steps") if isinstance(data, Mapping) else None
        if isinstance(steps, list | tuple) and len(steps) > self.max_steps:
            raise PlanValidationError([f"the plan has {len(steps)} steps; at most "
                                       f"{self.max_steps} are accepted (planning.max_steps)"])
        try:
            size = len(canonical_json(data).encode("utf-8"))
        except (TypeError, ValueError):
            return  # not JSON data: parse_plan names the problem
        if size > self.max_bytes:
            raise PlanValidationError([f"the plan is {size} bytes of JSON; at most "
                                       f"{self.max_bytes} are accepted "
                                       "(planning.max_plan_bytes)"])
