"""EPICS Channel Access connector, built on pyepics (the ``epics`` extra).

How it talks to Channel Access
------------------------------
* Each connector owns its CA client contexts: one for reads, monitors and metadata, and a
  second one for writes when ``write_gateway`` is set. libca reads ``EPICS_CA_ADDR_LIST``
  and friends when a context creates its first channel, so the connector creates each
  context with the variables of its settings in place (under a process-wide lock, then
  restores the environment). Two connectors with different address lists therefore work
  side by side in one process, and writes can go to a read-write gateway while reads go
  to a read-only one.
* Channels are cached ``epics.PV`` objects, one per name and context (no auto-monitor).
  A channel is *ready* once it is connected and its control fields (units, enum
  strings) have arrived; waiting for that costs at most ``connection_timeout``, so a
  missing channel fails in that time, not in pyepics' 5 s default.
* Reads, puts and monitors use libca's asynchronous calls with completion callbacks
  (``ca_array_get_callback``, ``ca_array_put_callback``, ``ca_create_subscription``):
  requests are queued from the event loop without blocking, the CA threads decode the
  reply and hand it to the loop with ``call_soon_threadsafe``. Nothing waits by polling,
  user callbacks never run on a CA thread, and a batch of 1000 channels costs one flush.
* Every read asks the IOC (no monitor cache): the value the core checks ``max_step``
  against and verifies a write with is the IOC's, not a possibly stale copy.
* A put with callback reports the IOC's verdict: a refused value (a caproto putter
  raising, no write access) raises :class:`ServerRejectedError`. A clamped value (a
  softIOC record with DRVH) is *accepted* by the IOC; only a readback shows it, which
  the core's ``readback`` verification does.

The connector only moves data: limits, ``writes_enabled`` and verification are applied by
:class:`osprey_core.control.system.ControlSystem` around every write.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import itertools
import logging
import math
import os
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from osprey_core.control.errors import (
    ChannelNotFoundError,
    ConnectionTimeoutError,
    ControlSystemError,
    ReadTimeoutError,
    ServerRejectedError,
    WriteTimeoutError,
)
from osprey_core.control.types import (
    ChannelMetadata,
    ChannelValue,
    ReadBatch,
    Reason,
    Severity,
    WriteAck,
    safe_repr,
)
from osprey_core.hookspecs.connectors import ControlSystemConnector

logger = logging.getLogger(__name__)

# -- settings --------------------------------------------------------------------------------

_ADDRESS = re.compile(r"^(?P<host>[A-Za-z0-9](?:[A-Za-z0-9.\-]*[A-Za-z0-9])?)"
                      r"(?::(?P<port>\d{1,5}))?$")


def _address_list(value: Any) -> Any:
    if isinstance(value, str):  # the environment-variable form: "10.0.0.1 10.0.0.2:5066"
        value = value.split()
    if isinstance(value, list | tuple):
        for entry in value:
            match = _ADDRESS.match(entry) if isinstance(entry, str) else None
            if match is None:
                raise ValueError(f"{entry!r} is not host[:port]")
            if match["port"] is not None and not 0 < int(match["port"]) < 65536:
                raise ValueError(f"{entry!r}: port must be 1..65535")
        return list(value)
    return value


class EpicsSettings(BaseModel):
    """The ``epics`` config section: where Channel Access looks for channels."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    addr_list: list[str] | None = Field(
        None, description="EPICS_CA_ADDR_LIST for reads, monitors and metadata: host[:port] "
        "entries (a read-only gateway goes here). Unset: taken from the environment.")
    auto_addr_list: bool | None = Field(
        None, description="EPICS_CA_AUTO_ADDR_LIST: also search the broadcast addresses of "
        "the local interfaces. Unset: environment (EPICS default: yes). Use false with a "
        "gateway.")
    server_port: int | None = Field(
        None, ge=1, le=65535, description="EPICS_CA_SERVER_PORT: port of address entries "
        "without one (EPICS default 5064).")
    max_array_bytes: int | None = Field(
        None, ge=16384, description="EPICS_CA_MAX_ARRAY_BYTES: largest array transfer. "
        "Unset: environment, else 16 MiB.")
    write_gateway: list[str] | None = Field(
        None, description="Address list used for writes only (a read-write gateway), "
        "searched in a separate CA context without auto addresses. Unset: writes use "
        "addr_list like reads.")
    put_timeout: float | None = Field(
        None, gt=0, description="Seconds to wait for the IOC to report a put complete. "
        "Unset: control_system.write_timeout (which also bounds the whole write).")
    use_put_callback: bool = Field(
        True, description="Put with completion callback: the IOC reports when processing "
        "finished, or that it refused the value. Off: fire-and-forget puts, confirmed only "
        "by readback verification.")

    _check_lists = field_validator("addr_list", "write_gateway", mode="before")(
        staticmethod(_address_list))

    def read_environment(self) -> dict[str, str | None]:
        """Variables for the read context (``None``: keep the process's own value)."""
        return {
            "EPICS_CA_ADDR_LIST": None if self.addr_list is None else " ".join(self.addr_list),
            "EPICS_CA_AUTO_ADDR_LIST": None if self.auto_addr_list is None else
            ("YES" if self.auto_addr_list else "NO"),
            **self._common(),
        }

    def write_environment(self) -> dict[str, str | None]:
        """Variables for the write context: the write gateway only."""
        return {"EPICS_CA_ADDR_LIST": " ".join(self.write_gateway or ()),
                "EPICS_CA_AUTO_ADDR_LIST": "NO", **self._common()}

    def _common(self) -> dict[str, str | None]:
        return {
            "EPICS_CA_SERVER_PORT": None if self.server_port is None else str(self.server_port),
            "EPICS_CA_MAX_ARRAY_BYTES": None if self.max_array_bytes is None
            else str(self.max_array_bytes),
        }


