"""Turning one raw record (a dict parsed from JSON, a CSV row) into a ``LogEntry``.

Shared by every built-in adapter: time parsing (ISO 8601, epoch seconds or milliseconds,
an explicit format), the time-zone rule for naive times, lists given as strings, and the
validation messages a ``BadRecord`` carries. This runs once per ingested entry, so it
avoids per-record work that does not depend on the record.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, tzinfo
from html.parser import HTMLParser
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import ValidationError

from osprey_core.errors import shorten
from osprey_core.logbook.models import Attachment, LogEntry

#: Epoch numbers at least this large are milliseconds (1e11 s is the year 5138).
EPOCH_MS_THRESHOLD = 1e11


class RecordError(ValueError):
    """One record cannot become an entry; the message says why (the caller adds where)."""


def zone_named(name: str | None) -> tzinfo | None:
    """The time zone ``name`` (IANA, e.g. ``America/Los_Angeles``, or ``UTC``); ValueError
    for an unknown name."""
    if name is None:
        return None
    if name.upper() in ("UTC", "Z"):
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}: use an IANA name such as "
                         "'America/Los_Angeles', or 'UTC'") from None


def read_time(value: Any, *, zone: tzinfo | None = None, time_format: str | None = None,
              epoch_unit: str = "auto") -> tuple[datetime, int | None]:
    """When an entry was written, and the UTC offset (minutes) it was written with.

    Takes ISO 8601 text, epoch seconds or milliseconds (numbers, or 9+ digits as text: 10**8
    s is 1973, so shorter digit strings stay ISO basic dates such as 20240101) or text in
    ``time_format``. A time without an offset is in ``zone``; with no ``zone`` it is refused
    rather than guessed to be UTC. An epoch has no offset of its own: it gets ``zone``'s,
    or None (unknown).
    """
    if isinstance(value, bool) or value is None:
        raise RecordError("no time" if value is None else f"{value!r} is not a time")
    if isinstance(value, int | float):
        return _epoch(value, epoch_unit, zone)
    if not isinstance(value, str):
        raise RecordError(f"a time must be text or a number, not {type(value).__name__}")
    text = value.strip()
    if time_format is not None:
        try:
            moment = datetime.strptime(text, time_format)
        except ValueError:
            raise RecordError(f"{shorten(text, 60)!r} does not match the time format "
                              f"{time_format!r}") from None
    else:
        digits = text.partition(".")[0].lstrip("-")
        if len(digits) >= 9 and digits.isdigit():
            return _epoch(float(text), epoch_unit, zone)
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise RecordError(f"{shorten(text, 60)!r} is not a time (ISO 8601, epoch seconds "
                              "or milliseconds; or set time_format)") from None
    if moment.tzinfo is None:
        if zone is None:
            raise RecordError(f"{shorten(text, 60)!r} has no UTC offset: set the source's "
                              "timezone option to say which zone its times are in")
        moment = moment.replace(tzinfo=zone)
    offset = moment.utcoffset()
    return moment, None if offset is None else int(offset.total_seconds() // 60)


def _epoch(number: float, unit: str, zone: tzinfo | None) -> tuple[datetime, int | None]:
    if not math.isfinite(number):
        raise RecordError(f"{number} is not a time")
    if unit == "ms" or (unit == "auto" and abs(number) >= EPOCH_MS_THRESHOLD):
        number /= 1000
    try:
        moment = datetime.fromtimestamp(number, UTC)
    except (OverflowError, OSError, ValueError):
        raise RecordError(f"{number} is out of the range of times") from None
    if zone is None:
        return moment, None
    local = moment.astimezone(zone)
    offset = local.utcoffset()
    return local, None if offset is None else int(offset.total_seconds() // 60)


def text_of(value: Any, what: str) -> str:
    """Text of a scalar field (numbers are written out; None is empty)."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise RecordError(f"{what} must be text, not {type(value).__name__}")


def names_of(value: Any, what: str, separator: str = ",") -> list[str]:
    """Names from a list (of strings or of objects with a ``name``) or from one string
    split at ``separator``; empty names are dropped."""
    if value is None:
        return []
    if isinstance(value, str):
        return [part.strip() for part in value.split(separator) if part.strip()]
    if type(value) is list and all(type(item) is str for item in value):
        return [item.strip() for item in value if item and not item.isspace()]
    if not isinstance(value, list | tuple):
        value = [value]
    names = []
    for item in value:
        if isinstance(item, dict):
            item = item.get("name", item.get("title"))
        name = text_of(item, what).strip()
        if name:
            names.append(name)
    return names


def attachments_of(value: Any, separator: str = ",",
                   base_url: str | None = None) -> tuple[Attachment, ...]:
    """Attachment metadata from URLs/paths (a list or a separated string) or from objects
    with ``url``, ``name``/``filename``/``caption``, ``type``/``mime_type`` and ``size``.
    Relative URLs are joined to ``base_url`` when one is given."""
    if value is None or value == "":
        return ()
    items = ([part for part in value.split(separator) if part.strip()]
             if isinstance(value, str) else value)
    if not isinstance(items, list | tuple):
        raise RecordError(f"attachments must be a list, not {type(items).__name__}")
    found = []
    for item in items:
        fields = item if isinstance(item, dict) else {"url": text_of(item, "an attachment")}
        url = fields.get("url") or fields.get("href") or None
        if isinstance(url, str):
            url = url.strip() or None
            if url and base_url and "://" not in url:
                url = base_url.rstrip("/") + "/" + url.lstrip("/")
        name = (fields.get("name") or fields.get("filename") or fields.get("caption")
                or (url.rstrip("/").rsplit("/", 1)[-1] if isinstance(url, str) else None))
        if not name:
            raise RecordError("an attachment has neither a name nor a URL")
        size = fields.get("size")
        try:
            found.append(Attachment(
                name=text_of(name, "an attachment name"), url=url,
                mime_type=fields.get("type") or fields.get("mime_type") or None,
                size=None if size in (None, "") else int(size)))
        except (ValidationError, TypeError, ValueError) as exc:
            raise RecordError(f"attachment {shorten(str(name), 60)!r}: "
                              f"{reasons(exc)}") from None
    return tuple(found)


def make_entry(**fields: Any) -> LogEntry:
    """The validated entry; RecordError with the model's reasons (never the huge value)."""
    try:
        return LogEntry(**fields)
    except ValidationError as exc:
        raise RecordError(reasons(exc)) from None


def reasons(exc: Exception) -> str:
    if not isinstance(exc, ValidationError):
        return str(exc)
    return "; ".join(f"{'.'.join(str(part) for part in error['loc']) or 'entry'}: "
                     f"{error['msg'].removeprefix('Value error, ')}" for error in exc.errors())


class _TextOfHtml(HTMLParser):
    """The text of an HTML fragment, with line breaks where blocks end."""

    BLOCKS = frozenset({"p", "br", "div", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6",
                        "pre", "blockquote", "table", "ul", "ol"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skip = 0

    def handle_starttag(self, tag: str, attrs: Any) -> None:
        if tag in ("script", "style"):
            self.skip += 1
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self.skip = max(0, self.skip - 1)
        elif tag in self.BLOCKS:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.parts.append(data)


def html_text(markup: str) -> str:
    """Plain text of an HTML entry body: what keyword search and embeddings should see."""
    parser = _TextOfHtml()
    parser.feed(markup)
    parser.close()
    lines = (" ".join(line.split()) for line in "".join(parser.parts).splitlines())
    return "\n".join(line for line in lines if line)
