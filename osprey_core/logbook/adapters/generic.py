"""Generic adapters: ``json``, ``jsonl`` and ``csv`` exports of any logbook, with a
configurable field mapping (which record key holds the id, the time, the text, ...)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any, ClassVar, Literal

from pydantic import Field, ValidationError, field_validator

from osprey_core.logbook.adapters.base import FileOptions, RecordAdapter
from osprey_core.logbook.adapters.records import (
    RecordError,
    attachments_of,
    names_of,
    read_time,
    reasons,
    text_of,
    zone_named,
)
from osprey_core.logbook.models import BadRecord, LogEntry

FieldName = Literal["id", "timestamp", "author", "title", "text", "logbook", "tags", "links",
                    "attachments"]

#: Record keys tried in order for each entry field, unless the ``fields`` option says.
DEFAULT_FIELDS: dict[str, tuple[str, ...]] = {
    "id": ("id", "native_id", "entry_id", "lognumber"),
    "timestamp": ("timestamp", "time", "date", "datetime", "created", "created_at"),
    "author": ("author", "user", "username", "owner"),
    "title": ("title", "subject", "summary"),
    "text": ("text", "body", "content", "details", "description", "message"),
    "logbook": ("logbook", "book", "logbooks", "books"),
    "tags": ("tags", "categories", "category", "keywords"),
    "links": ("links", "linked_to", "references"),
    "attachments": ("attachments", "files"),
}
_MISSING = object()


class MappedOptions(FileOptions):
    """Options of the generic adapters: the field mapping and how values are read."""

    fields: dict[FieldName, str | list[str]] = Field(default_factory=dict, description=(
        "Record keys holding each entry field: a key, a dotted path into nested objects "
        "(created.timestamp), or a list tried in order. Fields not named keep the defaults."))
    time_format: str | None = Field(None, description="strptime format of the times (default: "
                                    "ISO 8601, epoch seconds or epoch milliseconds).")
    epoch_unit: Literal["auto", "s", "ms"] = Field("auto", description=(
        "Unit of numeric times; auto reads numbers of 1e11 and more as milliseconds."))
    separator: str = Field(",", min_length=1, description="Splits tags, links and "
                           "attachments given as one string.")
    logbook: str | None = Field(None, description="Logbook of entries that name none.")
    attachment_base_url: str | None = Field(None, description="Joined to relative "
                                            "attachment URLs.")

    @field_validator("fields")
    @classmethod
    def _keys(cls, value: dict[str, str | list[str]]) -> dict[str, str | list[str]]:
        for field, keys in value.items():
            if not keys or any(not key.strip() for key in
                               ([keys] if isinstance(keys, str) else keys)):
                raise ValueError(f"give a record key (or a list of keys) for {field}")
        return value


class JsonOptions(MappedOptions):
    entries_path: str = Field("entries", description="Where the entries array is when the "
                              "file is an object (dotted, e.g. data.entries).")


class CsvOptions(MappedOptions):
    delimiter: str = Field(",", min_length=1, max_length=1, description="Column delimiter.")


class MappedAdapter(RecordAdapter):
    """Converts records through the field mapping of its options."""

    options: MappedOptions

    def __init__(self, source: str, options: Any = None) -> None:
        super().__init__(source, options)
        chosen = self.options.fields
        self.keys = {field: tuple([chosen[field]] if isinstance(chosen.get(field), str)
                                  else chosen.get(field) or defaults)
                     for field, defaults in DEFAULT_FIELDS.items()}
        self.zone = zone_named(self.options.timezone)
        self.plans: dict[tuple[str, ...], tuple[tuple[Any, ...], ...]] = {}

    def plan(self, record: dict[str, Any]) -> tuple[tuple[Any, ...], ...]:
        """Per field, the keys worth trying on records with these top-level keys: the first
        plain key present, and dotted paths whose head is present. Records of one export
        share a few shapes, so this is worked out once per shape, not per record."""
        shape = tuple(record)
        plan = self.plans.get(shape)
        if plan is None:
            present = set(shape)
            fields = []
            for keys in self.keys.values():
                usable: list[Any] = []
                for key in keys:
                    if key in present:
                        usable.append(key)
                        break
                    if "." in key and key.split(".", 1)[0] in present:
                        usable.append(tuple(key.split(".")))
                fields.append(tuple(usable))
            if len(self.plans) > 1024:
                self.plans.clear()
            plan = self.plans[shape] = tuple(fields)
        return plan

    @staticmethod
    def lookup(record: dict[str, Any], keys: tuple[Any, ...]) -> Any:
        for key in keys:
            if type(key) is str:
                return record[key]
            value: Any = record
            for part in key:
                value = value.get(part, _MISSING) if isinstance(value, dict) else _MISSING
            if value is not _MISSING:
                return value
        return None

    def convert(self, record: dict[str, Any], since: datetime | None) -> LogEntry | None:
        options, lookup = self.options, self.lookup
        (id_keys, time_keys, author, title, text, logbook, tags, links,
         attachments) = self.plan(record)
        native_id = lookup(record, id_keys)
        if native_id is None or native_id == "":
            raise RecordError(f"no id (looked for {', '.join(self.keys['id'])})")
        raw_time = lookup(record, time_keys)
        if raw_time is None or raw_time == "":
            raise RecordError(f"no time (looked for {', '.join(self.keys['timestamp'])})")
        moment, offset = read_time(raw_time, zone=self.zone, time_format=options.time_format,
                                   epoch_unit=options.epoch_unit)
        if since is not None and moment < since:
            return None
        separator = options.separator
        books = names_of(lookup(record, logbook), "the logbook", separator) if logbook else []
        labels = names_of(lookup(record, tags), "a tag", separator) if tags else []
        if len(books) > 1:
            labels += books[1:]
        body = lookup(record, text) if text else ""
        heading = lookup(record, title) if title else ""
        writer = lookup(record, author) if author else None
        try:
            return LogEntry(
                source=self.source, native_id=native_id, timestamp=moment,
                text=body if type(body) is str else text_of(body, "the text"),
                title=heading if type(heading) is str else text_of(heading, "the title"),
                logbook=books[0] if books else options.logbook,
                author=(writer if type(writer) is str else text_of(writer, "the author"))
                or None,
                tags=labels,
                linked_to=names_of(lookup(record, links), "a link", separator) if links else (),
                attachments=attachments_of(lookup(record, attachments), separator,
                                           options.attachment_base_url) if attachments else (),
                utc_offset_minutes=offset)
        except ValidationError as exc:
            raise RecordError(reasons(exc)) from None


class JsonLinesAdapter(MappedAdapter):
    name = "jsonl"
    description = "JSON Lines export: one JSON object per line, fields mapped by name."
    options_model: ClassVar[type[MappedOptions]] = MappedOptions

    def iter_entries(self, location: str, *,
                     since: datetime | None = None) -> Iterator[LogEntry | BadRecord]:
        return self.read_jsonl(location, since)


class JsonAdapter(MappedAdapter):
    name = "json"
    description = 'JSON export: an array of entries, or an object with an "entries" array.'
    options_model: ClassVar[type[MappedOptions]] = JsonOptions
    options: JsonOptions

    def iter_entries(self, location: str, *,
                     since: datetime | None = None) -> Iterator[LogEntry | BadRecord]:
        return self.read_json(location, since, [tuple(self.options.entries_path.split("."))])


class CsvAdapter(MappedAdapter):
    name = "csv"
    description = "CSV export with a header row, columns mapped by name."
    options_model: ClassVar[type[MappedOptions]] = CsvOptions
    options: CsvOptions

    def iter_entries(self, location: str, *,
                     since: datetime | None = None) -> Iterator[LogEntry | BadRecord]:
        required = {field: self.keys[field] for field in ("id", "timestamp")}
        return self.read_csv(location, since, self.options.delimiter, required)
