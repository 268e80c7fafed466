"""The logic behind ``channel_read``, ``channel_write`` and ``archiver_retrieval``.

The capabilities live in the built-in plugin ``osprey_core.plugins.channel_capabilities``
(their results are drawn by :mod:`osprey_core.display.channels`); this module holds what
they share with the CLI: parameter models, the phrasings the offline planner understands,
value parsing and the approval artifact of a write.

Values are never converted behind the operator's back: ``2`` stays an integer, ``"2.0"``
stays text and ``USER`` an enum label, and the control system's limits decide whether the
channel takes them.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    field_validator,
    model_validator,
)

from osprey_core.control.errors import ChannelNotFoundError, ControlSystemError
from osprey_core.control.limits import ChannelLimits, step_size
from osprey_core.control.types import (
    ChannelValue,
    WriteRequest,
    WriteResult,
    is_number,
    json_safe,
    plain_value,
    value_text,
)
from osprey_core.errors import OspreyError, StepRefused

if TYPE_CHECKING:
    from osprey_core.control.system import ControlSystem
    from osprey_core.hookspecs.capabilities import PreparedAction, StepContext

Number = StrictInt | StrictFloat
#: What may be written: a number, a boolean, text (strings, enum labels) or numbers.
WriteValue = StrictBool | StrictInt | StrictFloat | StrictStr | list[Number]

MAX_CHANNELS = 100


class ChannelReadError(ControlSystemError):
    """One or more channels could not be read."""


class ChannelWriteError(OspreyError):
    """A write was refused before asking, or did not succeed; the message says why."""


def _channel_name(name: str) -> str:
    if not name or name != name.strip() or any(char.isspace() for char in name):
        raise ValueError(f"{name!r} is not a channel name (empty or containing spaces)")
    return name


# -- parameters ---------------------------------------------------------------------------


class ReadParameters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    channels: list[str] = Field(min_length=1, max_length=MAX_CHANNELS,
                                description="Channel names, e.g. ['SR:CURRENT', 'BPM1:X'].")

    @field_validator("channels")
    @classmethod
    def _names(cls, channels: list[str]) -> list[str]:
        return list(dict.fromkeys(_channel_name(name) for name in channels))


class WriteItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    channel: str = Field(description="Channel to write, e.g. 'HCM1:SP'.")
    value: WriteValue = Field(description="Exact value: a number, true/false, text or an "
                              "enum label (e.g. 'USER'), or a list of numbers.")
    units: str | None = Field(None, description="Units the value is meant in (e.g. 'A'); the "
                              "write is refused if the channel's units differ.")

    @field_validator("channel")
    @classmethod
    def _name(cls, channel: str) -> str:
        return _channel_name(channel)

    @field_validator("value")
    @classmethod
    def _finite(cls, value: Any) -> Any:
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, float) and not math.isfinite(item):  # ints are finite
                raise ValueError(f"{item} is not a finite number")
        return value


class WriteParameters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    writes: list[WriteItem] = Field(min_length=1, max_length=MAX_CHANNELS,
                                    description="The writes, performed in this order; the "
                                    "first one that does not succeed stops the rest.")


class HistoryParameters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    channels: list[str] = Field(min_length=1, max_length=MAX_CHANNELS)
    since_seconds: float | None = Field(None, gt=0, description="How far back from now, "
                                        "in seconds (e.g. 3600 for the last hour).")
    start: datetime | None = Field(None, description="Start (ISO 8601; UTC if no offset).")
    end: datetime | None = Field(None, description="End (ISO 8601; default: now).")
    operator: str | None = Field(None, description="Server-side processing, e.g. 'mean_60'.")

    @field_validator("channels")
    @classmethod
    def _names(cls, channels: list[str]) -> list[str]:
        return list(dict.fromkeys(_channel_name(name) for name in channels))

    @field_validator("start", "end")
    @classmethod
    def _utc(cls, moment: datetime | None) -> datetime | None:
        if moment is None:
            return None
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)

    @model_validator(mode="after")
    def _one_range(self) -> HistoryParameters:
        if (self.since_seconds is None) == (self.start is None):
            raise ValueError("give either since_seconds or start (with an optional end)")
        if self.end is not None and self.start is None:
            raise ValueError("end needs a start")
        if self.start and self.end and self.start >= self.end:
            raise ValueError(f"start {self.start.isoformat()} is not before end "
                             f"{self.end.isoformat()}")
        return self

    def time_range(self, now: datetime) -> tuple[datetime, datetime]:
        if self.since_seconds is not None:
            return now - timedelta(seconds=self.since_seconds), now
        assert self.start is not None
        return self.start, self.end or now


# -- phrasings the offline planner understands ----------------------------------------------

# A channel token is a whole word: everything up to white space or a separator, so a name
# with a character no control system accepts is refused whole ("SR:CÜRRENT"), never read
# as the valid name it starts with ("SR:C").
_TOKEN = r"[^\s,;&\"'()]+"
_LIST = rf"{_TOKEN}(?:\s*(?:,|\band\b|&)\s*{_TOKEN})*"
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_UNITS = r"[A-Za-zµμ°Ω%][A-Za-z0-9µμ°Ω%/^*.\-]*"
_NOT_UNITS = frozenset({"and", "then", "please", "now", "for", "on", "in", "at", "with",
                        "to", "from", "if", "so", "but", "also", "again", "right"})
_READ = re.compile(r"\b(?:read|get|show|what(?:'s|\s+is|\s+are))\s+(?:me\s+)?(?:the\s+)?"
                   r"(?:(?:current\s+)?(?:value|values|reading|readings)\s+of\s+)?"
                   rf"(?P<channels>{_LIST})", re.IGNORECASE)
_SET = re.compile(r"\bset\s+", re.IGNORECASE)
_ONE_WRITE = re.compile(
    rf"(?:set\s+)?(?:the\s+)?(?P<channel>{_TOKEN})\s+to\s+"
    rf"(?:(?P<number>{_NUMBER})(?:\s*(?P<units>{_UNITS}))?(?![\w.])"
    r"|(?P<quoted>\"[^\"]*\"|'[^']*')|(?P<list>\[[^\]]*\])|(?P<word>[^\s,;]+))",
    re.IGNORECASE)
_SEPARATOR = re.compile(r"\s*(?:,|;|\band\b)\s*(?:then\s+)?", re.IGNORECASE)
_HISTORY = re.compile(
    r"\b(?:history|archived?(?:\s+(?:data|values))?|trend)\s+(?:of|for)\s+(?:the\s+)?"
    rf"(?P<channels>{_LIST})\s+(?:over|for|in|during|from)\s+the\s+(?:last|past)\s+"
    r"(?:(?P<count>\d+(?:\.\d+)?)\s*)?(?P<unit>seconds?|secs?|s|minutes?|mins?|m|hours?|hrs?|h"
    r"|days?|d|weeks?|w)\b", re.IGNORECASE)
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def is_channel_name(token: str) -> bool:
    """Whether a word of a request looks like a channel: ``SR:CURRENT``, ``BPM1:X``,
    ``sys/tg_test/1/double_scalar`` or an upper-case name such as ``BEAM_CURRENT``."""
    if "://" in token or not re.search(r"[A-Za-z]", token):
        return False
    if ":" in token.strip(":") or "/" in token.strip("/"):
        return True
    return token == token.upper() and len(token) >= 3


def _channels(text: str) -> list[str]:
    """The channel names at the start of a listed phrase, up to the first other word."""
    names = []
    for token in re.split(r"\s*(?:,|\band\b|&)\s*", text.strip(), flags=re.IGNORECASE):
        token = token.rstrip(".?!")
        if not is_channel_name(token):
            break
        names.append(token)
    return list(dict.fromkeys(names))


def parse_value(text: str) -> Any:
    """JSON if it parses (``2`` int, ``2.0`` float, ``true``, ``"text"``, ``[1, 2]``), else
    the text itself. Deliberately not YAML: ``ON``/``NO`` stay enum labels, not booleans."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def match_read(query: str) -> dict[str, Any] | None:
    """``read SR:CURRENT``, ``read SR:CURRENT and BPM1:X``, ``what is SR:CURRENT?``."""
    for found in _READ.finditer(query):
        if channels := _channels(found.group("channels")):
            return {"channels": channels}
    return None


