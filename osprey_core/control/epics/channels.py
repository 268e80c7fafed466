"""One CA client context with its channel cache, and live monitors."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from types import SimpleNamespace
from typing import Any, Protocol

from osprey_core.control.epics.codec import decode, decode_ctrl
from osprey_core.control.epics.protocol import (
    NORMAL,
    Batch,
    Channel,
    complete,
    create_context,
    destroy_context,
    handlers,
    release_thread,
    status_error,
    tokens,
)
from osprey_core.control.errors import (
    ChannelNotFoundError,
    ConnectionTimeoutError,
    ControlSystemError,
    ReadTimeoutError,
)
from osprey_core.control.types import ChannelValue

logger = logging.getLogger(__name__)


class Owner(Protocol):
    """The connector as its contexts and monitors see it (no import of the connector)."""

    loop: asyncio.AbstractEventLoop | None
    closed: bool
    connection_timeout: float
    read_timeout: float

    @property
    def api(self) -> SimpleNamespace: ...

    def spawn(self, coroutine: Any) -> None: ...

    def require_loop(self) -> asyncio.AbstractEventLoop: ...

    def to_value(self, channel: Channel, raw: tuple[Any, int, int, int, int]
                 ) -> ChannelValue: ...

class Context:
    """One CA client context and its channel cache."""

    def __init__(self, connector: Owner, label: str,
                 environment: dict[str, str | None]) -> None:
        self.connector = connector
        self.label = label
        self.environment = environment
        self.pointer = 0
        self.channels: dict[str, Channel] = {}

    @property
    def api(self) -> SimpleNamespace:
        return self.connector.api

    async def open(self) -> None:
        self.pointer = create_context(self.api, self.environment)  # ~2 ms, no I/O wait

    @contextlib.contextmanager
    def attached(self) -> Iterator[Any]:
        """Attach the calling thread to this context, restoring its own afterwards."""
        libca = self.api.libca
        if libca.ca_current_context() == self.pointer:
            yield libca
            return
        current = release_thread(self.api)
        libca.ca_attach_context(self.pointer)
        try:
            yield libca
        finally:
            libca.ca_detach_context()
            if current:
                libca.ca_attach_context(current)

    # connection ------------------------------------------------------------------------

    def channel(self, name: str) -> Channel:
        """The cached channel, created (and its search started) on first use."""
        channel = self.channels.get(name)
        if channel is None:
            channel = self.channels[name] = Channel(name)
            callback = functools.partial(self._on_connection, channel)
            with self.attached() as libca:
                channel.pv = self.api.PV(
                    name, form="time", auto_monitor=False, connection_callback=callback,
                    connection_timeout=self.connector.connection_timeout)
                libca.ca_flush_io()
        return channel

    def _on_connection(self, channel: Channel, pvname: str | None = None,
                       conn: bool = False, **_: Any) -> None:  # CA thread
        loop = self.connector.loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # loop closed meanwhile
                loop.call_soon_threadsafe(self._connection_changed, channel, bool(conn))

    def _connection_changed(self, channel: Channel, connected: bool) -> None:
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

    async def _fetch_ctrl(self, channel: Channel, generation: int) -> None:
        try:
            channel.ctrl = await self.get_ctrl(channel, self.connector.read_timeout)
        except Exception as exc:  # units stay unknown; reads still work
            logger.debug("control fields of %s: %s", channel.name, exc)
        if channel.generation == generation and channel.connected:
            channel.ready.set()

    async def ready(self, names: Sequence[str], timeout: float
                    ) -> dict[str, Channel | ControlSystemError]:
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
        result: dict[str, Channel | ControlSystemError] = {}
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

    async def ready_one(self, name: str, timeout: float) -> Channel:
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

    def issue_gets(self, batch: Batch, requests: Sequence[tuple[int, Channel, int, int,
                                                                  Callable[[Any], Any]]]
                   ) -> None:
        """Queue ``(index, channel, dbr_type, count, decode)`` gets; flush once."""
        api = self.api
        with self.attached() as libca:
            for index, channel, dbr_type, count, decode in requests:
                token = next(tokens)
                batch.tokens.append(token)
                handlers[token] = functools.partial(complete, batch, index, decode)
                status = libca.ca_array_get_callback(dbr_type, ctypes.c_ulong(count),
                                                     channel.chid,
                                                     api.on_completion,
                                                     ctypes.c_void_p(token))
                if status != NORMAL:
                    handlers.pop(token, None)
                    batch.complete(index, status_error(api, status, f"read of {channel.name}"))
            libca.ca_flush_io()
        batch.finish_now()

    async def wait(self, batch: Batch, timeout: float) -> None:
        try:
            await asyncio.wait_for(asyncio.shield(batch.future), timeout)
        except TimeoutError:
            pass
        finally:  # late replies find no handler and are dropped
            for token in batch.tokens:
                handlers.pop(token, None)

    async def get_ctrl(self, channel: Channel, timeout: float) -> dict[str, Any]:
        api = self.api
        batch = Batch(self.connector.require_loop(), 1)
        self.issue_gets(batch, [(0, channel, channel.ctrl_type(api), 1,
                                 functools.partial(decode_ctrl, api))])
        await self.wait(batch, timeout)
        result = batch.results[0]
        if result is None:
            raise ReadTimeoutError(f"{channel.name}: no control fields within {timeout:g} s",
                                   channel=channel.name)
        if isinstance(result, Exception):
            raise result
        return result

    # shutdown --------------------------------------------------------------------------

    def forget(self, channel: Channel) -> None:
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

    def _clear(self, channel: Channel) -> None:  # context attached
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
            await asyncio.to_thread(destroy_context, self.api, pointer)


class Monitor:
    """A live subscription: the handle :meth:`EpicsConnector.subscribe` returns."""

    def __init__(self, connector: Owner, context: Context, channel: Channel,
                 callback: Callable[[ChannelValue], None]) -> None:
        self.connector = connector
        self.context = context
        self.channel = channel
        self.name = channel.name
        self.callback = callback
        self.token = next(tokens)
        self.event_id = ctypes.c_void_p()
        self.active = True
        self.options = channel.decode_options(connector.api)

    def on_event(self, args: Any) -> None:  # CA thread
        if not self.active or args.status != NORMAL:
            return
        raw = decode(self.connector.api, args, **self.options)
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
