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
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from osprey_core.memory.errors import (
    InvalidMemoryError,
    MemoryCorruptError,
    MemoryLimitError,
    MemoryNotFoundError,
    MemoryStorageError,
    MemoryStoreError,
)
from osprey_core.memory.files import FILE_KEYS, LoadedFile, UserFiles, set_aside
from osprey_core.memory.models import (
    EXPORT_VERSION,
    FORMAT,
    VERSION,
    EntryProblem,
    MemoryEntry,
    clean_tags,
    clean_text,
    read_entry,
)
from osprey_core.memory.repair import DroppedLine, UnverifiedLine, salvage
from osprey_core.memory.search import rank

#: What an export holds: the file's keys and when it was made.
_EXPORT_KEYS = FILE_KEYS | {"exported_at"}


@dataclass(frozen=True, slots=True)
class SearchHit:
    entry: MemoryEntry
    score: float

    def to_json(self) -> dict[str, Any]:
        return {**self.entry.to_json(), "score": round(self.score, 4)}


@dataclass(frozen=True, slots=True)
class ImportReport:
    added: list[str] = field(default_factory=list)
    #: Incoming id -> new id, for entries whose id was taken by a different entry.
    reassigned: dict[str, str] = field(default_factory=dict)
    #: Entries already present unchanged (importing the same file twice adds nothing).
    unchanged: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"added": self.added, "reassigned": self.reassigned, "unchanged": self.unchanged}


@dataclass(frozen=True, slots=True)
class RepairReport:
    """What a repair kept and dropped: ``framing + kept + len(dropped) == lines``."""

    path: Path
    repaired: bool
    kept: int
    #: Every line that yields no entry, with its reason (all remain in the backup).
    dropped: tuple[DroppedLine, ...] = ()
    #: Kept entries written before checksums, which nothing could verify.
    unverified: tuple[UnverifiedLine, ...] = ()
    #: Lines of the damaged file that held something, and how many of them were its
    #: header and closing line.
    lines: int = 0
    framing: int = 0
    backup: Path | None = None
    problem: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"path": str(self.path), "repaired": self.repaired, "kept": self.kept,
                "dropped": [item.to_json() for item in self.dropped],
                "unverified": [item.to_json() for item in self.unverified],
                "lines": self.lines, "framing": self.framing,
                "backup": self.backup and str(self.backup), "problem": self.problem}

    def describe(self) -> str:
        if not self.repaired:
            return self.problem
        kept = _count(self.kept, "entry was", "entries were")
        dropped = _count(len(self.dropped), "line was", "lines were")
        text = [f"{self.path} was unreadable ({self.problem}). The original is kept byte "
                f"for byte at {self.backup}. Of its {self.lines} non-empty lines, "
                f"{self.framing} framed the file, {kept} salvaged and written back, and "
                f"{dropped} dropped (kept in the backup)"
                + (":" if self.dropped else ".")]
        text += [f"  {item.describe()}" for item in self.dropped]
        if self.unverified:
            lines = ", ".join(f"line {item.line} ({item.id})" for item in self.unverified)
            text.append(f"{_count(len(self.unverified), 'kept entry was', 'kept entries were')} "
                        "written before entries had checksums, so nothing could verify them; "
                        f"compare them with the backup: {lines}.")
        return "\n".join(text)



