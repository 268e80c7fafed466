"""What the built-in file adapters share: options every file format takes, and the loops
that read JSON Lines, JSON and CSV files record by record, turning each record into an
entry or a ``BadRecord`` that names its file and line.

A format only says how one record becomes an entry (:meth:`RecordAdapter.convert`).
"""

from __future__ import annotations

import csv
import io
import json
from abc import abstractmethod
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from osprey_core.hookspecs.logbook_adapters import LogbookAdapter, LogbookSourceError
from osprey_core.logbook.adapters import files
from osprey_core.logbook.adapters.records import RecordError, zone_named
from osprey_core.logbook.models import MAX_TEXT_CHARS, BadRecord, LogEntry

#: Largest CSV field read (characters; the csv module's limit is process-wide and only ever
#: raised here): above the entry limit, so an oversized text is refused as a bad record by
#: the entry model rather than as a broken file by the reader.
CSV_FIELD_LIMIT = 1 << 28


class FileOptions(BaseModel):
    """Options of every built-in file reader."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    encoding: str = Field("utf-8", description="The files' text encoding (utf-8, latin-1, "
                          "cp1252, utf-16, ...). A byte-order mark that disagrees is an error.")
    timezone: str | None = Field(None, description="IANA zone (or UTC) of times written "
                                 "without an offset; without it such times are bad records.")
    max_record_bytes: int = Field(files.DEFAULT_MAX_RECORD_BYTES, ge=1024, description=(
        "JSON Lines: a longer line is a bad record, skipped without being parsed."))

    @field_validator("encoding")
    @classmethod
    def _encoding(cls, value: str) -> str:
        return files.codec_name(value)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        zone_named(value)
        return value


class RecordAdapter(LogbookAdapter):
    """A file adapter: reads records and leaves their meaning to :meth:`convert`."""

    options: FileOptions

    @abstractmethod
    def convert(self, record: dict[str, Any], since: datetime | None) -> LogEntry | None:
        """The entry of ``record``, or None when it was written before ``since`` (checked
        before the rest is built, so re-reading a file for new entries stays cheap);
        RecordError says why a record cannot be an entry."""

    def entry(self, item: Any, since: datetime | None) -> LogEntry | None:
        """:meth:`convert` for any parsed item (RecordError for one that is not an object).
        Callers format a bad record's place only when there is one: on a clean export,
        formatting it for every record is wasted work."""
        if type(item) is not dict:
            raise RecordError(f"a record must be a JSON object, not {type(item).__name__}")
        return self.convert(item, since)

    def read_jsonl(self, location: str, since: datetime | None
                   ) -> Iterator[LogEntry | BadRecord]:
        limit = self.options.max_record_bytes
        for path in files.resolve_files(location):
            for number, line, size in files.read_lines(path, self.options.encoding, limit):
                if line is None:
                    yield BadRecord(f"{path}:{number}", f"the line is {size:,} bytes; lines "
                                    f"over max_record_bytes ({limit:,}) are refused (an entry "
                                    f"keeps at most {MAX_TEXT_CHARS:,} characters)")
                    continue
                if line.isspace():
                    continue
                try:
                    item = json.loads(line)
                except json.JSONDecodeError as exc:
                    cut = not line.endswith("\n") and exc.pos >= len(line.rstrip()) - 1
                    yield BadRecord(f"{path}:{number}", f"not valid JSON ({exc.msg}, column "
                                    f"{exc.colno})" + ("; the line is cut short: is the file "
                                                       "truncated?" if cut else ""))
                    continue
                try:
                    entry = self.entry(item, since)
                except RecordError as exc:
                    yield BadRecord(f"{path}:{number}", str(exc))
                    continue
                if entry is not None:
                    yield entry

    def read_json(self, location: str, since: datetime | None,
                  paths: Sequence[tuple[str, ...]]) -> Iterator[LogEntry | BadRecord]:
        for path in files.resolve_files(location):
            with files.open_binary(path) as handle:
                files.skip_bom(path, handle, self.options.encoding)
                stream = files.JsonStream(path, handle, self.options.encoding)
                for number, (line, item) in enumerate(stream.entries(paths), 1):
                    try:
                        entry = self.entry(item, since)
                    except RecordError as exc:
                        yield BadRecord(f"{path}:{line} (entry {number})", str(exc))
                        continue
                    if entry is not None:
                        yield entry

    def read_csv(self, location: str, since: datetime | None, delimiter: str,
                 required: dict[str, Sequence[str]]) -> Iterator[LogEntry | BadRecord]:
        """Rows of CSV files with a header row; ``required`` maps each field that must have
        a column to the column names that can hold it."""
        if csv.field_size_limit() < CSV_FIELD_LIMIT:
            csv.field_size_limit(CSV_FIELD_LIMIT)
        for path in files.resolve_files(location):
            with files.open_binary(path) as handle:
                files.skip_bom(path, handle, self.options.encoding)
                text = io.TextIOWrapper(handle, encoding=self.options.encoding, newline="")
                reader = csv.DictReader(text, delimiter=delimiter)
                try:
                    yield from self._rows(path, reader, since, required)
                except UnicodeDecodeError as exc:
                    raise LogbookSourceError(
                        f"{path}: after line {reader.line_num}: not valid "
                        f"{self.options.encoding} ({exc.reason}): set the source's encoding "
                        "option to the file's encoding") from None
                except csv.Error as exc:
                    raise LogbookSourceError(f"{path}:{reader.line_num}: not valid CSV "
                                             f"({exc})") from None

    def _rows(self, path: Path, reader: csv.DictReader[str], since: datetime | None,
              required: dict[str, Sequence[str]]) -> Iterator[LogEntry | BadRecord]:
        header = reader.fieldnames
        if not header:
            raise LogbookSourceError(f"{path} is empty: a CSV export needs a header row")
        missing = [f"{field} (one of: {', '.join(names)})" for field, names in required.items()
                   if not set(names) & set(header)]
        if missing:
            raise LogbookSourceError(
                f"{path}: the header row has no column for {'; '.join(missing)}. Its "
                f"columns are: {', '.join(header)}. Name them with the source's fields "
                "option")
        for row in reader:
            if None in row or None in row.values():
                count = len(row) - 1 + len(row[None]) if None in row else sum(
                    value is not None for value in row.values())
                yield BadRecord(f"{path}:{reader.line_num}", f"the row has {count} fields, "
                                f"the header has {len(header)}")
                continue
            try:
                entry = self.entry(row, since)
            except RecordError as exc:
                yield BadRecord(f"{path}:{reader.line_num}", str(exc))
                continue
            if entry is not None:
                yield entry
