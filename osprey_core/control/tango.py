"""Tango connector: attributes of Tango devices through pytango (extra ``tango``).

Channel names are Tango attribute names:

* ``tango://host:port/domain/family/member/attribute`` (add ``#dbase=no`` for a device
  server running without a Tango database, as ``DeviceTestContext`` gives them), or
* ``domain/family/member/attribute``, resolved through ``tango.tango_host`` or, when that
  is unset, by Tango itself from ``TANGO_HOST``.

pytango is imported when the connector connects, never when the plugin loads. Its calls
block, so they run on a small thread pool owned by the connector; every wait is bounded
on the asyncio side as well as by the proxy timeout. Two proxies per device keep the
read and write timeouts separate. Change events arrive on Tango's own threads and are
handed to the subscriber's event loop with ``call_soon_threadsafe``: user callbacks
always run on the loop.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import enum
import logging
import math
import os
import re
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from osprey_core.control.errors import (
    ChannelNotFoundError,
    ControlSystemError,
    ReadTimeoutError,
    ServerRejectedError,
    WriteTimeoutError,
)
from osprey_core.control.types import (
    ChannelMetadata,
    ChannelValue,
    Reason,
    Severity,
    WriteAck,
    safe_repr,
)
from osprey_core.hookspecs.connectors import ControlSystemConnector

log = logging.getLogger(__name__)

# -- settings ------------------------------------------------------------------------------

_HOST_PORT = re.compile(r"(?P<host>[A-Za-z0-9](?:[A-Za-z0-9.\-]*[A-Za-z0-9])?):(?P<port>\d{1,5})")


class TangoSettings(BaseModel):
    """Tango connector (control_system.type: tango); timeouts come from control_system."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tango_host: str | None = Field(
        None, description="host:port used for short names (domain/family/member/attribute). "
        "Unset: the TANGO_HOST environment variable, then Tango's own lookup.")
    database: bool = Field(
        True, description="Whether tango_host is a Tango database. false: it is a device "
        "server running without one (short names get #dbase=no).")
    max_workers: int = Field(
        8, ge=1, le=64, description="Threads for blocking Tango calls (each device call "
        "holds one until it returns or its timeout expires).")

    @field_validator("tango_host")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if value is None:
            return None
        match = _HOST_PORT.fullmatch(value.strip())
        if match is None or not 0 < int(match["port"]) < 65536:
            raise ValueError(f"expected host:port (e.g. 127.0.0.1:10000), got {value!r}")
        return value.strip()


# -- names ---------------------------------------------------------------------------------

_PART = r"[A-Za-z0-9_][A-Za-z0-9_.+\-]*"
_DEVICE = rf"{_PART}/{_PART}/{_PART}"
_FULL_NAME = re.compile(
    rf"(?i:tango)://(?P<host>[A-Za-z0-9](?:[A-Za-z0-9.\-]*[A-Za-z0-9])?):(?P<port>\d{{1,5}})"
    rf"/(?P<device>{_DEVICE})/(?P<attribute>{_PART})(?P<fragment>#(?i:dbase=(?:no|yes)))?")
_SHORT_NAME = re.compile(rf"(?P<device>{_DEVICE})/(?P<attribute>{_PART})")


@dataclass(frozen=True, slots=True)
class TangoName:
    """A parsed channel: the device address given to ``DeviceProxy`` and the attribute."""

    device: str  # address for DeviceProxy
    attribute: str

    @property
    def device_key(self) -> str:
        return self.device.lower()  # Tango names are case-insensitive

    @property
    def key(self) -> str:
        return f"{self.device_key}::{self.attribute.lower()}"


def parse_name(channel: str, tango_host: str | None, database: bool = True) -> TangoName:
    """Split a channel name; ``ControlSystemError`` when it is not a Tango attribute name."""
    if not isinstance(channel, str):
        raise ControlSystemError(f"invalid Tango attribute name {safe_repr(channel)}")
    full = _FULL_NAME.fullmatch(channel)
    if full is not None:
        if not 0 < int(full["port"]) < 65536:
            raise ControlSystemError(f"invalid port in Tango attribute name {safe_repr(channel)}",
                                     channel=channel)
        fragment = (full["fragment"] or "").lower()
        device = f"tango://{full['host']}:{full['port']}/{full['device']}{fragment}"
        return TangoName(device, full["attribute"])
    short = _SHORT_NAME.fullmatch(channel)
    if short is None:
        raise ControlSystemError(
            f"invalid Tango attribute name {safe_repr(channel)}: expected domain/family/member/"
            "attribute or tango://host:port/domain/family/member/attribute[#dbase=no]",
            channel=channel)
    if tango_host is None or "," in tango_host:
        # Let Tango resolve the database itself (TANGO_HOST, tangorc, several hosts).
        return TangoName(short["device"], short["attribute"])
    fragment = "" if database else "#dbase=no"
    return TangoName(f"tango://{tango_host}/{short['device']}{fragment}", short["attribute"])


