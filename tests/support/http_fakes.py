"""Real HTTP servers on loopback that behave like the services connectors talk to.

Each fake runs a ``ThreadingHTTPServer`` on ``127.0.0.1`` (a free port) in a daemon
thread, records what it was asked, and is used as a context manager::

    with LabviewWebService(users={"operator": "s3cret"}) as service:
        service.values["SR:Current"] = 401.5
        ...  # talk to service.url

* :class:`LabviewWebService`: web method VIs of a LabVIEW web service (read, write, a
  range-checking write, a clamping write, an error-cluster write, a slow VI, ...).
* :class:`ArchiverApplianceService`: the Archiver Appliance's JSON retrieval API,
  including operator-wrapped names such as ``mean_60(PV)`` computed by the fake.
* :func:`blackhole_listener`: a loopback port whose connections never complete.
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import re
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar, Self
from urllib.parse import parse_qs, unquote, urlsplit

LOOPBACK = "127.0.0.1"


@dataclass
class Seen:
    """One request as the fake received it."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    raw_path: str = ""

    def json(self) -> Any:
        return json.loads(self.body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # a handler parked in a slow endpoint must not hold up stop()
    fake: FakeService

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that gave up (timeout tests) is expected; anything else is printed."""
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError | ssl.SSLError | TimeoutError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _dispatch(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        parts = urlsplit(self.path)
        seen = Seen(self.command, unquote(parts.path), parse_qs(parts.query),
                    {key.lower(): value for key, value in self.headers.items()}, body,
                    parts.path)
        fake = self.server.fake
        with fake.lock:
            fake.requests.append(seen)
            fake.in_flight += 1
            fake.max_in_flight = max(fake.max_in_flight, fake.in_flight)
        try:
            if fake.delay:
                time.sleep(fake.delay)
            status, payload, headers = fake.handle(seen)
        except Exception as exc:  # a bug in the fake shows up as a 500 with its message
            status, payload, headers = 500, {"error": f"fake crashed: {exc!r}"}, {}
        finally:
            with fake.lock:
                fake.in_flight -= 1
        if status is None:  # leave the connection open without answering
            fake.released.wait(30)
            return
        if isinstance(payload, bytes):
            data, kind = payload, "application/octet-stream"
        elif isinstance(payload, str):
            data, kind = payload.encode(), "text/plain; charset=utf-8"
        else:
            data, kind = json.dumps(payload).encode(), "application/json"
        self.send_response(status)
        self.send_header("Content-Type", headers.pop("Content-Type", kind))
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)
        self.close_connection = True

    do_GET = do_POST = do_PUT = _dispatch


Answer = tuple[int | None, Any, dict[str, str]]


class FakeService:
    """Base: one server thread, a request log and a lock; subclasses implement handle()."""

    scheme: ClassVar[str] = "http"

    def __init__(self, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self.lock = threading.Lock()
        self.requests: list[Seen] = []
        self.delay = 0.0
        self.in_flight = 0
        self.max_in_flight = 0
        #: set at stop(): handlers parked by a ``None`` status give up
        self.released = threading.Event()
        self._ssl_context = ssl_context
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def handle(self, request: Seen) -> Answer:
        raise NotImplementedError

    @property
    def port(self) -> int:
        assert self._server is not None, "start the fake first"
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"{'https' if self._ssl_context else 'http'}://{LOOPBACK}:{self.port}"

    def start(self) -> Self:
        server = _Server((LOOPBACK, 0), _Handler)
        if self._ssl_context is not None:
            server.socket = self._ssl_context.wrap_socket(server.socket, server_side=True)
        server.fake = self
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={
            "poll_interval": 0.05}, daemon=True, name=type(self).__name__)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.released.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def seen(self, method: str | None = None, path: str | None = None) -> list[Seen]:
        with self.lock:
            return [request for request in self.requests
                    if (method is None or request.method == method)
                    and (path is None or request.path == path)]


# -- LabVIEW ------------------------------------------------------------------------------


class LabviewWebService(FakeService):
    """Web method VIs under ``/SR`` of a LabVIEW web service.

    ``GET /SR/ReadValue?name=X`` -> ``{"value": v}``; ``POST /SR/WriteValue``
    ``{"name", "value"}`` stores it. ``WriteLimited`` refuses values outside ``limits``
    with HTTP 400 and a message, ``WriteClamped`` stores ``min(value, clamp)``,
    ``WriteInterlocked`` answers 200 with a LabVIEW error cluster, ``Slow`` never answers,
    ``Status`` nests the value in ``data``, ``Text/<name>`` answers plain text and
    ``WriteForm`` takes form fields. With ``users`` (basic) or ``token`` (bearer) every
    call needs credentials.
    """

    def __init__(self, *, users: dict[str, str] | None = None, token: str | None = None,
                 limits: tuple[float, float] = (0.0, 100.0), clamp: float = 5.0,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        super().__init__(ssl_context=ssl_context)
        self.users = users or {}
        self.token = token
        self.limits = limits
        self.clamp = clamp
        self.values: dict[str, Any] = {}
        self.severities: dict[str, int] = {}
        #: (VI, name, value) of every write the service applied
        self.writes: list[tuple[str, str, Any]] = []

    def _authorized(self, request: Seen) -> bool:
        given = request.headers.get("authorization", "")
        if self.token is not None:
            return given == f"Bearer {self.token}"
        if self.users:
            if not given.startswith("Basic "):
                return False
            try:
                user, _, password = base64.b64decode(given[6:]).decode().partition(":")
            except ValueError:
                return False
            return self.users.get(user) == password
        return True

    def handle(self, request: Seen) -> Answer:
        if not self._authorized(request):
            return 401, {"error": "authentication required"}, {
                "WWW-Authenticate": 'Basic realm="LabVIEW"'}
        vi = request.path.removeprefix("/SR/")
        if vi.startswith("Text/"):
            name = vi.removeprefix("Text/")
            if name not in self.values:
                return 404, f"no variable {name}", {}
            return 200, str(self.values[name]), {}
        if request.method == "GET":
            name = request.query.get("name", [""])[0]
            if vi == "Slow":
                return None, None, {}
            if name not in self.values:
                return 404, {"error": f"unknown variable '{name}'"}, {}
            with self.lock:
                value = self.values[name]
            if vi == "ReadValue":
                return 200, {"value": value}, {}
            if vi == "Status":
                return 200, {"data": {"value": value, "timestamp": 1_700_000_000.25,
                                      "severity": self.severities.get(name, 0)}}, {}
            return 404, {"error": f"no web method {vi}"}, {}
        return self._write(vi, request)

    def _write(self, vi: str, request: Seen) -> Answer:
        if vi == "Slow":
            return None, None, {}
        if vi == "WriteForm":
            fields = parse_qs(request.body.decode())
            name, value = fields["name"][0], float(fields["value"][0])
        else:
            payload = request.json()
            name, value = payload["name"], payload["value"]
        if name not in self.values:
            return 404, {"error": f"unknown variable '{name}'"}, {}
        if vi == "WriteLimited":
            low, high = self.limits
            if not low <= value <= high:
                return 400, {"error": f"value {value} out of range [{low:g}, {high:g}]"}, {}
        elif vi == "WriteClamped":
            value = min(value, self.clamp)
        elif vi == "WriteInterlocked":
            return 200, {"error": {"status": True, "code": 5001,
                                   "source": "interlock active: beam on"}}, {}
        elif vi not in ("WriteValue", "WriteForm"):
            return 404, {"error": f"no web method {vi}"}, {}
        with self.lock:
            self.values[name] = value
            self.writes.append((vi, name, value))
        return 200, {"status": "ok", "error": {"status": False, "code": 0, "source": ""}}, {}


# -- Archiver Appliance -------------------------------------------------------------------

_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
_WRAPPED = re.compile(r"(?P<op>[A-Za-z]+)_(?P<bin>\d+)\((?P<pv>.+)\)")


@dataclass
class ArchivedPV:
    """Samples as (epoch seconds, value, severity, status) plus the PV's metadata."""

    samples: list[tuple[float, Any, int, int]] = field(default_factory=list)
    meta: dict[str, str] = field(default_factory=lambda: {"PREC": "3", "EGU": "mA"})


class ArchiverApplianceService(FakeService):
    """``GET /retrieval/data/getData.json?pv=..&from=..&to=..`` like the appliance.

    ``from``/``to`` must be ISO 8601 UTC with milliseconds and ``Z`` (anything else is a
    400 here, to catch clients that send local or naive times). ``mean_N(PV)`` and
    ``max_N(PV)`` bin samples into N-second bins aligned to the epoch, stamped with the
    bin start. Unknown PVs get a Tomcat-style 404 page; names in ``silent`` get 200 with
    an empty body.
    """

    def __init__(self) -> None:
        super().__init__()
        self.archive: dict[str, ArchivedPV] = {}
        self.silent: set[str] = set()

    def add(self, pv: str, samples: list[tuple[float, Any, int, int]],
            meta: dict[str, str] | None = None) -> None:
        self.archive[pv] = ArchivedPV(sorted(samples, key=lambda item: item[0]),
                                      meta or {"PREC": "3", "EGU": "mA"})

    def handle(self, request: Seen) -> Answer:
        if request.method != "GET" or request.path != "/retrieval/data/getData.json":
            return 404, "<html><body>Not Found</body></html>", {"Content-Type": "text/html"}
        try:
            pv = request.query["pv"][0]
            start, end = request.query["from"][0], request.query["to"][0]
        except KeyError as exc:
            return 400, f"missing parameter {exc}", {}
        if not (_TIME.fullmatch(start) and _TIME.fullmatch(end)):
            return 400, f"bad time format: from={start} to={end}", {}
        begin, finish = (datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
                         for text in (start, end))
        operator, bin_size, name = None, 0, pv
        if match := _WRAPPED.fullmatch(pv):
            operator, bin_size, name = match["op"], int(match["bin"]), match["pv"]
        if name in self.silent:
            return 200, b"", {"Content-Type": "application/json"}
        if name not in self.archive or (operator and operator not in ("mean", "max")):
            return 404, ("<html><body><h1>HTTP Status 404</h1>Unable to find typeinfo for pv "
                         f"{name}</body></html>"), {"Content-Type": "text/html"}
        archived = self.archive[name]
        points = [sample for sample in archived.samples if begin <= sample[0] <= finish]
        if operator is not None:
            points = bin_samples(points, bin_size, operator)
        if not points:
            return 200, [], {}
        data = [{"secs": math.floor(secs), "nanos": round((secs % 1) * 1e9), "val": value,
                 "severity": severity, "status": status}
                for secs, value, severity, status in points]
        return 200, [{"meta": {"name": name, **archived.meta}, "data": data}], {}


def bin_samples(points: list[tuple[float, Any, int, int]], size: int, operator: str
                ) -> list[tuple[float, Any, int, int]]:
    """Reduce samples to one per ``size``-second bin: the mean or the max of the values."""
    bins: dict[int, list[tuple[float, Any, int, int]]] = {}
    for point in points:
        bins.setdefault(int(point[0] // size) * size, []).append(point)
    reduce: Callable[[list[float]], float] = (
        (lambda values: sum(values) / len(values)) if operator == "mean" else max)
    return [(float(start), reduce([p[1] for p in group]), max(p[2] for p in group), 0)
            for start, group in sorted(bins.items())]


# -- sockets ------------------------------------------------------------------------------


@contextlib.contextmanager
def blackhole_listener() -> Iterator[int]:
    """A loopback port that listens but whose accept queue is full: connects hang.

    The listener never calls accept() and its backlog is already taken by other pending
    connections, so the kernel drops further SYNs and a client's connect() waits until
    its own timeout. Nothing leaves the machine.
    """
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    fillers: list[socket.socket] = []
    try:
        listener.bind((LOOPBACK, 0))
        listener.listen(0)
        port = listener.getsockname()[1]
        for _ in range(4):
            filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect((LOOPBACK, port))
            fillers.append(filler)
        time.sleep(0.05)
        yield port
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


def unused_port() -> int:
    """A loopback port nobody listens on (connections are refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        return probe.getsockname()[1]


def epoch(moment: datetime) -> float:
    return moment.astimezone(UTC).timestamp()


# -- ALS-style elog -----------------------------------------------------------------------


class ElogService(FakeService):
    """``GET /api?op=retrieve&start=<epoch>&end=<epoch>`` like an ALS-style elog: the
    ``records`` whose ``timestamp`` lies in [start, end], as a JSON array.

    ``script`` holds answers served before the real ones, one per request, in order:
    an int is that HTTP status (with a small JSON error body), ``"html"`` a login page,
    ``"hang"`` no answer at all (a timeout for the client), ``("retry-after", s)`` a 429
    asking to wait ``s`` seconds. With ``token`` every request needs that bearer token.
    """

    def __init__(self, records: list[dict[str, Any]] | None = None, *,
                 token: str | None = None, ssl_context: ssl.SSLContext | None = None) -> None:
        super().__init__(ssl_context=ssl_context)
        self.records: list[dict[str, Any]] = list(records or [])
        self.script: list[Any] = []
        self.token = token

    @property
    def api(self) -> str:
        return f"{self.url}/api"

    def windows(self) -> list[tuple[int, int]]:
        """(start, end) of every data request, in order."""
        return [(int(seen.query["start"][0]), int(seen.query["end"][0]))
                for seen in self.seen("GET", "/api") if "start" in seen.query]

    def handle(self, request: Seen) -> Answer:
        with self.lock:
            step = self.script.pop(0) if self.script else None
        if step == "hang":
            return None, None, {}
        if step == "html":
            return 200, "<html><head><title>Single Sign-On</title></head></html>", {
                "Content-Type": "text/html"}
        if isinstance(step, tuple):
            return 429, {"error": "slow down"}, {"Retry-After": str(step[1])}
        if isinstance(step, int):
            return step, {"error": f"scripted {step}"}, {}
        if self.token is not None and (request.headers.get("authorization")
                                       != f"Bearer {self.token}"):
            return 401, {"error": "authentication required"}, {}
        if request.path != "/api" or request.query.get("op") != ["retrieve"]:
            return 404, "<html><body>Not Found</body></html>", {"Content-Type": "text/html"}
        start, end = int(request.query["start"][0]), int(request.query["end"][0])
        return 200, [record for record in self.records
                     if start <= _elog_time(record) <= end], {}


def _elog_time(record: dict[str, Any]) -> float:
    try:
        return float(record.get("timestamp", 0))
    except (TypeError, ValueError):
        return 0.0
