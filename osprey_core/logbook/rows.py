"""How entries become rows and back, the same for every engine (rows written here are
read back without validating again)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from osprey_core.logbook.models import Attachment, LogEntry
from osprey_core.logbook.storage import DocRow

COLUMNS = ("id", "source", "native_id", "logbook", "author", "title", "text", "tags", "ts",
            "ts_offset", "linked_to", "attachments", "ingested_at", "content_hash", "version")


def entry_row(entry: LogEntry, digest: str, now: float, version: int) -> tuple[Any, ...]:
    return (entry.id, entry.source, entry.native_id, entry.logbook, entry.author, entry.title,
            entry.text, json_list(entry.tags), entry.utc.timestamp(),
            entry.utc_offset_minutes, json_list(entry.linked_to),
            json_list([item.model_dump(mode="json") for item in entry.attachments]), now,
            digest, version)


def json_list(items: Sequence[Any]) -> str:
    """A list as JSON; most are empty, and ``json.dumps`` was a third of ingest's Python."""
    return json.dumps(list(items), ensure_ascii=False) if items else "[]"


def entry_from_row(row: Sequence[Any]) -> LogEntry:
    (_, source, native_id, logbook, author, title, text, tags, ts, offset, linked, attachments,
     *_rest) = row
    # Written by this module from validated entries: constructed without re-validating.
    return LogEntry.model_construct(
        source=source, native_id=native_id, timestamp=datetime.fromtimestamp(ts, UTC),
        text=text, title=title, logbook=logbook, author=author, tags=tuple(json.loads(tags)),
        linked_to=tuple(json.loads(linked)),
        attachments=tuple(Attachment.model_construct(**item)
                          for item in json.loads(attachments)),
        utc_offset_minutes=offset)


def doc_from_row(row: Sequence[Any]) -> DocRow:
    rowid, source, logbook, author, title, text, tags, ts = row
    return DocRow(rowid, source, logbook, author, title, text, tuple(json.loads(tags)), ts)
