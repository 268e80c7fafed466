"""The control system as the rest of osprey sees it: the connector behind one write path.

Every write from every caller (capability, CLI, sandbox broker) goes through
:meth:`ControlSystem.write`: master switch, limits database, value checks, max step from
the current value read through the same connector, the connector's write, verification
and an audit record, in that order. Anything unexpected while validating blocks the
write: the layer fails closed.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from osprey_core.control.errors import (
    ChannelNotFoundError,
    ControlSystemError,
    ServerRejectedError,
)
from osprey_core.control.limits import ChannelLimits, LimitsDatabase, Tolerance, check_value
from osprey_core.control.types import (
    ChannelMetadata,
    ChannelValue,
    ReadBatch,
    Reason,
    WriteRequest,
    WriteResult,
    WriteStatus,
    is_number,
)
from osprey_core.hookspecs.connectors import ControlSystemConnector
from osprey_core.models import AuditRecord

AuditSink = Callable[[AuditRecord], None]


class _Blocked(Exception):
    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


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
    ) -> None:
        self.connector = connector
        self.limits = limits
        self._writes_enabled = writes_enabled
        self.verify_timeout = verify_timeout
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
            raise ControlSystemError(f"invalid channel name {channel!r} for the "
                                     f"{self.connector.name} control system", channel=channel)

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

    async def write(self, channel: str, value: Any, request: WriteRequest) -> WriteResult:
        """Check, write, verify and audit one value. Never raises for a refused write."""
        limits: ChannelLimits | None = None
        previous: ChannelValue | None = None
        try:
            limits = self._permit(channel, value)
            await self.connect()
            previous = await self._check_step(channel, value, limits)
            # Recorded before the put: a write that cannot be audited does not happen.
            self._record(request, "channel_write_started", {
                "channel": channel, "requested": value,
                "previous": None if previous is None else previous.to_json()})
        except _Blocked as blocked:
            return self._finish(request, WriteResult(
                channel, value, WriteStatus.BLOCKED, blocked.reason, str(blocked),
                previous=previous))
        except ChannelNotFoundError as missing:
            return self._finish(request, WriteResult(
                channel, value, WriteStatus.FAILED, Reason.NOT_FOUND, str(missing)))
        except Exception as exc:  # fail closed: a validation we could not complete blocks
            return self._finish(request, WriteResult(
                channel, value, WriteStatus.BLOCKED, Reason.VALIDATION_ERROR,
                f"could not validate the write ({type(exc).__name__}: {exc})",
                previous=previous))
        return self._finish(request, await self._put_and_verify(channel, value, limits,
                                                                previous))

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
        if problem := check_value(value, limits):
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
        if not (is_number(previous.value) and is_number(value)):
            raise _Blocked(Reason.WRONG_TYPE, f"max_step needs numbers; {channel} is "
                           f"{previous.value!r}")
        if not math.isfinite(previous.value):  # NaN compares false: the step would pass
            raise _Blocked(Reason.VALIDATION_ERROR, f"cannot check max_step: the current "
                           f"value of {channel} is {previous.value}")
        step = abs(value - previous.value)
        if step > limits.max_step:
            raise _Blocked(Reason.STEP_TOO_LARGE, f"changing {channel} from {previous.value} "
                           f"to {value} is a step of {step:g}, above max_step "
                           f"{limits.max_step:g}")
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
        seen = "nothing" if readback is None else repr(readback.value)
        return outcome(WriteStatus.FAILED, Reason.VERIFICATION_FAILED,
                       f"readback of {target} is {seen}, not {value!r} within tolerance "
                       f"after {self.verify_timeout:g} s{error}", readback, False)

    def _finish(self, request: WriteRequest, result: WriteResult) -> WriteResult:
        self._record(request, f"channel_write_{result.status}", result.to_json())
        return result

    def _record(self, request: WriteRequest, action: str, details: dict[str, Any]) -> None:
        if self._audit is not None:
            self._audit(AuditRecord(
                at=self._clock(), actor=request.actor, interface=request.interface,
                action=action, run_id=request.run_id, approval_id=request.approval_id,
                details=details))
