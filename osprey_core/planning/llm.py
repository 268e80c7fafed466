"""The LLM planner: any OpenAI-compatible endpoint, bounded retries with feedback."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from osprey_core.errors import ConfigError
from osprey_core.hookspecs.capabilities import Capability
from osprey_core.llm_client import new_client, transport_failure
from osprey_core.models import Plan
from osprey_core.planning.base import PlanningError, PlanRequest, PlanValidationError
from osprey_core.planning.prompt import (
    MalformedReply,
    feedback,
    parse_reply,
    request_messages,
    system_prompt,
)
from osprey_core.planning.validation import validate_plan
from osprey_core.registry import Registry
from osprey_core.settings import LLMSettings

if TYPE_CHECKING:
    import openai

class LLMPlanner:
    """Asks the model for a plan and validates it; every failure costs one attempt.

    Malformed JSON and invalid plans are fed back to the model (its reply, then the
    problems) so the next attempt can fix them; connection errors, timeouts, 5xx and
    429 are retried unchanged. Attempts are bounded by ``settings.max_attempts``, with
    ``backoff_seconds`` doubling between them, then :class:`PlanningError` is raised.
    """

    def __init__(
        self,
        settings: LLMSettings,
        capabilities: Registry[Capability],
        *,
        environ: Mapping[str, str] | None = None,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        if not settings.base_url:
            raise ConfigError("llm.base_url is not set: use the offline planner instead")
        self.settings = settings
        self.capabilities = capabilities
        self._environ = os.environ if environ is None else environ
        self._sleep = sleep

    async def plan(self, request: PlanRequest) -> Plan:
        try:
            import openai
        except ImportError:
            raise PlanningError("llm.base_url is set but the openai client is not installed: "
                                "pip install 'osprey-core[llm]' (or unset llm.base_url to "
                                "plan offline)") from None

        settings = self.settings
        messages: list[dict[str, str]] = [
            {"role": "system", "content": system_prompt(request)},
            *request_messages(request),
        ]
        last_error = ""
        client = new_client(settings, self._environ)
        async with client:
            for attempt in range(1, settings.max_attempts + 1):
                if attempt > 1:
                    await self._sleep(settings.backoff_seconds * 2 ** (attempt - 2))
                try:
                    content = await self._complete(client, messages)
                except openai.APIError as exc:
                    last_error, retry = transport_failure(exc)
                    if not retry:
                        raise self._failed(attempt, last_error) from exc
                    continue
                # A reply far larger than any acceptable plan is refused unread, and only
                # its start goes back to the model with the feedback.
                limit = 2 * request.limits.max_bytes
                try:
                    if content is not None and len(content) > limit:
                        raise MalformedReply(
                            f"the reply is {len(content)} characters long; a plan has at most "
                            f"{request.limits.max_steps} steps (planning.max_steps) and "
                            f"{request.limits.max_bytes} bytes (planning.max_plan_bytes)")
                    return validate_plan(parse_reply(content), self.capabilities,
                                         request.context_keys, request.limits)
                except (MalformedReply, PlanValidationError) as exc:
                    last_error = str(exc)
                    messages.append({"role": "assistant", "content": (content or "")[:limit]})
                    messages.append({"role": "user", "content": feedback(exc)})
        raise self._failed(settings.max_attempts, last_error)

    async def _complete(
        self, client: openai.AsyncOpenAI, messages: list[dict[str, str]]
    ) -> str | None:
        response = await client.chat.completions.create(
            model=self.settings.model,
            messages=messages,  # type: ignore[arg-type]
            response_format={"type": "json_object"},
        )
        return response.choices[0].message.content if response.choices else None

    def _failed(self, attempts: int, last_error: str) -> PlanningError:
        plural = "s" * (attempts != 1)
        return PlanningError(
            f"no valid plan from model '{self.settings.model}' at {self.settings.base_url} "
            f"after {attempts} attempt{plural}; last error: {last_error}",
            attempts=attempts,
            last_error=last_error,
        )
