"""``jlab``: a JLab-style logbook JSON export.

The file is an array of entries, or an object with them under ``entries`` or
``data.entries`` (the shape the logbook's web API answers). An entry: ``lognumber``
(or ``id``), ``created`` (an object whose ``timestamp`` is epoch seconds, or a time),
``title``, ``body`` (an object with ``content`` and ``format``: HTML bodies are reduced to
their text; or a string), ``author`` (a user name, or an object with ``username`` or first
and last names), ``books`` and ``tags`` (names, or objects with a ``name``) and
``attachments`` (objects with ``url``, ``type``, ``caption``).
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
    html_text,
    make_entry,
    names_of,
    read_time,
    text_of,
    zone_named,
)
from osprey_core.logbook.models import BadRecord, LogEntry


class JlabOptions(FileOptions):
    timezone: str | None = Field("America/New_York", description="Zone of times without an "
                                 "offset, and the offset recorded for epoch times.")
    attachment_base_url: str | None = Field(None, description="Joined to relative attachment "
                                            "URLs.")


class JlabAdapter(RecordAdapter):
    name = "jlab"
    description = "JLab-style logbook JSON export (entries, or data.entries)."
    options_model: ClassVar[type[JlabOptions]] = JlabOptions
    options: JlabOptions

    def __init__(self, source: str, options: Any = None) -> None:
        super().__init__(source, options)
        self.zone = zone_named(self.options.timezone)

    def iter_entries(self, location: str, *,
                     since: datetime | None = None) -> Iterator[LogEntry | BadRecord]:
        return self.read_json(location, since, [("entries",), ("data", "entries")])

    def convert(self, record: dict[str, Any], since: datetime | None) -> LogEntry | None:
        native_id = record.get("lognumber", record.get("id"))
        if native_id in (None, ""):
            raise RecordError("no lognumber (or id)")
        created = record.get("created")
        moment, offset = read_time(created.get("timestamp") if isinstance(created, dict)
                                   else created, zone=self.zone)
        if since is not None and moment < since:
            return None
        body = record.get("body")
        content, kind = (body.get("content"), body.get("format")) if isinstance(
            body, dict) else (body, None)
        text = text_of(content, "the body")
        if isinstance(kind, str) and "html" in kind.lower():
            text = html_text(text)
        books = names_of(record.get("books"), "a book")
        return make_entry(
            source=self.source, native_id=native_id, timestamp=moment,
            title=text_of(record.get("title"), "the title"), text=text,
            author=_author(record.get("author")), logbook=books[0] if books else None,
            tags=names_of(record.get("tags"), "a tag") + books[1:],
            attachments=attachments_of(record.get("attachments"),
                                       base_url=self.options.attachment_base_url),
            utc_offset_minutes=offset)


def _author(value: Any) -> str | None:
    if isinstance(value, dict):
        named = " ".join(text_of(value.get(key), "a name").strip()
                         for key in ("firstname", "lastname") if value.get(key))
        value = value.get("username") or named
    return text_of(value, "the author").strip() or None
