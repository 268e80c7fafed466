"""Moving an installation's memory files into PostgreSQL (``osprey store copy``).

Every user's file under ``<home>/memory/`` is read as the file store reads it (every entry
verified: a damaged file stops the copy with its error, before anything is committed) and
its entries are inserted, in order, in the copy's transaction of the target.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from osprey_core.memory.errors import MemoryStoreError
from osprey_core.memory.naming import decode_stem
from osprey_core.memory.operations import LoadedFile
from osprey_core.memory.postgres import PostgresMemoryStore, insert_entries
from osprey_core.memory.store import MemoryStore

if TYPE_CHECKING:
    from osprey_core.memory.models import MemoryEntry


def file_memories(home: Path) -> dict[str, list[MemoryEntry]]:
    """Every user's entries in ``home``'s memory files, oldest first."""
    store = MemoryStore(home)
    return {user: store.entries(user) for user in _users(store)}


def _users(store: MemoryStore) -> list[str]:
    """Whose files there are: a name decodes back to its user id; a hashed name (a very
    long id) is read for the id its file records."""
    users = []
    for path in sorted(store.directory.glob("*.json")) if store.directory.exists() else []:
        try:
            user = decode_stem(path.name.removesuffix(".json"))
            if user is None:
                user = json.loads(path.read_bytes())["user"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise MemoryStoreError(f"{path} is not a memory file osprey can read ({exc}); "
                                   "repair it (osprey memory repair) or move it away, then "
                                   "copy again; nothing was copied") from None
        users.append(user)
    return users


def prepare_target(database: Any) -> int:
    """Bring the target's memory table up to date; how many entries it already holds."""
    PostgresMemoryStore(database)
    return count_entries(database)


def count_entries(database: Any) -> int:
    return int(database.conn.execute("SELECT count(*) FROM memory_entries").fetchone()[0])


def insert_memories(database: Any, memories: dict[str, list[MemoryEntry]]) -> int:
    """Insert every user's entries (in ``database``'s open transaction); how many."""
    for user, entries in memories.items():
        insert_entries(database, user, entries)
    return sum(len(entries) for entries in memories.values())


def database_memories(database: Any) -> dict[str, list[MemoryEntry]]:
    """Every user's entries in a PostgreSQL store, oldest first."""
    store = PostgresMemoryStore(database)
    users = database.conn.execute("SELECT DISTINCT user_id FROM memory_entries "
                                  "ORDER BY user_id").fetchall()
    return {user: store.entries(user) for (user,) in users}


def refuse_existing_files(home: Path) -> None:
    """A copy never merges: refuse a home that holds memory files already."""
    directory = MemoryStore(home).directory
    if directory.exists() and any(directory.glob("*.json")):
        raise MemoryStoreError(f"will not copy user memory into {directory}: it holds memory "
                               "files already; copy into a new, empty home")


def write_files(home: Path, memories: dict[str, list[MemoryEntry]]) -> list[Path]:
    """Write each user's memory file in ``home`` (each atomically, with checksums, never
    refused for size: the entries were accepted where they come from); the files written."""
    store = MemoryStore(home)
    written = []
    for user, entries in memories.items():
        def fill(loaded: LoadedFile, entries: list[MemoryEntry] = entries) -> None:
            loaded.entries.extend(entries)

        store._change(user, fill, capped=False)
        written.append(store.path_for(user))
    return written


def remove_files(paths: list[Path]) -> None:
    """Undo :func:`write_files` (a copy that failed later leaves no memory behind)."""
    for path in paths:
        for leftover in (path, path.with_suffix(".lock")):
            leftover.unlink(missing_ok=True)
