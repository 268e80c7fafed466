"""How entries become rows and back, the same for every engine (rows written here are
read back without validating again)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from osprey_core.logbook.models import Attachment, LogEntry
from osprey_core.logbook.storage import Changes, DocRow, HighWater, SourceState

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


def source_values(source: str, adapter: str, location: str, old: HighWater | None,
                  new: HighWater | None, count: int) -> list[Any]:
    """A ``sources`` row: the mark only ever moves forward (``old`` stays if later)."""
    if old is not None and (new is None or (old.timestamp, old.native_id) >
                            (new.timestamp, new.native_id)):
        new = old
    return [source, adapter, location, None if new is None else new.timestamp.timestamp(),
            None if new is None else new.native_id, time.time(), count]


def high_water_of(row: Sequence[Any] | None) -> HighWater | None:
    """``(high_water_ts, high_water_id)`` as a mark (None when never recorded)."""
    if row is None or row[0] is None:
        return None
    return HighWater(datetime.fromtimestamp(row[0], UTC), row[1])


def source_state(row: Sequence[Any]) -> SourceState:
    """``(source, adapter, location, high_water_ts, high_water_id, last_ingest, entries)``."""
    source, adapter, location, ts, native, last, entries = row
    return SourceState(source, adapter, location, high_water_of((ts, native)),
                       None if last is None else datetime.fromtimestamp(last, UTC), entries)


def fold_changes(rows: Iterable[Sequence[Any]], seq: int) -> Changes:
    """``(seq, rowid, op)`` rows after change ``seq`` as what they add and remove (a row
    added and removed in that span is in neither list)."""
    added: dict[int, None] = {}
    removed: list[int] = []
    last = seq
    for change, rowid, op in rows:
        last = change
        if op == "add":
            added[rowid] = None
        elif rowid in added:
            del added[rowid]
        else:
            removed.append(rowid)
    return Changes(last, list(added), removed)


@dataclass
class UpsertPlan:
    """What an upsert writes: new rows (with their entries), rowids they replace, and
    how many entries were already stored as they are."""

    rows: list[tuple[Any, ...]] = field(default_factory=list)
    entries: list[LogEntry] = field(default_factory=list)
    replaced: list[int] = field(default_factory=list)
    unchanged: int = 0


def plan_upsert(latest: dict[str, LogEntry], known: dict[str, tuple[int, str, int]],
                now: float) -> UpsertPlan:
    """Compare entries with what the store holds (``known``: id -> rowid, content hash,
    version): an unchanged hash is left alone, a changed one becomes a new version."""
    plan = UpsertPlan()
    for entry_id, entry in latest.items():
        digest = entry.content_hash()
        old = known.get(entry_id)
        if old is not None and old[1] == digest:
            plan.unchanged += 1
            continue
        if old is not None:
            plan.replaced.append(old[0])
        plan.rows.append(entry_row(entry, digest, now, 1 if old is None else old[2] + 1))
        plan.entries.append(entry)
    return plan


def purge_where(source: str | None, before: datetime | None, mark: str
                ) -> tuple[str, list[Any]]:
    """The ``WHERE`` clause of a purge (``mark``: the engine's placeholder)."""
    clauses: list[str] = []
    params: list[Any] = []
    if source is not None:
        clauses.append(f"source = {mark}")
        params.append(source)
    if before is not None:
        clauses.append(f"ts < {mark}")
        params.append(before.timestamp())
    return (f"WHERE {' AND '.join(clauses)}" if clauses else ""), params
