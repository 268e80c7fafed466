"""Per-user memory files under ``<home>/memory/``: locked, atomic, never silently lost.

Each user has one JSON file (``{"format", "version", "user", "entries"}``) named by
:func:`~osprey_core.memory.naming.encode_user`, one entry per line, each with a checksum of
its fields. Every change is a read-modify-write under an exclusive ``flock`` on the user's
lock file, written through a temp file, fsync and a rename, so concurrent processes never
lose each other's entries and readers (who take no lock) always see a whole file. A file
that cannot be read, or holds an entry that fails its checksum, is never overwritten: every
operation on that user raises :class:`MemoryCorruptError` until :meth:`MemoryStore.repair`
keeps the bad file aside and salvages the entries that verify. A disk that refuses a read
or a write raises :class:`MemoryStorageError` naming the file and the cause.
"""


from __future__ import annotations

import contextlib

from osprey_core.memory.errors import MemoryCorruptError, MemoryStorageError
from osprey_core.memory.files import UserFiles, set_aside
from osprey_core.memory.repair import RepairReport, salvage


class MemoryStore(UserFiles):
    """The memories of every user under one osprey home, one file each."""

    def repair(self, user: str) -> RepairReport:
        """Keep an unreadable file aside (``*.corrupt-<time>``), byte for byte, and write
        a valid file holding every entry of it that verifies; if that fails, the damaged
        file stays as it was and no backup is left behind."""
        path = self.path_for(user)
        with self._locked(path, "repair"):
            try:
                raw = path.read_bytes()
            except FileNotFoundError:
                return RepairReport(path, False, 0,
                                    problem=f"user {user!r} has no memory file; nothing to "
                                    "repair")
            except OSError as exc:
                raise MemoryStorageError("repair", path, exc) from None
            try:
                entries = self._parse(path, user, raw)
            except MemoryCorruptError as exc:
                problem = exc.reason
            else:
                return RepairReport(path, False, len(entries),
                                    problem=f"{path} is valid; nothing to repair")
            found = salvage(raw, user)
            backup = set_aside(path)
            try:
                self._write(path, user, found.entries, action="repair")
            except MemoryStorageError as exc:
                if not exc.written:
                    with contextlib.suppress(OSError):
                        backup.unlink()
                raise
        return RepairReport(path, True, len(found.entries), tuple(found.dropped),
                            tuple(found.unverified), found.lines, found.framing, backup,
                            problem)

