"""Built-in plugin: the ``llm`` and ``agentic`` code generators (OpenAI-compatible endpoints).

Both talk to ``llm.base_url`` through the ``openai`` client, imported on first use with
the logic in :mod:`osprey_core.execution.llm_code`, so loading this plugin costs nothing.
The code they return is exactly what the model wrote; the analyzer, approval and sandbox
decide what happens to it.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from osprey_core.hookspecs import hookimpl
from osprey_core.hookspecs.code_generators import CodeGenerator

if TYPE_CHECKING:
    from osprey_core.hookspecs.code_generators import GeneratorContext


class _ModelGenerator(CodeGenerator):
    """Remembers its last code, so a retry shows the model what it wrote and what failed."""

    def __init__(self, context: GeneratorContext | None = None, *,
                 sleep: Callable[[float], Awaitable[Any]] | None = None) -> None:
        import asyncio  # not at module level: every plugin loads on `osprey --help`

        super().__init__(context)
        self.sleep = sleep or asyncio.sleep
        self.previous_code: str | None = None

    async def generate(self, request: Any, feedback: list[str]) -> str:
        self.previous_code = await self._generate(request, feedback)
        return self.previous_code

    @abstractmethod
    async def _generate(self, request: Any, feedback: list[str]) -> str:
        """The code for this attempt."""


class LLMGenerator(_ModelGenerator):
    name = "llm"
    description = ("One chat completion per attempt at llm.base_url; errors of failed "
                   "attempts are fed back.")

    async def _generate(self, request: Any, feedback: list[str]) -> str:
        from osprey_core.execution.llm_code import generate_code

        return await generate_code(self.context, request, feedback, self.previous_code,
                                   self.sleep)


class AgenticGenerator(_ModelGenerator):
    name = "agentic"
    description = ("Multi-turn with tools at llm.base_url: lists channels, reads the runtime "
                   "API, dry-runs its code read-only in the sandbox and revises before "
                   "submitting.")

    async def _generate(self, request: Any, feedback: list[str]) -> str:
        from osprey_core.execution.llm_code import AgenticSession

        session = AgenticSession(self.context, self.sleep)
        return await session.generate(request, feedback, self.previous_code)


@hookimpl
def register_code_generators(register: Callable[[type[CodeGenerator]], None]) -> None:
    register(LLMGenerator)
    register(AgenticGenerator)