class MemoryStore(UserFiles):
    """The memories of every user under one osprey home."""

    # -- reading (no lock: writes replace the file atomically) ---------------------------

    def entries(self, user: str) -> list[MemoryEntry]:
        """Every entry of ``user``, oldest first."""
        return self._load(user).entries

    def get(self, user: str, entry_id: str) -> MemoryEntry:
        loaded = self._load(user)
        return loaded.entries[self._index(loaded, user, entry_id)]

    def search(self, user: str, query: str, limit: int | None = None) -> list[SearchHit]:
        """Entries relevant to ``query``, best first (at most ``limit``, default top_k)."""
        hits = rank(self.entries(user), query)
        return [SearchHit(entry, score)
                for entry, score in hits[:limit or self.settings.top_k]]

    def recent(self, user: str, limit: int | None = None) -> list[MemoryEntry]:
        """The most recently updated entries, newest first."""
        entries = list(reversed(self.entries(user)))
        entries.sort(key=lambda entry: entry.updated_at, reverse=True)
        return entries[:limit or self.settings.top_k]

    def export(self, user: str) -> dict[str, Any]:
        """Every entry as a JSON document :meth:`import_entries` accepts."""
        return {"format": FORMAT, "version": EXPORT_VERSION, "user": user,
                "exported_at": _now().isoformat(),
                "entries": [entry.to_json() for entry in self.entries(user)]}

    # -- changing (read-modify-write under the user's lock) ------------------------------

    def add(self, user: str, text: str, tags: Sequence[str] = (), *,
            source: str = "cli") -> MemoryEntry:
        text, tags = self.checked_text(text), checked_tags(tags)

        def change(loaded: LoadedFile) -> MemoryEntry:
            self._check_room(loaded, user, 1)
            now = _now()
            entry = MemoryEntry(id=_new_id(loaded.entries), text=text, tags=tags,
                                created_at=now, updated_at=now, source=source)
            loaded.entries.append(entry)
            return entry

        return self._change(user, change)

    def update(self, user: str, entry_id: str, *, text: str | None = None,
               tags: Sequence[str] | None = None) -> MemoryEntry:
        """Replace the text and/or the tags of one entry."""
        if text is None and tags is None:
            raise InvalidMemoryError("nothing to change: give a new text or new tags")
        changes: dict[str, Any] = {"updated_at": _now()}
        if text is not None:
            changes["text"] = self.checked_text(text)
        if tags is not None:
            changes["tags"] = checked_tags(tags)

        def change(loaded: LoadedFile) -> MemoryEntry:
            index = self._index(loaded, user, entry_id)
            loaded.entries[index] = loaded.entries[index].model_copy(update=changes)
            return loaded.entries[index]

        return self._change(user, change)

    def delete(self, user: str, entry_id: str) -> MemoryEntry:
        """Never refused for size: a file written before checksums grows by them on its
        first rewrite, and deleting must stay possible even then."""
        def change(loaded: LoadedFile) -> MemoryEntry:
            return loaded.entries.pop(self._index(loaded, user, entry_id))

        return self._change(user, change, capped=False)

    def import_entries(self, user: str, document: Any) -> ImportReport:
        """Merge an export into ``user``'s memory; everything is validated first.

        Ids are kept; an id already used by a different entry gets a new one, and an
        entry already present unchanged is not added twice.
        """
        incoming = self._validated_import(document)

        def change(loaded: LoadedFile) -> ImportReport:
            report = ImportReport()
            present = {entry.id: entry for entry in loaded.entries}
            for entry in incoming:
                if present.get(entry.id) == entry:
                    report.unchanged.append(entry.id)
                    continue
                if entry.id in present:
                    new_id = _new_id(present.values())
                    report.reassigned[entry.id] = new_id
                    entry = entry.model_copy(update={"id": new_id})
                present[entry.id] = entry
                loaded.entries.append(entry)
                report.added.append(entry.id)
            self._check_room(loaded, user, 0)
            return report

        return self._change(user, change)

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

    def checked_text(self, text: Any) -> str:
        """``text`` if it is not blank and within ``max_entry_chars``."""
        try:
            text = clean_text(text)
        except ValueError as exc:
            raise InvalidMemoryError(str(exc)) from None
        limit = self.settings.max_entry_chars
        if len(text) > limit:
            raise MemoryLimitError(f"the memory text is {len(text)} characters; the limit is "
                                   f"{limit} (memory.max_entry_chars)")
        return text

    def _check_room(self, loaded: LoadedFile, user: str, adding: int) -> None:
        limit = self.settings.max_entries
        if len(loaded.entries) + adding > limit:
            raise MemoryLimitError(
                f"user {user!r} would have {len(loaded.entries) + adding} memories; the limit "
                f"is {limit} (memory.max_entries). Delete some first.")

    def _index(self, loaded: LoadedFile, user: str, entry_id: str) -> int:
        for index, entry in enumerate(loaded.entries):
            if entry.id == entry_id:
                return index
        raise MemoryNotFoundError(f"user {user!r} has no memory with id {entry_id!r} "
                                  f"(in {loaded.path})")

    def _validated_import(self, document: Any) -> list[MemoryEntry]:
        """The entries of an export, or of a memory file copied from another home (whose
        checksums are then checked)."""
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            raise InvalidMemoryError(f"not an {FORMAT} export (expected a JSON object with "
                                     f"\"format\": \"{FORMAT}\")")
        version = document.get("version")
        if version not in (EXPORT_VERSION, VERSION):
            raise InvalidMemoryError(f"export format version {version!r}; this osprey reads "
                                     f"exports (version {EXPORT_VERSION}) and memory files "
                                     f"(version {VERSION})")
        if unknown := set(document) - _EXPORT_KEYS:
            raise InvalidMemoryError(f"unexpected keys in the export: {sorted(unknown)}")
        items = document.get("entries")
        if not isinstance(items, list):
            raise InvalidMemoryError("the export has no \"entries\" list")
        entries = []
        for number, item in enumerate(items, start=1):
            try:
                entry = read_entry(item, checksum_required=version == VERSION)[0]
                self.checked_text(entry.text)
            except EntryProblem as problem:
                raise InvalidMemoryError(f"entry {number}: {problem}") from None
            except MemoryStoreError as exc:
                raise type(exc)(f"entry {number} ({entry.id}): {exc}") from None
            entries.append(entry)
        return entries


def _count(number: int, one: str, many: str) -> str:
    return f"{number} {one if number == 1 else many}"


def _now() -> datetime:
    return datetime.now(UTC)


def _new_id(taken: Iterable[MemoryEntry]) -> str:
    ids = {entry.id for entry in taken}
    while (candidate := f"mem-{secrets.token_hex(4)}") in ids:
        pass
    return candidate


def checked_tags(tags: Any) -> tuple[str, ...]:
    """Stripped, unique tags (a list or tuple); empty, over-long or comma-holding ones are
    refused."""
    try:
        return clean_tags(tags)
    except ValueError as exc:
        raise InvalidMemoryError(str(exc)) from None


