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
import fcntl
import json
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
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
from osprey_core.memory.models import (
    EXPORT_VERSION,
    FORMAT,
    LEGACY_VERSION,
    VERSION,
    EntryProblem,
    MemoryEntry,
    clean_tags,
    clean_text,
    entry_line,
    read_entry,
    read_line,
)
from osprey_core.memory.naming import encode_user
from osprey_core.memory.repair import DroppedLine, UnverifiedLine, salvage
from osprey_core.memory.search import rank
from osprey_core.settings import MemorySettings

#: Seconds a writer waits for another process's lock on the same user's memory.
LOCK_TIMEOUT = 30.0

SUFFIX = ".json"
_FILE_KEYS = frozenset({"format", "version", "user", "entries"})
_EXPORT_KEYS = _FILE_KEYS | {"exported_at"}
#: The action a failed write names: "cannot save memory to <file>: ...".
_SAVE = "save memory to"


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


@dataclass(slots=True)
class _Loaded:
    path: Path
    entries: list[MemoryEntry]
    size: int


class MemoryStore:
    """The memories of every user under one osprey home."""

    def __init__(self, home: Path, settings: MemorySettings | None = None) -> None:
        self.directory = Path(home) / "memory"
        self.settings = settings or MemorySettings()
        #: Per file, the entry each line of its last seen version holds (see _parse).
        self._lines: dict[Path, dict[str, MemoryEntry]] = {}

    def path_for(self, user: str) -> Path:
        return self.directory / f"{encode_user(user)}{SUFFIX}"

    def exists(self, user: str) -> bool:
        """Whether ``user`` has a memory file (cheap: one ``stat``)."""
        path = self.path_for(user)
        try:
            return path.exists()
        except OSError as exc:
            raise MemoryStorageError("read memory from", path, exc) from None

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

        def change(loaded: _Loaded) -> MemoryEntry:
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

        def change(loaded: _Loaded) -> MemoryEntry:
            index = self._index(loaded, user, entry_id)
            loaded.entries[index] = loaded.entries[index].model_copy(update=changes)
            return loaded.entries[index]

        return self._change(user, change)

    def delete(self, user: str, entry_id: str) -> MemoryEntry:
        """Never refused for size: a file written before checksums grows by them on its
        first rewrite, and deleting must stay possible even then."""
        def change(loaded: _Loaded) -> MemoryEntry:
            return loaded.entries.pop(self._index(loaded, user, entry_id))

        return self._change(user, change, capped=False)

    def import_entries(self, user: str, document: Any) -> ImportReport:
        """Merge an export into ``user``'s memory; everything is validated first.

        Ids are kept; an id already used by a different entry gets a new one, and an
        entry already present unchanged is not added twice.
        """
        incoming = self._validated_import(document)

        def change(loaded: _Loaded) -> ImportReport:
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
            backup = _set_aside(path)
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

    # -- internals -------------------------------------------------------------------------

    def _change[T](self, user: str, change: Callable[[_Loaded], T], *,
                   capped: bool = True) -> T:
        path = self.path_for(user)
        with self._locked(path, _SAVE):
            loaded = self._load(user)
            result = change(loaded)
            self._write(path, user, loaded.entries, old_size=loaded.size if capped else None)
        return result

    @contextlib.contextmanager
    def _locked(self, path: Path, action: str) -> Iterator[None]:
        """An exclusive lock on the user's lock file; the kernel drops it if we die. A
        holder that hangs makes others give up after :data:`LOCK_TIMEOUT` seconds with an
        error, instead of waiting for ever. ``action`` names the operation in errors."""
        lock = path.with_suffix(".lock")
        step = f"creating {self.directory}"
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            step = f"opening the lock file {lock}"
            descriptor = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise MemoryStorageError(action, path, exc, step=step) from None
        try:
            deadline, pause = time.monotonic() + LOCK_TIMEOUT, 0.001
            while True:
                try:
                    fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise MemoryStoreError(
                            f"{lock} has been held by another process for over "
                            f"{LOCK_TIMEOUT:g} s; nothing was changed. Try again, or stop the "
                            f"process that holds it (see `fuser {lock}`)") from None
                    time.sleep(pause)
                    pause = min(pause * 2, 0.05)
                except OSError as exc:  # e.g. no locks on this network file system
                    raise MemoryStorageError(action, path, exc,
                                             step=f"locking {lock}") from None
            yield
        finally:
            os.close(descriptor)

    def _load(self, user: str) -> _Loaded:
        path = self.path_for(user)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return _Loaded(path, [], 0)
        except OSError as exc:
            raise MemoryStorageError("read memory from", path, exc) from None
        return _Loaded(path, self._parse(path, user, raw), len(raw))

    def _parse(self, path: Path, user: str, raw: bytes) -> list[MemoryEntry]:
        """The entries of a file, every one verified (or :class:`MemoryCorruptError`).

        A file in the layout :meth:`_write` produces (one entry per line) is checked line
        by line, and lines verified before in this process are not checked again: a file
        of thousands of entries is rewritten on every change.
        """
        try:
            lines = raw.decode("utf-8").split("\n")
        except UnicodeDecodeError as exc:
            line = raw.count(b"\n", 0, exc.start) + 1
            raise MemoryCorruptError(path, f"line {line}: not UTF-8 text", user) from None
        entries = self._parse_lines(path, lines, user)
        if entries is None:
            entries = self._parse_document(path, raw, user)
            self._lines.pop(path, None)
        if len({entry.id for entry in entries}) != len(entries):
            raise MemoryCorruptError(path, "two entries share an id", user)
        return entries

    def _parse_lines(self, path: Path, lines: list[str],
                     user: str) -> list[MemoryEntry] | None:
        """``None`` if the file is not in the canonical layout."""
        if len(lines) < 3 or lines[-2:] != ["]}", ""]:
            return None
        version = next((version for version in (VERSION, LEGACY_VERSION)
                        if lines[0] == _header(user, version)), None)
        body = lines[1:-2]
        # Every entry line but the last ends with a comma.
        if version is None or not all(line.endswith(",") for line in body[:-1]):
            return None
        known = self._lines.get(path, {})
        verified: dict[str, MemoryEntry] = {}
        entries = []
        for number, line in enumerate(body, start=2):
            item = line.removesuffix(",")
            if (entry := known.get(item)) is None:
                try:
                    entry, checked = read_line(item, checksum_required=version == VERSION)
                except EntryProblem as problem:
                    raise MemoryCorruptError(path, f"line {number}: {problem}", user) from None
            else:
                checked = True
            if checked:  # only verified lines are trusted later without a new check
                verified[item] = entry
            entries.append(entry)
        self._lines[path] = verified
        return entries

    def _parse_document(self, path: Path, raw: bytes, user: str) -> list[MemoryEntry]:
        def corrupt(reason: str) -> MemoryCorruptError:
            return MemoryCorruptError(path, reason, user)

        if not raw.strip():
            raise corrupt("the file is empty")
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError) as exc:
            raise corrupt(f"not valid JSON: {exc}") from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise corrupt(f"not an {FORMAT} file")
        version = data.get("version")
        if version not in (VERSION, LEGACY_VERSION):
            raise corrupt(f"format version {version!r}; this osprey reads versions "
                          f"{LEGACY_VERSION} and {VERSION}")
        if set(data) != _FILE_KEYS:
            raise corrupt(f"unexpected keys {sorted(set(data) ^ _FILE_KEYS)}")
        if data["user"] != user:
            raise corrupt(f"it holds the memory of user {data['user']!r}")
        if not isinstance(data["entries"], list):
            raise corrupt("\"entries\" is not a list")
        entries = []
        for number, item in enumerate(data["entries"], start=1):
            try:
                entries.append(read_entry(item, checksum_required=version == VERSION)[0])
            except EntryProblem as problem:
                raise corrupt(f"entry {number}: {problem}") from None
        return entries

    def _write(self, path: Path, user: str, entries: list[MemoryEntry],
               old_size: int | None = None, action: str = _SAVE) -> None:
        """Write atomically, one entry per line; growth past ``max_user_bytes`` is refused
        (a file already too big may still shrink; a repair never drops entries for size)."""
        # By identity: the cache keeps these entries alive, so no new entry can reuse an id.
        known = {id(entry): line for line, entry in self._lines.get(path, {}).items()}
        lines = [known.get(id(entry)) or entry_line(entry) for entry in entries]
        text = "\n".join([_header(user), ",\n".join(lines), "]}", ""]) if lines else (
            f"{_header(user)}\n]}}\n")
        data = text.encode("utf-8")
        limit = self.settings.max_user_bytes
        if old_size is not None and len(data) > limit and len(data) > old_size:
            raise MemoryLimitError(
                f"the memory of user {user!r} would grow to {len(data)} bytes; the limit is "
                f"{limit} (memory.max_user_bytes). Delete or shorten some memories first.")
        _replace(path, data, action)
        self._lines[path] = dict(zip(lines, entries, strict=True))

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

    def _check_room(self, loaded: _Loaded, user: str, adding: int) -> None:
        limit = self.settings.max_entries
        if len(loaded.entries) + adding > limit:
            raise MemoryLimitError(
                f"user {user!r} would have {len(loaded.entries) + adding} memories; the limit "
                f"is {limit} (memory.max_entries). Delete some first.")

    def _index(self, loaded: _Loaded, user: str, entry_id: str) -> int:
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