# -- values --------------------------------------------------------------------------------

_QUALITY: dict[str, tuple[Severity, str]] = {
    "ATTR_VALID": (Severity.NO_ALARM, "NO_ALARM"),
    "ATTR_WARNING": (Severity.MINOR, "WARNING"),
    "ATTR_ALARM": (Severity.MAJOR, "ALARM"),
    "ATTR_INVALID": (Severity.INVALID, "INVALID"),
    "ATTR_CHANGING": (Severity.NO_ALARM, "CHANGING"),
}
_FLOAT_TYPES = frozenset({"DevFloat", "DevDouble"})
_INT_TYPES = frozenset({"DevShort", "DevLong", "DevLong64", "DevUShort", "DevULong",
                        "DevULong64", "DevUChar"})
_NOT_SPECIFIED = frozenset({"", "not specified", "no description", "no unit",
                            "no display unit", "no standard unit"})
_FORMAT = re.compile(r"%[-+ #0]*\d*(?:\.(?P<digits>\d+))?[hlLqjzt]*(?P<conv>[a-zA-Z])")


def quality_alarm(quality: Any) -> tuple[Severity, str]:
    """Tango attribute quality -> (severity, status)."""
    name = getattr(quality, "name", str(quality))
    return _QUALITY.get(name, (Severity.INVALID, name))


def _text(value: Any) -> str | None:
    text = str(value).strip() if value is not None else ""
    return None if text.lower() in _NOT_SPECIFIED else text


def _number(value: Any) -> float | None:
    try:
        number = float(str(value).strip())
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _pair(low: Any, high: Any) -> tuple[float, float] | None:
    """A (low, high) pair; a missing side is unbounded, both missing is ``None``."""
    lo, hi = _number(low), _number(high)
    if lo is None and hi is None:
        return None
    return (-math.inf if lo is None else lo, math.inf if hi is None else hi)


def precision_of(format_: str | None) -> int | None:
    """Digits after the decimal point from a printf format (``%6.3f`` -> 3, ``%d`` -> 0)."""
    match = _FORMAT.search(format_ or "")
    if match is None:
        return None
    if match["conv"] in "diuxXo":
        return 0
    if match["conv"] in "fFeEgG":
        return int(match["digits"]) if match["digits"] is not None else 6
    return None


@dataclass(frozen=True, slots=True)
class AttributeInfo:
    """What the connector keeps from an attribute's configuration."""

    data_type: str  # Tango type name: DevDouble, DevEnum, DevState, ...
    data_format: str  # SCALAR, SPECTRUM, IMAGE
    units: str | None
    enum_labels: tuple[str, ...]
    writable: bool

    @classmethod
    def from_config(cls, config: Any) -> AttributeInfo:
        import tango

        data_type = tango.CmdArgType(int(config.data_type)).name
        labels: tuple[str, ...] = tuple(str(label) for label in config.enum_labels)
        if data_type == "DevState":
            labels = tuple(state.name for state in tango.DevState)
        return cls(
            data_type=data_type,
            data_format=getattr(config.data_format, "name", str(config.data_format)),
            units=_text(config.unit),
            enum_labels=labels,
            writable=getattr(config.writable, "name", "") in ("WRITE", "READ_WRITE"),
        )

    @property
    def kind(self) -> str:
        """osprey's data type: float, int, bool, string, enum, array (or encoded)."""
        if self.data_format != "SCALAR":
            return "array"
        if self.data_type in ("DevEnum", "DevState"):
            return "enum"
        if self.data_type == "DevString":
            return "string"
        if self.data_type == "DevBoolean":
            return "bool"
        if self.data_type in _FLOAT_TYPES:
            return "float"
        if self.data_type in _INT_TYPES:
            return "int"
        if self.data_type == "DevEncoded":
            return "encoded"
        return self.data_type.lower()


def plain(value: Any) -> Any:
    """numpy and Tango values -> plain Python (lists, numbers, strings, state names)."""
    if isinstance(value, enum.Enum):
        return value.name  # DevState and friends
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, bytes | bytearray):
        return bytes(value).hex()
    if hasattr(value, "tolist"):  # numpy arrays and numpy scalars
        return value.tolist()
    if isinstance(value, list | tuple):
        return [plain(item) for item in value]
    return value


def _labelled(value: Any, labels: tuple[str, ...]) -> Any:
    if isinstance(value, list):
        return [_labelled(item, labels) for item in value]
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(labels):
        return labels[value]
    return value


def convert_value(raw: Any, info: AttributeInfo | None) -> Any:
    value = plain(raw)
    if info is None:
        return value
    if value is None and info.data_format != "SCALAR":
        return []
    if info.data_type == "DevEnum" and info.enum_labels:
        return _labelled(value, info.enum_labels)
    return value


