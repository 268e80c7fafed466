"""The ``llm`` and ``agentic`` code generators' logic: any OpenAI-compatible endpoint.

``llm`` makes one chat completion per attempt and takes the code out of the reply.
``agentic`` holds a conversation with tools: it may list channels, read the runtime API,
dry-run its script read-only in the sandbox and revise, then ``submit`` the final script.
Both retry transport failures, timeouts, 5xx and 429 (bounded by ``llm.max_attempts``, with
doubling back-off) and fail at once on other 4xx (a bad key or model will not improve).

What the model writes is returned verbatim; the analyzer, approval and sandbox judge it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from osprey_core.errors import ConfigError, OspreyError
from osprey_core.execution.generation import (
    GenerationError,
    compile_error,
    conversation,
    default_runtime_api,
    excerpt,
    extract_code,
    looks_like_refusal,
    trim,
)
from osprey_core.llm_client import new_client, transport_failure

if TYPE_CHECKING:
    import openai
    from openai.types.chat import ChatCompletionMessage

    from osprey_core.execution.models import ExecutionRequest
    from osprey_core.hookspecs.code_generators import DryRun, GeneratorContext
    from osprey_core.settings import LLMSettings

type Sleep = Callable[[float], Awaitable[Any]]

#: Most channel names one ``list_channels`` answer carries.
MAX_LISTED_CHANNELS = 200
#: Longest stdout / stderr / results text of a dry run sent back to the model.
MAX_DRY_RUN_CHARS = 3000
#: Most analyzer findings of a dry run sent back to the model.
MAX_DRY_RUN_FINDINGS = 20

AGENTIC_INSTRUCTIONS = """\
You have tools. Find channel names with list_channels, try your script with dry_run \
(read-only: writes are blocked there), read its output and errors and revise, then call \
submit with the complete final script. Do not reply with plain text."""


def _function(name: str, description: str, **properties: str) -> dict[str, Any]:
    schema = {"type": "object", "additionalProperties": False, "required": list(properties),
              "properties": {key: {"type": "string", "description": text}
                             for key, text in properties.items()}}
    return {"type": "function",
            "function": {"name": name, "description": description, "parameters": schema}}


TOOLS: list[dict[str, Any]] = [
    _function("list_channels", "Names of the control system's channels matching a glob.",
              pattern="Glob pattern, e.g. 'BPM*:X'; '*' lists all."),
    _function("runtime_api", "The functions the script may call to reach the control system."),
    _function("dry_run", "Run a script read-only in the sandbox (writes are blocked); "
                         "returns ok, exit_reason, stdout, stderr, results and findings.",
              code="The complete Python script."),
    _function("submit", "Submit the complete final script; this ends the conversation.",
              code="The complete Python script."),
]


def with_endpoint(context: GeneratorContext | None) -> GeneratorContext:
    """``context``, if it names an endpoint; else a :class:`ConfigError` saying what is missing."""
    if context is None:
        raise ConfigError("LLM code generators need a GeneratorContext (the execution "
                          "service builds one per request)")
    if not context.llm.base_url:
        raise ConfigError("llm.base_url is not set: LLM code generators need an "
                          "OpenAI-compatible endpoint (or set execution.generator: mock)")
    return context


@contextlib.asynccontextmanager
async def open_client(
    settings: LLMSettings, environ: Mapping[str, str]
) -> AsyncIterator[openai.AsyncOpenAI]:
    """An async client for the endpoint; the client's own retries are off (ours count)."""
    try:
        client = new_client(settings, environ)
    except ImportError:
        raise GenerationError("LLM code generators need the openai client: pip install "
                              "'osprey-core[llm]' (or set execution.generator: mock)") from None
    async with client:
        yield client


async def complete(
    client: openai.AsyncOpenAI,
    settings: LLMSettings,
    messages: Sequence[Mapping[str, Any]],
    sleep: Sleep,
    **options: Any,
) -> ChatCompletionMessage:
    """One chat completion's message, retrying what may pass (see the module docstring)."""
    import openai

    endpoint = f"model '{settings.model}' at {settings.base_url}"
    last_error = ""
    for attempt in range(1, settings.max_attempts + 1):
        if attempt > 1:
            await sleep(settings.backoff_seconds * 2 ** (attempt - 2))
        try:
            response = await client.chat.completions.create(
                model=settings.model, messages=messages, **options)  # type: ignore[arg-type]
        except openai.APIError as exc:
            last_error, retry = transport_failure(exc)
            if not retry:
                raise GenerationError(f"{endpoint} refused the request (not retried): "
                                      f"{last_error}") from exc
            continue
        if not response.choices:
            raise GenerationError(f"{endpoint} answered without a message")
        return response.choices[0].message
    plural = "s" * (settings.max_attempts != 1)
    raise GenerationError(f"no answer from {endpoint} after {settings.max_attempts} "
                          f"attempt{plural}; last error: {last_error}")


def _refused(message: ChatCompletionMessage) -> None:
    if message.refusal:
        raise GenerationError(f"the model refused: {excerpt(message.refusal)}")


async def generate_code(
    context: GeneratorContext | None,
    request: ExecutionRequest,
    feedback: Sequence[str],
    previous_code: str | None,
    sleep: Sleep = asyncio.sleep,
) -> str:
    """The ``llm`` generator: one completion, its code extracted."""
    context = with_endpoint(context)
    messages = conversation(request, context.runtime_api, feedback, previous_code)
    async with open_client(context.llm, context.environ) as client:
        message = await complete(client, context.llm, messages, sleep)
    _refused(message)
    return extract_code(message.content)


