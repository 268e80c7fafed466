"""Errors of the stores and what they say (the SQLite ones here; PostgreSQL's in
:mod:`osprey_core.stores.postgres`): a damaged file, a disk that refuses, a
lost compare-and-set; the checks that tell a damaged database from a missing one."""

from __future__ import annotations

import functools
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from osprey_core.errors import OspreyError, os_error_text


class StoreError(OspreyError):
    """The store refused an operation (unknown id, lost race, newer schema)."""


class ConflictError(StoreError):
    """A compare-and-set lost: someone else changed the record first."""


class StoreDamagedError(StoreError):
    """The database file is damaged, truncated or not osprey's: osprey refuses to work on
    it (and never replaces it) until it is restored from a backup or moved away."""


class StoreStorageError(StoreError):
    """The disk refused the database (read-only, full, locked, failing)."""


class StoreUnavailableError(StoreStorageError):
    """The database server cannot be reached: nothing was written, and osprey never
    falls back to keeping anything in process memory."""


#: The first 16 bytes of every SQLite database file.
SQLITE_MAGIC = b"SQLite format 3\x00"
#: What to do about a damaged store, said once for every message that needs it.
RESTORE_HINT = ("nothing was changed. Run 'osprey store check' for details; restore a backup "
                "with 'osprey store restore BACKUP', or move the file away to start a new, "
                "empty store")


def check_database_file(path: Path, evidence: Callable[[], Path | None] | None = None,
                        hint: str = RESTORE_HINT) -> None:
    """Refuse, before SQLite touches it, a database file that is empty, truncated or not
    a database, and a missing one whose data evidently existed (its ``-wal`` file, or
    whatever ``evidence`` finds): SQLite would silently create a fresh, empty database
    in its place."""
    try:
        with path.open("rb") as handle:
            header = handle.read(100)
            size = os.fstat(handle.fileno()).st_size
    except FileNotFoundError:
        wal = path.with_name(path.name + "-wal")
        left = wal if wal.exists() else (evidence() if evidence is not None else None)
        if left is not None:
            raise StoreDamagedError(
                f"the store {path} is missing, but {left} is left from it: it was deleted or "
                f"moved, and osprey will not start an empty one in its place; {hint}"
                ) from None
        return
    except OSError as exc:
        raise StoreStorageError(f"cannot read the store {path}: {os_error_text(exc)}") from None
    if size == 0:
        raise StoreDamagedError(f"the store {path} is empty (0 bytes), though an "
                                f"existing store never is; {hint}")
    if not header.startswith(SQLITE_MAGIC) or len(header) < 100:
        raise StoreDamagedError(f"the store {path} is not an SQLite database (its first bytes "
                                f"are {header[:16]!r}); {hint}")
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    if header[24:28] == header[92:96] and pages * page_size > size:
        raise StoreDamagedError(f"the store {path} is truncated: it is {size} bytes but says "
                                f"it holds {pages} pages of {page_size}; {hint}")


def _file_system_state(path: Path) -> str:
    """``read-only``, ``full`` or ``''`` for the file system holding ``path``: SQLite often
    reports either as a bare 'disk I/O error' or 'unable to open database file'."""
    try:
        stats = os.statvfs(path.parent)
    except OSError:
        return ""
    if stats.f_flag & os.ST_RDONLY:
        return "read-only"
    if stats.f_bavail * stats.f_frsize < 64 * 1024:
        return "full"
    return ""


def store_error(path: Path, exc: sqlite3.Error, hint: str = RESTORE_HINT) -> StoreError:
    """An SQLite error as an operator reads it: which file, what is wrong, what to do."""
    text = str(exc)
    lowered = text.lower()
    state = _file_system_state(path)
    if state == "read-only":
        lowered += " read-only"
    elif state == "full":
        lowered += " full"
    if any(word in lowered for word in ("malformed", "not a database", "encrypted")):
        return StoreDamagedError(f"the store {path} is damaged ({text}); {hint}")
    if "readonly" in lowered or "read-only" in lowered:
        return StoreStorageError(f"cannot write the store {path}: it is read-only ({text}); "
                                 "nothing was changed. Check the file system and the "
                                 "permissions of its directory (the store needs to write "
                                 "beside the file even to read it)")
    if "full" in lowered:
        return StoreStorageError(f"cannot write the store {path}: the disk is full ({text}); "
                                 "nothing was changed. Free some space and try again")
    if "unable to open" in lowered:
        return StoreStorageError(f"cannot open the store {path} ({text}): check that its "
                                 "directory exists and is writable")
    if "locked" in lowered or "busy" in lowered:
        return StoreStorageError(f"the store {path} is locked by another process ({text}); "
                                 "nothing was changed. Try again")
    return StoreError(f"the store {path} failed: {text}")


def translating[**P, R](method: Callable[P, R]) -> Callable[P, R]:
    """Turn any SQLite error inside ``method`` into a :class:`StoreError` naming the file."""

    @functools.wraps(method)
    def translated(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except sqlite3.Error as exc:
            store: Any = args[0]
            raise store_error(store.path, exc, getattr(store, "damage_hint", RESTORE_HINT)
                              ) from exc

    return translated