def match_write(query: str) -> dict[str, Any] | None:
    """``set HCM1:SP to 2.0 A``, ``set SR:MODE to USER``, ``set A:SP to 1 and B:SP to 2``."""
    for start in _SET.finditer(query):
        if writes := _writes_from(query, start.start()):
            return {"writes": writes}
    return None


def _writes_from(query: str, position: int) -> list[dict[str, Any]]:
    writes: list[dict[str, Any]] = []
    while (found := _ONE_WRITE.match(query, position)) is not None:
        channel = found.group("channel")
        if not is_channel_name(channel):
            break
        units = found.group("units")
        if found.group("number") is not None:
            value = parse_value(found.group("number").lstrip("+"))
            units = units.rstrip(".") if units else None
            if units and units.lower() in _NOT_UNITS:
                units = None
        elif found.group("quoted") is not None:
            value = found.group("quoted")[1:-1]
        elif found.group("list") is not None:
            value = parse_value(found.group("list"))
        else:
            value = parse_value(found.group("word").rstrip(".!?"))
        writes.append({"channel": channel, "value": value,
                       **({"units": units} if units else {})})
        position = found.end()
        if found.group("number") is not None:
            position = found.end("units") if units else found.end("number")
        separator = _SEPARATOR.match(query, position)
        if separator is None:
            break
        position = separator.end()
    return writes


