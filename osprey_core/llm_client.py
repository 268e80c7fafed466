"""What the planner and the code generators share about talking to an LLM endpoint."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import openai

    from osprey_core.settings import LLMSettings

#: Status codes worth another attempt; any other 4xx (bad key, bad model) will not improve.
RETRYABLE_STATUS = frozenset({408, 409, 429})


def new_client(settings: LLMSettings, environ: Mapping[str, str]) -> openai.AsyncOpenAI:
    """An async client for the endpoint with its own retries off: the callers count theirs,
    with back-off and feedback. Raises ``ImportError`` without the ``llm`` extra."""
    import openai

    return openai.AsyncOpenAI(base_url=settings.base_url,
                              api_key=settings.resolved_key(dict(environ)),
                              timeout=settings.timeout_seconds, max_retries=0)


def transport_failure(exc: openai.APIError) -> tuple[str, bool]:
    """A one-line description of a failed request, and whether retrying may help
    (connection errors, timeouts, 5xx and :data:`RETRYABLE_STATUS` may)."""
    import openai

    if isinstance(exc, openai.APIStatusError):
        retry = exc.status_code >= 500 or exc.status_code in RETRYABLE_STATUS
        return f"{type(exc).__name__}: {exc.message}", retry
    cause = f" ({exc.__cause__})" if exc.__cause__ else ""
    return f"{type(exc).__name__}: {exc}{cause}", True


async def complete(settings: LLMSettings, messages: list[dict[str, str]],
                   environ: Mapping[str, str]) -> str:
    """One chat completion's text, with ``settings.max_attempts`` attempts and doubling
    back-off for failures that may pass; :class:`~osprey_core.errors.OspreyError` when
    none succeeded or the reply was empty."""
    import asyncio

    import openai

    from osprey_core.errors import OspreyError

    last_error = ""
    async with new_client(settings, environ) as client:
        for attempt in range(1, settings.max_attempts + 1):
            if attempt > 1:
                await asyncio.sleep(settings.backoff_seconds * 2 ** (attempt - 2))
            try:
                response = await client.chat.completions.create(
                    model=settings.model, messages=messages)  # type: ignore[arg-type]
            except openai.APIError as exc:
                last_error, retry = transport_failure(exc)
                if not retry:
                    break
                continue
            content = response.choices[0].message.content if response.choices else None
            if content and content.strip():
                return content
            last_error = "the reply was empty"
    raise OspreyError(f"no answer from model '{settings.model}' at {settings.base_url}: "
                      f"{last_error}")
