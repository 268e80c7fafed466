"""Logbook entries, search filters and results: the records every logbook part shares.

An entry's ``id`` is ``<source>/<native id>``: unique across the logbooks one osprey
ingests, stable across re-ingests (an edited entry keeps its id and gets a new version),
and what answers cite (``[#als/12345]``).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

#: Source names: lower-case words, digits and ``_-``, so ids read well in citations.
SOURCE_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}\Z")
#: Native ids: anything printable without white space or brackets (citations use ``[#...]``).
NATIVE_ID_PATTERN = re.compile(r"^[^\s\[\]#]{1,200}\Z")
#: Largest entry text kept (characters); longer texts are refused, not cut silently.
MAX_TEXT_CHARS = 1_000_000


class Attachment(BaseModel):
    """What is known about a file attached to an entry (never the file itself)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    url: str | None = None
    mime_type: str | None = None
    size: int | None = None


class LogEntry(BaseModel):
    """One logbook entry, as adapters produce it and the store keeps it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str = Field(description="The configured source it came from, e.g. 'als'.")
    native_id: str = Field(description="The entry's id in its own logbook system.")
    timestamp: datetime = Field(description="When it was written; kept in UTC.")
    text: str = ""
    title: str = ""
    logbook: str | None = None
    author: str | None = None
    tags: tuple[str, ...] = ()
    linked_to: tuple[str, ...] = Field((), description="Ids (native) of related entries.")
    attachments: tuple[Attachment, ...] = ()
    #: The offset the entry was written with, in minutes east of UTC (None: unknown).
    utc_offset_minutes: int | None = None

    @field_validator("source")
    @classmethod
    def _source_name(cls, value: str) -> str:
        if not SOURCE_PATTERN.match(value):
            raise ValueError("a source name is lower-case letters, digits, '_' and '-'")
        return value

    @field_validator("native_id", mode="before")
    @classmethod
    def _native_id(cls, value: Any) -> str:
        text = str(value).strip() if isinstance(value, int | str) else value
        if not isinstance(text, str) or not NATIVE_ID_PATTERN.match(text):
            raise ValueError("an entry id is 1-200 printable characters without white space, "
                             "'[', ']' or '#'")
        return text

    @field_validator("timestamp")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("a timestamp needs a time zone (naive times are ambiguous)")
        return value

    @field_validator("text")
    @classmethod
    def _bounded(cls, value: str) -> str:
        if len(value) > MAX_TEXT_CHARS:
            raise ValueError(f"the text is {len(value)} characters; at most {MAX_TEXT_CHARS} "
                             "are kept per entry")
        return value

    @field_validator("tags", mode="before")
    @classmethod
    def _tags(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list | tuple):
            return tuple(dict.fromkeys(str(tag).strip() for tag in value if str(tag).strip()))
        return value

    @property
    def id(self) -> str:
        return f"{self.source}/{self.native_id}"

    @property
    def utc(self) -> datetime:
        return self.timestamp.astimezone(UTC)

    def local_time(self) -> datetime:
        """The timestamp in the offset it was written with (UTC when unknown)."""
        if self.utc_offset_minutes is None:
            return self.utc
        return self.utc.astimezone(timezone(timedelta(minutes=self.utc_offset_minutes)))

    def content_hash(self) -> str:
        """What an edit changes: a new hash means a new version of the entry. (Fields
        joined with separator characters rather than JSON: this runs once per ingested
        entry, and JSON cost a fifth of keyword-only ingest.)"""
        attachments = json.dumps([item.model_dump(mode="json") for item in self.attachments],
                                 sort_keys=True) if self.attachments else ""
        parts = (self.title, self.text, self.logbook or "\x00", self.author or "\x00",
                 "\x1e".join(self.tags), "\x1e".join(self.linked_to), attachments,
                 repr(self.utc.timestamp()), repr(self.utc_offset_minutes))
        return hashlib.sha256("\x1f".join(parts).encode("utf-8", "surrogatepass")).hexdigest()

    @classmethod
    def with_offset(cls, **values: Any) -> LogEntry:
        """Build an entry, recording the timestamp's own UTC offset before it is
        normalised (adapters call this with the parsed, aware timestamp)."""
        moment: datetime = values["timestamp"]
        if values.get("utc_offset_minutes") is None and moment.tzinfo is not None:
            offset = moment.utcoffset()
            values["utc_offset_minutes"] = None if offset is None else int(
                offset.total_seconds() // 60)
        return cls(**values)


@dataclass(frozen=True, slots=True)
class BadRecord:
    """A record an adapter could not turn into an entry, and where it was."""

    where: str  # "file.jsonl:17", "https://elog/api?start=...&end=... item 3"
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


@dataclass(frozen=True, slots=True)
class Filters:
    """Restrictions every search mode applies inside the ranking, never after it.

    Each list means "any of these"; different fields must all hold. Times are inclusive
    bounds in UTC.
    """

    authors: tuple[str, ...] = ()
    logbooks: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    since: datetime | None = None
    until: datetime | None = None

    def __bool__(self) -> bool:
        return bool(self.authors or self.logbooks or self.tags or self.sources
                    or self.since is not None or self.until is not None)

    def merged(self, other: Filters) -> Filters:
        """Both sets of restrictions (lists joined, the narrower time window)."""
        since = max((t for t in (self.since, other.since) if t is not None), default=None)
        until = min((t for t in (self.until, other.until) if t is not None), default=None)
        return Filters(self.authors + other.authors, self.logbooks + other.logbooks,
                       self.tags + other.tags, self.sources + other.sources, since, until)

    def allows(self, entry: LogEntry) -> bool:
        """The same rules in Python (tests and small result sets)."""
        def among(value: str | None, allowed: tuple[str, ...]) -> bool:
            return not allowed or (value is not None
                                   and value.casefold() in {a.casefold() for a in allowed})

        wanted_tags = {tag.casefold() for tag in self.tags}
        return (among(entry.author, self.authors) and among(entry.logbook, self.logbooks)
                and among(entry.source, self.sources)
                and (not wanted_tags or bool(wanted_tags & {t.casefold() for t in entry.tags}))
                and (self.since is None or entry.utc >= self.since)
                and (self.until is None or entry.utc <= self.until))

    def to_json(self) -> dict[str, Any]:
        return {"authors": list(self.authors), "logbooks": list(self.logbooks),
                "tags": list(self.tags), "sources": list(self.sources),
                "since": None if self.since is None else self.since.isoformat(),
                "until": None if self.until is None else self.until.isoformat()}


@dataclass(frozen=True, slots=True)
class Hit:
    """One entry found by a search, with how it scored and a highlighted snippet."""

    entry: LogEntry
    score: float
    rank: int
    snippet: str = ""
    #: Per-arm ranks of a hybrid hit ({"keyword": 3, "semantic": 1}).
    ranks: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        entry = self.entry
        return {"id": entry.id, "rank": self.rank, "score": round(self.score, 6),
                "timestamp": entry.utc.isoformat(), "logbook": entry.logbook,
                "author": entry.author, "title": entry.title, "tags": list(entry.tags),
                "snippet": self.snippet, "ranks": self.ranks}


@dataclass(frozen=True, slots=True)
class SearchResult:
    """Hits in rank order, how the query was read, and anything the user should know."""

    query: str
    mode: str
    hits: list[Hit]
    total: int
    #: How a malformed query was read, a mode that fell back, ...
    notices: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"query": self.query, "mode": self.mode, "total": self.total,
                "notices": self.notices, "seconds": round(self.seconds, 6),
                "hits": [hit.to_json() for hit in self.hits]}


def parse_time(value: str, *, now: datetime | None = None, end: bool = False) -> datetime:
    """``2026-11-30``, ``2026-11-30T08:00``, ``2026-11-30T08:00+01:00`` or a relative
    ``7d`` / ``12h`` / ``30m`` (before now); naive times are UTC. A bare date as an upper
    bound means the end of that day. ValueError names what was not understood."""
    text = value.strip()
    moment = now or datetime.now(UTC)
    relative = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(s|m|h|d|w)", text, re.IGNORECASE)
    if relative:
        seconds = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[relative[2].lower()]
        return moment - timedelta(seconds=float(relative[1]) * seconds)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{value!r:.60} is not a time: use 2026-11-30, 2026-11-30T08:00 or "
                         "a span before now such as 7d, 12h, 30m") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    if end and re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        parsed += timedelta(days=1) - timedelta(microseconds=1)
    return parsed.astimezone(UTC)
