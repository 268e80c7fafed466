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