# -- names ----------------------------------------------------------------------------------

#: Record name characters: the EPICS recommended set plus the braces, '#', '$', '%' and
#: '/' some facilities use; then an optional ``.FIELD`` (``$`` for long strings) and an
#: optional JSON channel filter (``rec.VAL{"dbnd":{"abs":1}}``).
_PV_NAME = re.compile(r"^(?P<record>[A-Za-z0-9_\-+:\[\]<>;{}#$%/]+)"
                      r"(?P<field>\.[A-Z][A-Z0-9_]*\$?)?"
                      r"(?P<filter>\.?\{[ -~]*\})?$")
MAX_NAME_LENGTH = 1000

# -- alarms ---------------------------------------------------------------------------------

ALARM_STATUS = ("NO_ALARM", "READ", "WRITE", "HIHI", "HIGH", "LOLO", "LOW", "STATE", "COS",
                "COMM", "TIMEOUT", "HWLIMIT", "CALC", "SCAN", "LINK", "SOFT", "BAD_SUB",
                "UDF", "DISABLE", "SIMM", "READ_ACCESS", "WRITE_ACCESS")
_EPICS_EPOCH = 631152000  # 1990-01-01 in POSIX seconds


def alarm_status(code: int) -> str:
    return ALARM_STATUS[code] if 0 <= code < len(ALARM_STATUS) else f"STATUS_{code}"


def alarm_severity(code: int) -> Severity:
    return Severity(code) if 0 <= code <= 3 else Severity.INVALID


# -- libca glue (built once, after pyepics is imported) ------------------------------------

#: CA message numbers (status >> 3) that mean "we lost the IOC", not "the IOC said no".
_IO_MESSAGES = frozenset({10, 13, 17, 24, 55, 59, 60})
_NORMAL = 1  # ECA_NORMAL


class UnsupportedValueError(ControlSystemError):
    """The value cannot be represented in the channel's EPICS type; nothing was sent."""

    reason = Reason.WRONG_TYPE


_api_lock = threading.Lock()
_api: SimpleNamespace | None = None
_env_lock = threading.Lock()
#: One-shot completion handlers (gets and puts) and live monitors, by token. The token
#: travels through libca as the callback's ``usr`` pointer: a plain integer, so a late
#: callback after a timeout finds nothing and is dropped safely.
_handlers: dict[int, Callable[[Any], None]] = {}
_monitors: dict[int, _Monitor] = {}
_tokens = itertools.count(1)


def _import_pyepics() -> None:
    """Import pyepics (about 150 ms: worth a worker thread)."""
    try:
        import epics  # noqa: F401
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ControlSystemError("the EPICS connector needs pyepics: pip install "
                                 f"'osprey-core[epics]' ({exc})") from None


