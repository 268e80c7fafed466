"""The logbook store: entries in SQLite (``OSPREY_HOME/logbook.db``), the source of truth.

Entries keep first-class columns (source, logbook, author, title, text, tags, UTC time and
its original offset, links, attachments, content hash, version) and an FTS5 index kept in
sync by triggers. Every insert and delete is also appended to ``changes``, so the search
indexes beside the database (keyword postings, embedding matrices) catch up with exactly
what changed. An edited entry is a delete of the old row and an insert of its new version:
a row's content never changes, so an index entry for a row is never stale, only dead.

:class:`~osprey_core.logbook.storage.LogbookStore` is the interface the rest of the logbook
uses; :class:`SQLiteLogbook` implements it, and
:class:`~osprey_core.logbook.postgres.PostgresLogbook` on a database server.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from osprey_core.logbook.models import LogEntry
from osprey_core.logbook.rows import (
    COLUMNS,
    doc_from_row,
    entry_from_row,
    fold_changes,
    high_water_of,
    plan_upsert,
    purge_where,
    source_state,
    source_values,
)
from osprey_core.logbook.sqlite_schema import MIGRATIONS
from osprey_core.logbook.storage import (
    Changes,
    DocRow,
    HighWater,
    LogbookStore,
    SourceState,
    UpsertCounts,
)
from osprey_core.store_errors import (
    StoreError,
    StoreStorageError,
    check_database_file,
    store_error,
    translating,
)

if TYPE_CHECKING:
    from osprey_core.logbook.indexes import FileIndexes

#: What to do about a damaged logbook database: it holds nothing that cannot be ingested
#: again from the sources.
LOGBOOK_HINT = ("nothing was changed. Move the file away and ingest the logbooks again "
                "(osprey logbook ingest), or restore a copy of it")

#: The contract's records are importable from here too, beside their engine.
__all__ = [
    "Changes",
    "DocRow",
    "HighWater",
    "LogbookStore",
    "SQLiteLogbook",
    "SourceState",
    "UpsertCounts",
]


class SQLiteLogbook:
    """The SQLite logbook store. One writer at a time (IMMEDIATE transactions, WAL)."""

    damage_hint = LOGBOOK_HINT

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreStorageError(f"cannot create the directory of {path}: {exc}") from None
        check_database_file(path, self._index_files, LOGBOOK_HINT)
        self.conn = self._connect()

    def _index_files(self) -> Path | None:
        """The search indexes beside a missing database: it existed."""
        folder = self.path.with_suffix(".index")
        return folder if folder.is_dir() and any(folder.iterdir()) else None

    @translating
    def _connect(self) -> sqlite3.Connection:
        self.conn = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                                    check_same_thread=False)
        try:
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self._migrate()
        except BaseException:
            self.conn.close()
            raise
        return self.conn

    def _migrate(self) -> None:
        with self.transaction():
            self.conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, "
                              "value TEXT NOT NULL)")
            row = self.conn.execute("SELECT value FROM meta WHERE key='schema_version'"
                                    ).fetchone()
            current = int(row[0]) if row else 0
            if current > len(MIGRATIONS):
                raise StoreError(f"{self.path} has schema version {current}, newer than this "
                                 f"osprey-core understands ({len(MIGRATIONS)}); upgrade "
                                 "osprey-core")
            for migration in MIGRATIONS[current:]:
                migration(self.conn)
            self.conn.execute("INSERT INTO meta VALUES ('schema_version', ?) ON CONFLICT(key) "
                              "DO UPDATE SET value=excluded.value", [str(len(MIGRATIONS))])

    @property
    @translating
    def schema_version(self) -> int:
        return int(self.conn.execute("SELECT value FROM meta WHERE key='schema_version'")
                   .fetchone()[0])

    def close(self) -> None:
        self.conn.close()

    def search_indexes(self) -> FileIndexes:
        """The search arms' files, beside the database (``logbook.index/``)."""
        from osprey_core.logbook.indexes import FileIndexes

        return FileIndexes(self, self.path.with_suffix(".index"))

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One IMMEDIATE transaction; SQLite errors become store errors naming the file."""
        conn = self.conn
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise store_error(self.path, exc, LOGBOOK_HINT) from exc
        try:
            yield conn
        except BaseException:
            if conn.in_transaction:
                with suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            raise
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise store_error(self.path, exc, LOGBOOK_HINT) from exc

    # -- writing ------------------------------------------------------------------------

    @translating
    def upsert(self, entries: Sequence[LogEntry]) -> UpsertCounts:
        """Add new entries and replace changed ones, in one transaction. Within the batch
        the last version of an id wins; an entry whose content hash is unchanged is left
        as it is (re-ingesting an overlap costs nothing)."""
        latest = {entry.id: entry for entry in entries}
        if not latest:
            return UpsertCounts()
        now = time.time()
        with self.transaction() as conn:
            plan = plan_upsert(latest, self._known(conn, list(latest)), now)
            rows, replaced = plan.rows, plan.replaced
            if replaced:
                conn.executemany("DELETE FROM entries WHERE rowid=?", [(r,) for r in replaced])
            # Rowids are given explicitly (this is the only writer inside the transaction),
            # so the batch's rows are exactly those above ``base``.
            base = conn.execute("SELECT coalesce(max(rowid), 0) FROM entries").fetchone()[0]
            base = max(base, conn.execute("SELECT coalesce(max(rowid), 0) FROM changes"
                                          ).fetchone()[0])
            marks = ", ".join("?" for _ in ("rowid", *COLUMNS))
            conn.executemany(f"INSERT INTO entries (rowid, {', '.join(COLUMNS)}) "
                             f"VALUES ({marks})",
                             [(base + offset, *row) for offset, row in enumerate(rows, 1)])
            tags = [(base + offset, tag.casefold()) for offset, entry in
                    enumerate(plan.entries, 1) for tag in entry.tags]
            if tags:
                conn.executemany("INSERT OR IGNORE INTO entry_tags VALUES (?, ?)", tags)
            conn.execute("INSERT INTO entries_fts (rowid, title, text) SELECT rowid, title, "
                         "text FROM entries WHERE rowid>?", [base])
            conn.execute("INSERT INTO changes (rowid, op) SELECT rowid, 'add' FROM entries "
                         "WHERE rowid>? ORDER BY rowid", [base])
        return UpsertCounts(len(rows) - len(replaced), len(replaced), plan.unchanged)

    @staticmethod
    def _known(conn: sqlite3.Connection, ids: list[str]) -> dict[str, tuple[int, str, int]]:
        known: dict[str, tuple[int, str, int]] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            marks = ", ".join("?" for _ in chunk)
            for entry_id, rowid, digest, version in conn.execute(
                    f"SELECT id, rowid, content_hash, version FROM entries WHERE id IN ({marks})",
                    chunk):
                known[entry_id] = (rowid, digest, version)
        return known

    @translating
    def delete(self, ids: Sequence[str]) -> int:
        with self.transaction() as conn:
            return sum(conn.execute("DELETE FROM entries WHERE id=?", [entry_id]).rowcount
                       for entry_id in ids)

    @translating
    def purge(self, *, source: str | None = None, before: datetime | None = None) -> int:
        """Delete every entry (of ``source``, older than ``before``); returns how many."""
        where, params = purge_where(source, before, "?")
        with self.transaction() as conn:
            removed = conn.execute(f"DELETE FROM entries {where}", params).rowcount
            if source is not None and before is None:
                conn.execute("DELETE FROM sources WHERE source=?", [source])
            elif source is None and before is None:
                conn.execute("DELETE FROM sources")
            return removed

    @translating
    def record_ingest(self, source: str, adapter: str, location: str,
                      high_water: HighWater | None) -> None:
        """Remember where ``source`` was read up to (only ever forward)."""
        with self.transaction() as conn:
            count = conn.execute("SELECT count(*) FROM entries WHERE source=?",
                                 [source]).fetchone()[0]
            conn.execute(
                "INSERT INTO sources VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT(source) DO UPDATE "
                "SET adapter=excluded.adapter, location=excluded.location, "
                "high_water_ts=excluded.high_water_ts, high_water_id=excluded.high_water_id, "
                "last_ingest=excluded.last_ingest, entries=excluded.entries",
                source_values(source, adapter, location, self._high_water(conn, source),
                              high_water, count))

    # -- reading ------------------------------------------------------------------------

    @translating
    def get(self, ids: Sequence[str]) -> list[LogEntry]:
        """The entries with these ids, in the order asked (unknown ids are left out)."""
        found: dict[str, LogEntry] = {}
        for start in range(0, len(ids), 500):
            chunk = list(ids[start:start + 500])
            marks = ", ".join("?" for _ in chunk)
            for row in self.conn.execute(
                    f"SELECT {', '.join(COLUMNS)} FROM entries WHERE id IN ({marks})", chunk):
                entry = entry_from_row(row)
                found[entry.id] = entry
        return [found[entry_id] for entry_id in ids if entry_id in found]

    @translating
    def by_rowids(self, rowids: Sequence[int]) -> dict[int, LogEntry]:
        found: dict[int, LogEntry] = {}
        for start in range(0, len(rowids), 500):
            chunk = list(rowids[start:start + 500])
            marks = ", ".join("?" for _ in chunk)
            for rowid, *row in self.conn.execute(
                    f"SELECT rowid, {', '.join(COLUMNS)} FROM entries WHERE rowid IN ({marks})",
                    chunk):
                found[rowid] = entry_from_row(row)
        return found

    @translating
    def rowids(self, ids: Sequence[str]) -> dict[str, int]:
        return {entry_id: rowid for entry_id, (rowid, _, _) in self._known(self.conn,
                                                                            list(ids)).items()}

    @translating
    def count(self, source: str | None = None) -> int:
        if source is None:
            return self.conn.execute("SELECT count(*) FROM entries").fetchone()[0]
        return self.conn.execute("SELECT count(*) FROM entries WHERE source=?",
                                 [source]).fetchone()[0]

    def docs(self, rowids: Iterable[int] | None = None, *,
             batch: int = 5000) -> Iterator[list[DocRow]]:
        """Rows for index builders, in batches: all of them (by rowid), or ``rowids``."""
        columns = "rowid, source, logbook, author, title, text, tags, ts"
        try:
            if rowids is None:
                after = 0
                while rows := self.conn.execute(
                        f"SELECT {columns} FROM entries WHERE rowid>? ORDER BY rowid LIMIT ?",
                        [after, batch]).fetchall():
                    yield [doc_from_row(row) for row in rows]
                    after = rows[-1][0]
                return
            wanted = sorted(set(rowids))
            for start in range(0, len(wanted), batch):
                chunk = wanted[start:start + batch]
                found: list[DocRow] = []
                for sub in range(0, len(chunk), 500):
                    part = chunk[sub:sub + 500]
                    marks = ", ".join("?" for _ in part)
                    found += [doc_from_row(row) for row in self.conn.execute(
                        f"SELECT {columns} FROM entries WHERE rowid IN ({marks}) ORDER BY rowid",
                        part)]
                if found:
                    yield found
        except sqlite3.Error as exc:
            raise store_error(self.path, exc, LOGBOOK_HINT) from exc

    @translating
    def live_rowids(self) -> list[int]:
        return [row[0] for row in self.conn.execute("SELECT rowid FROM entries ORDER BY rowid")]

    @translating
    def changes_since(self, seq: int) -> Changes:
        """Rows added and removed after change ``seq`` (a row added and removed in that
        span is in neither list)."""
        return fold_changes(self.conn.execute(
            "SELECT seq, rowid, op FROM changes WHERE seq>? ORDER BY seq", [seq]), seq)

    @translating
    def last_change(self) -> int:
        row = self.conn.execute("SELECT max(seq) FROM changes").fetchone()
        return int(row[0] or 0)

    @translating
    def phrase_rowids(self, phrase: str, rowids: Sequence[int]) -> set[int]:
        """Which of ``rowids`` hold ``phrase`` (its words in order), by the FTS5 index."""
        words = " ".join(phrase.replace('"', " ").split())
        if not words or not rowids:
            return set()
        query = f'"{words}"'  # an FTS5 phrase: these tokens, adjacent and in order
        found: set[int] = set()
        for start in range(0, len(rowids), 500):
            chunk = list(rowids[start:start + 500])
            marks = ", ".join("?" for _ in chunk)
            found.update(row[0] for row in self.conn.execute(
                f"SELECT rowid FROM entries_fts WHERE entries_fts MATCH ? AND rowid IN ({marks})",
                [query, *chunk]))
        return found

    @translating
    def high_water(self, source: str) -> HighWater | None:
        return self._high_water(self.conn, source)

    @staticmethod
    def _high_water(conn: sqlite3.Connection, source: str) -> HighWater | None:
        return high_water_of(conn.execute("SELECT high_water_ts, high_water_id FROM sources "
                                          "WHERE source=?", [source]).fetchone())

    @translating
    def sources(self) -> list[SourceState]:
        return [source_state(row) for row in self.conn.execute(
            "SELECT source, adapter, location, high_water_ts, high_water_id, last_ingest, "
            "entries FROM sources ORDER BY source")]
