"""Values, metadata and write outcomes exchanged with control-system connectors.

Plain frozen dataclasses (no pydantic) so connectors stay cheap to import and values
cross the sandbox broker as JSON without surprises.

Write values may be any Python object; :func:`plain_value` turns the ones that stand for
a number, a truth value or text into that exact built-in value, and :func:`json_safe`
gives everything a bounded JSON form for results and the audit log.
"""

from __future__ import annotations

import enum
import math
import reprlib
import sys
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
        # not asdict(): it deep-copies the value, which an odd value may refuse
        return {"channel": self.channel, "value": self.value,
                "timestamp": self.timestamp.isoformat(), "status": self.status,
                "severity": self.severity.name, "units": self.units}


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
    #: Another write to the channel held its lock for longer than the lock timeout.
    BUSY = "busy"
    #: The channel's write lock could not be taken at all (e.g. an unwritable lock folder).
    LOCK_ERROR = "lock_error"


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
        """Strict JSON whatever the values: what JSON cannot carry is described (json_safe)."""
        return json_safe({
            "channel": self.channel,
            "requested": self.requested,
            "status": str(self.status),
            "reason": None if self.reason is None else str(self.reason),
            "message": self.message,
            "previous": _reading_json(self.previous),
            "readback": _reading_json(self.readback),
            "verification": self.verification,
            "verified": self.verified,
        })


def _reading_json(reading: ChannelValue | None) -> Any:
    if reading is None:
        return None
    try:
        return reading.to_json()
    except Exception:  # a connector's odd timestamp or severity: described, not raised
        return {"type": type_name(reading), "repr": safe_repr(reading)}


def is_number(value: Any) -> bool:
    """Real numbers only: bools are not numbers here, and neither are numeric strings."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def finite_numbers(values: Sequence[Any]) -> bool:
    return all(is_number(item) and math.isfinite(item) for item in values)


# -- values of any type --------------------------------------------------------------------

#: Bounds of the JSON form of a value (json_safe): repr length, text length, nesting,
#: list items in all, and integer size.
MAX_REPR = 200
MAX_TEXT = 10_000
MAX_DEPTH = 8
MAX_ITEMS = 100_000
MAX_INT_BITS = 1024

_PLAIN = (bool, int, float, str)
_REPR = reprlib.Repr(maxlevel=3, maxstring=MAX_REPR, maxlong=MAX_REPR, maxother=MAX_REPR)


def type_name(value: Any) -> str:
    """``float``, ``numpy.float32``, ``decimal.Decimal``: the value's real type."""
    kind = type(value)
    module = type.__dict__["__module__"].__get__(kind)  # not a metaclass's own __module__
    if not isinstance(module, str) or module == "builtins":
        return kind.__qualname__
    return f"{module}.{kind.__qualname__}"


def safe_repr(value: Any, limit: int = MAX_REPR) -> str:
    """A ``repr`` of anything, cut to ``limit`` characters, encodable as UTF-8; never raises."""
    try:
        text = _REPR.repr(value)
        if not isinstance(text, str):
            raise TypeError("repr is not text")
    except Exception as exc:
        text = f"<{type_name(value)}, repr failed: {type(exc).__name__}>"
    if len(text) > limit:
        text = text[:limit - 3] + "..."
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def value_text(value: Any) -> str:
    """A value in a message: numbers in full, anything else as a short repr."""
    if type(value) in (int, float):
        try:
            return str(value)
        except ValueError:  # more digits than int-to-text conversion allows
            return f"an integer of {value.bit_length()} bits"
    return safe_repr(value)


def json_safe(value: Any) -> Any:
    """``value`` as strict JSON carries it exactly, within bounds.

    ``None``, booleans, finite floats, integers up to ``MAX_INT_BITS`` bits, text and
    lists, tuples and string-keyed dicts of those stay what they are (tuples become
    lists, subclasses of int/float/str their plain value). Anything else (NaN, a numpy
    number, bytes, an object, text that is too long or not encodable, nesting or lists
    beyond the bounds) becomes ``{"type": ..., "repr": ...}`` with a short repr.
    """
    return _json_safe(value, MAX_DEPTH, [MAX_ITEMS])


def _json_safe(value: Any, depth: int, budget: list[int]) -> Any:
    kind = type(value)
    if value is None or kind is bool:
        return value
    if isinstance(value, int):
        number = int.__int__(value)
        if number.bit_length() <= MAX_INT_BITS:
            return number
    elif isinstance(value, float):
        number = float.__float__(value)
        if math.isfinite(number):
            return number
    elif isinstance(value, str):
        text = str.__str__(value)
        if len(text) <= MAX_TEXT and _encodable(text):
            return text
    elif kind in (list, tuple) and depth > 0 and len(value) <= budget[0]:
        budget[0] -= len(value)
        return [_json_safe(item, depth - 1, budget) for item in value]
    elif kind is dict and depth > 0 and len(value) <= budget[0] and all(
            type(key) is str and _encodable(key) for key in value):
        budget[0] -= len(value)
        return {key: _json_safe(item, depth - 1, budget) for key, item in value.items()}
    return {"type": type_name(value), "repr": safe_repr(value)}


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates
        return False
    return True


def plain_value(value: Any) -> Any:
    """The exact built-in value ``value`` stands for, so the limits check and the connector
    write one and the same ``bool``, ``int``, ``float`` or ``str`` (or a list of them).

    Subclasses of those types become the value they hold: their own comparisons and
    conversions, which could disagree with it, are never consulted. A numpy scalar or
    0-d array becomes the Python number it equals exactly; a tuple or 1-d array, a list.
    Anything else comes back unchanged, for the limits to refuse by its type. Raises
    ValueError for a numpy value with no exact Python equivalent (a long double beyond a
    float's precision, an array of more than one dimension).
    """
    numpy = sys.modules.get("numpy")  # a numpy value means numpy is imported already
    if numpy is not None and isinstance(value, numpy.ndarray) and value.ndim > 0:
        if value.ndim > 1:
            raise ValueError(f"a {value.ndim}-dimensional array cannot be written: a channel "
                             "takes one value or a flat list")
        if value.dtype.kind in "biu" or (value.dtype.kind == "f" and value.dtype.itemsize <= 8):
            return value.tolist()  # exact Python numbers
        return [_plain_scalar(item) for item in value]
    if isinstance(value, list | tuple):
        items = list.__iter__(value) if isinstance(value, list) else tuple.__iter__(value)
        return [_plain_scalar(item) for item in items]
    return _plain_scalar(value)


def _plain_scalar(value: Any) -> Any:
    kind = type(value)
    if value is None or kind in _PLAIN:
        return value
    numpy = sys.modules.get("numpy")
    if numpy is not None and isinstance(value, numpy.generic | numpy.ndarray):
        return _plain_numpy(value, numpy)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, str):
        return str.__str__(value)
    return value


def _plain_numpy(value: Any, numpy: Any) -> Any:
    if isinstance(value, numpy.ndarray):
        return _plain_scalar(value[()]) if value.ndim == 0 else value  # nested: refused later
    if isinstance(value, numpy.bool_):
        return bool(value)
    if isinstance(value, numpy.integer):
        return int(value)
    if isinstance(value, numpy.floating):
        number = float(value)
        if math.isnan(number) or type(value)(number) == value:
            return number
        raise ValueError(f"{safe_repr(value)} has no exact float equivalent")
    if isinstance(value, numpy.str_):
        return str.__str__(value)
    return value


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
