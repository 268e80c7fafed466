"""The Tango connector: proxies on a small thread pool, bounded waits, change events."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import threading
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from pydantic import BaseModel

from osprey_core.control.errors import (
    ChannelNotFoundError,
    ControlSystemError,
    ReadTimeoutError,
    WriteTimeoutError,
)
from osprey_core.control.tango.codec import (
    AttributeInfo,
    TangoChannelMetadata,
    convert_value,
    encode,
    precision_of,
    quality_alarm,
    range_pair,
    text_of,
)
from osprey_core.control.tango.protocol import (
    MARGIN,
    READ,
    WRITE,
    Action,
    TangoSubscription,
    await_future,
    dev_errors,
    millis,
    translate_error,
)
from osprey_core.control.tango.settings import TangoName, TangoSettings, parse_name
from osprey_core.control.types import ChannelMetadata, ChannelValue, Severity, WriteAck
from osprey_core.hookspecs.connectors import ControlSystemConnector

log = logging.getLogger(__name__)

class TangoConnector(ControlSystemConnector):
    name: ClassVar[str] = "tango"
    description: ClassVar[str] = "Tango device attributes through pytango (extra 'tango')."
    settings_model: ClassVar[type[BaseModel] | None] = TangoSettings

    def __init__(
        self,
        settings: TangoSettings | Mapping[str, Any] | None = None,
        *,
        connection_timeout: float = 2.0,
        read_timeout: float = 2.0,
        write_timeout: float = 5.0,
        home: Path | None = None,
    ) -> None:
        if settings is None:
            settings = TangoSettings()
        elif not isinstance(settings, TangoSettings):
            settings = TangoSettings.model_validate(settings)
        super().__init__(settings, connection_timeout=connection_timeout,
                         read_timeout=read_timeout, write_timeout=write_timeout, home=home)
        self.settings: TangoSettings = settings
        self.tango_host = settings.tango_host or os.environ.get("TANGO_HOST") or None
        self._lock = threading.Lock()
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._proxies: dict[tuple[str, str], Any] = {}
        self._connecting: dict[tuple[str, str], concurrent.futures.Future[Any]] = {}
        self._infos: dict[str, AttributeInfo] = {}
        self._subscriptions: set[TangoSubscription] = set()
        self._generation = 0

    # -- names ---------------------------------------------------------------------------

    def parse(self, channel: str) -> TangoName:
        return parse_name(channel, self.tango_host, self.settings.database)

    def validate_name(self, channel: str) -> bool:
        try:
            self.parse(channel)
        except ControlSystemError:
            return False
        return True

    # -- lifecycle -----------------------------------------------------------------------

    async def connect(self) -> None:
        try:
            import tango  # noqa: F401
        except ImportError:
            raise ControlSystemError("the Tango connector needs pytango: "
                                     "pip install 'osprey-core[tango]'") from None
        self._pool()

    async def close(self) -> None:
        with self._lock:
            subscriptions = list(self._subscriptions)
            self._subscriptions.clear()
        for subscription in subscriptions:
            await self._stop(subscription)
        with self._lock:
            self._generation += 1
            self._proxies.clear()
            self._connecting.clear()
            self._infos.clear()
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)

    def _pool(self) -> concurrent.futures.ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = concurrent.futures.ThreadPoolExecutor(
                    self.settings.max_workers, thread_name_prefix="osprey-tango")
            return self._executor

    async def _run(self, fn: Callable[..., Any], *args: Any, timeout: float) -> Any:
        """Run blocking ``fn`` on the pool; wait at most ``timeout`` (TimeoutError).

        Giving up does not cancel the call (threads cannot be interrupted); the Tango
        timeout set on the proxy ends it soon after.
        """
        return await await_future(self._pool().submit(fn, *args), timeout)

    # -- proxies -------------------------------------------------------------------------

    async def _proxy(self, name: TangoName, channel: str, kind: str = READ) -> Any:
        key = (name.device_key, kind)
        pool = self._pool()
        started = False
        with self._lock:
            proxy = self._proxies.get(key)
            if proxy is not None:
                return proxy
            future = self._connecting.get(key)
            if future is None:  # one connection attempt per device, shared by all callers
                future = pool.submit(self._connect_blocking, name, kind, self._generation)
                self._connecting[key] = future
                started = True
        if started:  # outside the lock: the callback may run at once, in this thread
            future.add_done_callback(lambda done: self._connected(key, done))
        try:
            return await await_future(future, self.connection_timeout)
        except TimeoutError:
            raise ChannelNotFoundError(
                f"{channel}: device {name.device} did not connect within "
                f"{self.connection_timeout:g} s", channel=channel) from None
        except ControlSystemError:
            raise
        except Exception as exc:
            found = translate_error(exc, channel, "connect")
            if not isinstance(found, ChannelNotFoundError):
                found = ChannelNotFoundError(f"{channel}: cannot connect to {name.device}: "
                                             f"{found}", channel=channel)
            raise found from None

    def _connected(self, key: tuple[str, str], future: concurrent.futures.Future[Any]) -> None:
        with self._lock:
            if self._connecting.get(key) is future:
                del self._connecting[key]

    def _connect_blocking(self, name: TangoName, kind: str, generation: int) -> Any:
        import tango

        proxy = tango.DeviceProxy(name.device)
        proxy.set_timeout_millis(millis(self.connection_timeout))
        proxy.ping()  # a proxy can exist for a device whose server is not running
        timeout = self.read_timeout if kind == READ else self.write_timeout
        proxy.set_timeout_millis(millis(timeout))
        with self._lock:
            if generation == self._generation:
                self._proxies[(name.device_key, kind)] = proxy
        return proxy

    def _info_blocking(self, proxy: Any, name: TangoName, *, refresh: bool = False,
                       config: Any = None) -> AttributeInfo:
        info = None if refresh else self._infos.get(name.key)
        if info is None:
            if config is None:
                config = proxy.get_attribute_config(name.attribute)
            info = AttributeInfo.from_config(config)
            with self._lock:
                self._infos[name.key] = info
        return info

    # -- reading -------------------------------------------------------------------------

    def _value(self, channel: str, attribute: Any, info: AttributeInfo | None) -> ChannelValue:
        severity, status = quality_alarm(attribute.quality)
        return ChannelValue(
            channel=channel,
            value=convert_value(attribute.value, info),
            timestamp=datetime.fromtimestamp(attribute.time.totime(), UTC),
            status=status,
            severity=severity,
            units=None if info is None else info.units,
        )

    def _read_blocking(self, proxy: Any, name: TangoName, channel: str) -> ChannelValue:
        info = self._info_blocking(proxy, name)
        return self._value(channel, proxy.read_attribute(name.attribute), info)

    async def read(self, channel: str) -> ChannelValue:
        name = self.parse(channel)
        proxy = await self._proxy(name, channel)
        return await self._call(channel, "read", self.read_timeout,
                                self._read_blocking, proxy, name, channel)

    async def _call(self, channel: str, action: Action, timeout: float,
                    fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return await self._run(fn, *args, timeout=timeout + MARGIN)
        except TimeoutError:
            kind = WriteTimeoutError if action == "write" else ReadTimeoutError
            raise kind(f"Tango {action} of {channel}: no answer within {timeout:g} s",
                       channel=channel) from None
        except Exception as exc:
            raise translate_error(exc, channel, action) from None

    # -- writing -------------------------------------------------------------------------

    def _write_blocking(self, proxy: Any, name: TangoName, channel: str, value: Any) -> None:
        info = self._info_blocking(proxy, name)
        proxy.write_attribute(name.attribute, encode(channel, value, info))

    async def write(self, channel: str, value: Any) -> WriteAck:
        name = self.parse(channel)
        proxy = await self._proxy(name, channel, WRITE)
        await self._call(channel, "write", self.write_timeout,
                         self._write_blocking, proxy, name, channel, value)
        return WriteAck(confirmed=True, message="write_attribute returned")

    # -- metadata ------------------------------------------------------------------------

    def _metadata_blocking(self, proxy: Any, name: TangoName,
                           channel: str) -> TangoChannelMetadata:
        import tango

        config = proxy.get_attribute_config(name.attribute)
        info = self._info_blocking(proxy, name, refresh=True, config=config)
        try:
            severity, status = quality_alarm(proxy.read_attribute(name.attribute).quality)
        except tango.DevFailed as exc:
            errors = dev_errors(exc)
            severity, status = Severity.INVALID, str(errors[0].reason) if errors else "ERROR"
        alarms = getattr(config, "alarms", None)
        return TangoChannelMetadata(
            channel=channel,
            data_type=info.kind,
            units=info.units,
            precision=precision_of(text_of(config.format)),
            description=text_of(config.description),
            control_limits=range_pair(config.min_value, config.max_value),
            enum_strings=info.enum_labels,
            writable=info.writable,
            status=status,
            severity=severity,
            alarm_limits=range_pair(config.min_alarm, config.max_alarm),
            warning_limits=None if alarms is None else range_pair(alarms.min_warning,
                                                             alarms.max_warning),
            label=text_of(config.label),
        )

    async def metadata(self, channel: str) -> ChannelMetadata:
        name = self.parse(channel)
        proxy = await self._proxy(name, channel)
        # Two calls (configuration, then the value for the alarm state).
        return await self._call(channel, "metadata", 2 * self.read_timeout,
                                self._metadata_blocking, proxy, name, channel)

    # -- events --------------------------------------------------------------------------

    def _event_value(self, subscription: TangoSubscription, event: Any) -> ChannelValue:
        info = self._infos.get(subscription.name.key)
        if getattr(event, "err", False) or event.attr_value is None:
            errors = list(getattr(event, "errors", ()) or ())
            return ChannelValue(
                channel=subscription.channel, value=None, timestamp=datetime.now(UTC),
                status=str(errors[0].reason) if errors else "EVENT_ERROR",
                severity=Severity.INVALID, units=None if info is None else info.units)
        return self._value(subscription.channel, event.attr_value, info)

    def _subscribe_blocking(self, proxy: Any, subscription: TangoSubscription,
                            loop: asyncio.AbstractEventLoop,
                            callback: Callable[[ChannelValue], None]) -> int:
        import tango

        def deliver(value: ChannelValue) -> None:  # on the event loop
            if subscription.active:
                callback(value)

        def on_event(event: Any) -> None:  # on a Tango thread (or the subscribing one)
            if not subscription.active:
                return
            try:
                value = self._event_value(subscription, event)
                loop.call_soon_threadsafe(deliver, value)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                subscription.active = False
            except Exception:
                log.exception("Tango event for %s could not be delivered",
                              subscription.channel)

        self._info_blocking(proxy, subscription.name)  # events convert with cached info
        event_id = proxy.subscribe_event(subscription.name.attribute,
                                         tango.EventType.CHANGE_EVENT, on_event)
        with self._lock:
            if subscription.active:
                subscription.event_id = event_id
                self._subscriptions.add(subscription)
                return event_id
        # The caller gave up waiting meanwhile: do not leave a subscription behind.
        proxy.unsubscribe_event(event_id)
        return event_id

    async def subscribe(self, channel: str,
                        callback: Callable[[ChannelValue], None]) -> TangoSubscription:
        name = self.parse(channel)
        proxy = await self._proxy(name, channel)
        subscription = TangoSubscription(channel, name)
        loop = asyncio.get_running_loop()
        try:
            # Subscribing asks the admin device, then reads the first value.
            await self._call(channel, "subscribe", 2 * self.read_timeout,
                             self._subscribe_blocking, proxy, subscription, loop, callback)
        except ControlSystemError as exc:
            with self._lock:
                subscription.active = False
            reasons = str(exc)
            if "API_AttributePollingNotStarted" in reasons or "API_EventPropertiesNotSet" \
                    in reasons:
                raise ControlSystemError(
                    f"{channel} does not publish change events (the device neither pushes "
                    f"them nor polls the attribute with a change threshold): {exc}",
                    channel=channel) from None
            raise
        return subscription

    async def unsubscribe(self, handle: Any) -> None:
        if not isinstance(handle, TangoSubscription):
            raise ControlSystemError(f"not a Tango subscription: {handle!r}")
        with self._lock:
            self._subscriptions.discard(handle)
        await self._stop(handle)

    async def _stop(self, handle: TangoSubscription) -> None:
        with self._lock:
            was_active, handle.active = handle.active, False
            proxy = self._proxies.get((handle.name.device_key, READ))
        if not was_active or handle.event_id is None or proxy is None:
            return
        try:
            await self._call(handle.channel, "unsubscribe", self.read_timeout,
                             proxy.unsubscribe_event, handle.event_id)
        except ControlSystemError as exc:  # the device may be gone; nothing more to stop
            log.warning("unsubscribing from %s: %s", handle.channel, exc)
