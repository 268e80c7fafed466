"""The OpenAI-compatible chat endpoint: ``GET /v1/models``, ``POST /v1/chat/completions``.

Any chat front-end that speaks OpenAI's protocol (OpenWebUI, the ``openai`` client) talks
to osprey here, authenticated like the API (the API key is sent as a bearer token). The
wire format is OpenAI's: one model (``osprey``), completions as a JSON object or, with
``stream: true``, as Server-Sent Events of ``chat.completion.chunk`` objects ending with
``data: [DONE]``; errors as ``{"error": {"message", "type", "param", "code"}}``. What a
message means (a request, or a decision) is :mod:`osprey_core.service.chat_turns`.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, Literal

from fastapi import APIRouter, Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field

from osprey_core.errors import OspreyError
from osprey_core.service.auth import Identity, identity
from osprey_core.service.chat_turns import CONVERSATION_HEADERS, Answer, session_for, take_turn
from osprey_core.service.context import ServiceState, service_state
from osprey_core.service.errors import ServiceError, from_osprey_error, validation_message

MODEL_ID = "osprey"
#: Characters per streamed chunk: a front-end shows the answer as it arrives.
CHUNK_CHARS = 400
#: OpenAI's error ``type`` for each status.
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error",
               403: "permission_error", 404: "not_found_error", 409: "conflict_error",
               413: "invalid_request_error", 422: "invalid_request_error"}


def openai_error(status: int, code: str, message: str,
                 headers: dict[str, str] | None = None) -> JSONResponse:
    """An error as OpenAI's API answers it (its ``code`` and ``message`` are also the
    service's own error shape)."""
    kind = ERROR_TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return JSONResponse(body, status_code=status, headers=headers)


class OpenAIErrorRoute(APIRoute):
    """Routes whose errors (authentication and roles included: dependencies run inside
    the route handler) answer in OpenAI's error format, which chat clients read."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except ServiceError as exc:
                return openai_error(exc.status, exc.code, exc.message, exc.headers or None)
            except RequestValidationError as exc:
                return openai_error(422, "invalid_request", validation_message(exc.errors()))
            except OspreyError as exc:
                error = from_osprey_error(exc)
                return openai_error(error.status, error.code, error.message)

        return route


router = APIRouter(route_class=OpenAIErrorRoute, tags=["chat"])


class Model(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Model]


class ChatMessage(BaseModel):
    """One message; ``content`` is text or OpenAI's list of parts (text parts are read)."""

    model_config = ConfigDict(extra="allow")

    role: str
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "\n".join(str(part.get("text", "")) for part in self.content
                             if part.get("type") == "text")
        return self.content or ""


class ChatRequest(BaseModel):
    """OpenAI's request; sampling options (temperature, max_tokens, ...) are accepted and
    have no effect."""

    model_config = ConfigDict(extra="allow")

    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    user: str | None = Field(None, max_length=256, description="A conversation key, when "
                             "no X-Conversation-Id header names the conversation.")


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: Literal["stop"] = "stop"


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]


_STARTED = int(time.time())


@router.get("/v1/models", response_model=ModelList)
async def models(who: Identity = Depends(identity)) -> ModelList:
    """The one model: osprey itself (any authenticated caller)."""
    return ModelList(data=[Model(id=MODEL_ID, created=_STARTED, owned_by="osprey")])


@router.post("/v1/chat/completions", response_model=ChatCompletion,
             responses={200: {"content": {"text/event-stream": {}},
                              "description": "with stream: chat.completion.chunk events"}})
async def completions(body: ChatRequest, request: Request,
                      who: Identity = Depends(identity),
                      state: ServiceState = Depends(service_state)) -> Response:
    """The last user message is the request (operator role) or a decision (``approve
    <id>`` / ``reject <id> [reason]``, approver role); the conversation is a session."""
    if body.model != MODEL_ID:
        raise ServiceError(404, "model_not_found", f"no model '{body.model[:80]}': this "
                           f"server has one model, '{MODEL_ID}'")
    asked = [message.text() for message in body.messages if message.role == "user"]
    if not asked or not asked[-1].strip():
        raise ServiceError(400, "no_user_message", "the last user message is missing or "
                           "empty: nothing to ask")
    header = next((request.headers[name] for name in CONVERSATION_HEADERS
                   if request.headers.get(name)), None)
    session = session_for(who.name, header=header, field=body.user, first_message=asked[0])
    answer = await take_turn(state, who, asked[-1].strip(), session)
    headers = {"X-Osprey-Session": session}
    if answer.run_id:
        headers["X-Osprey-Run"] = answer.run_id
    completion_id, created = f"chatcmpl-{secrets.token_hex(12)}", int(time.time())
    if body.stream:
        return StreamingResponse(_chunks(answer, completion_id, created),
                                 media_type="text/event-stream",
                                 headers={**headers, "Cache-Control": "no-cache"})
    completion = ChatCompletion(id=completion_id, created=created, model=MODEL_ID,
                                choices=[Choice(message=AssistantMessage(content=answer.text))])
    return JSONResponse(completion.model_dump(mode="json"), headers=headers)


async def _chunks(answer: Answer, completion_id: str, created: int) -> AsyncIterator[str]:
    """The answer as ``chat.completion.chunk`` events: the role, the text in pieces, the
    finish reason, then ``[DONE]``."""

    def event(delta: dict[str, str], finish: str | None = None) -> str:
        chunk = {"id": completion_id, "object": "chat.completion.chunk", "created": created,
                 "model": MODEL_ID,
                 "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        return f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"

    yield event({"role": "assistant", "content": ""})
    for start in range(0, len(answer.text), CHUNK_CHARS):
        yield event({"content": answer.text[start:start + CHUNK_CHARS]})
    yield event({}, "stop")
    yield "data: [DONE]\n\n"
