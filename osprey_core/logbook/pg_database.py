"""What the PostgreSQL search arms need of the logbook's store (a protocol, so that they
and the store do not import each other)."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Protocol

from osprey_core.logbook.storage import LogbookStore

if TYPE_CHECKING:
    import psycopg


class LogbookDatabase(LogbookStore, Protocol):
    """:class:`~osprey_core.logbook.postgres.PostgresLogbook` as its search arms see it."""

    url: str

    @property
    def path(self) -> str: ...

    def connection(self) -> AbstractContextManager[psycopg.Connection[Any]]: ...
    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]: ...
    def one(self, sql: str, params: Sequence[Any] = ()) -> Any: ...
