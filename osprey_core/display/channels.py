"""Channel reads, writes and archived history as tables (value, units, alarm, local time)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from osprey_core.display.tables import table
from osprey_core.display.text import number, plain_text, scalar, when

if TYPE_CHECKING:
    from rich.console import RenderableType


def readings(result: Any) -> RenderableType | str:
    """``{channel: {value, units, severity, timestamp}}`` as one row per channel."""
    if not isinstance(result, Mapping):
        return plain_text(result)
    rows = []
    for name, reading in result.items():
        reading = reading if isinstance(reading, Mapping) else {"value": reading}
        severity = str(reading.get("severity") or "")
        rows.append((name, number(reading.get("value")), reading.get("units") or "",
                     "" if severity == "NO_ALARM" else severity or "",
                     when(reading.get("timestamp"))))
    return table(None, ("channel", "value", "units", "alarm", "time"), rows,
                 numeric=("value",))


def writes(result: Any) -> RenderableType | str:
    """Each write: requested, value before, readback, and whether it was verified."""
    if not isinstance(result, list) or not all(isinstance(item, Mapping) for item in result):
        return plain_text(result)
    rows = [(item.get("channel"), scalar(item.get("requested")), scalar(item.get("previous")),
             scalar(item.get("readback")), _outcome(item)) for item in result]
    return table(None, ("channel", "requested", "before", "readback", "outcome"), rows,
                 numeric=("requested", "before", "readback"))


def _outcome(item: Mapping[str, Any]) -> str:
    status = str(item.get("status") or "")
    verification = item.get("verification") or "none"
    if item.get("verified"):
        return f"{status}, verified ({verification})"
    if verification == "none":
        return f"{status} (not verified)"
    return f"{status}, NOT verified ({verification})" + (
        f": {item['message']}" if item.get("message") else "")


def history(result: Any) -> RenderableType | str:
    """Per channel: how many samples over which span, min/mean/max, first and last —
    never the samples themselves (they stay in the run for ``--json``)."""
    if not isinstance(result, Mapping):
        return plain_text(result)
    rows = []
    for name, data in result.items():
        data = data if isinstance(data, Mapping) else {}
        first, last = data.get("first") or {}, data.get("last") or {}
        span = f"{when(data.get('start'))} → {when(data.get('end'))}"
        if data.get("operator"):
            span += f" ({data['operator']})"
        rows.append((name, data.get("count", 0), span, number(data.get("min")),
                     number(data.get("mean")), number(data.get("max")),
                     _sample(first), _sample(last)))
    return table(None, ("channel", "samples", "span", "min", "mean", "max", "first", "last"),
                 rows, numeric=("samples", "min", "mean", "max"))


def _sample(sample: Mapping[str, Any]) -> str:
    if not sample:
        return "—"
    return f"{scalar(sample.get('value'))} at {when(sample.get('timestamp'))}"
