"""Moving an installation: bring a store's schema up to date, copy every row of one store
into another (SQLite -> PostgreSQL, or back) and verify the counts. Into PostgreSQL, the
user memory files of the source's home go along (into ``memory_entries``)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from osprey_core.store_errors import StoreError, store_error
from osprey_core.stores.factory import is_postgres, open_url

if TYPE_CHECKING:
    from osprey_core.store import RunStore

#: Every table of the current schema, parents before children, with its columns and the
#: order its rows are read in (the order they were written).
TABLES: dict[str, tuple[str, str]] = {
    "runs": ("id, session, state, created_at, updated_at, data, owner", "created_at, id"),
    "run_plans": ("run_id, sha256, data", "run_id"),
    "run_context": ("run_id, key, data", "rowid"),
    "steps": ("run_id, idx, status, idempotency_key, data", "run_id, idx"),
    "approvals": ("id, run_id, session, status, expires_at, data", "rowid"),
    "audit": ("id, at, action, run_id, approval_id, data", "id"),
    "events": ("id, run_id, at, kind, data", "id"),
    "api_tokens": ("id, name, sha256, roles, created_at, created_by, expires_at, revoked_at, "
                   "last_used_at", "created_at, id"),
}
#: Tables whose ids the target numbers next (after a copy, from the highest copied id).
NUMBERED = ("audit", "events")
BATCH = 1000


@dataclass
class Migration:
    """What ``osprey store migrate`` did."""

    store: str
    before: int
    after: int
    #: The other stores' tables in a PostgreSQL database: part -> (before, after).
    parts: dict[str, tuple[int, int]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"store": self.store, "schema_version_before": self.before,
                "schema_version": self.after,
                "parts": {part: {"schema_version_before": before, "schema_version": after}
                          for part, (before, after) in self.parts.items()}}


@dataclass
class CopyReport:
    """What ``osprey store copy`` copied: rows per table, counted again in the target."""

    source: str
    target: str
    counts: dict[str, int] = field(default_factory=dict)
    #: User memories moved from the source home's files (SQLite -> PostgreSQL only).
    memory_entries: int = 0

    def to_json(self) -> dict[str, Any]:
        return {"from": self.source, "to": self.target, "counts": self.counts,
                "memory_entries": self.memory_entries}


def migrate_store(url: str, **options: Any) -> Migration:
    """Bring the store at ``url`` (``sqlite:PATH`` or ``postgresql://...``) to this
    version's schema; a store newer than this osprey-core is refused, untouched."""
    if is_postgres(url):
        import psycopg

        from osprey_core.stores.postgres import PostgresRunStore
        from osprey_core.stores.postgres_schema import PART_MIGRATIONS, migrate_part

        store = PostgresRunStore(url, migrate=False, **options)
        try:
            before = store.schema_version
            store.migrate()
            with store.borrow(deadline=False) as conn:
                try:
                    parts = {part: migrate_part(conn, part, str(store.path))
                             for part in PART_MIGRATIONS}
                except psycopg.Error as exc:
                    raise store.error(exc) from exc
            return Migration(str(store.path), before, store.schema_version, parts)
        finally:
            store.close()
    from osprey_core.store_maintenance import check_store

    path = _sqlite_path(url)
    before = (check_store(path).schema_version or 0) if path.exists() else 0
    with _opened(url, **options) as store:
        return Migration(str(store.path), before, store.schema_version)


def copy_store(source_url: str, target_url: str, **options: Any) -> CopyReport:
    """Copy every row of the store at ``source_url`` into the empty store at
    ``target_url``, in one transaction of the target, and check each table's count there.
    The source is brought to this version's schema first; a target with anything in it is
    refused (a copy never merges). User memory goes along: from SQLite into PostgreSQL, the
    memory files in the SQLite file's directory are read (every entry verified) before
    anything is written and copied in the same transaction; back, they are written into
    that directory (which must hold none) first and removed if the copy then fails."""
    if source_url.startswith("sqlite:") and not _sqlite_path(source_url).exists():
        raise StoreError(f"there is no store at {_sqlite_path(source_url)} to copy from")
    from osprey_core.memory import copying

    memories, back_home = None, None
    if source_url.startswith("sqlite:") and is_postgres(target_url):
        memories = copying.file_memories(_sqlite_path(source_url).parent)
    elif is_postgres(source_url) and target_url.startswith("sqlite:"):
        back_home = _sqlite_path(target_url).parent
        copying.refuse_existing_files(back_home)
    with _opened(source_url, **options) as source, _opened(target_url, **options) as target:
        report = CopyReport(str(source.path), str(target.path))
        held = {name: count for name, count in _counts(target).items() if count}
        if memories is not None and (present := copying.prepare_target(target)):
            held["memory_entries"] = present
        if held:
            listed = ", ".join(f"{count} {name}" for name, count in held.items())
            raise StoreError(f"will not copy into {target.path}: it is not empty ({listed}); "
                             "copy into a new, empty database")
        written: list[Path] = []
        try:
            if back_home is not None:
                moved = copying.database_memories(source)
                written = copying.write_files(back_home, moved)
                report.memory_entries = sum(len(entries) for entries in moved.values())
            with target.transaction(deadline=False) as tx:  # as long as the copy takes
                for table, (columns, order) in TABLES.items():
                    report.counts[table] = _copy_table(source, tx, table, columns, order)
                expected = dict(report.counts)
                if memories is not None:
                    report.memory_entries = copying.insert_memories(tx, memories)
                    expected["memory_entries"] = report.memory_entries
                if is_postgres(target_url):
                    for table in NUMBERED:
                        tx.conn.execute(
                            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                            f"coalesce(max(id), 1), max(id) IS NOT NULL) FROM {table}")
                _verify(tx, expected, "before commit")
        except BaseException as exc:
            copying.remove_files(written)
            if isinstance(exc, sqlite3.Error):
                raise store_error(Path(str(target.path)), exc) from exc
            raise
        _verify(target, expected, "after commit")
    return report


def _copy_table(source: RunStore, target: RunStore, table: str, columns: str,
                order: str) -> int:
    rows = source.conn.execute(f"SELECT {columns} FROM {table} ORDER BY {order}").fetchall()
    marks = ", ".join("?" for _ in columns.split(","))
    insert = f"INSERT INTO {table} ({columns}) VALUES ({marks})"
    for start in range(0, len(rows), BATCH):
        target.conn.executemany(insert, rows[start:start + BATCH])  # type: ignore[attr-defined]
    return len(rows)


def _counts(store: RunStore, tables: Iterable[str] = TABLES) -> dict[str, int]:
    return {table: int(store.conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
            for table in tables}


def _verify(store: RunStore, expected: dict[str, int], when: str) -> None:
    """Each table holds exactly the rows copied into it (``when``: before or after the
    commit, for the message: a mismatch before it means nothing was written)."""
    found = _counts(store, expected)
    wrong = "; ".join(f"{table} has {found[table]} rows, the source {count}"
                      for table, count in expected.items() if found[table] != count)
    if wrong and when == "before commit":
        raise StoreError(f"the copy into {store.path} does not match its source ({wrong}); "
                         "nothing was committed")
    if wrong:
        raise StoreError(f"the copy into {store.path} was committed, but then {wrong}: "
                         "another process wrote to it; empty it and copy again")


def _sqlite_path(url: str) -> Path:
    return Path(url.removeprefix("sqlite:")).expanduser()


@contextmanager
def _opened(url: str, **options: Any) -> Iterator[RunStore]:
    store = open_url(url, **options)
    try:
        yield store
    finally:
        store.close()
