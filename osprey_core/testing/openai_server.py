"""A real, local OpenAI-compatible HTTP server with scripted replies, for tests and demos.

It listens on 127.0.0.1 (a free port) in a daemon thread and speaks enough of the API
for the ``openai`` client: ``POST /v1/chat/completions``, ``POST /v1/embeddings`` and
``GET /v1/models``. Because it is a real socket, a subprocess pointed at
:attr:`FakeOpenAIServer.base_url` reaches it too. Chat replies are taken from a queue
filled with :meth:`FakeOpenAIServer.script`:

* ``str``: the assistant message content;
* ``dict``: the assistant message itself (``tool_calls`` and all);
* ``int`` / :class:`http.HTTPStatus`: answer with that error status and an error body;
* a callable of the request JSON returning any of the above.

When the queue is empty :attr:`FakeOpenAIServer.default_reply` is used; unset, that is
HTTP 500, so an unexpected call fails the test instead of passing silently.

Embedding replies have their own queue, :meth:`FakeOpenAIServer.script_embeddings`:

* a list of vectors: one per input, in order;
* ``dict``: the response body exactly as given (to test malformed answers);
* ``int`` / :class:`http.HTTPStatus`: that error status;
* a callable of the request JSON returning any of the above.

With nothing scripted, each input gets a deterministic unit vector of
:attr:`FakeOpenAIServer.embedding_dimension` from hashing its words (as
:class:`~osprey_core.testing.fakes.FakeEmbeddingModel` does), so batching and
search can be tested without scripting every call.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import itertools
import json
import struct
import threading
import time
from collections.abc import Callable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

type Reply = str | dict[str, Any] | int | Callable[[dict[str, Any]], Reply]
type EmbeddingReply = (list[list[float]] | dict[str, Any] | int
                       | Callable[[dict[str, Any]], EmbeddingReply])

__all__ = ["EmbeddingReply", "FakeOpenAIServer", "Reply"]


class FakeOpenAIServer:
    """Scripted chat completions over real HTTP; records every request it answers."""

    def __init__(self, models: tuple[str, ...] = ("fake-model",)) -> None:
        self.models = models
        #: Used when the script is empty; ``None`` answers HTTP 500 ("nothing scripted").
        self.default_reply: Reply | None = None
        self._lock = threading.Lock()
        self._queue: collections.deque[Reply] = collections.deque()
        self._requests: list[dict[str, Any]] = []
        #: Length of the vectors answered to embedding requests with nothing scripted.
        self.embedding_dimension = 8
        self._embedding_queue: collections.deque[EmbeddingReply] = collections.deque()
        self._embedding_requests: list[dict[str, Any]] = []
        self._headers: list[dict[str, str]] = []
        self._ids = itertools.count(1)
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> Self:
        if self._httpd is not None:
            raise RuntimeError("FakeOpenAIServer is already running")
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._httpd.daemon_threads = True
        # A short poll interval keeps ``stop`` (and so every test using the server) quick.
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(0.05,), name="fake-openai-server",
            daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("FakeOpenAIServer is not running")
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    # -- script and record -------------------------------------------------------------

    def script(self, *replies: Reply) -> None:
        """Queue replies for the next chat completion calls, in order."""
        with self._lock:
            self._queue.extend(replies)

    @property
    def requests(self) -> list[dict[str, Any]]:
        """Every chat completion request body received, oldest first (a copy)."""
        with self._lock:
            return list(self._requests)

    def script_embeddings(self, *replies: EmbeddingReply) -> None:
        """Queue replies for the next embedding calls, in order."""
        with self._lock:
            self._embedding_queue.extend(replies)

    @property
    def embedding_requests(self) -> list[dict[str, Any]]:
        """Every embedding request body received, oldest first (a copy)."""
        with self._lock:
            return list(self._embedding_requests)

    @property
    def headers(self) -> list[dict[str, str]]:
        """Each recorded request's HTTP headers, names lower-cased (``authorization``: the key)."""
        with self._lock:
            return list(self._headers)

    @property
    def calls(self) -> int:
        with self._lock:
            return len(self._requests)

    @property
    def pending(self) -> int:
        """Scripted replies not yet used."""
        with self._lock:
            return len(self._queue)

    def _next_reply(
        self, request: dict[str, Any], headers: dict[str, str]
    ) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self._requests.append(request)
            self._headers.append(headers)
            reply = self._queue.popleft() if self._queue else self.default_reply
            number = next(self._ids)
        if reply is None:
            return _error(HTTPStatus.INTERNAL_SERVER_ERROR,
                          "FakeOpenAIServer: no reply scripted for this call")
        while callable(reply):
            reply = reply(request)
        if isinstance(reply, int):
            return _error(HTTPStatus(reply), f"FakeOpenAIServer: scripted status {int(reply)}")
        message = {"role": "assistant", "content": reply} if isinstance(reply, str) else reply
        return HTTPStatus.OK, _completion(number, request, message)

    def _next_embeddings(self, request: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self._embedding_requests.append(request)
            reply = self._embedding_queue.popleft() if self._embedding_queue else None
            dimension = self.embedding_dimension
        inputs = request.get("input", [])
        inputs = [inputs] if isinstance(inputs, str) else list(inputs)
        if reply is None:
            from osprey_core.testing.fakes import FakeEmbeddingModel

            model = FakeEmbeddingModel.named("server", dimension=dimension)()
            reply = model.embed([str(text) for text in inputs]).tolist()
        while callable(reply):
            reply = reply(request)
        if isinstance(reply, int):
            return _error(HTTPStatus(reply), f"FakeOpenAIServer: scripted status {int(reply)}")
        if isinstance(reply, dict):
            return HTTPStatus.OK, reply
        return HTTPStatus.OK, _embeddings(request, inputs, reply)


def _completion(number: int, request: dict[str, Any], message: dict[str, Any]) -> dict[str, Any]:
    message = {"role": "assistant", "content": None, **message}
    if message.get("tool_calls"):
        message["tool_calls"] = [_tool_call(index, call)
                                 for index, call in enumerate(message["tool_calls"], 1)]
    prompt_tokens = sum(len(str(item.get("content") or "").split())
                        for item in request.get("messages", []))
    completion_tokens = len(str(message.get("content") or "").split())
    return {
        "id": f"chatcmpl-fake-{number}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request.get("model", "fake-model"),
        "choices": [{
            "index": 0,
            "message": message,
            "finish_reason": "tool_calls" if message.get("tool_calls") else "stop",
            "logprobs": None,
        }],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def _embeddings(request: dict[str, Any], inputs: list[Any],
                vectors: list[list[float]]) -> dict[str, Any]:
    as_base64 = request.get("encoding_format") == "base64"
    data = [{"object": "embedding", "index": index,
             "embedding": (base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
                           if as_base64 else vector)}
            for index, vector in enumerate(vectors)]
    tokens = sum(len(str(text).split()) for text in inputs)
    return {"object": "list", "data": data, "model": request.get("model", "fake-model"),
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


def _tool_call(index: int, call: dict[str, Any]) -> dict[str, Any]:
    """Fill in what a script may leave out: id, type and JSON-encoded arguments."""
    function = dict(call.get("function", {}))
    if not isinstance(function.get("arguments", ""), str):
        function["arguments"] = json.dumps(function["arguments"])
    return {"id": f"call_{index}", "type": "function", **call, "function": function}


def _error(status: HTTPStatus, message: str) -> tuple[int, dict[str, Any]]:
    kind = "server_error" if status >= 500 else "invalid_request_error"
    return status, {"error": {"message": message, "type": kind, "param": None,
                              "code": status.phrase.lower().replace(" ", "_")}}


def _handler_for(server: FakeOpenAIServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        #: Idle keep-alive connections are dropped, so no handler thread waits forever.
        timeout = 30

        def do_GET(self) -> None:
            if self.path.rstrip("/") == "/v1/models":
                data = [{"id": model, "object": "model", "created": 0, "owned_by": "osprey"}
                        for model in server.models]
                self._send(HTTPStatus.OK, {"object": "list", "data": data})
            else:
                self._send(*_error(HTTPStatus.NOT_FOUND, f"no route GET {self.path}"))

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            route = self.path.rstrip("/")
            if route not in ("/v1/chat/completions", "/v1/embeddings"):
                self._send(*_error(HTTPStatus.NOT_FOUND, f"no route POST {self.path}"))
                return
            try:
                request = json.loads(body)
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                self._send(*_error(HTTPStatus.BAD_REQUEST, f"request body is not JSON: {exc}"))
                return
            if route == "/v1/embeddings":
                self._send(*server._next_embeddings(request))
                return
            headers = {name.lower(): value for name, value in self.headers.items()}
            self._send(*server._next_reply(request, headers))

        def _send(self, status: int, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode("utf-8")
            # a client that gave up waiting (a timeout test) has nobody left to answer
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            """Silent: tests read ``requests`` instead of a log on stderr."""

    return Handler