# -- errors --------------------------------------------------------------------------------


class TangoValueError(ControlSystemError):
    """The value does not fit the attribute's Tango type; nothing was sent."""

    reason = Reason.WRONG_TYPE


class TangoEnumError(ControlSystemError):
    """The value is not one of the attribute's enum labels; nothing was sent."""

    reason = Reason.NOT_ALLOWED_VALUE


#: Reasons meaning the device server refused a write (nothing was applied).
REJECTION_REASONS = frozenset({
    "API_WAttrOutsideLimit", "API_AttrNotWritable", "API_AttrNotAllowed",
    "API_IncompatibleAttrArgumentType", "API_IncompatibleArgumentType", "API_DeviceLocked",
    "API_WAttrOutsideLimitMin", "API_WAttrOutsideLimitMax", "API_NotSupportedFeature",
})
#: Reasons meaning the device, its server, its database or the attribute cannot be found.
NOT_FOUND_REASONS = frozenset({
    "API_DeviceNotDefined", "API_DeviceNotExported", "API_CantConnectToDevice",
    "API_CantConnectToDatabase", "API_AttrNotFound", "API_TangoHostNotSet",
    "DB_DeviceNotDefined", "API_DeviceNotFound", "API_ServerNotRunning",
})
TIMEOUT_REASONS = frozenset({"API_DeviceTimedOut"})

Action = Literal["connect", "read", "write", "metadata", "subscribe", "unsubscribe"]


def _errors(exc: BaseException) -> list[Any]:
    return [item for item in exc.args if hasattr(item, "reason")]


def _describe(error: Any) -> str:
    desc = " ".join(str(getattr(error, "desc", "")).split())
    if len(desc) > 400:
        desc = desc[:397] + "..."
    return f"{error.reason}: {desc}" if desc else str(error.reason)


def translate_error(exc: BaseException, channel: str, action: Action) -> ControlSystemError:
    """A pytango ``DevFailed`` (or client-side conversion error) as a typed osprey error."""
    if isinstance(exc, ControlSystemError):
        return exc
    errors = _errors(exc)
    if not errors:  # pytango refused the value client-side (TypeError, ValueError)
        if action == "write" and isinstance(exc, TypeError | ValueError):
            return TangoValueError(f"cannot write to {channel}: {exc}", channel=channel)
        return ControlSystemError(f"Tango {action} of {channel} failed: "
                                  f"{type(exc).__name__}: {exc}", channel=channel)
    reasons = [str(error.reason) for error in errors]

    def first(category: frozenset[str]) -> Any:
        return next((error for error, reason in zip(errors, reasons, strict=True)
                     if reason in category), None)

    if action == "write" and (error := first(REJECTION_REASONS)) is not None:
        return ServerRejectedError(f"the Tango device server refused the write to {channel}: "
                                   f"{_describe(error)}", channel=channel)
    if (error := first(TIMEOUT_REASONS)) is not None:
        kind = WriteTimeoutError if action == "write" else ReadTimeoutError
        return kind(f"Tango {action} of {channel} timed out: {_describe(error)}",
                    channel=channel)
    if (error := first(NOT_FOUND_REASONS)) is not None:
        return ChannelNotFoundError(f"{channel}: {_describe(error)}", channel=channel)
    return ControlSystemError(f"Tango {action} of {channel} failed: {_describe(errors[0])}",
                              channel=channel)


# -- the connector -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class TangoChannelMetadata(ChannelMetadata):
    """Channel metadata plus Tango's alarm and warning ranges (min/max_alarm, _warning)."""

    alarm_limits: tuple[float, float] | None = None
    warning_limits: tuple[float, float] | None = None
    label: str | None = None


@dataclass(eq=False)
class TangoSubscription:
    """Handle returned by :meth:`TangoConnector.subscribe`."""

    channel: str
    name: TangoName
    event_id: int | None = None
    active: bool = True


_MARGIN = 0.25  # seconds allowed on top of a Tango timeout before the asyncio side gives up
_READ, _WRITE = "read", "write"


