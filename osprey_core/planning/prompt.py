"""What the LLM planner says to the model and how it reads the reply."""

from __future__ import annotations

import json
import re
from typing import Any

from osprey_core.hookspecs.capabilities import Capability
from osprey_core.planning.base import PlanRequest, PlanValidationError
from osprey_core.planning.terminal import CLARIFY

_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL | re.IGNORECASE)

class MalformedReply(Exception):
    """The reply held no JSON to validate; the message is fed back to the model."""


PLAN_SHAPE = (
    '{"reasoning": "<one or two sentences>", "steps": [{"capability": "<name>", '
    '"parameters": {}, "inputs": ["<key>"], "output": "<key>", "description": "<what it does>"}]}'
)


def system_prompt(request: PlanRequest) -> str:
    """The rules validation enforces, stated up front so most plans pass first time."""
    names = {capability.name for capability in request.capabilities}
    fallback = (f"- If the request cannot be done with these capabilities, plan one "
                f"'{CLARIFY}' step saying what is unclear.\n") if CLARIFY in names else ""
    context = ", ".join(request.context_keys) or "none"
    listing = json.dumps([_describe(item) for item in request.capabilities], indent=1)
    return (
        "You plan the work of an assistant for accelerator operators. Turn the user's "
        "request into a plan that uses only the capabilities listed below. Reply with one "
        f"JSON object and nothing else, shaped like:\n{PLAN_SHAPE}\n\n"
        "Rules:\n"
        "- 'capability' is a listed name; 'parameters' follows its JSON schema exactly, with "
        "no other keys ({} when its schema is null).\n"
        "- 'output' is a new lower-case identifier (letters, digits, '_'), unique in the plan.\n"
        "- 'inputs' are keys the step reads: request context keys or EARLIER steps' outputs.\n"
        "- Everything a capability 'requires' must be 'provides'd by an earlier step or be a "
        "request context key.\n"
        "- End with one terminal capability that answers the user, reading the outputs it "
        "reports; terminal capabilities appear nowhere else.\n"
        f"{fallback}"
        "- The object has only 'reasoning' and 'steps'.\n\n"
        f"Request context keys: {context}\n\nCapabilities:\n{listing}"
    )


def request_messages(request: PlanRequest) -> list[dict[str, str]]:
    """The user's turn: the providers' context first, framed as quoted data in a message
    of its own (never in the system prompt, whose words the model trusts most), then the
    request."""
    from osprey_core.providers import render_context

    rendered = render_context(request.context)
    context = [{"role": "user", "content": rendered}] if rendered else []
    return [*context, {"role": "user", "content": request.query}]


def _describe(capability: Capability) -> dict[str, Any]:
    model = capability.parameters
    return {
        "name": capability.name,
        "description": capability.description,
        "parameters": model.model_json_schema() if model is not None else None,
        "provides": list(capability.provides),
        "requires": list(capability.requires),
        "terminal": capability.terminal,
        "side_effects": capability.side_effects,
    }


def parse_reply(content: str | None) -> Any:
    """The JSON in a reply, tolerating a Markdown code fence; :class:`MalformedReply` if none."""
    if not content or not content.strip():
        raise MalformedReply("the reply was empty; expected one JSON object")
    text = content.strip()
    if fenced := _FENCE.search(text):
        text = fenced.group(1)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise MalformedReply(f"the reply is not valid JSON: {exc}") from None


def feedback(error: Exception) -> str:
    """The user message that tells the model what was wrong with its last reply."""
    if isinstance(error, PlanValidationError):
        problems = "\n".join(f"- {problem}" for problem in error.problems)
        return (f"Your plan was rejected:\n{problems}\n"
                "Reply with the corrected plan as one JSON object.")
    return f"{error}. Reply with the plan as one JSON object and nothing else."
