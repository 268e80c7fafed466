"""Values in and out of DBR buffers, and EPICS alarm codes.

Decoding runs on CA threads: everything is copied out of the callback's buffer.
"""

from __future__ import annotations

import ctypes
import math
from types import SimpleNamespace
from typing import Any

from osprey_core.control.epics.protocol import NORMAL, Channel, status_error
from osprey_core.control.errors import ControlSystemError
from osprey_core.control.types import Reason, Severity

# -- alarms ---------------------------------------------------------------------------------

ALARM_STATUS = ("NO_ALARM", "READ", "WRITE", "HIHI", "HIGH", "LOLO", "LOW", "STATE", "COS",
                "COMM", "TIMEOUT", "HWLIMIT", "CALC", "SCAN", "LINK", "SOFT", "BAD_SUB",
                "UDF", "DISABLE", "SIMM", "READ_ACCESS", "WRITE_ACCESS")
EPICS_EPOCH = 631152000  # 1990-01-01 in POSIX seconds


def alarm_status(code: int) -> str:
    return ALARM_STATUS[code] if 0 <= code < len(ALARM_STATUS) else f"STATUS_{code}"


def alarm_severity(code: int) -> Severity:
    return Severity(code) if 0 <= code <= 3 else Severity.INVALID


class UnsupportedValueError(ControlSystemError):
    """The value cannot be represented in the channel's EPICS type; nothing was sent."""

    reason = Reason.WRONG_TYPE


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


def decode(api: SimpleNamespace, args: Any, *, text: bool, scalar: bool) -> Any:
    """(value, status, severity, secs, nsec) from a DBR_TIME reply, or an exception."""
    if args.status != NORMAL:
        return status_error(api, args.status, "read")
    meta, data = api.dbr.cast_args(args)
    if data is None or meta is None:
        return ControlSystemError(f"unexpected DBR type {args.type} in a reply")
    native = api.dbr.native_type(args.type)
    value = _decode_value(api, native, data, args.count, text=text, scalar=scalar)
    return (value, meta.status, meta.severity, meta.stamp.secs, meta.stamp.nsec)


def decode_ctrl(api: SimpleNamespace, args: Any) -> Any:
    """The control fields of a DBR_CTRL reply as a dict, or an exception."""
    if args.status != NORMAL:
        return status_error(api, args.status, "read of the control fields")
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


# -- values to DBR buffers ------------------------------------------------------------------

_INT_RANGES = {"SHORT": (-(2**15), 2**15 - 1), "LONG": (-(2**31), 2**31 - 1),
               "CHAR": (0, 255), "ENUM": (0, 65535)}
_FLOAT32_MAX = 3.4028234663852886e38


def _is_sequence(value: Any) -> bool:
    return (not isinstance(value, str | bytes | bytearray | dict)
            and hasattr(value, "__len__") and hasattr(value, "__getitem__"))


def pack(api: SimpleNamespace, channel: Channel, value: Any) -> tuple[int, int, Any]:
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


def limit_pair(ctrl: dict[str, Any], low: str, high: str) -> tuple[float, float] | None:
    if low not in ctrl or high not in ctrl:
        return None
    lower, upper = float(ctrl[low]), float(ctrl[high])
    if lower == upper == 0.0:  # EPICS: unset
        return None
    return (lower, upper)
