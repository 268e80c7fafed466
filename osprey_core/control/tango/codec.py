"""Tango values, qualities and attribute configurations in Osprey's terms."""

from __future__ import annotations

import enum
import math
import re
from dataclasses import dataclass
from typing import Any

from osprey_core.control.errors import ControlSystemError
from osprey_core.control.types import ChannelMetadata, Reason, Severity

# -- values --------------------------------------------------------------------------------

_QUALITY: dict[str, tuple[Severity, str]] = {
    "ATTR_VALID": (Severity.NO_ALARM, "NO_ALARM"),
    "ATTR_WARNING": (Severity.MINOR, "WARNING"),
    "ATTR_ALARM": (Severity.MAJOR, "ALARM"),
    "ATTR_INVALID": (Severity.INVALID, "INVALID"),
    "ATTR_CHANGING": (Severity.NO_ALARM, "CHANGING"),
}
FLOAT_TYPES = frozenset({"DevFloat", "DevDouble"})
INT_TYPES = frozenset({"DevShort", "DevLong", "DevLong64", "DevUShort", "DevULong",
                        "DevULong64", "DevUChar"})
_NOT_SPECIFIED = frozenset({"", "not specified", "no description", "no unit",
                            "no display unit", "no standard unit"})
_FORMAT = re.compile(r"%[-+ #0]*\d*(?:\.(?P<digits>\d+))?[hlLqjzt]*(?P<conv>[a-zA-Z])")


def quality_alarm(quality: Any) -> tuple[Severity, str]:
    """Tango attribute quality -> (severity, status)."""
    name = getattr(quality, "name", str(quality))
    return _QUALITY.get(name, (Severity.INVALID, name))


def text_of(value: Any) -> str | None:
    text = str(value).strip() if value is not None else ""
    return None if text.lower() in _NOT_SPECIFIED else text


def _number(value: Any) -> float | None:
    try:
        number = float(str(value).strip())
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def range_pair(low: Any, high: Any) -> tuple[float, float] | None:
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
            units=text_of(config.unit),
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
        if self.data_type in FLOAT_TYPES:
            return "float"
        if self.data_type in INT_TYPES:
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


@dataclass(frozen=True, slots=True, kw_only=True)
class TangoChannelMetadata(ChannelMetadata):
    """Channel metadata plus Tango's alarm and warning ranges (min/max_alarm, _warning)."""

    alarm_limits: tuple[float, float] | None = None
    warning_limits: tuple[float, float] | None = None
    label: str | None = None


class TangoValueError(ControlSystemError):
    """The value does not fit the attribute's Tango type; nothing was sent."""

    reason = Reason.WRONG_TYPE


class TangoEnumError(ControlSystemError):
    """The value is not one of the attribute's enum labels; nothing was sent."""

    reason = Reason.NOT_ALLOWED_VALUE


def encode(channel: str, value: Any, info: AttributeInfo) -> Any:
    """``value`` as the attribute's Tango type takes it; refused with the reason otherwise."""
    if info.data_format != "SCALAR":
        if not isinstance(value, list | tuple):
            raise TangoValueError(f"{channel} is a {info.data_format.lower()} "
                                  f"attribute: write a list, not {value!r}",
                                  channel=channel)
        return [_encode_item(channel, item, info) for item in value]
    return _encode_item(channel, value, info)

def _encode_item(channel: str, value: Any, info: AttributeInfo) -> Any:
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
    if kind in INT_TYPES:
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise TangoValueError(f"{channel} holds integers ({kind}), not {value!r}",
                                  channel=channel)
        return value
    if kind in FLOAT_TYPES:
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
