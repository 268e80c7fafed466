"""What a logbook store is: the protocol every engine (SQLite, PostgreSQL) implements and
the records it answers with."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

from osprey_core.logbook.models import LogEntry


@dataclass(frozen=True, slots=True)
class UpsertCounts:
    added: int = 0
    updated: int = 0
    unchanged: int = 0

    def __add__(self, other: UpsertCounts) -> UpsertCounts:
        return UpsertCounts(self.added + other.added, self.updated + other.updated,
                            self.unchanged + other.unchanged)


@dataclass(frozen=True, slots=True)
class HighWater:
    """The newest entry a source has delivered: ingest resumes from here (minus overlap)."""

    timestamp: datetime
    native_id: str


@dataclass(frozen=True, slots=True)
class SourceState:
    source: str
    adapter: str | None
    location: str | None
    high_water: HighWater | None
    last_ingest: datetime | None
    entries: int


@dataclass(frozen=True, slots=True)
class DocRow:
    """The fields index builders read, without building a validated entry per row."""

    rowid: int
    source: str
    logbook: str | None
    author: str | None
    title: str
    text: str
    tags: tuple[str, ...]
    ts: float


@dataclass(frozen=True, slots=True)
class Changes:
    """Rows added and removed after change ``since``, up to ``last``."""

    last: int
    added: list[int]
    removed: list[int]


class LogbookStore(Protocol):
    """What the logbook needs from a store: :class:`~osprey_core.logbook.store.SQLiteLogbook`
    (a file) or :class:`~osprey_core.logbook.postgres.PostgresLogbook` (a database server),
    with the same semantics. Each also says where its search arms are
    (:class:`~osprey_core.logbook.indexes.IndexedStore`)."""

    @property
    def path(self) -> Path | str:
        """The database file, or the server's URL without its password (for messages)."""

    def upsert(self, entries: Sequence[LogEntry]) -> UpsertCounts: ...
    def get(self, ids: Sequence[str]) -> list[LogEntry]: ...
    def by_rowids(self, rowids: Sequence[int]) -> dict[int, LogEntry]: ...
    def rowids(self, ids: Sequence[str]) -> dict[str, int]: ...
    def count(self, source: str | None = None) -> int: ...
    def docs(self, rowids: Iterable[int] | None = None, *,
             batch: int = 5000) -> Iterator[list[DocRow]]: ...
    def live_rowids(self) -> list[int]: ...
    def changes_since(self, seq: int) -> Changes: ...
    def last_change(self) -> int: ...
    def phrase_rowids(self, phrase: str, rowids: Sequence[int]) -> set[int]: ...
    def delete(self, ids: Sequence[str]) -> int: ...
    def purge(self, *, source: str | None = None, before: datetime | None = None) -> int: ...
    def high_water(self, source: str) -> HighWater | None: ...
    def record_ingest(self, source: str, adapter: str, location: str,
                      high_water: HighWater | None) -> None: ...
    def sources(self) -> list[SourceState]: ...
    def close(self) -> None: ...