class AgenticSession:
    """One agentic generation: a conversation bounded by ``execution.agentic_max_turns``.

    A turn is one completion. Tool calls are answered with JSON tool messages; malformed
    arguments, unknown tools and tools the context does not offer get an ``error`` answer
    and the conversation goes on. ``submit`` with code that does not compile is refused
    the same way. A plain reply with a code block counts as the submission.
    """

    def __init__(self, context: GeneratorContext | None, sleep: Sleep = asyncio.sleep) -> None:
        self.context = with_endpoint(context)
        self.settings = self.context.llm
        self.sleep = sleep

    async def generate(
        self, request: ExecutionRequest, feedback: Sequence[str], previous_code: str | None
    ) -> str:
        messages: list[dict[str, Any]] = conversation(
            request, self.context.runtime_api, feedback, previous_code,
            system_extra=AGENTIC_INSTRUCTIONS)
        turns = self.context.execution.agentic_max_turns
        last = ""
        async with open_client(self.settings, self.context.environ) as client:
            for _ in range(turns):
                message = await complete(client, self.settings, messages, self.sleep,
                                         tools=TOOLS)
                _refused(message)
                messages.append(_assistant(message))
                if not message.tool_calls:
                    last = message.content or ""
                    with contextlib.suppress(GenerationError):
                        return extract_code(message.content)
                    if looks_like_refusal(last):
                        raise GenerationError(f"the model refused: {excerpt(last)}")
                    messages.append({"role": "user", "content": "No script found. Use the "
                                     "tools, and call submit with the complete script."})
                    continue
                for call in message.tool_calls:
                    answer, submitted = await self._tool(call)
                    if submitted is not None:
                        return submitted
                    last = f"{_name(call)} -> {answer}"
                    messages.append({"role": "tool", "tool_call_id": call.id, "content": answer})
        plural = "s" * (turns != 1)
        raise GenerationError(f"the agentic generator did not submit code within {turns} "
                              f"turn{plural} (execution.agentic_max_turns); last: {excerpt(last)}")

    async def _tool(self, call: Any) -> tuple[str, str | None]:
        """The tool message answering ``call``, and the code if it was a valid submission."""
        name = _name(call)
        try:
            arguments = _arguments(call)
            if name == "submit":
                code = _code(arguments)
                if problem := compile_error(code):
                    raise _ToolError(f"the script does not compile: {problem}; fix it and "
                                     "submit again")
                return "", code
            return json.dumps(await self._answer(name, arguments), default=str), None
        except _ToolError as exc:
            return _error(str(exc)), None

    async def _answer(self, name: str, arguments: dict[str, Any]) -> Any:
        context = self.context
        if name == "runtime_api":
            return {"runtime_api": context.runtime_api or default_runtime_api()}
        if name == "list_channels":
            pattern = _string(arguments, "pattern")
            if context.list_channels is None:
                raise _ToolError("list_channels is not available here")
            names = await _callback(context.list_channels(pattern))
            return {"count": len(names), "channels": names[:MAX_LISTED_CHANNELS]}
        if name == "dry_run":
            code = _code(arguments)
            if context.dry_run is None:
                raise _ToolError("dry_run is not available here")
            return dry_run_report(await _callback(context.dry_run(code)))
        known = ", ".join(tool["function"]["name"] for tool in TOOLS)
        raise _ToolError(f"unknown tool {name!r}; the tools are: {known}")


class _ToolError(Exception):
    """A tool call the model got wrong; answered as an error, the conversation goes on."""


async def _callback[T](result: Awaitable[T]) -> T:
    """Await a context callback; the service's own errors go back to the model."""
    try:
        return await result
    except OspreyError as exc:
        raise _ToolError(f"{type(exc).__name__}: {exc}") from exc


def dry_run_report(run: DryRun) -> dict[str, Any]:
    """A dry run as the model sees it: output trimmed, findings capped."""
    results = json.dumps(run.results, default=str)
    return {
        "ok": run.ok,
        "exit_reason": run.exit_reason,
        "stdout": trim(run.stdout, MAX_DRY_RUN_CHARS),
        "stderr": trim(run.stderr, MAX_DRY_RUN_CHARS),
        "results": run.results if len(results) <= MAX_DRY_RUN_CHARS
        else trim(results, MAX_DRY_RUN_CHARS),
        "findings": run.findings[:MAX_DRY_RUN_FINDINGS],
    }


def _name(call: Any) -> str:
    function = getattr(call, "function", None)
    return getattr(function, "name", None) or "?"


def _arguments(call: Any) -> dict[str, Any]:
    function = getattr(call, "function", None)
    if function is None:
        raise _ToolError(f"only function tool calls are supported, got {call.type!r}")
    try:
        arguments = json.loads(function.arguments or "{}")
    except json.JSONDecodeError as exc:
        raise _ToolError(f"the arguments of {function.name!r} are not JSON ({exc}): "
                         f"{excerpt(function.arguments)}") from None
    if not isinstance(arguments, dict):
        raise _ToolError(f"the arguments of {function.name!r} must be a JSON object")
    return arguments


def _string(arguments: dict[str, Any], key: str) -> str:
    value = arguments.get(key)
    if not isinstance(value, str):
        raise _ToolError(f"argument {key!r} must be a string")
    return value


def _code(arguments: dict[str, Any]) -> str:
    code = _string(arguments, "code")
    if not code.strip():
        raise _ToolError("argument 'code' is empty")
    return code


def _error(message: str) -> str:
    return json.dumps({"error": message})


def _assistant(message: ChatCompletionMessage) -> dict[str, Any]:
    """The model's message as it goes back into the conversation."""
    entry: dict[str, Any] = {"role": "assistant", "content": message.content}
    if message.tool_calls:
        entry["tool_calls"] = [call.model_dump(exclude_none=True) for call in message.tool_calls]
    return entry
