"""Typed control-system errors; each carries the machine-readable reason."""

from __future__ import annotations

from osprey_core.control.types import Reason
from osprey_core.errors import OspreyError


class ControlSystemError(OspreyError):
    reason: Reason = Reason.IO_ERROR

    def __init__(self, message: str, *, channel: str | None = None) -> None:
        super().__init__(message)
        self.channel = channel


class ChannelNotFoundError(ControlSystemError):
    """No such channel (or it never connected within the connection timeout)."""

    reason = Reason.NOT_FOUND


class ConnectionTimeoutError(ControlSystemError):
    reason = Reason.TIMEOUT


class ReadTimeoutError(ControlSystemError):
    reason = Reason.TIMEOUT


class WriteTimeoutError(ControlSystemError):
    reason = Reason.TIMEOUT


class ServerRejectedError(ControlSystemError):
    """The control system itself refused the value (Tango limits, read-only attribute)."""

    reason = Reason.REJECTED_BY_SERVER
