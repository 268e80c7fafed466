"""A user's memory file on disk: its path, the lock that serialises changes, reading with
every entry verified (lines seen before are not checked again), atomic writes, and the copy
kept aside before a repair."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from osprey_core.memory.errors import MemoryCorruptError, MemoryStorageError, MemoryStoreError
from osprey_core.memory.models import (
    FORMAT,
    LEGACY_VERSION,
    VERSION,
    EntryProblem,
    MemoryEntry,
    entry_line,
    read_entry,
    read_line,
)
from osprey_core.memory.naming import encode_user
from osprey_core.memory.operations import FILE_KEYS, LoadedFile, MemoryOperations
from osprey_core.settings import MemorySettings

#: Seconds a writer waits for another process's lock on the same user's memory.
LOCK_TIMEOUT = 30.0

SUFFIX = ".json"
#: The action a failed write names: "cannot save memory to <file>: ...".
_SAVE = "save memory to"


class UserFiles(MemoryOperations):
    """The files of every user's memory under one osprey home."""

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


    def _change[T](self, user: str, change: Callable[[LoadedFile], T], *,
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

    def _load(self, user: str) -> LoadedFile:
        path = self.path_for(user)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return LoadedFile(path, [], 0)
        except OSError as exc:
            raise MemoryStorageError("read memory from", path, exc) from None
        return LoadedFile(path, self._parse(path, user, raw), len(raw))

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
        if set(data) != FILE_KEYS:
            raise corrupt(f"unexpected keys {sorted(set(data) ^ FILE_KEYS)}")
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
        data = file_text(user, lines).encode("utf-8")
        if old_size is not None:
            self._check_size(user, len(data), old_size)
        _replace(path, data, action)
        self._lines[path] = dict(zip(lines, entries, strict=True))



def file_text(user: str, lines: list[str]) -> str:
    """A memory file holding ``lines`` (each an :func:`entry_line`)."""
    if not lines:
        return f"{_header(user)}\n]}}\n"
    return "\n".join([_header(user), ",\n".join(lines), "]}", ""])


def _header(user: str, version: int = VERSION) -> str:
    """The first line of a memory file (``"entries"`` follow, one per line)."""
    prefix = json.dumps({"format": FORMAT, "version": version, "user": user},
                        ensure_ascii=False)
    return f"{prefix[:-1]}, \"entries\": ["




def set_aside(path: Path) -> Path:
    """A byte-for-byte copy of ``path`` next to it, named ``<name>.corrupt-<UTC time>``.
    The directory is synced by the write that follows."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
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
