"""The SQLite logbook's schema with its migrations, and how entries become rows and back
(rows written here are read back without validating again)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from osprey_core.logbook.models import Attachment, LogEntry
from osprey_core.logbook.storage import DocRow

COLUMNS = ("id", "source", "native_id", "logbook", "author", "title", "text", "tags", "ts",
            "ts_offset", "linked_to", "attachments", "ingested_at", "content_hash", "version")


def _schema_v1(conn: sqlite3.Connection) -> None:
    import sqlite_utils  # only when a database is created or upgraded: it imports pandas

    conn.execute("""CREATE TABLE entries (
        rowid INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, source TEXT NOT NULL,
        native_id TEXT NOT NULL, logbook TEXT, author TEXT, title TEXT NOT NULL,
        text TEXT NOT NULL, tags TEXT NOT NULL, ts REAL NOT NULL, ts_offset INTEGER,
        linked_to TEXT NOT NULL, attachments TEXT NOT NULL, ingested_at REAL NOT NULL,
        content_hash TEXT NOT NULL, version INTEGER NOT NULL)""")
    for column in ("ts", "author", "logbook", "source"):
        conn.execute(f"CREATE INDEX entries_{column} ON entries({column})")
    conn.execute("""CREATE TABLE entry_tags (rowid INTEGER NOT NULL, tag TEXT NOT NULL,
        PRIMARY KEY (tag, rowid)) WITHOUT ROWID""")
    conn.execute("""CREATE TABLE changes (seq INTEGER PRIMARY KEY AUTOINCREMENT,
        rowid INTEGER NOT NULL, op TEXT NOT NULL)""")
    conn.execute("""CREATE TRIGGER entries_change_del AFTER DELETE ON entries BEGIN
        INSERT INTO changes (rowid, op) VALUES (old.rowid, 'del');
        DELETE FROM entry_tags WHERE rowid = old.rowid; END""")
    conn.execute("""CREATE TRIGGER entries_no_update BEFORE UPDATE ON entries BEGIN
        SELECT RAISE(ABORT, 'entries are replaced, never updated in place'); END""")
    conn.execute("""CREATE TABLE sources (source TEXT PRIMARY KEY, adapter TEXT,
        location TEXT, high_water_ts REAL, high_water_id TEXT, last_ingest REAL,
        entries INTEGER NOT NULL DEFAULT 0)""")
    sqlite_utils.Database(conn)["entries"].enable_fts(
        ["title", "text"], create_triggers=True, tokenize="porter unicode61")
    # New rows reach the FTS index and the change log in one statement per batch (see
    # upsert): a trigger per row made ingest five times slower. Deletes keep theirs.
    conn.execute('DROP TRIGGER "entries_ai"')


#: Schema migrations in order; version N runs ``MIGRATIONS[N - 1]``. Only ever append.
MIGRATIONS = [_schema_v1]


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
