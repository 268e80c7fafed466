"""What a user-memory store offers, whatever keeps the entries: the contract the command
line, the HTTP service and the memory capabilities are written against.

Two engines implement it: :class:`osprey_core.memory.store.MemoryStore` (one JSON file per
user under the osprey home, the default) and
:class:`osprey_core.memory.postgres.PostgresMemoryStore` (a table in the PostgreSQL database
``store.url`` names). :func:`osprey_core.memory.factory.open_memory_store` picks one. The
same test suites run against both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from osprey_core.memory.models import MemoryEntry
    from osprey_core.memory.operations import ImportReport, SearchHit
    from osprey_core.memory.repair import RepairReport
    from osprey_core.settings import MemorySettings


@runtime_checkable
class MemoryBackend(Protocol):
    """Every user's memories. Each refusal is a ``MemoryStoreError`` (or, for a database
    that cannot be reached, a ``StoreUnavailableError``); nothing is written then."""

    settings: MemorySettings

    def exists(self, user: str) -> bool:
        """Whether ``user`` has any memory."""
        ...

    def entries(self, user: str) -> list[MemoryEntry]:
        """Every entry, oldest first."""
        ...

    def get(self, user: str, entry_id: str) -> MemoryEntry: ...

    def search(self, user: str, query: str, limit: int | None = None) -> list[SearchHit]:
        """The relevant entries, best first (BM25, then substring matches)."""
        ...

    def recent(self, user: str, limit: int | None = None) -> list[MemoryEntry]: ...

    def export(self, user: str) -> dict[str, Any]: ...

    def add(self, user: str, text: str, tags: Sequence[str] = (), *,
            source: str = "cli") -> MemoryEntry: ...

    def update(self, user: str, entry_id: str, *, text: str | None = None,
               tags: Sequence[str] | None = None) -> MemoryEntry: ...

    def delete(self, user: str, entry_id: str) -> MemoryEntry: ...

    def import_entries(self, user: str, document: Any) -> ImportReport: ...

    def repair(self, user: str) -> RepairReport: ...

    def checked_text(self, text: Any) -> str:
        """``text`` as it would be saved, or the error a save of it would raise."""
        ...
