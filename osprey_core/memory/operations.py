"""What every memory store does the same way, whatever keeps the entries: validation, the
caps, ids, search, export and the merge of an import.

An engine supplies three things: :meth:`MemoryOperations._load` (a user's entries, read
consistently), :meth:`MemoryOperations._change` (apply a change to them and keep the result,
atomically, serialised with every other writer of that user) and ``exists``/``repair``. The
file store (:mod:`osprey_core.memory.store`) and the PostgreSQL one
(:mod:`osprey_core.memory.postgres`) therefore refuse the same things with the same errors.
"""

from __future__ import annotations

import secrets
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from osprey_core.memory.errors import (
    InvalidMemoryError,
    MemoryLimitError,
    MemoryNotFoundError,
    MemoryStoreError,
)
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
from osprey_core.memory.repair import RepairReport
from osprey_core.memory.search import rank
from osprey_core.settings import MemorySettings

#: The keys of a memory file (``{"format", "version", "user", "entries"}``).
FILE_KEYS = frozenset({"format", "version", "user", "entries"})
#: What an export holds: the file's keys and when it was made.
_EXPORT_KEYS = FILE_KEYS | {"exported_at"}


@dataclass(slots=True)
class LoadedFile:
    """A user's entries as read, where they are kept (a file, a database) and their size as
    a memory file, for the growth check on write."""

    path: Path | str
    entries: list[MemoryEntry]
    size: int


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


class MemoryOperations(ABC):
    """The memories of every user, on some engine (see the module docstring)."""

    settings: MemorySettings

    @abstractmethod
    def exists(self, user: str) -> bool:
        """Whether ``user`` has any memory (cheap: the provider asks on every request)."""

    @abstractmethod
    def repair(self, user: str) -> RepairReport:
        """Set damaged data aside and keep what verifies (or say there is nothing to do)."""

    @abstractmethod
    def _load(self, user: str) -> LoadedFile:
        """Every entry of ``user``, oldest first, as one consistent read."""

    @abstractmethod
    def _change[T](self, user: str, change: Callable[[LoadedFile], T], *,
                   capped: bool = True) -> T:
        """Run ``change`` on ``user``'s entries (it edits ``entries`` in place) and keep the
        result, with no other writer of ``user`` in between; nothing is kept if it raises.
        ``capped``: refuse growth past ``max_user_bytes``."""

    # -- reading ---------------------------------------------------------------------------

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
                "exported_at": now().isoformat(),
                "entries": [entry.to_json() for entry in self.entries(user)]}

    # -- changing --------------------------------------------------------------------------

    def add(self, user: str, text: str, tags: Sequence[str] = (), *,
            source: str = "cli") -> MemoryEntry:
        text, tags = self.checked_text(text), checked_tags(tags)

        def change(loaded: LoadedFile) -> MemoryEntry:
            self._check_room(loaded, user, 1)
            moment = now()
            entry = MemoryEntry(id=new_id(loaded.entries), text=text, tags=tags,
                                created_at=moment, updated_at=moment, source=source)
            loaded.entries.append(entry)
            return entry

        return self._change(user, change)

    def update(self, user: str, entry_id: str, *, text: str | None = None,
               tags: Sequence[str] | None = None) -> MemoryEntry:
        """Replace the text and/or the tags of one entry."""
        if text is None and tags is None:
            raise InvalidMemoryError("nothing to change: give a new text or new tags")
        changes: dict[str, Any] = {"updated_at": now()}
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
                    fresh = new_id(present.values())
                    report.reassigned[entry.id] = fresh
                    entry = entry.model_copy(update={"id": fresh})
                present[entry.id] = entry
                loaded.entries.append(entry)
                report.added.append(entry.id)
            self._check_room(loaded, user, 0)
            return report

        return self._change(user, change)

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

    def _check_size(self, user: str, size: int, old_size: int) -> None:
        """Growth past ``max_user_bytes`` is refused (a memory already too big may still
        shrink; a repair never drops entries for size)."""
        limit = self.settings.max_user_bytes
        if size > limit and size > old_size:
            raise MemoryLimitError(
                f"the memory of user {user!r} would grow to {size} bytes; the limit is "
                f"{limit} (memory.max_user_bytes). Delete or shorten some memories first.")

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


def now() -> datetime:
    return datetime.now(UTC)


def new_id(taken: Iterable[MemoryEntry]) -> str:
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
