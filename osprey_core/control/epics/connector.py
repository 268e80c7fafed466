"""The EPICS connector: reads, writes, metadata and monitors over its CA contexts."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from osprey_core.control.epics import protocol
from osprey_core.control.epics.channels import Context, Monitor
from osprey_core.control.epics.codec import (
    EPICS_EPOCH,
    alarm_severity,
    alarm_status,
    decode,
    limit_pair,
    pack,
)
from osprey_core.control.epics.protocol import (
    NORMAL,
    Batch,
    Channel,
    handlers,
    monitors,
    status_error,
    tokens,
)
from osprey_core.control.epics.settings import MAX_NAME_LENGTH, PV_NAME, EpicsSettings
from osprey_core.control.errors import (
    ControlSystemError,
    ReadTimeoutError,
    ServerRejectedError,
    WriteTimeoutError,
)
from osprey_core.control.types import (
    ChannelMetadata,
    ChannelValue,
    ReadBatch,
    WriteAck,
    safe_repr,
)
from osprey_core.hookspecs.connectors import ControlSystemConnector


class EpicsConnector(ControlSystemConnector):
    """EPICS Channel Access through pyepics: gateways, put-callback, monitors, metadata."""

    name = "epics"
    description = "EPICS Channel Access (pyepics): IOCs directly or through CA gateways."
    settings_model = EpicsSettings

    def __init__(self, settings: Any = None, **timeouts: Any) -> None:
        super().__init__(settings, **timeouts)
        if settings is None:
            settings = EpicsSettings()
        elif isinstance(settings, dict):
            settings = EpicsSettings.model_validate(settings)
        self.settings: EpicsSettings = settings
        self.loop: asyncio.AbstractEventLoop | None = None
        self.closed = False
        self._api: SimpleNamespace | None = None
        self._read: Context | None = None
        self._write: Context | None = None
        self._monitors: set[Monitor] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._connect_lock = asyncio.Lock()

    # plumbing ----------------------------------------------------------------------------

    @property
    def api(self) -> SimpleNamespace:
        if self._api is None:
            raise ControlSystemError("the EPICS connector is not connected")
        return self._api

    @property
    def put_timeout(self) -> float:
        return self.settings.put_timeout or self.write_timeout

    def require_loop(self) -> asyncio.AbstractEventLoop:
        loop = asyncio.get_running_loop()
        if self.loop is not loop:
            raise ControlSystemError("the EPICS connector is used from another event loop "
                                     "than the one it connected in")
        return loop

    def spawn(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _contexts(self) -> tuple[Context, Context]:
        if self.closed:
            raise ControlSystemError("the EPICS connector is closed")
        if self._read is None or self._write is None:
            raise ControlSystemError("the EPICS connector is not connected (call connect())")
        self.require_loop()
        return self._read, self._write

    def to_value(self, channel: Channel, raw: tuple[Any, int, int, int, int]) -> ChannelValue:
        value, status, severity, secs, nsec = raw
        stamp = datetime.fromtimestamp(EPICS_EPOCH + secs + nsec / 1e9, UTC)
        return ChannelValue(channel.name, value, stamp, alarm_status(status),
                            alarm_severity(severity), channel.units)

    # lifecycle ---------------------------------------------------------------------------

    async def connect(self) -> None:
        async with self._connect_lock:
            if self._read is not None:
                return
            if self.closed:
                raise ControlSystemError("the EPICS connector is closed")
            self.loop = asyncio.get_running_loop()
            if not protocol.api_loaded():
                await asyncio.to_thread(protocol.import_pyepics)
            self._api = protocol.load_api()
            read = Context(self, "read", self.settings.read_environment())
            await read.open()
            write = read
            if self.settings.write_gateway:
                write = Context(self, "write gateway", self.settings.write_environment())
                try:
                    await write.open()
                except BaseException:
                    await read.destroy()
                    raise
            self._read, self._write = read, write

    async def close(self) -> None:
        if self.closed or self._read is None or self._write is None:
            self.closed = True
            return
        self.closed = True
        for monitor in list(self._monitors):
            self._clear_monitor(monitor)
        for task in list(self._tasks):
            task.cancel()
        contexts = [self._read] if self._write is self._read else [self._read, self._write]
        for context in contexts:
            context.clear_channels()
        for context in contexts:
            await context.destroy()
        self._read = self._write = None

    async def __aenter__(self) -> EpicsConnector:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # reading -----------------------------------------------------------------------------

    async def read(self, channel: str) -> ChannelValue:
        context, _ = self._contexts()
        self._check(channel)
        record = await context.ready_one(channel, self.connection_timeout)
        api = context.api
        batch = Batch(self.loop, 1)  # type: ignore[arg-type]
        context.issue_gets(batch, [(0, record, record.read_type(api), 0, functools.partial(
            decode, api, **record.decode_options(api)))])
        await context.wait(batch, self.read_timeout)
        return self._outcome(record, batch.results[0])

    async def read_many(self, channels: Sequence[str]) -> ReadBatch:
        context, _ = self._contexts()
        result = ReadBatch()
        names: list[str] = []
        for name in dict.fromkeys(channels):
            if self.validate_name(name):
                names.append(name)
            else:
                result.errors[name] = ControlSystemError(
                    f"invalid EPICS channel name {name!r}", channel=name)
        ready = await context.ready(names, self.connection_timeout)
        api = context.api
        good = [(name, item) for name, item in ready.items() if isinstance(item, Channel)]
        batch = Batch(self.loop, len(good))  # type: ignore[arg-type]
        context.issue_gets(batch, [
            (index, record, record.read_type(api), 0,
             functools.partial(decode, api, **record.decode_options(api)))
            for index, (_, record) in enumerate(good)])
        await context.wait(batch, self.read_timeout)
        for name, item in ready.items():
            if isinstance(item, Exception):
                result.errors[name] = item
        for (name, record), raw in zip(good, batch.results, strict=True):
            try:
                result.values[name] = self._outcome(record, raw)
            except ControlSystemError as exc:
                result.errors[name] = exc
        return result

    def _outcome(self, record: Channel, raw: Any) -> ChannelValue:
        if raw is None:
            raise ReadTimeoutError(f"{record.name}: connected, but no value within "
                                   f"{self.read_timeout:g} s", channel=record.name)
        if isinstance(raw, ControlSystemError):
            raise type(raw)(f"{record.name}: {raw}", channel=record.name)
        return self.to_value(record, raw)

    async def metadata(self, channel: str) -> ChannelMetadata:
        context, write_context = self._contexts()
        self._check(channel)
        record = await context.ready_one(channel, self.connection_timeout)
        api = context.api
        dbr = api.dbr
        if record.native == dbr.STRING:  # no control fields: the alarm state of a read
            current = await self.read(channel)
            status, severity = current.status, current.severity
        else:
            record.ctrl = await context.get_ctrl(record, self.read_timeout)
            status = alarm_status(record.ctrl.get("status", 0))
            severity = alarm_severity(record.ctrl.get("severity", 0))
        description = await self._description(context, record)
        writable = await self._writable(write_context, channel)
        ctrl = record.ctrl
        floating = record.native in (dbr.DOUBLE, dbr.FLOAT)
        if record.native == dbr.ENUM:
            data_type = "enum"
        elif record.text(api) or (record.native == dbr.STRING and record.count == 1):
            data_type = "string"
        elif record.count > 1:
            data_type = "array"
        else:
            data_type = "float" if floating else "int"
        return ChannelMetadata(
            channel=channel, data_type=data_type, units=record.units,
            precision=ctrl.get("precision") if floating else None, description=description,
            display_limits=limit_pair(ctrl, "lower_disp_limit", "upper_disp_limit"),
            control_limits=limit_pair(ctrl, "lower_ctrl_limit", "upper_ctrl_limit"),
            enum_strings=record.enum_strings, writable=writable, status=status,
            severity=severity)

    async def _description(self, context: Context, record: Channel) -> str | None:
        """The record's DESC field, best effort with a short timeout (cached)."""
        if record.description_known:
            return record.description
        parts = PV_NAME.match(record.name)
        if parts is None or (parts["field"] or "").startswith(".DESC"):
            return None
        name = f"{parts['record']}.DESC"
        outcome = (await context.ready([name], min(0.5, self.connection_timeout)))[name]
        value: Any = None
        if isinstance(outcome, Channel):
            with contextlib.suppress(ControlSystemError):
                value = (await self.read(name)).value
        record.description = value if isinstance(value, str) and value else None
        record.description_known = True
        return record.description

    async def _writable(self, context: Context, channel: str) -> bool:
        try:
            record = await context.ready_one(channel, self.connection_timeout)
        except ControlSystemError:
            return False
        with context.attached() as libca:
            return bool(libca.ca_write_access(record.chid))

    # writing -----------------------------------------------------------------------------

    async def write(self, channel: str, value: Any) -> WriteAck:
        _, context = self._contexts()
        self._check(channel)
        record = await context.ready_one(channel, self.connection_timeout)
        api = context.api
        dbr_type, count, buffer = pack(api, record, value)
        via = "" if context is self._read else " through the write gateway"
        with context.attached() as libca:
            if not libca.ca_write_access(record.chid):
                raise ServerRejectedError(f"{channel}: no write access{via} (read-only "
                                          "channel or read-only gateway)", channel=channel)
            if not self.settings.use_put_callback:
                status = libca.ca_array_put(dbr_type, ctypes.c_ulong(count), record.chid,
                                            buffer)
                libca.ca_flush_io()
                if status != NORMAL:
                    raise self._put_error(channel, status)
                return WriteAck(False, f"sent{via} without completion callback "
                                "(use_put_callback is off)")
            loop = self.require_loop()
            done: asyncio.Future[int] = loop.create_future()
            token = next(tokens)

            def finished(args: Any) -> None:  # CA thread
                status = int(args.status)
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(_resolve, done, status)

            handlers[token] = finished
            status = libca.ca_array_put_callback(dbr_type, ctypes.c_ulong(count),
                                                 record.chid, buffer,
                                                 api.on_completion, ctypes.c_void_p(token))
            libca.ca_flush_io()
        if status != NORMAL:
            handlers.pop(token, None)
            raise self._put_error(channel, status)
        try:
            status = await asyncio.wait_for(done, self.put_timeout)
        except TimeoutError:
            raise WriteTimeoutError(
                f"{channel}: the put was sent{via}, but the IOC did not report completion "
                f"within {self.put_timeout:g} s", channel=channel) from None
        finally:
            handlers.pop(token, None)
        if status != NORMAL:
            raise self._put_error(channel, status)
        return WriteAck(True, f"put completed{via} (put callback)")

    def _put_error(self, channel: str, status: int) -> ControlSystemError:
        error = status_error(self.api, status, f"write to {channel}")
        error.channel = channel
        return error

    # monitors ----------------------------------------------------------------------------

    async def subscribe(self, channel: str, callback: Callable[[ChannelValue], None]) -> Any:
        context, _ = self._contexts()
        self._check(channel)
        if not callable(callback):
            raise TypeError("callback must be callable")
        record = await context.ready_one(channel, self.connection_timeout)
        api = context.api
        monitor = Monitor(self, context, record, callback)
        monitors[monitor.token] = monitor
        with context.attached() as libca:
            status = libca.ca_create_subscription(
                record.read_type(api), ctypes.c_ulong(0), record.chid,
                ctypes.c_long(api.mask), api.on_monitor,
                ctypes.c_void_p(monitor.token), ctypes.byref(monitor.event_id))
            libca.ca_flush_io()
        if status != NORMAL:
            monitors.pop(monitor.token, None)
            raise status_error(api, status, f"monitor of {channel}")
        self._monitors.add(monitor)
        return monitor

    async def unsubscribe(self, handle: Any) -> None:
        if not isinstance(handle, Monitor) or handle.connector is not self:
            raise ValueError(f"{handle!r} is not a subscription of this connector")
        self._clear_monitor(handle)

    def _clear_monitor(self, monitor: Monitor) -> None:
        if not monitor.active:
            return
        monitor.active = False
        monitors.pop(monitor.token, None)
        self._monitors.discard(monitor)
        if monitor.context.pointer and monitor.event_id.value:
            with monitor.context.attached() as libca:
                libca.ca_clear_subscription(monitor.event_id)
                libca.ca_flush_io()

    # names -------------------------------------------------------------------------------

    def validate_name(self, channel: str) -> bool:
        """EPICS PV name: record name, optional ``.FIELD``, optional JSON filter."""
        return (isinstance(channel, str) and 0 < len(channel) <= MAX_NAME_LENGTH
                and PV_NAME.match(channel) is not None)

    def _check(self, channel: str) -> None:
        if not self.validate_name(channel):
            raise ControlSystemError(f"invalid EPICS channel name {safe_repr(channel)}",
                                     channel=channel if isinstance(channel, str) else None)


def _resolve(future: asyncio.Future[int], status: int) -> None:
    if not future.done():
        future.set_result(status)
