"""The runtime API generated code calls inside the sandbox to reach the control system.

Standard library only, no osprey imports: the backends copy this file into the jail. The
functions talk JSON lines over the socket the host handed in (descriptor number in
``OSPREY_BROKER_FD``), one request at a time; the host-side broker decides what is allowed
(see ``osprey_core.sandbox.broker`` and ``docs/sandbox-runtime.md``). Nothing is imported
or connected until the first call, so code that never touches the machine pays nothing.
"""

import _thread
import os

__all__ = [
    "BrokerError",
    "BrokerUnavailable",
    "ChannelError",
    "WriteBlocked",
    "WriteFailed",
    "list_channels",
    "read_archiver",
    "read_channel",
    "read_channels",
    "write_channel",
    "write_channels",
]

#: Environment variable naming the inherited broker socket's descriptor.
FD_VARIABLE = "OSPREY_BROKER_FD"
#: Largest request line the host accepts (bytes, newline included).
MAX_REQUEST_BYTES = 1 << 20
#: Largest reply line the runtime reads (bytes); archiver answers can be big.
MAX_REPLY_BYTES = 64 << 20
#: Extra seconds the runtime waits past a read's own timeout before giving up on the host.
REPLY_GRACE_SECONDS = 10.0

RUNTIME_API_DOC = """\
Control-system API (already defined in the code's globals; no import needed):
  read_channel(name, timeout=None, *, details=False) -> value
      Current value (float, int, str, bool or list). details=True returns a dict with
      channel, value, timestamp (ISO 8601), units, status and severity.
  read_channels(names, timeout=None, *, details=False) -> dict[name, value]
  write_channel(name, value) -> dict
      Writes one value; returns the result (status, message, previous, readback, verified).
      Raises WriteBlocked (a PermissionError) if the host refuses the write (read-only run,
      code not approved, channel not predicted, writes disabled, limits), WriteFailed if it
      was tried and did not work (timeout, verification).
  write_channels({name: value, ...} or [(name, value), ...]) -> list[dict]
      Writes in order; nothing is written if any channel is refused by policy, and the rest
      is skipped after the first write that does not succeed (then WriteBlocked/WriteFailed).
  read_archiver(channels, start, end=None, *, operator=None) -> dict[name, list[(time, value)]]
      History between start and end: datetime, ISO 8601 string or timedelta (that long
      before now); end=None means now. time is an ISO 8601 string.
  list_channels(pattern="*") -> list[str]   (glob pattern)
  Errors: ChannelError (unknown channel, failed read), BrokerError (refused request,
  timeout), BrokerUnavailable (no control-system access in this run).
Put what you computed in the dict `results` (already defined); it is saved as JSON
(numpy, pandas and datetimes are converted). Matplotlib figures still open at the end are
saved as PNG files automatically (backend Agg; do not call plt.show()).
"""


class BrokerUnavailable(ConnectionError):
    """No broker was handed to this run, or the connection to it is gone."""


