"""Tango errors in Osprey's terms, subscription handles, and waiting on pool futures."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
from dataclasses import dataclass
from typing import Any, Literal

from osprey_core.control.errors import (
    ChannelNotFoundError,
    ControlSystemError,
    ReadTimeoutError,
    ServerRejectedError,
    WriteTimeoutError,
)
from osprey_core.control.tango.codec import TangoValueError
from osprey_core.control.tango.settings import TangoName

# -- errors --------------------------------------------------------------------------------


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


def dev_errors(exc: BaseException) -> list[Any]:
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
    errors = dev_errors(exc)
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


@dataclass(eq=False)
class TangoSubscription:
    """Handle returned by :meth:`TangoConnector.subscribe`."""

    channel: str
    name: TangoName
    event_id: int | None = None
    active: bool = True


MARGIN = 0.25  # seconds allowed on top of a Tango timeout before the asyncio side gives up
READ, WRITE = "read", "write"


def millis(seconds: float) -> int:
    return max(1, round(seconds * 1000))


async def await_future(future: concurrent.futures.Future[Any], timeout: float) -> Any:
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
