"""``als``: an ALS-style elog, from a JSON Lines export or from its HTTP API.

A record: ``id``, ``timestamp`` (epoch seconds, often as text), ``author``, ``subject``,
``details``, ``level``, ``category`` (comma-separated, with stray commas in old entries),
``tag`` (a lock-out/tag-out number, ``"0"`` for none), ``linkedto`` (``"0"`` for none) and
``attachments`` (objects whose ``url`` is relative to the elog's site).

The API answers ``GET <location>?op=retrieve&start=<epoch>&end=<epoch>`` with a JSON array
of records. It is read in time windows from the high-water mark (less the overlap) or from
``start`` up to now, so a long history never arrives in one answer, and each window is
retried on its own.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from osprey_core.hookspecs.logbook_adapters import LogbookSourceError
from osprey_core.logbook.adapters.base import FileOptions, RecordAdapter
from osprey_core.logbook.adapters.http import HttpOptions, JsonClient, describe
from osprey_core.logbook.adapters.records import (
    RecordError,
    attachments_of,
    make_entry,
    names_of,
    read_time,
    text_of,
    zone_named,
)
from osprey_core.logbook.models import BadRecord, LogEntry

_NONE = (None, "", "0", 0)


class AlsOptions(FileOptions, HttpOptions):
    timezone: str | None = Field("America/Los_Angeles", description="Zone of times without "
                                 "an offset, and the offset recorded for epoch times.")
    attachment_base_url: str | None = Field(None, description="Joined to relative attachment "
                                            "URLs (default: the API's site; none for files).")
    start: datetime = Field(datetime(2003, 1, 1, tzinfo=UTC), description="Where a full "
                            "read of the API begins.")
    window_days: float = Field(30.0, gt=0, description="Span of one API request.")
    query: dict[str, str] = Field({"op": "retrieve"}, description="Extra query parameters "
                                  "(no secrets: the token goes in a header).")

    @field_validator("start")
    @classmethod
    def _aware(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("give start with a UTC offset, e.g. 2003-01-01T00:00:00Z")
        return value


class AlsAdapter(RecordAdapter):
    name = "als"
    description = "ALS-style elog: a JSON Lines export, or its HTTP API read in time windows."
    options_model: ClassVar[type[AlsOptions]] = AlsOptions
    options: AlsOptions

    def __init__(self, source: str, options: Any = None) -> None:
        super().__init__(source, options)
        self.zone = zone_named(self.options.timezone)
        self.base_url = self.options.attachment_base_url
        #: Replaced by tests to run retries without waiting.
        self.sleep = time.sleep
        self.rng = random.random

    def iter_entries(self, location: str, *,
                     since: datetime | None = None) -> Iterator[LogEntry | BadRecord]:
        if location.startswith(("http://", "https://")):
            return self._read_api(location, since)
        return self.read_jsonl(location, since)

    def convert(self, record: dict[str, Any], since: datetime | None) -> LogEntry | None:
        native_id = record.get("id")
        if native_id in (None, ""):
            raise RecordError("no id")
        moment, offset = read_time(record.get("timestamp"), zone=self.zone)
        if since is not None and moment < since:
            return None
        tags = names_of(record.get("category"), "a category")
        if (loto := record.get("tag")) not in _NONE:
            tags.append(f"loto:{text_of(loto, 'the tag')}")
        linked = record.get("linkedto")
        return make_entry(
            source=self.source, native_id=native_id, timestamp=moment,
            title=text_of(record.get("subject"), "the subject"),
            text=text_of(record.get("details"), "the details"),
            author=text_of(record.get("author"), "the author") or None,
            logbook=text_of(record.get("level"), "the level") or None, tags=tags,
            linked_to=() if linked in _NONE else names_of(linked, "a link"),
            attachments=attachments_of(record.get("attachments"), base_url=self.base_url),
            utc_offset_minutes=offset)

    def _read_api(self, url: str, since: datetime | None) -> Iterator[LogEntry | BadRecord]:
        options = self.options
        parts = urlsplit(url)
        self.base_url = options.attachment_base_url or f"{parts.scheme}://{parts.netloc}/"
        begin = since if since is not None else options.start
        end = datetime.now(UTC)
        step = timedelta(days=options.window_days)
        seen: set[str] = set()
        with JsonClient(self.source, options, sleep=self.sleep, rng=self.rng) as client:
            while begin < end:
                until = min(begin + step, end)
                # Whole seconds, widened outwards: neighbouring windows share a boundary
                # second, so an entry on it is read twice (and de-duplicated), never missed.
                params = {**options.query, "start": str(math.floor(begin.timestamp())),
                          "end": str(math.ceil(until.timestamp()))}
                answer = client.get(url, params)
                where = describe(url, params)
                if isinstance(answer, dict) and isinstance(answer.get("entries"), list):
                    answer = answer["entries"]
                if not isinstance(answer, list):
                    raise LogbookSourceError(f"{where} answered a JSON "
                                             f"{type(answer).__name__}, not a list of entries")
                for number, item in enumerate(answer, 1):
                    raw_id = item.get("id") if isinstance(item, dict) else None
                    key = None if raw_id in (None, "") else str(raw_id)
                    if key is not None:
                        if key in seen:
                            continue
                        seen.add(key)
                    try:
                        entry = self.entry(item, since)
                    except RecordError as exc:
                        label = f"{where} item {number}" + (f" (id {key})" if key else "")
                        yield BadRecord(label, str(exc))
                        continue
                    if entry is not None:
                        yield entry
                begin = until
