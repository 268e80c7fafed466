"""User memory in the PostgreSQL database ``store.url`` names, shared by every worker.

One row per entry in ``memory_entries`` (created by the ``memory`` part's migrations in
:mod:`osprey_core.stores.postgres_schema`, applied when the store connects and by
``osprey store migrate``), read in insertion order. Everything else is the file store's
logic (:class:`~osprey_core.memory.operations.MemoryOperations`): the same validation, caps,
ids, search and import merge. What the engine gives:

* a change runs in one transaction holding a per-user advisory lock, so two workers adding
  at once take turns: the second sees the first's entry, the entry cap holds and nothing is
  lost;
* ``max_user_bytes`` counts the entries as the memory file would hold them, so a cap means
  the same on both engines and an export always fits a file store;
* the database keeps the data whole (no checksums, no salvage): ``repair`` has nothing to do;
* connections, the pool, errors and recovery after an outage are the run store's
  (:class:`~osprey_core.stores.postgres.PostgresRunStore`): an unreachable server is a
  ``StoreUnavailableError`` naming host and port, nothing is half-written and nothing falls
  back to files. PostgreSQL text cannot hold NUL characters, so those are refused.
"""

from __future__ import annotations

import copy
import functools
import json
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from osprey_core.memory.errors import InvalidMemoryError, InvalidUserError, MemoryStoreError
from osprey_core.memory.files import file_text
from osprey_core.memory.models import MemoryEntry, entry_line, first_error
from osprey_core.memory.naming import encode_user
from osprey_core.memory.operations import LoadedFile, MemoryOperations
from osprey_core.memory.repair import RepairReport
from osprey_core.settings import MemorySettings
from osprey_core.stores.postgres_schema import migrate_part

if TYPE_CHECKING:
    from osprey_core.stores.postgres import PostgresRunStore

_COLUMNS = "id, text, tags, created_at, updated_at, source"
#: Times read as ISO text in SQL: much cheaper than a datetime per value, converted back.
_ISO = """to_char({} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"""
_SELECT = (f"SELECT id, text, tags, {_ISO.format('created_at')}, {_ISO.format('updated_at')}, "
           "source FROM memory_entries WHERE user_id=? ORDER BY seq")
#: Serialises the writers of one user (the second key is the user's hash).
_LOCK = "SELECT pg_advisory_xact_lock(hashtext('osprey memory'), hashtext(?))"
_INSERT = (f"INSERT INTO memory_entries (user_id, {_COLUMNS}) "
           "VALUES (?, ?, ?, ?::jsonb, ?, ?, ?)")
_UPDATE = ("UPDATE memory_entries SET text=?, tags=?::jsonb, created_at=?, updated_at=?, "
           "source=? WHERE user_id=? AND id=?")
_DELETE = "DELETE FROM memory_entries WHERE user_id=? AND id=?"


