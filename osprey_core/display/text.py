"""Plain-text layout of JSON results, numbers, series and times, for answers people read.

No JSON braces and no cut-off strings: mappings become ``key: value`` lines, lists become
items, and a long series is summarised (count, span, min/mean/max, first and last) instead
of being truncated mid-way.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

#: Lists longer than this are summarised rather than listed item by item.
MAX_LISTED = 12
_settings = {"utc": False}


def use_utc(flag: bool) -> None:
    """Show times in UTC (``--utc``) instead of the operator's local time zone."""
    _settings["utc"] = flag


def as_datetime(moment: datetime | str) -> datetime | None:
    """An aware datetime from a datetime or an ISO 8601 string (naive means UTC)."""
    if isinstance(moment, str):
        try:
            moment = datetime.fromisoformat(moment)
        except ValueError:
            return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def when(moment: datetime | str | None, *, seconds: bool = True,
         millis: bool = False) -> str:
    """``2026-12-07 07:23:30 +01:00`` in the operator's time zone (TZ), or UTC with --utc
    (``millis``: ``07:23:30.125``, for monitors)."""
    if moment is None:
        return ""
    aware = as_datetime(moment)
    if aware is None:
        return str(moment)
    local = aware.astimezone(UTC) if _settings["utc"] else aware.astimezone()
    offset = local.strftime("%z")
    shown = local.strftime("%Y-%m-%d %H:%M:%S" if seconds or millis else "%Y-%m-%d %H:%M")
    if millis:
        shown += f".{local.microsecond // 1000:03d}"
    return f"{shown} {offset[:3]}:{offset[3:]}"


def clock(moment: datetime) -> str:
    """The time of day only (``07:23:30``), in the same zone as :func:`when`."""
    return when(moment)[11:19]


def number(value: Any) -> str:
    """A number with six significant digits (``494.466``), anything else as text."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return scalar(value)
    if isinstance(value, float):
        return f"{value:.6g}" if math.isfinite(value) else str(value)
    return str(value)


def scalar(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return number(value)
    if isinstance(value, list | tuple) and all(not _nested(item) for item in value):
        return ", ".join(scalar(item) for item in value) if len(value) <= MAX_LISTED \
            else summary_of(value)
    return str(value)


def _nested(value: Any) -> bool:
    return isinstance(value, Mapping | list | tuple)


def is_series(value: Any) -> bool:
    """``[[timestamp, value], ...]`` as archiver and history results carry them."""
    return (isinstance(value, list) and bool(value)
            and all(isinstance(item, list | tuple) and len(item) == 2
                    and isinstance(item[0], str) for item in value))


def series_summary(samples: Sequence[Sequence[Any]]) -> str:
    """Count, span, min/mean/max and first/last of ``[[timestamp, value], ...]``."""
    if not samples:
        return "no samples"
    values = [value for _, value in samples if isinstance(value, int | float)
              and not isinstance(value, bool) and math.isfinite(value)]
    text = (f"{len(samples)} samples from {when(samples[0][0])} to {when(samples[-1][0])}")
    if values:
        text += (f"; min {number(min(values))}, mean {number(sum(values) / len(values))}, "
                 f"max {number(max(values))}")
    return (f"{text}; first {scalar(samples[0][1])}, last {scalar(samples[-1][1])}")


def summary_of(items: Sequence[Any]) -> str:
    """A long list in one line: how many, then the first and the last."""
    if is_series(items):
        return series_summary(items)
    values = [item for item in items if isinstance(item, int | float)
              and not isinstance(item, bool)]
    text = f"{len(items)} items"
    if len(values) == len(items) and values:
        text += (f"; min {number(min(values))}, mean {number(sum(values) / len(values))}, "
                 f"max {number(max(values))}")
    return f"{text}; first {_short(items[0])}, last {_short(items[-1])}"


def _short(item: Any) -> str:
    return scalar(item) if not _nested(item) else " ".join(plain_text(item).split())


def plain_text(value: Any, indent: str = "") -> str:
    """``value`` as indented lines: ``key: value`` for mappings, ``- item`` for lists."""
    if isinstance(value, Mapping):
        if not value:
            return f"{indent}(nothing)"
        lines = []
        for key, item in value.items():
            label = str(key)
            if isinstance(item, list | tuple) and (len(item) > MAX_LISTED or is_series(item)):
                lines.append(f"{indent}{label}: {summary_of(item)}")
            elif _nested(item) and item and not _flat_list(item):
                lines += [f"{indent}{label}:", plain_text(item, indent + "  ")]
            elif isinstance(item, str) and "\n" in item:
                lines += [f"{indent}{label}:",
                          *(f"{indent}  {line}" for line in item.rstrip().splitlines())]
            else:
                lines.append(f"{indent}{label}: {scalar(item) if item != [] else '(none)'}")
        return "\n".join(lines)
    if isinstance(value, list | tuple):
        if not value:
            return f"{indent}(none)"
        if len(value) > MAX_LISTED or is_series(value):
            return f"{indent}{summary_of(value)}"
        return "\n".join(
            f"{indent}- " + plain_text(item, indent + "  ").lstrip() if _nested(item)
            else f"{indent}- {scalar(item)}" for item in value)
    if isinstance(value, str):
        return "\n".join(f"{indent}{line}" for line in value.splitlines()) or indent
    return f"{indent}{scalar(value)}"


def _flat_list(value: Any) -> bool:
    return isinstance(value, list | tuple) and all(not _nested(item) for item in value)


def clipped(text: str, width: int) -> str:
    """``text`` on one line, at most ``width`` characters (an ellipsis marks the cut)."""
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "…"


def arguments(parameters: Mapping[str, Any], width: int = 60) -> str:
    """A step's parameters on one line, not JSON: ``channels=SR:CURRENT, BPM1:X``,
    ``writes=HCM1:SP → 0.5 A``; empty values are left out."""
    return " ".join(f"{key}={clipped(_inline(value), width)}"
                    for key, value in parameters.items() if value not in (None, "", [], {}))


def _inline(value: Any) -> str:
    if isinstance(value, Mapping):
        if "channel" in value and "value" in value:  # a write, as an operator says it
            units = f" {value['units']}" if value.get("units") else ""
            return f"{value['channel']} → {number(value['value'])}{units}"
        return ", ".join(f"{key} {_inline(item)}" for key, item in value.items())
    if isinstance(value, list | tuple) and any(_nested(item) for item in value):
        return "; ".join(_inline(item) for item in value)
    return scalar(value)