def _load_api() -> SimpleNamespace:
    """Initialise libca and build the ctypes callbacks (first use only).

    Called on the event loop's thread: libca threads spawned from a Python worker
    thread complain about scheduling parameters.
    """
    global _api
    with _api_lock:
        if _api is not None:
            return _api
        _import_pyepics()
        from epics import PV, ca, dbr

        if ca.libca is None:
            ca.initialize_libca()

        class EventArgs(ctypes.Structure):
            # struct event_handler_args, with usr as a plain pointer-sized integer
            _fields_: ClassVar = [("usr", ctypes.c_void_p), ("chid", dbr.chid_t),
                                  ("type", dbr.long_t), ("count", dbr.long_t),
                                  ("raw_dbr", ctypes.c_void_p), ("status", dbr.int_t)]

        def on_completion(args: Any) -> None:
            handler = _handlers.pop(args.usr or 0, None)
            if handler is not None:
                try:
                    handler(args)
                except Exception:  # never let an exception into libca
                    logger.exception("EPICS completion handler failed")

        def on_monitor(args: Any) -> None:
            monitor = _monitors.get(args.usr or 0)
            if monitor is not None:
                try:
                    monitor.on_event(args)
                except Exception:
                    logger.exception("EPICS monitor handler failed")

        libca = ca.libca
        libca.ca_array_get_callback.restype = ctypes.c_int
        libca.ca_array_put_callback.restype = ctypes.c_int
        libca.ca_array_put.restype = ctypes.c_int
        libca.ca_create_subscription.restype = ctypes.c_int
        _api = SimpleNamespace(
            ca=ca, dbr=dbr, libca=libca, PV=PV,
            on_completion=dbr.make_callback(on_completion, EventArgs),
            on_monitor=dbr.make_callback(on_monitor, EventArgs),
            mask=dbr.DBE_VALUE | dbr.DBE_ALARM,
        )
        return _api


