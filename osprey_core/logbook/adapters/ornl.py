"""``ornl``: an ORNL-style logbook JSON export.

The file is an array of entries or an object with an ``entries`` array. An entry: ``ID``
(or ``id``), ``entry_time`` (ISO 8601 or epoch; times without an offset are in the
``timezone`` option, Oak Ridge's by default), ``title``, ``content``, ``author``,
``logbook`` (a name or a list), ``segment/area``, ``reference`` (a related entry), and
either ``attachments`` (objects with ``url``, ``type``, ``filename``) or ``attachment: "Y"``
with the file names in ``attachment_header``. ``event_time`` (when the event happened, as
opposed to when it was written) is not kept.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any, ClassVar

from pydantic import Field

from osprey_core.logbook.adapters.base import FileOptions, RecordAdapter
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


class OrnlOptions(FileOptions):
    timezone: str | None = Field("America/New_York", description="Zone of times without an "
                                 "offset, and the offset recorded for epoch times.")
    attachment_base_url: str | None = Field(None, description="Joined to relative attachment "
                                            "URLs.")


class OrnlAdapter(RecordAdapter):
    name = "ornl"
    description = "ORNL-style logbook JSON export."
    options_model: ClassVar[type[OrnlOptions]] = OrnlOptions
    options: OrnlOptions

    def __init__(self, source: str, options: Any = None) -> None:
        super().__init__(source, options)
        self.zone = zone_named(self.options.timezone)

    def iter_entries(self, location: str, *,
                     since: datetime | None = None) -> Iterator[LogEntry | BadRecord]:
        return self.read_json(location, since, [("entries",)])

    def convert(self, record: dict[str, Any], since: datetime | None) -> LogEntry | None:
        native_id = record.get("ID", record.get("id"))
        if native_id in (None, ""):
            raise RecordError("no ID")
        moment, offset = read_time(record.get("entry_time"), zone=self.zone)
        if since is not None and moment < since:
            return None
        books = names_of(record.get("logbook"), "the logbook")
        attachments = record.get("attachments")
        if not attachments and str(record.get("attachment", "")).upper() == "Y":
            attachments = [{"name": name} for name in
                           names_of(record.get("attachment_header"), "an attachment name")]
        return make_entry(
            source=self.source, native_id=native_id, timestamp=moment,
            title=text_of(record.get("title"), "the title"),
            text=text_of(record.get("content"), "the content"),
            author=text_of(record.get("author"), "the author").strip() or None,
            logbook=books[0] if books else None,
            tags=books[1:] + names_of(record.get("segment/area"), "the segment/area"),
            linked_to=names_of(record.get("reference"), "a reference"),
            attachments=attachments_of(attachments, base_url=self.options.attachment_base_url),
            utc_offset_minutes=offset)
