"""The control system as the rest of osprey sees it: the connector behind one write path.

Every write from every caller (capability, CLI, sandbox broker) goes through
:meth:`ControlSystem.write`: master switch, limits database, value checks, max step from
the current value read through the same connector, the connector's write, verification
and an audit record, in that order. Anything unexpected while validating blocks the
write: the layer fails closed.

From the fresh read for ``max_step`` to the end of verification a write holds its
channel's lock, so concurrent writers cannot each pass the step check against the same
old value: one lock per (connector name, channel) shared by every ``ControlSystem``,
event loop and thread of the process, and, with a lock folder, an ``flock`` on a file
per channel that serialises the processes of one host. Waiting is bounded; a write that
cannot get the lock is blocked.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import hashlib
import logging
import math
import os
import re
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from osprey_core.control.errors import (
    ChannelNotFoundError,
    ControlSystemError,
    ServerRejectedError,
)
from osprey_core.control.limits import (
    ChannelLimits,
    LimitsDatabase,
    Tolerance,
    check_value,
    step_size,
)
from osprey_core.control.types import (
    ChannelMetadata,
    ChannelValue,
    ReadBatch,
    Reason,
    WriteRequest,
    WriteResult,
    WriteStatus,
    is_number,
    json_safe,
    plain_value,
    safe_repr,
    type_name,
    value_text,
)
from osprey_core.hookspecs.connectors import ControlSystemConnector
from osprey_core.models import AuditRecord

AuditSink = Callable[[AuditRecord], None]
#: A value that is not known yet (computed at run time): only the channel can be judged.
UNKNOWN: Any = object()

logger = logging.getLogger(__name__)


class _Blocked(Exception):
    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class _ProcessLocks:
    """One ``threading.Lock`` per (connector name, channel) for the whole process."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[tuple[str, str], threading.Lock] = {}

    def get(self, key: tuple[str, str]) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def forget(self) -> None:
        """In a forked child: locks its parent's threads held would never be released."""
        self._guard = threading.Lock()
        self._locks = {}


_process_locks = _ProcessLocks()
os.register_at_fork(after_in_child=_process_locks.forget)


async def _poll(attempt: Callable[[], bool], deadline: float) -> bool:
    """Try ``attempt`` until it succeeds or ``deadline`` passes, without blocking the loop."""
    delay = 0.0005
    while not attempt():
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        await asyncio.sleep(min(delay, left))
        delay = min(delay * 2, 0.01)
    return True


def _try_flock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _lock_file_name(connector: str, channel: str) -> str:
    """The lock file of a channel: readable, and unique by a hash of the exact names."""
    digest = hashlib.sha256(f"{connector}\0{channel}".encode(errors="surrogatepass"))
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{connector}-{channel}")[:60]
    return f"{readable}-{digest.hexdigest()[:24]}.lock"


