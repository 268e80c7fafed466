"""The embedded default planner: plans from the capabilities' own keyword matches.

It needs no network and no model, so a fresh install answers simple requests; anything
it cannot match becomes a ``clarify`` step instead of a guess.
"""

from __future__ import annotations

import re
from typing import Any

from osprey_core.hookspecs.capabilities import Capability
from osprey_core.models import Plan, PlanStep
from osprey_core.planning.base import PlanningError, PlanRequest
from osprey_core.planning.terminal import CLARIFY
from osprey_core.planning.validation import validate_plan
from osprey_core.registry import Registry


class OfflinePlanner:
    """Deterministic: the same registry, shortlist and query always give the same plan.

    Each shortlisted non-terminal capability whose ``match`` returns parameters becomes a
    step. Steps are ordered so that a capability runs after those providing what it
    requires (otherwise shortlist order), read those steps' outputs (or the request
    context) as inputs, and validation appends the final ``respond``.
    """

    def __init__(self, capabilities: Registry[Capability]) -> None:
        self.capabilities = capabilities

    async def plan(self, request: PlanRequest) -> Plan:
        matched = [
            (capability, parameters)
            for capability in request.capabilities
            if not capability.terminal
            and (parameters := _match(capability, request.query)) is not None
        ]
        if not matched:
            return validate_plan(self._clarify(request), self.capabilities, request.context_keys,
                                 request.limits)
        steps: list[PlanStep] = []
        taken = set(request.context_keys)
        providers: dict[str, str] = {key: key for key in request.context_keys}
        for capability, parameters in _dependency_order(matched):
            output = _unique_key(capability.name, taken)
            taken.add(output)
            inputs = [providers[needed] for needed in capability.requires if needed in providers]
            steps.append(PlanStep(capability=capability.name, parameters=parameters,
                                  inputs=list(dict.fromkeys(inputs)), output=output,
                                  description=capability.description))
            providers.update(dict.fromkeys(capability.provides, output))
        names = ", ".join(f"'{capability.name}'" for capability, _ in matched)
        plan = Plan(steps=steps, reasoning=f"Offline plan: {names} matched the request.")
        return validate_plan(plan, self.capabilities, request.context_keys, request.limits)

    def _clarify(self, request: PlanRequest) -> Plan:
        if CLARIFY not in self.capabilities:
            raise PlanningError(
                f"no capability matched the request {request.query!r}, and no '{CLARIFY}' "
                "capability is registered to ask the user what they meant")
        options = [f"{item.name}: {item.description}"
                   for item in self.capabilities if not item.terminal]
        step = PlanStep(
            capability=CLARIFY,
            parameters={"unclear": f"no capability matched the request {request.query!r}",
                        "options": options},
            output="clarification",
            description="Ask the user to rephrase: nothing matched the request.",
        )
        return Plan(steps=[step], reasoning="Offline plan: no capability matched the request.")


def _match(capability: Capability, query: str) -> dict[str, Any] | None:
    try:
        return capability.match(query)
    except Exception as exc:
        raise PlanningError(
            f"capability '{capability.name}' failed while matching the request: "
            f"{type(exc).__name__}: {exc}") from exc


def _dependency_order(
    matched: list[tuple[Capability, dict[str, Any]]],
) -> list[tuple[Capability, dict[str, Any]]]:
    """Providers before the capabilities requiring their context; else keep the order."""
    pending = list(matched)
    ordered = []
    while pending:
        # A requirement cycle cannot be ordered; take the first and let validation explain.
        chosen = next((entry for entry in pending if not _waits(entry[0], pending)), pending[0])
        pending.remove(chosen)
        ordered.append(chosen)
    return ordered


def _waits(capability: Capability, pending: list[tuple[Capability, dict[str, Any]]]) -> bool:
    return any(
        needed in other.provides
        for needed in capability.requires
        for other, _ in pending
        if other is not capability
    )


def _unique_key(name: str, taken: set[str]) -> str:
    """A valid output key from a capability name (registry names may hold '.' and '-')."""
    base = re.sub(r"[^a-z0-9_]", "_", name)[:56]
    key, suffix = base, 2
    while key in taken:
        key, suffix = f"{base}_{suffix}", suffix + 1
    return key
