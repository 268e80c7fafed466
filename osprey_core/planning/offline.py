"""The embedded default planner: plans from the capabilities' own keyword matches.

It needs no network and no model, so a fresh install answers simple requests; anything
it cannot match becomes a ``clarify`` step instead of a guess. A request of several parts
("read X and brew coffee") is never cut silently: each part is planned, or the answer
names the parts it left out.
"""

from __future__ import annotations

import json
import re
from typing import Any

from osprey_core.hookspecs.capabilities import Capability
from osprey_core.models import Plan, PlanStep
from osprey_core.planning.base import PlanningError, PlanRequest
from osprey_core.planning.terminal import CLARIFY, RESPOND
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
        candidates = [capability for capability in request.capabilities
                      if not capability.terminal]
        matched = [(capability, parameters) for capability in candidates
                   if (parameters := _match(capability, request.query)) is not None]
        left_out = _plan_parts(request.query, candidates, matched) if matched else []
        if not matched:
            return validate_plan(self._clarify(request), self.capabilities, request.context_keys,
                                 request.limits)
        steps: list[PlanStep] = []
        taken = set(request.context_keys)
        providers: dict[str, str] = {key: key for key in request.context_keys}
        for capability, parameters in _dependency_order(_in_request_order(request.query,
                                                                          matched)):
            output = _unique_key(capability.name, taken)
            taken.add(output)
            inputs = [providers[needed] for needed in capability.requires if needed in providers]
            steps.append(PlanStep(capability=capability.name, parameters=parameters,
                                  inputs=list(dict.fromkeys(inputs)), output=output,
                                  description=capability.description))
            providers.update(dict.fromkeys(capability.provides, output))
        names = ", ".join(f"'{capability.name}'" for capability, _ in matched)
        reasoning = f"Offline plan: {names} matched the request."
        if left_out and RESPOND in self.capabilities:
            parts = "; ".join(f"'{part}'" for part in left_out)
            reasoning += f" Left out (nothing matched): {parts}."
            steps.append(PlanStep(
                capability=RESPOND, output=_unique_key("response", taken),
                parameters={"message": f"Not done: I did not understand {parts} (no "
                            "capability matched that part). Ask for it on its own, in "
                            "other words."},
                inputs=[step.output for step in steps],
                description="Answer with the results and name what was left out."))
        plan = Plan(steps=steps, reasoning=reasoning)
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


#: Where a request splits into parts: punctuation, "and", "then", "also".
_PARTS = re.compile(r"\s*(?:[,;!?]|\.(?=\s|$)|\b(?:and|then|also)\b)\s*", re.IGNORECASE)
_FILLER = frozenset({"a", "an", "the", "to", "of", "for", "me", "my", "please", "now", "it",
                     "over", "last", "in", "on", "at", "with", "from", "i", "you", "can",
                     "could", "would", "also", "too", "s", "is", "are", "what", "be"})


def _plan_parts(query: str, candidates: list[Capability],
                matched: list[tuple[Capability, dict[str, Any]]]) -> list[str]:
    """Plan each part of ``query`` no matched step covers (a capability matching that part
    alone joins ``matched``); return the parts nothing matched.

    A part is covered when a matched capability matches it too, or one of its words is in a
    matched step's parameters (``BPM1:X`` of "read SR:CURRENT and BPM1:X")."""
    left_out = []
    for part in filter(None, _PARTS.split(query)):
        words = {word.lower() for word in re.findall(r"[^\s\"'()]+", part.strip(".?!"))}
        if not words - _FILLER:
            continue
        said = json.dumps([parameters for _, parameters in matched]).lower()
        if any(word in said for word in words - _FILLER) or any(
                _match(capability, part) is not None for capability, _ in matched):
            continue
        extra = [(capability, parameters) for capability in candidates
                 if all(capability is not other for other, _ in matched)
                 and (parameters := _match(capability, part)) is not None]
        if extra:
            matched += extra
        else:
            left_out.append(part.strip())
    return left_out


def _in_request_order(query: str, matched: list[tuple[Capability, dict[str, Any]]],
                      ) -> list[tuple[Capability, dict[str, Any]]]:
    """Steps in the order the request names them ("read X and then set Y" reads first);
    a capability no single part matches keeps its place after those that one does."""
    parts = [part for part in _PARTS.split(query) if part]

    def first_part(entry: tuple[Capability, dict[str, Any]]) -> int:
        return next((index for index, part in enumerate(parts)
                     if _match(entry[0], part) is not None), len(parts))

    return sorted(matched, key=first_part)


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