class BrokerError(RuntimeError):
    """The host refused or could not complete a request."""

    def __init__(self, message: str, kind: str = "error", result: object = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.result = result


class ChannelError(BrokerError):
    """An unknown or invalid channel, or a read that failed."""


class WriteFailed(ChannelError):
    """A write was tried and did not work (timeout, I/O error, verification failed)."""


class WriteBlocked(PermissionError):
    """The host refused a write; ``reason`` says why and ``result`` holds the details."""

    def __init__(self, message: str, kind: str = "blocked", result: object = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.result = result
        first = next((item for item in result if item.get("status") != "ok"
                      and item.get("reason") != "skipped"), None) \
            if isinstance(result, list) else result
        self.reason = first.get("reason") if isinstance(first, dict) else None


_ERRORS = {"blocked": WriteBlocked, "failed": WriteFailed, "channel": ChannelError}


def _plain(value):
    """JSON fallback for numpy scalars and arrays handed to the API."""
    for method in ("tolist", "item"):
        if callable(getattr(value, method, None)):
            return getattr(value, method)()
    raise TypeError(f"{type(value).__name__} is not a value the control system can take")


class _Connection:
    """One request at a time over the inherited socket; broken for good after a failure."""

    def __init__(self, fd: int) -> None:
        import socket

        self._socket = socket.socket(fileno=fd)
        self._reader = self._socket.makefile("rb")
        self._last_id = 0
        self._broken = ""
        self._lock = _thread.allocate_lock()

    def call(self, op: str, args: dict, wait: float | None = None):
        import json

        try:
            line = json.dumps({"id": self._last_id + 1, "op": op, "args": args},
                              default=_plain).encode() + b"\n"
        except (TypeError, ValueError) as exc:
            raise TypeError(f"{op}: {exc}") from None
        if len(line) > MAX_REQUEST_BYTES:
            raise BrokerError(f"{op}: the request is {len(line)} bytes, over the "
                              f"{MAX_REQUEST_BYTES} byte limit", "limit")
        with self._lock:
            if self._broken:
                raise BrokerUnavailable(self._broken)
            self._last_id += 1
            try:
                self._socket.settimeout(wait)
                self._socket.sendall(line)
                answer = self._reader.readline(MAX_REPLY_BYTES + 1)
            except OSError as exc:
                self._broken = f"the connection to the host broke ({exc})"
                raise BrokerUnavailable(self._broken) from None
            if not answer.endswith(b"\n"):
                self._broken = ("the host closed the connection" if not answer
                                else f"a reply over {MAX_REPLY_BYTES} bytes")
                raise BrokerUnavailable(self._broken)
        reply = json.loads(answer)
        if reply.get("id") != self._last_id:
            raise BrokerError(f"{op}: the host answered another request: {reply!r:.300}",
                              "protocol")
        if reply.get("ok"):
            return reply.get("result")
        error = reply.get("error") or {}
        kind = error.get("kind", "error")
        raise _ERRORS.get(kind, BrokerError)(error.get("message", "refused"), kind,
                                             error.get("result"))


_connection: _Connection | None = None
_connect_lock = _thread.allocate_lock()


def _call(op: str, args: dict, wait: float | None = None):
    global _connection
    with _connect_lock:
        if _connection is None:
            fd = os.environ.get(FD_VARIABLE, "")
            if not fd.isdigit():
                raise BrokerUnavailable("this run has no control-system access "
                                        f"({FD_VARIABLE} is not set)")
            _connection = _Connection(int(fd))
    return _connection.call(op, args, wait)


def _wait(timeout: float | None) -> float | None:
    return None if timeout is None else float(timeout) + REPLY_GRACE_SECONDS


def _names(names, what: str) -> list:
    if isinstance(names, str):
        return [names]
    try:
        return list(names)
    except TypeError:
        raise TypeError(f"{what} must be a channel name or a list of names") from None


def read_channel(name: str, timeout: float | None = None, *, details: bool = False):
    """The current value of ``name`` (with timestamp, units and alarm state if ``details``)."""
    reading = _call("read", {"channel": name, "timeout": timeout}, _wait(timeout))
    return reading if details else reading["value"]


def read_channels(names, timeout: float | None = None, *, details: bool = False) -> dict:
    """Current values by name; raises ChannelError (with ``result`` = what was read) if
    any channel could not be read."""
    answer = _call("read_many", {"channels": _names(names, "names"), "timeout": timeout},
                   _wait(timeout))
    values = {name: reading if details else reading["value"]
              for name, reading in answer["values"].items()}
    if answer["errors"]:
        failed = "; ".join(f"{name}: {why}" for name, why in answer["errors"].items())
        raise ChannelError(f"could not read {failed}", "channel", values)
    return values


def write_channel(name: str, value) -> dict:
    """Write one value through the host's safety checks; returns the write result."""
    return _call("write", {"channel": name, "value": value})


def write_channels(writes) -> list:
    """Write several values in order (a dict or (name, value) pairs)."""
    pairs = list(writes.items()) if isinstance(writes, dict) else [tuple(p) for p in writes]
    if not all(len(pair) == 2 for pair in pairs):
        raise TypeError("write_channels takes a dict or (name, value) pairs")
    return _call("write_many", {"writes": [list(pair) for pair in pairs]})


def _moment(value, what: str):
    from datetime import date, timedelta

    if value is None or isinstance(value, str):
        return value
    if isinstance(value, timedelta):
        return abs(value.total_seconds())
    if isinstance(value, date):
        return value.isoformat()
    raise TypeError(f"{what} must be a datetime, an ISO 8601 string or a timedelta, "
                    f"not {type(value).__name__}")


def read_archiver(channels, start, end=None, *, operator: str | None = None) -> dict:
    """Archived samples of each channel as lists of (ISO time, value) tuples."""
    answer = _call("archiver", {"channels": _names(channels, "channels"),
                                "start": _moment(start, "start"), "end": _moment(end, "end"),
                                "operator": operator})
    return {name: [tuple(sample) for sample in samples] for name, samples in answer.items()}


def list_channels(pattern: str = "*") -> list:
    """Channel names the control system knows that match the glob ``pattern``."""
    return _call("list_channels", {"pattern": pattern})
