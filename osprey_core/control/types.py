"""Values, metadata and write outcomes exchanged with control-system connectors.

Plain frozen dataclasses (no pydantic) so connectors stay cheap to import and values
cross the sandbox broker as JSON without surprises.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any


class Severity(enum.IntEnum):
    """Alarm severity, ordered like EPICS (Tango qualities map onto it)."""

    NO_ALARM = 0
    MINOR = 1
    MAJOR = 2
    INVALID = 3


@dataclass(frozen=True, slots=True)
class ChannelValue:
    """One reading: the value with its timestamp and alarm state."""

    channel: str
    value: Any  # float, int, str, bool or a list of numbers
    timestamp: datetime
    status: str = "NO_ALARM"
    severity: Severity = Severity.NO_ALARM
    units: str | None = None

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["timestamp"] = self.timestamp.isoformat()
        data["severity"] = self.severity.name
        return data


@dataclass(frozen=True, slots=True)
class ChannelMetadata:
    """What a control system says about a channel, beyond its value."""

    channel: str
    data_type: str  # "float", "int", "string", "enum", "array"
    units: str | None = None
    precision: int | None = None
    description: str | None = None
    display_limits: tuple[float, float] | None = None
    control_limits: tuple[float, float] | None = None
    enum_strings: tuple[str, ...] = ()
    writable: bool = False
    status: str = "NO_ALARM"
    severity: Severity = Severity.NO_ALARM

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["severity"] = self.severity.name
        return data


@dataclass(frozen=True, slots=True)
class ReadBatch:
    """Result of reading many channels: what was read and what failed, by channel."""

    values: dict[str, ChannelValue] = field(default_factory=dict)
    errors: dict[str, Exception] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class WriteAck:
    """What a connector reports after a write: whether the put completed (callback)."""

    confirmed: bool
    message: str = ""


class WriteStatus(enum.StrEnum):
    OK = "ok"
    #: Refused by policy before reaching the control system (or refused by its server).
    BLOCKED = "blocked"
    #: Tried and did not work: I/O error, timeout, verification mismatch.
    FAILED = "failed"


class Reason(enum.StrEnum):
    """Machine-readable reason of a blocked or failed write."""

    WRITES_DISABLED = "writes_disabled"
    UNLISTED_CHANNEL = "unlisted_channel"
    NOT_WRITABLE = "not_writable"
    WRONG_TYPE = "wrong_type"
    NOT_FINITE = "not_finite"
    BELOW_MIN = "below_min"
    ABOVE_MAX = "above_max"
    STEP_TOO_LARGE = "step_too_large"
    NOT_ALLOWED_VALUE = "not_allowed_value"
    VALIDATION_ERROR = "validation_error"
    REJECTED_BY_SERVER = "rejected_by_server"
    NOT_APPROVED = "not_approved"
    NOT_FOUND = "not_found"
    TIMEOUT = "timeout"
    IO_ERROR = "io_error"
    VERIFICATION_FAILED = "verification_failed"
    #: Not attempted because an earlier write of the same batch did not succeed.
    SKIPPED = "skipped"


@dataclass(frozen=True, slots=True)
class WriteResult:
    """The outcome of one write attempt, as audited and returned to callers."""

    channel: str
    requested: Any
    status: WriteStatus
    reason: Reason | None = None
    message: str = ""
    previous: ChannelValue | None = None
    readback: ChannelValue | None = None
    verification: str = "none"
    verified: bool | None = None

    @property
    def ok(self) -> bool:
        return self.status is WriteStatus.OK

    def to_json(self) -> dict[str, Any]:
        return {
            "channel": self.channel,
            "requested": self.requested,
            "status": str(self.status),
            "reason": None if self.reason is None else str(self.reason),
            "message": self.message,
            "previous": None if self.previous is None else self.previous.to_json(),
            "readback": None if self.readback is None else self.readback.to_json(),
            "verification": self.verification,
            "verified": self.verified,
        }


def is_number(value: Any) -> bool:
    """Real numbers only: bools are not numbers here, and neither are numeric strings."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def finite_numbers(values: Sequence[Any]) -> bool:
    return all(is_number(item) and math.isfinite(item) for item in values)


@dataclass(frozen=True, slots=True)
class WriteRequest:
    """Who is writing and under which approval: recorded with every attempt."""

    actor: str
    interface: str
    run_id: str | None = None
    approval_id: str | None = None


@dataclass(frozen=True, slots=True)
class Sample:
    """One archived value."""

    timestamp: datetime
    value: Any
    severity: Severity = Severity.NO_ALARM
    status: str = "NO_ALARM"

    def to_json(self) -> dict[str, Any]:
        return {"timestamp": self.timestamp.isoformat(), "value": self.value,
                "severity": self.severity.name, "status": self.status}


def samples_to_dataframe(history: dict[str, list[Sample]]) -> Any:
    """One row per sample (channel, timestamp, value, severity, status); needs pandas."""
    try:
        import pandas
    except ImportError:
        raise ImportError("samples_to_dataframe needs pandas: pip install pandas") from None
    rows = [{"channel": channel, **sample.to_json(), "timestamp": sample.timestamp}
            for channel, samples in history.items() for sample in samples]
    return pandas.DataFrame(rows, columns=["channel", "timestamp", "value", "severity",
                                           "status"])
