"""Built-in plugin: ``respond`` and ``clarify``, which end a plan, and ``list_capabilities``.

Both are deterministic and call no model, so a run resumed after an approval finishes
without any LLM call. Their parameter models live in :mod:`osprey_core.planning.terminal`
(the planners rely on them too) and are imported when the capabilities are built, not
when the plugin is loaded, so ``osprey --help`` stays free of pydantic.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from osprey_core.hookspecs import hookimpl
from osprey_core.hookspecs.capabilities import Capability, StepContext

if TYPE_CHECKING:
    from rich.console import RenderableType


class Respond(Capability):
    """Renders the values of its inputs as the answer; the text is the step result."""

    name = "respond"
    description = ("Answer the user with the results of earlier steps, read as inputs. "
                   "Always the last step.")
    terminal = True

    def __init__(self) -> None:
        from osprey_core.planning.terminal import RespondParameters

        self.parameters = RespondParameters

    async def execute(self, step: StepContext) -> str:
        parameters = self.parameters.model_validate(step.parameters)
        return render_answer(parameters.message, step.inputs)


class Clarify(Capability):
    """Asks the user to rephrase, naming what was unclear and what the agent can do."""

    name = "clarify"
    description = ("Ask the user to rephrase when the request is unclear or no capability "
                   "fits, naming what was not understood. Always the last step.")
    terminal = True

    def __init__(self) -> None:
        from osprey_core.planning.terminal import ClarifyParameters

        self.parameters = ClarifyParameters

    async def execute(self, step: StepContext) -> str:
        parameters = self.parameters.model_validate(step.parameters)
        lines = [f"I did not understand: {parameters.unclear}.",
                 "Could you rephrase the request?"]
        if parameters.options:
            lines += ["", "I can:", *(f"- {option}" for option in parameters.options)]
        return "\n".join(lines)


class ListCapabilities(Capability):
    """Answers "what can you do?" from the registry, so the answer is never out of date."""

    name = "list_capabilities"
    description = ("List what this agent can do: every registered capability, what it is for "
                   "and whether it needs approval because it has side effects.")
    provides = ("capability_list",)
    _phrases = ("what can you do", "capabilities", "help me", "what do you do")

    def match(self, query: str) -> dict[str, Any] | None:
        text = " ".join(query.lower().split())
        return {} if any(phrase in text for phrase in self._phrases) else None

    async def execute(self, step: StepContext) -> dict[str, str]:
        return {capability.name: capability.description + (
                    " (asks for approval)" if capability.side_effects else "")
                for capability in step.services.capabilities if not capability.terminal}

    def render(self, result: Any) -> RenderableType | str:
        """One row per capability: what it is for."""
        from osprey_core.display.tables import table

        if not isinstance(result, Mapping):
            return super().render(result)
        return table("What I can do", ("capability", "what it does"), result.items())


def render_answer(message: str, inputs: Mapping[str, Any]) -> str:
    """A plain-text answer: the message, then each input under its key, laid out as
    indented text with long series summarised (the full results stay with the run)."""
    from osprey_core.display.text import plain_text

    parts = [message] if message else []
    for key, value in inputs.items():
        if (isinstance(value, Mapping | list | tuple) and value) or (
                isinstance(value, str) and "\n" in value):
            parts.append(f"{key}:\n{plain_text(value, '  ')}")
        else:
            parts.append(f"{key}: {plain_text(value)}")
    return "\n\n".join(parts) or "Done. There are no results to report."


@hookimpl
def register_capabilities(register: Callable[[Capability], None]) -> None:
    register(Respond())
    register(Clarify())
    register(ListCapabilities())
