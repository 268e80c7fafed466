"""The logbook store on PostgreSQL: the database ``store.url`` names, shared by every
worker, beside the run store's tables.

The same contract as :class:`~osprey_core.logbook.store.SQLiteLogbook`, row for row: first-
class columns, rowids that are never reused, an edit as a delete and an insert, a change
log (deletes logged by a trigger) that the search arms follow, high-water marks per
source. Each entry also carries ``terms``, its search terms as a ``tsvector`` written in
the same statement as the entry (see :mod:`~osprey_core.logbook.pg_terms`), which the
keyword arm queries. Every write takes one advisory lock, so rowids and change numbers
are handed out, and committed, in order: a reader that has seen change N has seen every
change before it.

Connections, the pool and errors are the run store's
(:class:`~osprey_core.stores.postgres.PostgresRunStore`, without its tables): an
unreachable server is a :class:`~osprey_core.store_errors.StoreUnavailableError` naming
host and port, and the next call after the server is back works again.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

from osprey_core.logbook.models import LogEntry
from osprey_core.logbook.pg_terms import phrase_query, tsvector_text
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
from osprey_core.logbook.storage import (
    Changes,
    DocRow,
    HighWater,
    SourceState,
    UpsertCounts,
)
from osprey_core.logbook.tokenize import tokens

if TYPE_CHECKING:
    import psycopg

    from osprey_core.logbook.indexes import PostgresIndexes

#: Taken by every write, so rowids and change numbers are committed in order.
WRITE_LOCK = "SELECT pg_advisory_xact_lock(hashtext('osprey logbook writes'))"
_DOC_COLUMNS = "rowid, source, logbook, author, title, text, tags, ts"


class PostgresLogbook:
    """The logbook's entries, change log and sources in a PostgreSQL database."""

    def __init__(self, url: str, **options: Any) -> None:
        """Connect (``options`` as the run store takes them) and migrate the logbook's
        tables."""
        from osprey_core.stores.postgres import PostgresRunStore
        from osprey_core.stores.postgres_schema import migrate_part

        self.url = url
        self._owned = True
        self.db = PostgresRunStore(url, migrate=False, **options)
        #: Where the entries are, for messages: the URL without its password.
        self.path = str(self.db.path)
        try:
            with self.connection() as conn:
                migrate_part(conn, "logbook", self.path)
        except BaseException:
            self.db.close()
            raise

    def close(self) -> None:
        if self._owned:
            self.db.close()

    def borrowed(self) -> PostgresLogbook:
        """This store for one caller: the same pool, left open by the caller's close
        (the process keeps the store, see :mod:`osprey_core.stores.kept`)."""
        twin = copy.copy(self)
        twin._owned = False
        return twin

    def search_indexes(self) -> PostgresIndexes:
        """The search arms over this database (keyword by its text search, vectors in it
        ranked in this process)."""
        from osprey_core.logbook.indexes import PostgresIndexes

        return PostgresIndexes(self)

    @property
    def schema_version(self) -> int:
        return int(self.one("SELECT coalesce(max(version), 0) FROM part_schema_version "
                             "WHERE part = 'logbook'"))

    # -- connections ---------------------------------------------------------------------

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection (autocommit); psycopg errors become store errors."""
        import psycopg

        with self.db.borrow() as conn:
            try:
                yield conn
            except psycopg.Error as exc:
                raise self.db.error(exc) from exc

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Connection[Any]]:
        """One write transaction, holding the logbook's write lock."""
        with self.connection() as conn, conn.transaction():
            conn.execute(WRITE_LOCK)
            yield conn

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self.connection() as conn:
            return conn.execute(sql, params).fetchall()

    def one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.rows(sql, params)[0][0]

    # -- writing ------------------------------------------------------------------------

    def upsert(self, entries: Sequence[LogEntry]) -> UpsertCounts:
        """Add new entries and replace changed ones, in one transaction (the last version
        of an id in the batch wins; an unchanged content hash leaves the entry alone)."""
        latest = {entry.id: entry for entry in entries}
        if not latest:
            return UpsertCounts()
        now = time.time()
        with self.transaction() as conn:
            plan = plan_upsert(latest, self._known(conn, list(latest)), now)
            replaced = plan.replaced
            if replaced:
                conn.execute("DELETE FROM logbook_entries WHERE rowid = ANY(%s)", [replaced])
            base = conn.execute(
                "SELECT greatest((SELECT max(rowid) FROM logbook_entries), "
                "(SELECT max(rowid) FROM logbook_changes), 0)").fetchone()[0]  # type: ignore[index]
            with conn.cursor().copy(f"COPY logbook_entries (rowid, {', '.join(COLUMNS)}, "
                                    "terms) FROM STDIN") as copy:
                for offset, (row, entry) in enumerate(zip(plan.rows, plan.entries,
                                                          strict=True), 1):
                    copy.write_row((base + offset, *row,
                                    tsvector_text(entry.title, entry.text)))
            tag_rows = list(dict.fromkeys((base + offset, tag.casefold())
                                          for offset, entry in enumerate(plan.entries, 1)
                                          for tag in entry.tags))
            if tag_rows:
                with conn.cursor().copy("COPY logbook_entry_tags (rowid, tag) FROM STDIN"
                                        ) as copy:
                    for row in tag_rows:
                        copy.write_row(row)
            conn.execute("INSERT INTO logbook_changes (rowid, op) SELECT rowid, 'add' FROM "
                         "logbook_entries WHERE rowid > %s ORDER BY rowid", [base])
        return UpsertCounts(len(plan.rows) - len(replaced), len(replaced), plan.unchanged)

    @staticmethod
    def _known(conn: psycopg.Connection[Any], ids: list[str]
               ) -> dict[str, tuple[int, str, int]]:
        return {entry_id: (rowid, digest, version) for entry_id, rowid, digest, version in
                conn.execute("SELECT id, rowid, content_hash, version FROM logbook_entries "
                             "WHERE id = ANY(%s)", [ids])}

    def delete(self, ids: Sequence[str]) -> int:
        with self.transaction() as conn:
            return conn.execute("DELETE FROM logbook_entries WHERE id = ANY(%s)",
                                [list(ids)]).rowcount

    def purge(self, *, source: str | None = None, before: datetime | None = None) -> int:
        """Delete every entry (of ``source``, older than ``before``); returns how many."""
        where, params = purge_where(source, before, "%s")
        with self.transaction() as conn:
            removed = conn.execute(f"DELETE FROM logbook_entries {where}",
                                   params).rowcount
            if source is not None and before is None:
                conn.execute("DELETE FROM logbook_sources WHERE source = %s", [source])
            elif source is None and before is None:
                conn.execute("DELETE FROM logbook_sources")
            return removed

    def record_ingest(self, source: str, adapter: str, location: str,
                      high_water: HighWater | None) -> None:
        """Remember where ``source`` was read up to (only ever forward)."""
        with self.transaction() as conn:
            count = conn.execute("SELECT count(*) FROM logbook_entries WHERE source = %s",
                                 [source]).fetchone()[0]  # type: ignore[index]
            conn.execute(
                "INSERT INTO logbook_sources VALUES (%s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (source) DO UPDATE SET adapter = excluded.adapter, "
                "location = excluded.location, high_water_ts = excluded.high_water_ts, "
                "high_water_id = excluded.high_water_id, last_ingest = excluded.last_ingest, "
                "entries = excluded.entries",
                source_values(source, adapter, location, self._high_water(conn, source),
                              high_water, count))

    # -- reading ------------------------------------------------------------------------

    def get(self, ids: Sequence[str]) -> list[LogEntry]:
        """The entries with these ids, in the order asked (unknown ids are left out)."""
        found = {entry.id: entry for entry in map(entry_from_row, self.rows(
            f"SELECT {', '.join(COLUMNS)} FROM logbook_entries WHERE id = ANY(%s)",
            [list(ids)]))}
        return [found[entry_id] for entry_id in ids if entry_id in found]

    def by_rowids(self, rowids: Sequence[int]) -> dict[int, LogEntry]:
        return {rowid: entry_from_row(row) for rowid, *row in self.rows(
            f"SELECT rowid, {', '.join(COLUMNS)} FROM logbook_entries WHERE rowid = ANY(%s)",
            [list(rowids)])}

    def rowids(self, ids: Sequence[str]) -> dict[str, int]:
        return dict(self.rows("SELECT id, rowid FROM logbook_entries WHERE id = ANY(%s)",
                               [list(ids)]))

    def count(self, source: str | None = None) -> int:
        if source is None:
            return int(self.one("SELECT count(*) FROM logbook_entries"))
        return int(self.one("SELECT count(*) FROM logbook_entries WHERE source = %s",
                             [source]))

    def docs(self, rowids: Iterable[int] | None = None, *,
             batch: int = 5000) -> Iterator[list[DocRow]]:
        """Rows for index builders, in batches: all of them (by rowid), or ``rowids``."""
        if rowids is None:
            after = 0
            while rows := self.rows(f"SELECT {_DOC_COLUMNS} FROM logbook_entries WHERE "
                                     "rowid > %s ORDER BY rowid LIMIT %s", [after, batch]):
                yield [doc_from_row(row) for row in rows]
                after = rows[-1][0]
            return
        wanted = sorted(set(rowids))
        for start in range(0, len(wanted), batch):
            found = self.rows(f"SELECT {_DOC_COLUMNS} FROM logbook_entries WHERE "
                               "rowid = ANY(%s) ORDER BY rowid", [wanted[start:start + batch]])
            if found:
                yield [doc_from_row(row) for row in found]

    def live_rowids(self) -> list[int]:
        return [row[0] for row in self.rows("SELECT rowid FROM logbook_entries ORDER BY rowid")]

    def changes_since(self, seq: int) -> Changes:
        """Rows added and removed after change ``seq`` (a row added and removed in that
        span is in neither list)."""
        return fold_changes(self.rows("SELECT seq, rowid, op FROM logbook_changes "
                                      "WHERE seq > %s ORDER BY seq", [seq]), seq)

    def last_change(self) -> int:
        return int(self.one("SELECT coalesce(max(seq), 0) FROM logbook_changes"))

    def phrase_rowids(self, phrase: str, rowids: Sequence[int]) -> set[int]:
        """Which of ``rowids`` hold ``phrase`` (its words in order), by the text search."""
        words = [part for token in tokens(phrase) for part in token.parts]
        if not words or not rowids:
            return set()
        return {row[0] for row in self.rows(
            "SELECT rowid FROM logbook_entries WHERE terms @@ %s::tsquery AND rowid = ANY(%s)",
            [phrase_query(words), list(rowids)])}

    def high_water(self, source: str) -> HighWater | None:
        with self.connection() as conn:
            return self._high_water(conn, source)

    @staticmethod
    def _high_water(conn: psycopg.Connection[Any], source: str) -> HighWater | None:
        return high_water_of(conn.execute("SELECT high_water_ts, high_water_id FROM "
                                          "logbook_sources WHERE source = %s",
                                          [source]).fetchone())

    def sources(self) -> list[SourceState]:
        return [source_state(row) for row in self.rows(
            "SELECT source, adapter, location, high_water_ts, high_water_id, last_ingest, "
            "entries FROM logbook_sources ORDER BY source")]