class PostgresMemoryStore(MemoryOperations):
    """Every user's memories in one PostgreSQL database."""

    def __init__(self, database: PostgresRunStore, settings: MemorySettings | None = None,
                 *, owned: bool = False) -> None:
        """Use ``database``'s connections (``owned``: close them with this store) and
        bring the memory table up to date."""
        import psycopg

        self.db = database
        self.settings = settings or MemorySettings()
        self.where = str(database.path)
        self._owned = owned
        with database.borrow() as conn:
            try:
                migrate_part(conn, "memory", self.where)
            except psycopg.Error as exc:
                raise database.error(exc) from exc

    @classmethod
    def connect(cls, url: str, settings: MemorySettings | None = None,
                **options: Any) -> PostgresMemoryStore:
        """A store with a connection pool of its own (closed by :meth:`close`);
        ``options`` as :func:`~osprey_core.stores.factory.open_url` takes them."""
        from osprey_core.stores.factory import open_url

        database: Any = open_url(url, **options)
        try:
            return cls(database, settings, owned=True)
        except BaseException:
            database.close()
            raise

    def using(self, settings: MemorySettings) -> PostgresMemoryStore:
        """The same database with other caps (one pool serves every configuration)."""
        twin = copy.copy(self)
        twin.settings = settings
        twin._owned = False
        return twin

    def close(self) -> None:
        if self._owned:
            self.db.close()

    # -- the engine's part -----------------------------------------------------------------

    def exists(self, user: str) -> bool:
        row = self.db.conn.execute(
            "SELECT EXISTS (SELECT 1 FROM memory_entries WHERE user_id=?)",
            [_checked_user(user)]).fetchone()
        return bool(row[0])

    def repair(self, user: str) -> RepairReport:
        kept = len(self.entries(user))
        return RepairReport(self.where, False, kept, problem=(
            f"the memory of user {user!r} is kept in the PostgreSQL database {self.where}, "
            "which keeps it whole; nothing to repair"))

    def _load(self, user: str) -> LoadedFile:
        return self._read(self.db, user)

    def _change[T](self, user: str, change: Callable[[LoadedFile], T], *,
                   capped: bool = True) -> T:
        user = _checked_user(user)
        with self.db.transaction() as tx:
            tx.conn.execute(_LOCK, [user])
            loaded = self._read(tx, user)
            before = {entry.id: entry for entry in loaded.entries}
            before_entries = list(loaded.entries)
            result = change(loaded)
            size = _file_size(user, loaded.entries) if capped else 0
            if size > self.settings.max_user_bytes:  # else nothing to compare
                self._check_size(user, size, _file_size(user, before_entries))
            _write(tx, user, before, loaded.entries)
        return result

    def _read(self, database: Any, user: str) -> LoadedFile:
        rows = database.conn.execute(_SELECT, [_checked_user(user)]).fetchall()
        entries = []
        for row in rows:
            try:
                entries.append(_entry(tuple(row)))
            except ValidationError as exc:
                raise MemoryStoreError(
                    f"the memory {row[0]!r} of user {user!r} in {self.where} is not a valid "
                    f"entry ({first_error(exc)}); it was changed outside osprey: fix or delete "
                    "that row of memory_entries") from None
        return LoadedFile(self.where, entries, 0)


def _checked_user(user: str) -> str:
    """The user id if a file store would take it too, and PostgreSQL can hold it."""
    encode_user(user)  # refuses an empty id or one that is not valid Unicode
    if "\x00" in user:
        raise InvalidUserError(f"user id {user!r} holds a NUL character, which PostgreSQL "
                               "cannot store")
    return user


@functools.lru_cache(maxsize=65536)
def _entry(row: tuple[str, ...]) -> MemoryEntry:
    """A row as an entry (validated once per distinct row: every change reads them all)."""
    entry_id, text, tags, created, updated, source = row
    return MemoryEntry(id=entry_id, text=text, tags=json.loads(tags), created_at=created,
                       updated_at=updated, source=source)


@functools.lru_cache(maxsize=65536)
def _line_bytes(entry: MemoryEntry) -> int:
    return len(entry_line(entry).encode("utf-8"))


def _file_size(user: str, entries: Sequence[MemoryEntry]) -> int:
    """The size of ``user``'s memory file holding ``entries``: its frame, each entry's line
    and the ``,\n`` between them."""
    frame = len(file_text(user, []).encode("utf-8"))
    return frame + sum(_line_bytes(entry) + 2 for entry in entries) - (1 if entries else 0)


def _row(entry: MemoryEntry) -> list[Any]:
    """The entry's values after the key; NUL characters are refused (text cannot hold
    them)."""
    values = [entry.text, json.dumps(list(entry.tags), ensure_ascii=False),
              entry.created_at, entry.updated_at, entry.source]
    if any("\x00" in value for value in (entry.text, entry.source, *entry.tags)):
        raise InvalidMemoryError(f"memory {entry.id} holds a NUL character, which PostgreSQL "
                                 "cannot store")
    return values


def _write(database: Any, user: str, before: dict[str, MemoryEntry],
           after: Iterable[MemoryEntry]) -> None:
    """Turn ``before`` into ``after``: deletes, in-place updates (the entry keeps its
    place) and inserts in order (new entries go last)."""
    after = list(after)
    kept = {entry.id for entry in after}
    conn = database.conn
    gone = [[user, entry_id] for entry_id in before if entry_id not in kept]
    changed = [[*_row(entry), user, entry.id] for entry in after
               if entry.id in before and before[entry.id] != entry]
    for statement, rows in ((_DELETE, gone), (_UPDATE, changed)):
        if rows:
            conn.executemany(statement, rows)
    insert_entries(database, user, [entry for entry in after if entry.id not in before])


def insert_entries(database: Any, user: str, entries: Sequence[MemoryEntry]) -> None:
    """Add ``entries`` after ``user``'s others, in order (in ``database``'s transaction)."""
    if entries:
        database.conn.executemany(_INSERT, [[_checked_user(user), entry.id, *_row(entry)]
                                            for entry in entries])
