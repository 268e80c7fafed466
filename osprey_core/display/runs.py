"""A finished run's answer for people, each result rendered by the capability that made it.

The answering step (``respond``) stores a plain-text answer with the run, for the API and
``--json``; a terminal shows instead the respond message followed by each result it read,
as its capability renders it (a table of channel values, a summary of a history, ...).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from osprey_core.display.text import plain_text

if TYPE_CHECKING:
    from rich.console import RenderableType

    from osprey_core.hookspecs.capabilities import Capability
    from osprey_core.models import PlanStep, RunRecord

log = logging.getLogger(__name__)
Lookup = Callable[[str], "Capability | None"]


def lookup(host: Any) -> Lookup:
    """Live capabilities by name from the plugin host (``None`` for one no longer there)."""
    registry = host.capabilities()
    return lambda name: registry.get(name) if name in registry else None


def render_result(capability: Capability | None, result: Any) -> RenderableType | str:
    """``capability.render(result)``; a plugin's broken renderer falls back to plain text
    rather than hiding the result."""
    if capability is None:
        return plain_text(result)
    try:
        shown: RenderableType | str = capability.render(result)
    except Exception:
        log.warning("capability %r could not render its result", capability.name,
                    exc_info=True)
        return plain_text(result)
    return shown


def answer(run: RunRecord, capability: Lookup) -> list[RenderableType | str]:
    """What to show for a done run: the message, then the results it answers with."""
    plan = run.plan
    if plan is None or not plan.steps:
        return [run.response or ""]
    last = plan.steps[-1]
    made_by = {step.output: step for step in plan.steps}
    final = capability(last.capability)
    if final is None or not final.terminal:
        return [_rendered(step, run, capability) for step in plan.steps
                if step.output in run.context] or [run.response or ""]
    if not last.inputs:
        return [render_result(final, run.response or "")]
    message = str(last.parameters.get("message") or "")
    parts: list[RenderableType | str] = [message] if message else []
    titled = len([key for key in last.inputs if key in run.context]) > 1
    for key in last.inputs:
        if key not in run.context:
            continue
        step = made_by.get(key)
        body = (_rendered(step, run, capability) if step is not None
                else plain_text(run.context[key]))
        parts += [f"{key.replace('_', ' ')}:", body] if titled else [body]
    return parts or [run.response or ""]


def _rendered(step: PlanStep, run: RunRecord, capability: Lookup) -> RenderableType | str:
    return render_result(capability(step.capability), run.context[step.output])