class ControlSystem:
    def __init__(
        self,
        connector: ControlSystemConnector,
        limits: LimitsDatabase,
        *,
        writes_enabled: bool,
        verify_timeout: float = 2.0,
        audit: AuditSink | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        lock_dir: Path | None = None,
        lock_timeout: float | None = None,
    ) -> None:
        """``lock_dir`` holds the per-channel lock files that serialise writes across the
        processes of this host (``None``: within this process only). ``lock_timeout`` is
        how long a write waits for its channel's lock; by default as long as one write
        may take (connection, read, write and verification timeouts)."""
        self.connector = connector
        self.limits = limits
        self._writes_enabled = writes_enabled
        self.verify_timeout = verify_timeout
        self.lock_dir = lock_dir
        self.lock_timeout = lock_timeout if lock_timeout is not None else (
            connector.connection_timeout + connector.read_timeout + connector.write_timeout
            + verify_timeout)
        self._audit = audit
        self._clock = clock
        self._connected = False
        self._lock = asyncio.Lock()

    @property
    def writes_enabled(self) -> bool:
        """Fixed when built from the config: nothing holding this object can flip it."""
        return self._writes_enabled

    async def connect(self) -> None:
        async with self._lock:
            if not self._connected:
                await self.connector.connect()
                self._connected = True

    async def close(self) -> None:
        if self._connected:
            await self.connector.close()
            self._connected = False

    async def __aenter__(self) -> ControlSystem:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- reading ---------------------------------------------------------------------

    def check_name(self, channel: str) -> None:
        if not isinstance(channel, str) or not self.connector.validate_name(channel):
            raise ControlSystemError(f"invalid channel name {safe_repr(channel)} for the "
                                     f"{self.connector.name} control system",
                                     channel=channel if isinstance(channel, str) else None)

    async def read(self, channel: str) -> ChannelValue:
        self.check_name(channel)
        await self.connect()
        return await self.connector.read(channel)

    async def read_many(self, channels: Sequence[str]) -> ReadBatch:
        for channel in channels:
            self.check_name(channel)
        await self.connect()
        return await self.connector.read_many(list(channels))

    async def metadata(self, channel: str) -> ChannelMetadata:
        self.check_name(channel)
        await self.connect()
        return await self.connector.metadata(channel)

    async def subscribe(self, channel: str, callback: Callable[[ChannelValue], None]) -> Any:
        self.check_name(channel)
        await self.connect()
        return await self.connector.subscribe(channel, callback)

    async def unsubscribe(self, handle: Any) -> None:
        await self.connector.unsubscribe(handle)

    # -- writing ---------------------------------------------------------------------

    async def known_channels(self, pattern: str = "*") -> list[str]:
        """Channels the connector lists plus those named in the limits database, matching
        the glob ``pattern`` (case-insensitive)."""
        import fnmatch

        await self.connect()
        names = set(await self.connector.known_channels()) | set(self.limits.channel_names())
        return sorted(name for name in names if fnmatch.fnmatch(name.lower(), pattern.lower()))

    def limits_for(self, channel: str) -> ChannelLimits | None:
        return self.limits.lookup(channel)

    def refusal(self, channel: str, value: Any = UNKNOWN) -> str | None:
        """Why :meth:`write` would block ``value`` on ``channel`` whatever the machine's
        state (master switch, limits database, value checks), or ``None``. Without a value
        only the channel is judged. Nothing is read: ``max_step`` needs the current value
        at write time and is left to :meth:`write`."""
        try:
            self._permit(channel, UNKNOWN if value is UNKNOWN else self._plain(value))
        except _Blocked as blocked:
            return str(blocked)
        return None

    async def write(self, channel: str, value: Any, request: WriteRequest) -> WriteResult:
        """Check, write, verify and audit one value, of any type. Never raises for a refused
        write; the result and the audit records are JSON whatever the value."""
        limits: ChannelLimits | None = None
        previous: ChannelValue | None = None
        requested, put = value, False
        try:
            if isinstance(channel, str):  # the name it holds, not what its methods claim
                channel = str.__str__(channel)
            requested = self._plain(value)
            limits = self._permit(channel, requested)
            await self.connect()
            async with self._channel_lock(channel):
                previous = await self._check_step(channel, requested, limits)
                # Recorded before the put: a write that cannot be audited does not happen.
                self._record(request, "channel_write_started", {
                    "channel": channel, "requested": requested,
                    "previous": None if previous is None else previous.to_json(),
                    **({} if type(requested) is type(value) else {"given": type_name(value)})})
                put = True
                result = await self._put_and_verify(channel, requested, limits, previous)
        except _Blocked as blocked:
            result = WriteResult(channel, requested, WriteStatus.BLOCKED, blocked.reason,
                                 str(blocked), previous=previous)
        except ChannelNotFoundError as missing:
            result = WriteResult(channel, requested, WriteStatus.FAILED, Reason.NOT_FOUND,
                                 str(missing))
        except Exception as exc:
            problem = f"{type(exc).__name__}: {safe_repr(exc)}"
            result = WriteResult(
                channel, requested, WriteStatus.FAILED, Reason.IO_ERROR,
                f"the write was sent; its outcome is unknown ({problem})", previous=previous
            ) if put else WriteResult(  # fail closed: a validation not completed blocks
                channel, requested, WriteStatus.BLOCKED, Reason.VALIDATION_ERROR,
                f"could not validate the write ({problem})", previous=previous)
        return self._finish(request, result)

    async def write_many(self, writes: Sequence[tuple[str, Any]],
                         request: WriteRequest) -> list[WriteResult]:
        """Write in order; after the first write that does not succeed, skip the rest."""
        results: list[WriteResult] = []
        for channel, value in writes:
            if results and not results[-1].ok:
                results.append(self._finish(request, WriteResult(
                    channel, value, WriteStatus.BLOCKED, Reason.SKIPPED,
                    f"not attempted: the write to {results[-1].channel} did not succeed")))
                continue
            results.append(await self.write(channel, value, request))
        return results

    @staticmethod
    def _plain(value: Any) -> Any:
        try:
            return plain_value(value)
        except ValueError as exc:
            raise _Blocked(Reason.WRONG_TYPE, str(exc)) from None

    @contextlib.asynccontextmanager
    async def _channel_lock(self, channel: str) -> AsyncIterator[None]:
        """Hold ``channel``'s lock in this process, then on this host (with ``lock_dir``)."""
        deadline = time.monotonic() + self.lock_timeout
        busy = _Blocked(Reason.BUSY, f"another write to {channel} held its lock for more "
                                     f"than {self.lock_timeout:g} s")
        local = _process_locks.get((self.connector.name, channel))
        if not await _poll(lambda: local.acquire(blocking=False), deadline):
            raise busy
        try:
            if self.lock_dir is None:
                yield
                return
            fd = self._open_lock_file(channel)
            try:
                if not await _poll(lambda: _try_flock(fd), deadline):
                    raise busy
                yield
            finally:
                os.close(fd)  # releases the flock
        finally:
            local.release()

    def _open_lock_file(self, channel: str) -> int:
        assert self.lock_dir is not None
        path = self.lock_dir / _lock_file_name(self.connector.name, channel)
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
        try:
            try:
                return os.open(path, flags, 0o600)
            except FileNotFoundError:
                self.lock_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
                return os.open(path, flags, 0o600)
        except OSError as exc:
            raise _Blocked(Reason.LOCK_ERROR, f"cannot take the write lock of {channel} "
                                              f"({path}): {exc.strerror or exc}") from None

    def _permit(self, channel: str, value: Any) -> ChannelLimits:
        try:
            self.check_name(channel)
        except ControlSystemError as exc:
            raise _Blocked(Reason.VALIDATION_ERROR, str(exc)) from None
        if not self._writes_enabled:
            raise _Blocked(Reason.WRITES_DISABLED,
                           "writes are disabled (control_system.writes_enabled is false)")
        limits = self.limits.lookup(channel)
        if limits is None:
            raise _Blocked(Reason.UNLISTED_CHANNEL,
                           f"{channel} is not in the limits database, so it is not writable")
        if not limits.writable:
            raise _Blocked(Reason.NOT_WRITABLE, f"{channel} is not writable (limits database)")
        if value is not UNKNOWN and (problem := check_value(value, limits)):
            raise _Blocked(*problem)
        return limits

    async def _check_step(self, channel: str, value: Any,
                          limits: ChannelLimits) -> ChannelValue | None:
        if limits.max_step is None:
            try:  # the previous value is only for the record here
                return await self.connector.read(channel)
            except ChannelNotFoundError:
                raise  # the write would wait for it again: fail now
            except Exception:
                return None
        try:
            previous = await self.connector.read(channel)
        except Exception as exc:
            raise _Blocked(Reason.VALIDATION_ERROR, f"cannot read the current value of "
                           f"{channel} to check max_step: {exc}") from None
        current = plain_value(previous.value)
        if not (is_number(current) and is_number(value)):
            raise _Blocked(Reason.WRONG_TYPE, f"max_step needs numbers; {channel} is "
                           f"{safe_repr(previous.value)}")
        if isinstance(current, float) and not math.isfinite(current):  # NaN compares false
            raise _Blocked(Reason.VALIDATION_ERROR, f"cannot check max_step: the current "
                           f"value of {channel} is {current}")
        step = step_size(current, value)
        if step > limits.max_step:
            raise _Blocked(Reason.STEP_TOO_LARGE, f"changing {channel} from "
                           f"{value_text(current)} to {value_text(value)} is a step of "
                           f"{value_text(step)}, above max_step {limits.max_step:g}")
        return previous

    async def _put_and_verify(self, channel: str, value: Any, limits: ChannelLimits,
                              previous: ChannelValue | None) -> WriteResult:
        level = limits.verification or "none"

        def outcome(status: WriteStatus, reason: Reason | None, message: str,
                    readback: ChannelValue | None = None, verified: bool | None = None
                    ) -> WriteResult:
            return WriteResult(channel, value, status, reason, message, previous, readback,
                               level, verified)

        try:
            ack = await asyncio.wait_for(self.connector.write(channel, value),
                                         self.connector.write_timeout)
        except ServerRejectedError as exc:
            return outcome(WriteStatus.BLOCKED, Reason.REJECTED_BY_SERVER, str(exc))
        except TimeoutError:
            return outcome(WriteStatus.FAILED, Reason.TIMEOUT, f"no completion within "
                           f"{self.connector.write_timeout:g} s")
        except ControlSystemError as exc:
            return outcome(WriteStatus.FAILED, exc.reason, str(exc))
        except Exception as exc:
            return outcome(WriteStatus.FAILED, Reason.IO_ERROR, f"{type(exc).__name__}: {exc}")
        if level == "none":
            return outcome(WriteStatus.OK, None, "written (not verified)")
        if level == "callback":
            if ack.confirmed:
                return outcome(WriteStatus.OK, None, "completion confirmed", verified=True)
            return outcome(WriteStatus.FAILED, Reason.VERIFICATION_FAILED,
                           f"the control system did not confirm completion {ack.message}".strip(),
                           verified=False)
        return await self._verify_readback(channel, value, limits, outcome)

    async def _verify_readback(self, channel: str, value: Any, limits: ChannelLimits,
                               outcome: Callable[..., WriteResult]) -> WriteResult:
        target = limits.readback_channel or channel
        # An enum written by index reads back as its label.
        expected = value
        if limits.type == "enum" and limits.allowed and is_number(value):
            expected = str(limits.allowed[int(value)])
        tolerance = limits.tolerance or Tolerance()
        deadline = time.monotonic() + self.verify_timeout
        delay, readback, error = 0.01, None, ""
        while True:
            try:
                readback = await self.connector.read(target)
                if tolerance.accepts(expected, readback.value):
                    return outcome(WriteStatus.OK, None, f"verified by reading {target}",
                                   readback, True)
            except Exception as exc:
                error = f" ({type(exc).__name__}: {exc})"
            if time.monotonic() >= deadline:
                break
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.2)
        seen = "nothing" if readback is None else safe_repr(readback.value)
        return outcome(WriteStatus.FAILED, Reason.VERIFICATION_FAILED,
                       f"readback of {target} is {seen}, not {value_text(value)} within tolerance "
                       f"after {self.verify_timeout:g} s{error}", readback, False)

    def _finish(self, request: WriteRequest, result: WriteResult) -> WriteResult:
        """Audit the outcome. The result is returned even when that fails: after a put,
        the caller must learn what happened to the machine."""
        try:
            self._record(request, f"channel_write_{result.status}", result.to_json())
        except Exception as exc:
            problem = f"{type(exc).__name__}: {safe_repr(exc)}"
            logger.error("the outcome of a write to %s could not be audited: %s",
                         safe_repr(result.channel), problem)
            return dataclasses.replace(result, message=f"{result.message} (the outcome could "
                                                       f"not be audited: {problem})")
        return result

    def _record(self, request: WriteRequest, action: str, details: dict[str, Any]) -> None:
        if self._audit is not None:
            self._audit(AuditRecord(
                at=self._clock(), actor=request.actor, interface=request.interface,
                action=action, run_id=request.run_id, approval_id=request.approval_id,
                details=json_safe(details)))