def _header(user: str, version: int = VERSION) -> str:
    """The first line of a memory file (``"entries"`` follow, one per line)."""
    prefix = json.dumps({"format": FORMAT, "version": version, "user": user},
                        ensure_ascii=False)
    return f"{prefix[:-1]}, \"entries\": ["


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


def _set_aside(path: Path) -> Path:
    """A byte-for-byte copy of ``path`` next to it, named ``<name>.corrupt-<UTC time>``.
    The directory is synced by the write that follows."""
    stamp = _now().strftime("%Y%m%dT%H%M%S.%fZ")
    backup = path.with_name(f"{path.name}.corrupt-{stamp}")
    number = 1
    while backup.exists():
        number += 1
        backup = path.with_name(f"{path.name}.corrupt-{stamp}-{number}")
    try:
        os.link(path, backup)  # the same bytes under a second name, instantly
    except OSError:
        try:
            shutil.copy2(path, backup)
            with open(backup, "rb") as handle:
                os.fsync(handle.fileno())
        except OSError as exc:
            with contextlib.suppress(OSError):
                backup.unlink()
            raise MemoryStorageError("repair", path, exc,
                                     step=f"keeping the original as {backup}") from None
    return backup


def _replace(path: Path, data: bytes, action: str) -> None:
    """Put ``data`` at ``path`` through a temp file, fsync, rename and a directory fsync.

    Until the rename, any failure removes the temp file and leaves ``path`` as it was; a
    failed directory fsync after it is reported too (``written``), as the new content
    might not survive a power cut. Each error names the step the disk refused.
    """
    step = f"creating a temporary file in {path.parent}"
    try:
        descriptor, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.",
                                            suffix=".tmp")  # mode 0600
    except OSError as exc:
        raise MemoryStorageError(action, path, exc, step=step) from None
    try:
        try:
            step = f"writing {temp}"
            view = memoryview(data)
            while view:
                view = view[os.write(descriptor, view):]
            step = f"flushing {temp} to disk"
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        step = f"renaming {temp} over it"
        os.replace(temp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        if isinstance(exc, OSError):
            raise MemoryStorageError(action, path, exc, step=step) from None
        raise
    try:
        directory = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
    except OSError as exc:
        raise MemoryStorageError(action, path, exc, step=f"syncing the directory "
                                 f"{path.parent}", written=True) from None
