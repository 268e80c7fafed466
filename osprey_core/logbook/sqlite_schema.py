"""The SQLite logbook's schema with its migrations."""

from __future__ import annotations

import sqlite3


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
