"""Host side of the sandbox's only route to the control system.

Code in the jail calls the runtime API (:mod:`osprey_core.sandbox.runtime`), which sends
JSON lines over a socket pair; the :class:`Broker` answers them here. Reads go straight
to the :class:`ControlSystem`. A write must first pass the run's :class:`BrokerPolicy`
(write mode, approval of this exact code, a channel the analyzer predicted) and then the
control system's one write path (writes_enabled, limits, verification, audit). Whatever
the child sends, the host answers with an error at worst: it never crashes or hangs on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import socket
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from osprey_core.control.errors import ControlSystemError
from osprey_core.control.types import (
    WriteRequest,
    WriteResult,
    WriteStatus,
    is_number,
    json_safe,
)
from osprey_core.errors import OspreyError
from osprey_core.execution.models import ExecutionMode
from osprey_core.sandbox.runtime import MAX_REQUEST_BYTES

if TYPE_CHECKING:
    from osprey_core.control.system import ControlSystem
    from osprey_core.hookspecs.archivers import ArchiverConnector

#: ``audit(action, details)``: where blocked writes and the run's summary are recorded.
BrokerAudit = Callable[[str, dict[str, Any]], None]
#: Channel names matching a glob pattern (see ``GeneratorContext.list_channels``).
ChannelLister = Callable[[str], Awaitable[list[str]]]

MAX_CALLS = 10_000
#: Channels (or writes) one request may name.
MAX_NAMES = 10_000
#: Longest read timeout the child may ask for (seconds).
MAX_TIMEOUT = 300.0
#: Furthest back a history request may start, in seconds before now (ten years).
MAX_LOOKBACK_SECONDS = 10 * 365.25 * 86400
#: Errors kept in the report (the count goes on).
MAX_ERRORS = 100
#: How long :meth:`Broker.close` lets a request still in flight finish (seconds).
CLOSE_TIMEOUT = 30.0


@dataclass(frozen=True)
class BrokerPolicy:
    """What one run may write. ``allowed_writes=None`` allows any channel (the analyzer
    could not name them); the approval then covers the code as a whole."""

    mode: ExecutionMode
    code_sha256: str
    approved_sha256: str | None = None
    approval_id: str | None = None
    allowed_writes: frozenset[str] | None = frozenset()
    run_id: str | None = None
    actor: str = "sandbox"
    interface: str = "sandbox"

    def refusal(self, channel: str) -> tuple[str, str] | None:
        """``(reason, message)`` if this run may not write ``channel``, else None."""
        if self.mode != ExecutionMode.WRITE:
            return "read_only_run", "read-only run"
        if self.approved_sha256 is None or self.approved_sha256 != self.code_sha256:
            return "not_approved", "no approval for this exact code"
        if self.allowed_writes is not None and channel not in self.allowed_writes:
            return "unpredicted_write", "write the analyzer did not predict"
        return None


@dataclass
class BrokerReport:
    """What the code did through the broker (``writes`` holds every attempt that reached
    the control system; ``blocked`` every write that did not happen, by whom)."""

    calls: int = 0
    reads: int = 0
    channels_read: set[str] = field(default_factory=set)
    writes: list[dict[str, Any]] = field(default_factory=list)
    blocked: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    error_count: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"calls": self.calls, "reads": self.reads,
                "channels_read": sorted(self.channels_read)[:MAX_ERRORS],
                "writes": list(self.writes), "blocked": list(self.blocked),
                "errors": list(self.errors), "error_count": self.error_count}


class _Refused(Exception):
    """An error answer: ``kind`` tells the runtime which exception to raise."""

    def __init__(self, kind: str, message: str, result: Any = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.result = result


class Broker:
    """Serves one sandboxed run: ``open()``, start the child, ``serve()``, ``close()``."""

    def __init__(self, control_system: ControlSystem, archiver: ArchiverConnector | None,
                 policy: BrokerPolicy, audit: BrokerAudit | None = None, *,
                 max_calls: int = MAX_CALLS, list_channels: ChannelLister | None = None,
                 close_timeout: float = CLOSE_TIMEOUT) -> None:
        self.control = control_system
        self.archiver = archiver
        self.policy = policy
        self.max_calls = max_calls
        self.close_timeout = close_timeout
        self.report = BrokerReport()
        self._audit = audit
        self._list_channels = list_channels
        self._request = WriteRequest(actor=policy.actor, interface=policy.interface,
                                     run_id=policy.run_id, approval_id=policy.approval_id)
        self._host: socket.socket | None = None
        self._child: socket.socket | None = None
        self._serving: asyncio.Task[None] | None = None
        self._closed = False
        self._ops: dict[str, Callable[[dict[str, Any]], Coroutine[Any, Any, Any]]] = {
            "read": self._read, "read_many": self._read_many, "write": self._write,
            "write_many": self._write_many, "archiver": self._archiver,
            "list_channels": self._list}

    # -- lifecycle --------------------------------------------------------------------

    def open(self) -> int:
        """Make the socket pair; return the child's end for ``SandboxJob.broker_fd``."""
        if self._host is not None or self._closed:
            raise RuntimeError("a broker serves one run: it is already open")
        self._host, self._child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self._host.setblocking(False)
        return self._child.fileno()

    def release_child_fd(self) -> None:
        """Close the host's copy of the child's end once the child has it, so the host sees
        end-of-file when the child exits. Safe to call more than once."""
        if self._child is not None:
            self._child.close()
            self._child = None

    async def serve(self) -> None:
        """Answer requests one at a time until the child closes its end (or dies)."""
        if self._host is None:
            raise RuntimeError("call open() before serve()")
        self._serving = asyncio.current_task()
        loop = asyncio.get_running_loop()
        host, pending, discarding = self._host, bytearray(), False
        with contextlib.suppress(OSError):  # the child went away: nothing left to answer
            while chunk := await loop.sock_recv(host, 65536):
                pending += chunk
                while (end := pending.find(b"\n")) >= 0:
                    line = bytes(pending[:end])
                    del pending[:end + 1]
                    if discarding:  # the tail of an oversized line, already answered
                        discarding = False
                    elif len(line) >= MAX_REQUEST_BYTES:
                        await loop.sock_sendall(host, self._oversized())
                    else:
                        await loop.sock_sendall(host, await self._answer(line))
                if len(pending) >= MAX_REQUEST_BYTES:
                    pending.clear()
                    if not discarding:
                        discarding = True
                        await loop.sock_sendall(host, self._oversized())

    async def close(self) -> BrokerReport:
        """Stop serving (a request in flight may finish), audit the summary, report."""
        if self._closed:
            return self.report
        self._closed = True
        self.release_child_fd()
        task = self._serving
        if task is not None and task is not asyncio.current_task() and not task.done():
            done, _ = await asyncio.wait({task}, timeout=self.close_timeout)
            if not done:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                self._problem("a request was still unanswered when the broker closed")
        if self._host is not None:
            self._host.close()
            self._host = None
        self._record("sandbox_broker_summary", {
            "calls": self.report.calls, "reads": self.report.reads,
            "channels_read": sorted(self.report.channels_read)[:MAX_ERRORS],
            "writes": len(self.report.writes), "blocked": len(self.report.blocked),
            "errors": self.report.error_count})
        return self.report

    # -- requests ---------------------------------------------------------------------

    async def _answer(self, line: bytes) -> bytes:
        self.report.calls += 1
        request_id: int | str | None = None
        op: Any = None
        try:
            try:
                message = json.loads(line)
            except ValueError:
                raise _Refused("protocol", "the request is not JSON") from None
            if not isinstance(message, dict):
                raise _Refused("protocol", "a request must be a JSON object")
            if isinstance(message.get("id"), int | str):
                request_id = message["id"]
            if self.report.calls > self.max_calls:
                raise _Refused("limit", f"more than {self.max_calls} calls in one run")
            op, args = message.get("op"), message.get("args", {})
            handler = self._ops.get(op) if isinstance(op, str) else None
            if handler is None:
                raise _Refused("protocol", f"unknown operation {op!r:.80}")
            if not isinstance(args, dict):
                raise _Refused("protocol", "'args' must be a JSON object")
            reply: dict[str, Any] = {"id": request_id, "ok": True, "result": await handler(args)}
        except _Refused as refused:
            if refused.kind not in ("blocked", "failed"):  # those are in writes/blocked
                self._problem(f"{op or 'request'}: {refused}")
            reply = {"id": request_id, "ok": False, "error": {
                "kind": refused.kind, "message": str(refused), "result": refused.result}}
        except Exception as exc:  # one bad request never takes the host down
            self._problem(f"{op}: internal error ({type(exc).__name__}: {exc})")
            reply = {"id": request_id, "ok": False, "error": {
                "kind": "internal", "message": f"the host failed on this request "
                                               f"({type(exc).__name__}: {exc})"}}
        return json.dumps(reply, default=str).encode() + b"\n"

    def _oversized(self) -> bytes:
        self.report.calls += 1
        message = f"a request over {MAX_REQUEST_BYTES} bytes was dropped"
        self._problem(message)
        return json.dumps({"id": None, "ok": False, "error": {
            "kind": "limit", "message": message, "result": None}}).encode() + b"\n"

    async def _read(self, args: dict[str, Any]) -> dict[str, Any]:
        channel, timeout = _channel(args.get("channel")), _timeout(args)
        reading = await _bounded(self.control.read(channel), timeout)
        self._count_reads([channel])
        return reading.to_json()

    async def _read_many(self, args: dict[str, Any]) -> dict[str, Any]:
        channels, timeout = _channels(args.get("channels")), _timeout(args)
        batch = await _bounded(self.control.read_many(channels), timeout)
        self._count_reads(list(batch.values))
        return {"values": {name: value.to_json() for name, value in batch.values.items()},
                "errors": {name: str(error) for name, error in batch.errors.items()}}

    async def _write(self, args: dict[str, Any]) -> dict[str, Any]:
        channel = _channel(args.get("channel"))
        if "value" not in args:
            raise _Refused("protocol", "a write needs a 'value'")
        value = args["value"]
        if refusal := self.policy.refusal(channel):
            raise _Refused("blocked", f"write to {channel} blocked: {refusal[1]}",
                           self._block(channel, value, *refusal))
        result = await self.control.write(channel, value, self._request)
        self._account(result)
        if not result.ok:
            raise _Refused(str(result.status), f"write to {channel} {result.status}: "
                           f"{result.message}", result.to_json())
        return result.to_json()

    async def _write_many(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        writes = args.get("writes")
        if not (isinstance(writes, list) and 0 < len(writes) <= MAX_NAMES and all(
                isinstance(pair, list) and len(pair) == 2 for pair in writes)):
            raise _Refused("protocol", f"'writes' must be 1 to {MAX_NAMES} [channel, value] "
                                       "pairs")
        pairs = [(_channel(channel), value) for channel, value in writes]
        refused = {index: refusal for index, (channel, _) in enumerate(pairs)
                   if (refusal := self.policy.refusal(channel))}
        if refused:  # policy is checked for the whole batch before anything is written
            outcome = [self._block(channel, value, *refused[index]) if index in refused
                       else self._block(channel, value, "skipped", "not attempted: another "
                                        "write of the batch was refused")
                       for index, (channel, value) in enumerate(pairs)]
            names = ", ".join(sorted({pairs[index][0] for index in refused}))
            why = "; ".join(sorted({message for _, message in refused.values()}))
            raise _Refused("blocked", f"writes blocked ({names}): {why}; nothing was written",
                           outcome)
        results = await self.control.write_many(pairs, self._request)
        for result in results:
            self._account(result)
        answer = [result.to_json() for result in results]
        if failed := next((result for result in results if not result.ok), None):
            raise _Refused(str(failed.status), f"write to {failed.channel} {failed.status}: "
                           f"{failed.message}", answer)
        return answer

    async def _archiver(self, args: dict[str, Any]) -> dict[str, list[list[Any]]]:
        if self.archiver is None:
            raise _Refused("unavailable", "no archiver is configured for this run")
        channels = _channels(args.get("channels"))
        now = datetime.now(UTC)
        start = _moment(args.get("start"), now, "start")
        end = _moment(args.get("end"), now, "end") if args.get("end") is not None else now
        if start >= end:
            raise _Refused("protocol", f"start {start.isoformat()} is not before end "
                                       f"{end.isoformat()}")
        operator = args.get("operator")
        if operator is not None and not isinstance(operator, str):
            raise _Refused("protocol", "'operator' must be a string")
        try:
            history = await self.archiver.retrieve(channels, start, end, operator=operator)
        except ControlSystemError as exc:
            raise _Refused("channel", str(exc)) from None
        except (OspreyError, ValueError) as exc:
            raise _Refused("archiver", str(exc)) from None
        self._count_reads(list(history))
        return {name: [[sample.timestamp.isoformat(), sample.value] for sample in samples]
                for name, samples in history.items()}

    async def _list(self, args: dict[str, Any]) -> list[str]:
        if self._list_channels is None:
            raise _Refused("unavailable", "listing channels is not available in this run")
        pattern = args.get("pattern", "*")
        if not isinstance(pattern, str) or len(pattern) > 200:
            raise _Refused("protocol", "'pattern' must be a glob pattern of at most 200 "
                                       "characters")
        return sorted(await self._list_channels(pattern))[:MAX_NAMES]

    # -- bookkeeping ------------------------------------------------------------------

    def _block(self, channel: str, value: Any, reason: str, message: str) -> dict[str, Any]:
        entry = {"channel": channel, "requested": json_safe(value), "status": "blocked",
                 "reason": reason, "message": message, "by": "broker"}
        self.report.blocked.append(entry)
        if reason != "skipped":
            self._record("sandbox_write_blocked", entry)
        return entry

    def _account(self, result: WriteResult) -> None:
        self.report.writes.append(result.to_json())
        if result.status is WriteStatus.BLOCKED:
            self.report.blocked.append({
                "channel": result.channel, "requested": json_safe(result.requested),
                "status": "blocked", "reason": str(result.reason), "message": result.message,
                "by": "control_system"})

    def _count_reads(self, channels: list[str]) -> None:
        self.report.reads += len(channels)
        self.report.channels_read.update(channels)

    def _problem(self, text: str) -> None:
        self.report.error_count += 1
        if len(self.report.errors) < MAX_ERRORS:
            self.report.errors.append(text)

    def _record(self, action: str, details: dict[str, Any]) -> None:
        if self._audit is None:
            return
        try:
            self._audit(action, {"run_id": self.policy.run_id,
                                 "approval_id": self.policy.approval_id,
                                 "code_sha256": self.policy.code_sha256, **details})
        except Exception as exc:
            self._problem(f"could not audit {action}: {type(exc).__name__}: {exc}")


# -- argument checks ----------------------------------------------------------------------

def _channel(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise _Refused("protocol", f"a channel name must be a non-empty string, not {value!r:.80}")
    return value


def _channels(value: Any) -> list[str]:
    if not isinstance(value, list) or not 0 < len(value) <= MAX_NAMES:
        raise _Refused("protocol", f"'channels' must be a list of 1 to {MAX_NAMES} names")
    return [_channel(item) for item in value]


def _timeout(args: dict[str, Any]) -> float | None:
    value = args.get("timeout")
    if value is None:
        return None
    if not _finite(value) or not value > 0:
        raise _Refused("protocol", f"'timeout' must be a positive number, not {value!r:.80}")
    return min(float(value), MAX_TIMEOUT)


def _moment(value: Any, now: datetime, what: str) -> datetime:
    """An ISO 8601 time (naive = UTC) or a number of seconds before ``now``."""
    if _finite(value) and 0 <= value <= MAX_LOOKBACK_SECONDS:
        return now - timedelta(seconds=value)
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise _Refused("protocol", f"{what} {value!r:.80} is not an ISO 8601 time") from None
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    raise _Refused("protocol", f"{what} must be an ISO 8601 time or seconds before now")


def _finite(value: Any) -> bool:
    """A finite number; JSON integers beyond float range count as not finite (Python's
    ``math.isfinite`` raises OverflowError on them)."""
    if not is_number(value):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


async def _bounded[T](work: Awaitable[T], timeout: float | None) -> T:
    """``work``, within ``timeout``; control-system errors become channel errors."""
    try:
        return await asyncio.wait_for(work, timeout)
    except TimeoutError:
        waited = "in time" if timeout is None else f"within {timeout:g} s"
        raise _Refused("timeout", f"no answer {waited}") from None
    except ControlSystemError as exc:
        raise _Refused("channel", str(exc)) from None