@contextlib.contextmanager
def _environment(values: dict[str, str | None]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    try:
        for key, value in values.items():
            if value is not None:
                os.environ[key] = value
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _release_thread(api: SimpleNamespace) -> int | None:
    """Detach the calling thread's own CA context (returned, to re-attach it later).

    A non-preemptive context cannot be re-attached once detached (libca refuses), so a
    thread holding one is refused instead of losing its context.
    """
    libca = api.libca
    current = libca.ca_current_context()
    if current:
        if not libca.ca_preemtive_callback_is_enabled():
            raise ControlSystemError(
                "this thread holds a non-preemptive Channel Access context (pyepics with "
                "PREEMPTIVE_CALLBACK = False, or an in-process IOC such as pythonSoftIOC); "
                "run the EPICS connector's event loop in a thread without one")
        libca.ca_detach_context()
    return current


def _create_context(api: SimpleNamespace, environment: dict[str, str | None]) -> int:
    """A new preemptive CA context whose search list comes from ``environment``.

    libca reads the address list when a context creates its first channel, so a
    throw-away channel is created (and cleared) while the variables are in place.
    """
    libca = api.libca
    previous = _release_thread(api)
    try:
        with _env_lock, _environment(environment):
            status = libca.ca_context_create(1)
            if status != _NORMAL:
                raise ControlSystemError(f"cannot create a Channel Access context: "
                                         f"{api.ca.message(status)}")
            context = libca.ca_current_context()
            chid = api.dbr.chid_t()
            if libca.ca_create_channel(b"osprey:address-list-probe", None, None, 0,
                                       ctypes.byref(chid)) == _NORMAL:
                libca.ca_clear_channel(chid)
        libca.ca_detach_context()
    finally:
        if previous:
            libca.ca_attach_context(previous)
    return int(context)


def _destroy_context(api: SimpleNamespace, context: int) -> None:
    libca = api.libca
    previous = _release_thread(api)
    libca.ca_attach_context(context)
    try:
        api.ca.context_destroy()  # destroys the calling thread's context, drops its cache
    finally:
        if previous and previous != context:
            libca.ca_attach_context(previous)


# -- decoding (runs on CA threads: copy everything out of the callback's buffer) ------------

def _decode_value(api: SimpleNamespace, native: int, data: Any, count: int, *, text: bool,
                  scalar: bool) -> Any:
    dbr = api.dbr
    if native == dbr.STRING:
        items = [bytes(item.value).decode("utf-8", "replace") for item in data[:count]]
        return items[0] if scalar and len(items) == 1 else items
    if native == dbr.CHAR and text:
        raw = bytes(data[:count])
        return raw.split(b"\0", 1)[0].decode("utf-8", "replace")
    if scalar and count == 1:
        return data[0]
    return data[:count]  # a list of Python numbers


def _decode(api: SimpleNamespace, args: Any, *, text: bool, scalar: bool) -> Any:
    """(value, status, severity, secs, nsec) from a DBR_TIME reply, or an exception."""
    if args.status != _NORMAL:
        return _status_error(api, args.status, "read")
    meta, data = api.dbr.cast_args(args)
    if data is None or meta is None:
        return ControlSystemError(f"unexpected DBR type {args.type} in a reply")
    native = api.dbr.native_type(args.type)
    value = _decode_value(api, native, data, args.count, text=text, scalar=scalar)
    return (value, meta.status, meta.severity, meta.stamp.secs, meta.stamp.nsec)


def _decode_ctrl(api: SimpleNamespace, args: Any) -> Any:
    """The control fields of a DBR_CTRL reply as a dict, or an exception."""
    if args.status != _NORMAL:
        return _status_error(api, args.status, "read of the control fields")
    meta, _ = api.dbr.cast_args(args)
    if meta is None:
        return ControlSystemError(f"unexpected DBR type {args.type} in a reply")
    fields: dict[str, Any] = {"status": meta.status, "severity": meta.severity}
    for name in ("precision", "upper_disp_limit", "lower_disp_limit", "upper_ctrl_limit",
                 "lower_ctrl_limit"):
        if hasattr(meta, name):
            fields[name] = getattr(meta, name)
    if hasattr(meta, "units"):
        fields["units"] = bytes(meta.units).split(b"\0", 1)[0].decode("utf-8", "replace")
    if hasattr(meta, "strs"):
        fields["enum_strings"] = tuple(
            bytes(meta.strs[index].value).decode("utf-8", "replace")
            for index in range(max(0, min(meta.no_str, len(meta.strs)))))
    return fields


def _status_error(api: SimpleNamespace, status: int, what: str) -> ControlSystemError:
    text = api.ca.message(status)
    if (status >> 3) in _IO_MESSAGES:
        return ControlSystemError(f"{what} failed: {text}")
    return ServerRejectedError(f"{what} refused by the server: {text}")


# -- channels and contexts ------------------------------------------------------------------

class _Channel:
    """One cached channel of one context; mutated on the event loop only."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.pv: Any = None
        self.chid: Any = None
        self.connected = False
        self.ever_connected = False
        self.ready = asyncio.Event()
        self.generation = 0
        self.native: int = -1
        self.count = 1
        self.ctrl: dict[str, Any] = {}
        self.description: str | None = None
        self.description_known = False

    @property
    def units(self) -> str | None:
        return self.ctrl.get("units") or None

    @property
    def enum_strings(self) -> tuple[str, ...]:
        return tuple(self.ctrl.get("enum_strings", ()))

    def text(self, api: SimpleNamespace) -> bool:
        """Char waveforms are read and written as text."""
        return self.native == api.dbr.CHAR and self.count > 1

    def read_type(self, api: SimpleNamespace) -> int:
        # enums are read as their state string (the IOC converts)
        native = api.dbr.STRING if self.native == api.dbr.ENUM else self.native
        return api.dbr.TIME_STRING + native

    def ctrl_type(self, api: SimpleNamespace) -> int:
        return api.dbr.CTRL_STRING + self.native

    def decode_options(self, api: SimpleNamespace) -> dict[str, bool]:
        return {"text": self.text(api), "scalar": self.count == 1}


class _Batch:
    """Completion of several one-shot requests, signalled to the loop once."""

    def __init__(self, loop: asyncio.AbstractEventLoop, size: int) -> None:
        self.loop = loop
        self.results: list[Any] = [None] * size
        self.remaining = size
        self.lock = threading.Lock()
        self.future: asyncio.Future[None] = loop.create_future()
        self.tokens: list[int] = []
        if size == 0:
            self.future.set_result(None)

    def complete(self, index: int, result: Any) -> None:  # any thread
        with self.lock:
            if self.results[index] is not None:
                return
            self.results[index] = result
            self.remaining -= 1
            done = self.remaining == 0
        if done:
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits
                self.loop.call_soon_threadsafe(self._finish)

    def _finish(self) -> None:
        if not self.future.done():
            self.future.set_result(None)

    def finish_now(self) -> None:  # on the loop, for failures found while issuing
        with self.lock:
            done = self.remaining == 0
        if done:
            self._finish()


class _Context:
    """One CA client context and its channel cache."""

    def __init__(self, connector: EpicsConnector, label: str,
                 environment: dict[str, str | None]) -> None:
        self.connector = connector
        self.label = label
        self.environment = environment
        self.pointer = 0
        self.channels: dict[str, _Channel] = {}

    @property
    def api(self) -> SimpleNamespace:
        return self.connector.api

    async def open(self) -> None:
        self.pointer = _create_context(self.api, self.environment)  # ~2 ms, no I/O wait

    @contextlib.contextmanager
    def attached(self) -> Iterator[Any]:
        """Attach the calling thread to this context, restoring its own afterwards."""
        libca = self.api.libca
        if libca.ca_current_context() == self.pointer:
            yield libca
            return
        current = _release_thread(self.api)
        libca.ca_attach_context(self.pointer)
        try:
            yield libca
        finally:
            libca.ca_detach_context()
            if current:
                libca.ca_attach_context(current)

    # connection ------------------------------------------------------------------------

    def channel(self, name: str) -> _Channel:
        """The cached channel, created (and its search started) on first use."""
        channel = self.channels.get(name)
        if channel is None:
            channel = self.channels[name] = _Channel(name)
            callback = functools.partial(self._on_connection, channel)
            with self.attached() as libca:
                channel.pv = self.api.PV(
                    name, form="time", auto_monitor=False, connection_callback=callback,
                    connection_timeout=self.connector.connection_timeout)
                libca.ca_flush_io()
        return channel

    def _on_connection(self, channel: _Channel, pvname: str | None = None,
                       conn: bool = False, **_: Any) -> None:  # CA thread
        loop = self.connector.loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # loop closed meanwhile
                loop.call_soon_threadsafe(self._connection_changed, channel, bool(conn))

    def _connection_changed(self, channel: _Channel, connected: bool) -> None:
        if self.connector.closed or self.channels.get(channel.name) is not channel:
            return
        channel.generation += 1
        channel.connected = connected
        channel.ready.clear()
        if not connected:
            return
        channel.ever_connected = True
        with self.attached() as libca:
            channel.chid = channel.pv.chid
            channel.native = libca.ca_field_type(channel.chid)
            channel.count = max(1, libca.ca_element_count(channel.chid))
        if channel.native == self.api.dbr.STRING:
            channel.ready.set()  # strings have no control fields
        else:
            self.connector.spawn(self._fetch_ctrl(channel, channel.generation))

    async def _fetch_ctrl(self, channel: _Channel, generation: int) -> None:
        try:
            channel.ctrl = await self.get_ctrl(channel, self.connector.read_timeout)
        except Exception as exc:  # units stay unknown; reads still work
            logger.debug("control fields of %s: %s", channel.name, exc)
        if channel.generation == generation and channel.connected:
            channel.ready.set()

    async def ready(self, names: Sequence[str], timeout: float
                    ) -> dict[str, _Channel | ControlSystemError]:
        """Channels by name once ready, or the error of those not ready in ``timeout``."""
        channels = {name: self.channel(name) for name in names}
        waiting = [channel for channel in channels.values() if not channel.ready.is_set()]
        if waiting:
            tasks = [asyncio.ensure_future(channel.ready.wait()) for channel in waiting]
            try:
                await asyncio.wait(tasks, timeout=timeout)
            finally:
                for task in tasks:
                    task.cancel()
        result: dict[str, _Channel | ControlSystemError] = {}
        for name, channel in channels.items():
            if channel.ready.is_set():
                result[name] = channel
            elif channel.ever_connected:
                result[name] = ConnectionTimeoutError(
                    f"{name} is disconnected and did not reconnect within {timeout:g} s",
                    channel=name)
            else:  # forgotten, so typos do not pile up; a later use searches afresh
                self.forget(channel)
                result[name] = ChannelNotFoundError(
                    f"{name}: no EPICS server answered within {timeout:g} s "
                    f"({self.label} search list: {self.search_list()})", channel=name)
        return result

    async def ready_one(self, name: str, timeout: float) -> _Channel:
        channel = self.channels.get(name)
        if channel is not None and channel.ready.is_set():
            return channel
        outcome = (await self.ready([name], timeout))[name]
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def search_list(self) -> str:
        addresses = self.environment.get("EPICS_CA_ADDR_LIST")
        if addresses is None:
            addresses = os.environ.get("EPICS_CA_ADDR_LIST", "")
        auto = self.environment.get("EPICS_CA_AUTO_ADDR_LIST")
        if auto is None:
            auto = os.environ.get("EPICS_CA_AUTO_ADDR_LIST", "YES")
        return f"{addresses or '(none)'}, auto {auto}"

    # requests --------------------------------------------------------------------------

    def issue_gets(self, batch: _Batch, requests: Sequence[tuple[int, _Channel, int, int,
                                                                  Callable[[Any], Any]]]
                   ) -> None:
        """Queue ``(index, channel, dbr_type, count, decode)`` gets; flush once."""
        api = self.api
        with self.attached() as libca:
            for index, channel, dbr_type, count, decode in requests:
                token = next(_tokens)
                batch.tokens.append(token)
                _handlers[token] = functools.partial(_complete, batch, index, decode)
                status = libca.ca_array_get_callback(dbr_type, ctypes.c_ulong(count),
                                                     channel.chid,
                                                     api.on_completion,
                                                     ctypes.c_void_p(token))
                if status != _NORMAL:
                    _handlers.pop(token, None)
                    batch.complete(index, _status_error(api, status, f"read of {channel.name}"))
            libca.ca_flush_io()
        batch.finish_now()

    async def wait(self, batch: _Batch, timeout: float) -> None:
        try:
            await asyncio.wait_for(asyncio.shield(batch.future), timeout)
        except TimeoutError:
            pass
        finally:  # late replies find no handler and are dropped
            for token in batch.tokens:
                _handlers.pop(token, None)

    async def get_ctrl(self, channel: _Channel, timeout: float) -> dict[str, Any]:
        api = self.api
        batch = _Batch(self.connector.require_loop(), 1)
        self.issue_gets(batch, [(0, channel, channel.ctrl_type(api), 1,
                                 functools.partial(_decode_ctrl, api))])
        await self.wait(batch, timeout)
        result = batch.results[0]
        if result is None:
            raise ReadTimeoutError(f"{channel.name}: no control fields within {timeout:g} s",
                                   channel=channel.name)
        if isinstance(result, Exception):
            raise result
        return result

    # shutdown --------------------------------------------------------------------------

    def forget(self, channel: _Channel) -> None:
        """Clear one channel (never connected, or at shutdown) and drop it from the cache."""
        if self.channels.get(channel.name) is channel:
            del self.channels[channel.name]
        with self.attached():
            self._clear(channel)

    def clear_channels(self) -> None:
        with self.attached():
            for channel in self.channels.values():
                self._clear(channel)
        self.channels.clear()

    def _clear(self, channel: _Channel) -> None:  # context attached
        channel.ready.clear()
        pv, channel.pv = channel.pv, None
        if pv is None:
            return
        pv.clear_callbacks(True, True)
        pv.connected = False
        with contextlib.suppress(Exception):
            self.api.ca.clear_channel(pv.chid)
        pv.context = None  # a later PV.__del__ must not attach a cleared context

    async def destroy(self) -> None:
        if self.pointer:
            pointer, self.pointer = self.pointer, 0
            await asyncio.to_thread(_destroy_context, self.api, pointer)


def _complete(batch: _Batch, index: int, decode: Callable[[Any], Any], args: Any) -> None:
    try:
        result = decode(args)
    except Exception as exc:
        result = ControlSystemError(f"cannot decode the reply: {exc}")
    batch.complete(index, result)


class _Monitor:
    """A live subscription: the handle :meth:`EpicsConnector.subscribe` returns."""

    def __init__(self, connector: EpicsConnector, context: _Context, channel: _Channel,
                 callback: Callable[[ChannelValue], None]) -> None:
        self.connector = connector
        self.context = context
        self.channel = channel
        self.name = channel.name
        self.callback = callback
        self.token = next(_tokens)
        self.event_id = ctypes.c_void_p()
        self.active = True
        self.options = channel.decode_options(connector.api)

    def on_event(self, args: Any) -> None:  # CA thread
        if not self.active or args.status != _NORMAL:
            return
        raw = _decode(self.connector.api, args, **self.options)
        loop = self.connector.loop
        if not isinstance(raw, Exception) and loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._deliver, raw)

    def _deliver(self, raw: Any) -> None:  # event loop
        if not self.active:
            return
        try:
            self.callback(self.connector.to_value(self.channel, raw))
        except Exception:
            logger.exception("monitor callback for %s failed", self.name)

    def __repr__(self) -> str:
        return f"<EPICS monitor {self.name} {'active' if self.active else 'cleared'}>"


# -- values to DBR buffers ------------------------------------------------------------------

_INT_RANGES = {"SHORT": (-(2**15), 2**15 - 1), "LONG": (-(2**31), 2**31 - 1),
               "CHAR": (0, 255), "ENUM": (0, 65535)}
_FLOAT32_MAX = 3.4028234663852886e38


def _is_sequence(value: Any) -> bool:
    return (not isinstance(value, str | bytes | bytearray | dict)
            and hasattr(value, "__len__") and hasattr(value, "__getitem__"))


def _pack(api: SimpleNamespace, channel: _Channel, value: Any) -> tuple[int, int, Any]:
    """(dbr_type, count, ctypes buffer) for writing ``value`` to ``channel``."""
    dbr = api.dbr
    name, native = channel.name, channel.native

    def wrong(message: str, reason: Reason = Reason.WRONG_TYPE) -> UnsupportedValueError:
        error = UnsupportedValueError(f"{name}: {message}", channel=name)
        error.reason = reason
        return error

    if native == dbr.ENUM:
        states = channel.enum_strings
        if isinstance(value, str):
            if value in states:
                index = states.index(value)
            elif value.strip().isdigit():
                index = int(value)
            else:
                raise wrong(f"{value!r} is not one of the states {list(states)}",
                            Reason.NOT_ALLOWED_VALUE)
        elif isinstance(value, int | float) and float(value).is_integer():
            index = int(value)
        else:
            raise wrong(f"an enum takes a state name or index, not {type(value).__name__}")
        if not 0 <= index < (len(states) if states else 65536):
            raise wrong(f"state index {index} is out of range (states: {list(states)})",
                        Reason.NOT_ALLOWED_VALUE)
        return dbr.ENUM, 1, (ctypes.c_ushort * 1)(index)

    if native == dbr.STRING:
        items = list(value) if _is_sequence(value) else [value]
        if not 0 < len(items) <= channel.count:
            raise wrong(f"takes 1 to {channel.count} strings, got {len(items)}")
        buffer = (dbr.string_t * len(items))()
        for index, item in enumerate(items):
            if isinstance(item, bool) or not isinstance(item, str | int | float):
                raise wrong(f"expected text, got {type(item).__name__}")
            encoded = str(item).encode("utf-8")
            if len(encoded) >= dbr.MAX_STRING_SIZE:
                raise wrong(f"EPICS strings hold {dbr.MAX_STRING_SIZE - 1} bytes, "
                            f"got {len(encoded)}")
            buffer[index].value = encoded
        return dbr.STRING, len(items), buffer

    if native == dbr.CHAR and channel.count > 1 and isinstance(value, str):
        encoded = value.encode("utf-8") + b"\0"
        if len(encoded) > channel.count:
            raise wrong(f"holds {channel.count - 1} bytes of text, got {len(encoded) - 1}")
        return dbr.CHAR, len(encoded), (ctypes.c_ubyte * len(encoded))(*encoded)

    kind = {dbr.DOUBLE: "DOUBLE", dbr.FLOAT: "FLOAT", dbr.SHORT: "SHORT", dbr.LONG: "LONG",
            dbr.CHAR: "CHAR"}.get(native)
    if kind is None:
        raise wrong(f"unsupported native DBR type {native}")
    items = list(value) if _is_sequence(value) else [value]
    if not 0 < len(items) <= channel.count:
        raise wrong(f"takes 1 to {channel.count} elements, got {len(items)}")
    numbers: list[int | float] = []
    for item in items:
        if hasattr(item, "item") and not isinstance(item, int | float):
            item = item.item()  # numpy scalars
        if isinstance(item, bool):
            item = int(item)
        if isinstance(item, str):
            try:
                item = float(item) if kind in ("DOUBLE", "FLOAT") else int(item, 0)
            except ValueError:
                raise wrong(f"{item!r} is not a number") from None
        if not isinstance(item, int | float):
            raise wrong(f"expected a number, got {type(item).__name__}")
        if kind in ("DOUBLE", "FLOAT"):
            number = float(item)
            if kind == "FLOAT" and math.isfinite(number) and abs(number) > _FLOAT32_MAX:
                raise wrong(f"{item} does not fit a 32-bit float")
        else:
            if not (math.isfinite(item) and float(item).is_integer()):
                raise wrong(f"expected an integer, got {item}")
            number = int(item)
            low, high = _INT_RANGES[kind]
            if not low <= number <= high:
                raise wrong(f"{number} does not fit the channel's {kind} type "
                            f"({low}..{high})")
        numbers.append(number)
    ctype = dbr.Map[native]
    return native, len(numbers), (ctype * len(numbers))(*numbers)


# -- the connector --------------------------------------------------------------------------

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
        self._read: _Context | None = None
        self._write: _Context | None = None
        self._monitors: set[_Monitor] = set()
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

    def _contexts(self) -> tuple[_Context, _Context]:
        if self.closed:
            raise ControlSystemError("the EPICS connector is closed")
        if self._read is None or self._write is None:
            raise ControlSystemError("the EPICS connector is not connected (call connect())")
        self.require_loop()
        return self._read, self._write

    def to_value(self, channel: _Channel, raw: tuple[Any, int, int, int, int]) -> ChannelValue:
        value, status, severity, secs, nsec = raw
        stamp = datetime.fromtimestamp(_EPICS_EPOCH + secs + nsec / 1e9, UTC)
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
            if _api is None:
                await asyncio.to_thread(_import_pyepics)
            self._api = _load_api()
            read = _Context(self, "read", self.settings.read_environment())
            await read.open()
            write = read
            if self.settings.write_gateway:
                write = _Context(self, "write gateway", self.settings.write_environment())
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
        batch = _Batch(self.loop, 1)  # type: ignore[arg-type]
        context.issue_gets(batch, [(0, record, record.read_type(api), 0, functools.partial(
            _decode, api, **record.decode_options(api)))])
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
        good = [(name, item) for name, item in ready.items() if isinstance(item, _Channel)]
        batch = _Batch(self.loop, len(good))  # type: ignore[arg-type]
        context.issue_gets(batch, [
            (index, record, record.read_type(api), 0,
             functools.partial(_decode, api, **record.decode_options(api)))
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

    def _outcome(self, record: _Channel, raw: Any) -> ChannelValue:
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
            display_limits=_limits(ctrl, "lower_disp_limit", "upper_disp_limit"),
            control_limits=_limits(ctrl, "lower_ctrl_limit", "upper_ctrl_limit"),
            enum_strings=record.enum_strings, writable=writable, status=status,
            severity=severity)

    async def _description(self, context: _Context, record: _Channel) -> str | None:
        """The record's DESC field, best effort with a short timeout (cached)."""
        if record.description_known:
            return record.description
        parts = _PV_NAME.match(record.name)
        if parts is None or (parts["field"] or "").startswith(".DESC"):
            return None
        name = f"{parts['record']}.DESC"
        outcome = (await context.ready([name], min(0.5, self.connection_timeout)))[name]
        value: Any = None
        if isinstance(outcome, _Channel):
            with contextlib.suppress(ControlSystemError):
                value = (await self.read(name)).value
        record.description = value if isinstance(value, str) and value else None
        record.description_known = True
        return record.description

    async def _writable(self, context: _Context, channel: str) -> bool:
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
        dbr_type, count, buffer = _pack(api, record, value)
        via = "" if context is self._read else " through the write gateway"
        with context.attached() as libca:
            if not libca.ca_write_access(record.chid):
                raise ServerRejectedError(f"{channel}: no write access{via} (read-only "
                                          "channel or read-only gateway)", channel=channel)
            if not self.settings.use_put_callback:
                status = libca.ca_array_put(dbr_type, ctypes.c_ulong(count), record.chid,
                                            buffer)
                libca.ca_flush_io()
                if status != _NORMAL:
                    raise self._put_error(channel, status)
                return WriteAck(False, f"sent{via} without completion callback "
                                "(use_put_callback is off)")
            loop = self.require_loop()
            done: asyncio.Future[int] = loop.create_future()
            token = next(_tokens)

            def finished(args: Any) -> None:  # CA thread
                status = int(args.status)
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(_resolve, done, status)

            _handlers[token] = finished
            status = libca.ca_array_put_callback(dbr_type, ctypes.c_ulong(count),
                                                 record.chid, buffer,
                                                 api.on_completion, ctypes.c_void_p(token))
            libca.ca_flush_io()
        if status != _NORMAL:
            _handlers.pop(token, None)
            raise self._put_error(channel, status)
        try:
            status = await asyncio.wait_for(done, self.put_timeout)
        except TimeoutError:
            raise WriteTimeoutError(
                f"{channel}: the put was sent{via}, but the IOC did not report completion "
                f"within {self.put_timeout:g} s", channel=channel) from None
        finally:
            _handlers.pop(token, None)
        if status != _NORMAL:
            raise self._put_error(channel, status)
        return WriteAck(True, f"put completed{via} (put callback)")

    def _put_error(self, channel: str, status: int) -> ControlSystemError:
        error = _status_error(self.api, status, f"write to {channel}")
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
        monitor = _Monitor(self, context, record, callback)
        _monitors[monitor.token] = monitor
        with context.attached() as libca:
            status = libca.ca_create_subscription(
                record.read_type(api), ctypes.c_ulong(0), record.chid,
                ctypes.c_long(api.mask), api.on_monitor,
                ctypes.c_void_p(monitor.token), ctypes.byref(monitor.event_id))
            libca.ca_flush_io()
        if status != _NORMAL:
            _monitors.pop(monitor.token, None)
            raise _status_error(api, status, f"monitor of {channel}")
        self._monitors.add(monitor)
        return monitor

    async def unsubscribe(self, handle: Any) -> None:
        if not isinstance(handle, _Monitor) or handle.connector is not self:
            raise ValueError(f"{handle!r} is not a subscription of this connector")
        self._clear_monitor(handle)

    def _clear_monitor(self, monitor: _Monitor) -> None:
        if not monitor.active:
            return
        monitor.active = False
        _monitors.pop(monitor.token, None)
        self._monitors.discard(monitor)
        if monitor.context.pointer and monitor.event_id.value:
            with monitor.context.attached() as libca:
                libca.ca_clear_subscription(monitor.event_id)
                libca.ca_flush_io()

    # names -------------------------------------------------------------------------------

    def validate_name(self, channel: str) -> bool:
        """EPICS PV name: record name, optional ``.FIELD``, optional JSON filter."""
        return (isinstance(channel, str) and 0 < len(channel) <= MAX_NAME_LENGTH
                and _PV_NAME.match(channel) is not None)

    def _check(self, channel: str) -> None:
        if not self.validate_name(channel):
            raise ControlSystemError(f"invalid EPICS channel name {safe_repr(channel)}",
                                     channel=channel if isinstance(channel, str) else None)


def _resolve(future: asyncio.Future[int], status: int) -> None:
    if not future.done():
        future.set_result(status)


def _limits(ctrl: dict[str, Any], low: str, high: str) -> tuple[float, float] | None:
    if low not in ctrl or high not in ctrl:
        return None
    lower, upper = float(ctrl[low]), float(ctrl[high])
    if lower == upper == 0.0:  # EPICS: unset
        return None
    return (lower, upper)
