"""Planning: from a request to a validated plan, with or without a language model.

The orchestrator shortlists capabilities with :func:`rank_capabilities`, asks the
planner from :func:`make_planner` for a plan, and gets back a :class:`~osprey_core.models.Plan`
that already passed :func:`validate_plan` (which also validates edited plans).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from osprey_core.hookspecs.capabilities import Capability
from osprey_core.planning.base import (
    PlanLimits,
    Planner,
    PlanningError,
    PlanRequest,
    PlanValidationError,
)
from osprey_core.planning.classifier import rank_capabilities
from osprey_core.planning.llm import LLMPlanner
from osprey_core.planning.offline import OfflinePlanner
from osprey_core.planning.terminal import (
    CLARIFY,
    RESPOND,
    ClarifyParameters,
    RespondParameters,
)
from osprey_core.planning.validation import parse_plan, validate_plan
from osprey_core.registry import Registry
from osprey_core.settings import LLMSettings

__all__ = [
    "CLARIFY",
    "RESPOND",
    "ClarifyParameters",
    "LLMPlanner",
    "OfflinePlanner",
    "PlanLimits",
    "PlanRequest",
    "PlanValidationError",
    "Planner",
    "PlanningError",
    "RespondParameters",
    "make_planner",
    "parse_plan",
    "rank_capabilities",
    "validate_plan",
]


def make_planner(
    llm: LLMSettings,
    capabilities: Registry[Capability],
    *,
    environ: Mapping[str, str] | None = None,
    sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
) -> Planner:
    """The LLM planner when an endpoint is configured, else the offline planner."""
    if llm.base_url:
        return LLMPlanner(llm, capabilities, environ=environ, sleep=sleep)
    return OfflinePlanner(capabilities)