def _millis(seconds: float) -> int:
    return max(1, round(seconds * 1000))


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
        return await _await_future(self._pool().submit(fn, *args), timeout)

    # -- proxies -------------------------------------------------------------------------

    async def _proxy(self, name: TangoName, channel: str, kind: str = _READ) -> Any:
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
            return await _await_future(future, self.connection_timeout)
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
        proxy.set_timeout_millis(_millis(self.connection_timeout))
        proxy.ping()  # a proxy can exist for a device whose server is not running
        timeout = self.read_timeout if kind == _READ else self.write_timeout
        proxy.set_timeout_millis(_millis(timeout))
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
            return await self._run(fn, *args, timeout=timeout + _MARGIN)
        except TimeoutError:
            kind = WriteTimeoutError if action == "write" else ReadTimeoutError
            raise kind(f"Tango {action} of {channel}: no answer within {timeout:g} s",
                       channel=channel) from None
        except Exception as exc:
            raise translate_error(exc, channel, action) from None

    # -- writing -------------------------------------------------------------------------

    def _encode(self, channel: str, value: Any, info: AttributeInfo) -> Any:
        if info.data_format != "SCALAR":
            if not isinstance(value, list | tuple):
                raise TangoValueError(f"{channel} is a {info.data_format.lower()} "
                                      f"attribute: write a list, not {value!r}",
                                      channel=channel)
            return [self._encode_item(channel, item, info) for item in value]
        return self._encode_item(channel, value, info)

    def _encode_item(self, channel: str, value: Any, info: AttributeInfo) -> Any:
        kind = info.data_type
        if kind == "DevEnum":
            if isinstance(value, str):
                if value in info.enum_labels:
                    return info.enum_labels.index(value)
                folded = [label.lower() for label in info.enum_labels]
                if folded.count(value.lower()) == 1:
                    return folded.index(value.lower())
                raise TangoEnumError(f"{value!r} is not a label of {channel}: "
                                     f"{list(info.enum_labels)}", channel=channel)
            if isinstance(value, int | float) and not isinstance(value, bool) \
                    and float(value).is_integer():
                index = int(value)
                if not 0 <= index < len(info.enum_labels):
                    raise TangoEnumError(f"enum index {index} is out of range for {channel} "
                                         f"({len(info.enum_labels)} labels)", channel=channel)
                return index
            raise TangoValueError(f"{channel} is an enum: write a label or an index, "
                                  f"not {value!r}", channel=channel)
        if kind in _INT_TYPES:
            if isinstance(value, float) and value.is_integer():
                return int(value)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TangoValueError(f"{channel} holds integers ({kind}), not {value!r}",
                                      channel=channel)
            return value
        if kind in _FLOAT_TYPES:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TangoValueError(f"{channel} holds numbers ({kind}), not {value!r}",
                                      channel=channel)
            return float(value)
        if kind == "DevString" and not isinstance(value, str):
            raise TangoValueError(f"{channel} holds text, not {value!r}", channel=channel)
        if kind == "DevBoolean" and not isinstance(value, bool):
            raise TangoValueError(f"{channel} holds true/false, not {value!r}",
                                  channel=channel)
        return value

    def _write_blocking(self, proxy: Any, name: TangoName, channel: str, value: Any) -> None:
        info = self._info_blocking(proxy, name)
        proxy.write_attribute(name.attribute, self._encode(channel, value, info))

    async def write(self, channel: str, value: Any) -> WriteAck:
        name = self.parse(channel)
        proxy = await self._proxy(name, channel, _WRITE)
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
            errors = _errors(exc)
            severity, status = Severity.INVALID, str(errors[0].reason) if errors else "ERROR"
        alarms = getattr(config, "alarms", None)
        return TangoChannelMetadata(
            channel=channel,
            data_type=info.kind,
            units=info.units,
            precision=precision_of(_text(config.format)),
            description=_text(config.description),
            control_limits=_pair(config.min_value, config.max_value),
            enum_strings=info.enum_labels,
            writable=info.writable,
            status=status,
            severity=severity,
            alarm_limits=_pair(config.min_alarm, config.max_alarm),
            warning_limits=None if alarms is None else _pair(alarms.min_warning,
                                                             alarms.max_warning),
            label=_text(config.label),
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
            proxy = self._proxies.get((handle.name.device_key, _READ))
        if not was_active or handle.event_id is None or proxy is None:
            return
        try:
            await self._call(handle.channel, "unsubscribe", self.read_timeout,
                             proxy.unsubscribe_event, handle.event_id)
        except ControlSystemError as exc:  # the device may be gone; nothing more to stop
            log.warning("unsubscribing from %s: %s", handle.channel, exc)


async def _await_future(future: concurrent.futures.Future[Any], timeout: float) -> Any:
    """Wait for a pool future from any event loop without cancelling it on timeout."""
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[Any] = loop.create_future()

    def transfer(done: concurrent.futures.Future[Any]) -> None:
        if waiter.done():
            return
        if done.cancelled():
            waiter.set_exception(ControlSystemError("the Tango call was cancelled "
                                                    "(the connector was closed)"))
        elif (error := done.exception()) is not None:
            waiter.set_exception(error)
        else:
            waiter.set_result(done.result())

    def on_done(done: concurrent.futures.Future[Any]) -> None:
        with contextlib.suppress(RuntimeError):  # RuntimeError: that loop has closed
            loop.call_soon_threadsafe(transfer, done)

    future.add_done_callback(on_done)
    return await asyncio.wait_for(waiter, timeout)