def match_history(query: str) -> dict[str, Any] | None:
    """``history of SR:CURRENT over the last hour`` (or N minutes, hours, days, weeks)."""
    found = _HISTORY.search(query)
    if found is None:
        return None
    channels = _channels(found.group("channels"))
    if not channels:
        return None
    count = float(found.group("count") or 1)
    unit = found.group("unit").lower()
    seconds = count * _SECONDS["m" if unit.startswith("min") else unit[0]]
    return {"channels": channels, "since_seconds": seconds}


# -- reading ------------------------------------------------------------------------------


def json_value(value: Any) -> Any:
    """``value`` as JSON can carry it: NaN and infinities (a dead sensor) become null."""
    if isinstance(value, list | tuple):
        return [json_value(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def reading(value: ChannelValue) -> dict[str, Any]:
    return {"value": json_value(value.value), "units": value.units,
            "severity": value.severity.name, "timestamp": value.timestamp.isoformat()}


def deadline(control_system: ControlSystem) -> float:
    """Seconds a read may take in all: the connector's own timeouts plus a margin."""
    connector = control_system.connector
    return connector.connection_timeout + connector.read_timeout + 1.0


async def read_channels(control_system: ControlSystem,
                        channels: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Each channel's value, units, alarm severity and timestamp; any failure raises."""
    try:
        batch = await asyncio.wait_for(control_system.read_many(list(channels)),
                                       deadline(control_system))
    except TimeoutError:
        raise ChannelReadError(f"reading {', '.join(channels)}: no answer within "
                               f"{deadline(control_system):g} s") from None
    if batch.errors:
        problems = "; ".join(f"{name}: {error}" for name, error in batch.errors.items())
        raise ChannelReadError(f"could not read {len(batch.errors)} of {len(channels)} "
                               f"channel(s): {problems}")
    return {name: reading(batch.values[name]) for name in channels}


# -- writing ------------------------------------------------------------------------------


def _limits_json(limits: ChannelLimits | None) -> dict[str, Any] | None:
    if limits is None:
        return None
    return {"min": limits.min, "max": limits.max, "max_step": limits.max_step}


def _problems(value: Any, limits: ChannelLimits | None,
              current: ChannelValue | None) -> list[str]:
    """What the control system will refuse when this write runs if the channel stays where
    it is now (the step from the current value); certain refusals never get this far."""
    if limits is None or limits.max_step is None or current is None:
        return []
    now = plain_value(current.value)
    if is_number(value) and is_number(now) and (step := step_size(now, value)) > limits.max_step:
        return [f"a step of {value_text(step)} from {value_text(now)} is above max_step "
                f"{limits.max_step:g}"]
    return []


async def _describe_write(control_system: ControlSystem,
                          item: WriteItem) -> tuple[dict[str, Any], list[str]]:
    """The artifact entry of one write and its summary lines; refuses hopeless requests."""
    channel, value = item.channel, item.value
    try:
        control_system.check_name(channel)
    except ControlSystemError as exc:
        raise ChannelWriteError(f"{exc}; nothing was asked or written") from None
    unread = ""
    try:
        current: ChannelValue | None = await asyncio.wait_for(control_system.read(channel),
                                                              deadline(control_system))
    except ChannelNotFoundError as exc:
        raise ChannelWriteError(f"cannot write {channel}: {exc}; nothing was asked or "
                                "written") from None
    except TimeoutError:
        current, unread = None, f"no answer within {deadline(control_system):g} s"
    except Exception as exc:
        current, unread = None, f"{type(exc).__name__}: {exc}"
    try:
        metadata = await asyncio.wait_for(control_system.metadata(channel),
                                          deadline(control_system))
    except Exception:
        metadata = None
    units = (metadata.units if metadata else None) or (current.units if current else None)
    if item.units is not None and units is not None and item.units.strip() != units:
        raise ChannelWriteError(f"{channel}: the request is in {item.units!r}, but the channel's "
                                f"units are {units!r}; nothing was asked or written")
    limits = control_system.limits_for(channel)
    level = (limits.verification if limits else None) or "none"
    readback = (limits.readback_channel or channel) if limits and level == "readback" else None
    tolerance = limits.tolerance.model_dump(exclude_none=True) if limits and limits.tolerance \
        else None
    notes = [f"WILL BE BLOCKED: {problem}"
             for problem in _problems(value, limits, current)]
    if current is None:
        notes.append(f"current value unknown: {unread}")
    if item.units is not None and units is None:
        notes.append(f"the request says {item.units!r}; the channel reports no units")
    if metadata is not None and not metadata.writable:
        notes.append("the control system reports this channel as read-only")
    entry = {"channel": channel, "value": value,
             "current": None if current is None else json_value(current.value),
             "units": units,
             "limits": _limits_json(limits), "verification": level,
             "readback_channel": readback, "tolerance": tolerance, "notes": notes}
    return entry, [_write_line(entry), *(f"      ! {note}" for note in notes)]


def _with_units(value: Any, units: str | None) -> str:
    text = value if isinstance(value, str) else json.dumps(json_safe(value), ensure_ascii=False)
    return f"{text} {units}" if units else text


def _write_line(entry: dict[str, Any]) -> str:
    limits = entry["limits"]
    bounds = "not in the limits database" if limits is None else ", ".join(
        f"{key.replace('_', ' ')} {limits[key]:g}" for key in ("min", "max", "max_step")
        if limits[key] is not None) or "no numeric limits"
    check = entry["verification"]
    if entry["readback_channel"]:
        check = f"readback of {entry['readback_channel']}"
        tolerance = entry["tolerance"] or {}
        if "absolute" in tolerance:
            check += f" within ±{tolerance['absolute']:g}"
        if "relative" in tolerance:
            check += f" within {tolerance['relative']:.3g} relative"
    current = "unknown" if entry["current"] is None else _with_units(entry["current"],
                                                                      entry["units"])
    return (f"  {entry['channel']}: {current} -> {_with_units(entry['value'], entry['units'])}"
            f"\n      limits: {bounds}; verification: {check}")


async def prepare_writes(control_system: ControlSystem,
                         parameters: WriteParameters) -> PreparedAction:
    from osprey_core.hookspecs.capabilities import PreparedAction

    entries, lines = [], []
    for item in parameters.writes:
        entry, described = await _describe_write(control_system, item)
        entries.append(entry)
        lines += described
    refused = [f"{item.channel}: {reason}" for item in parameters.writes
               if (reason := control_system.refusal(item.channel, item.value))]
    if refused:
        raise StepRefused("; ".join(refused) + "; nothing was asked or written")
    count = len(entries)
    header = (f"Write {count} channel{'s' * (count != 1)} on the "
              f"'{control_system.connector.name}' control system, in this order:")
    return PreparedAction(artifact={"writes": entries}, summary="\n".join([header, *lines]))


def write_result(result: WriteResult) -> dict[str, Any]:
    """A write outcome as a step result: compact, JSON, with the values read around it."""
    return {"channel": json_safe(result.channel), "requested": json_safe(result.requested),
            "status": str(result.status),
            "reason": None if result.reason is None else str(result.reason),
            "message": result.message,
            "previous": None if result.previous is None else json_value(result.previous.value),
            "readback": None if result.readback is None else json_value(result.readback.value),
            "verification": result.verification, "verified": result.verified}


def describe_failures(results: Sequence[WriteResult]) -> str:
    return "; ".join(f"{result.channel} {result.status} ({result.reason}): {result.message}"
                     for result in results if not result.ok)


async def execute_writes(control_system: ControlSystem,
                         step: StepContext) -> list[dict[str, Any]]:
    """Exactly the approved writes, in order, through the one write path."""
    artifact = step.artifact
    if not artifact or not isinstance(artifact.get("writes"), list):
        raise ChannelWriteError("channel_write runs only an approved artifact with 'writes'; "
                                "nothing was written")
    writes = [(entry["channel"], entry["value"]) for entry in artifact["writes"]]
    request = WriteRequest(actor=step.user, interface=step.interface or "api",
                           run_id=step.run_id, approval_id=step.approval_id)
    results = await control_system.write_many(writes, request)
    if not all(result.ok for result in results):
        raise ChannelWriteError(describe_failures(results))
    return [write_result(result) for result in results]
