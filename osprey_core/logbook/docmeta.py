"""Per-entry metadata as arrays indexed by rowid, for filters applied inside a ranking.

Every search arm turns filters into one boolean array over rowids (:meth:`DocMeta.mask`)
and ranks only what it allows, so no hit ever violates a filter, and a filter costs the
same whether it keeps one entry or all of them. The arrays follow the store's change log
(:meth:`DocMeta.refresh`) and live in files beside the database, so a new process starts
by memory-mapping them instead of reading every row.

:class:`IndexFolder` is the file discipline the search indexes share: files are written
once under new names, then a manifest naming them replaces the old one, so a reader sees
a whole generation or the one before, never a mix; files no manifest names are removed.
"""

from __future__ import annotations

import fcntl
import json
import secrets
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from osprey_core.errors import StorageError
from osprey_core.fileio import atomic_write_text
from osprey_core.logbook.models import Filters
from osprey_core.logbook.query import And, Field, Node, Not, Or, ParsedQuery

if TYPE_CHECKING:
    from osprey_core.logbook.storage import DocRow, LogbookStore

#: Bumped when the files of an index change shape; an index in another format is rebuilt.
META_FORMAT = 1
#: Rows read from the store per batch while catching up.
BATCH = 5000


class IndexFolder:
    """One index's folder: ``manifest.json`` names the current files and is written last."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> dict[str, Any] | None:
        """The manifest, or None when there is none or it cannot be read (rebuild)."""
        try:
            data = json.loads((self.path / "manifest.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def write_array(self, stem: str, array: np.ndarray) -> str:
        """Write ``array`` under a new name (never over a file a reader may map)."""
        name = f"{stem}-{secrets.token_hex(4)}.npy"
        path = self.path / name
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            with open(path, "wb") as handle:
                np.save(handle, np.ascontiguousarray(array), allow_pickle=False)
        except OSError as exc:
            path.unlink(missing_ok=True)
            raise StorageError("write the search index file", path, exc) from exc
        return name

    def load_array(self, name: str) -> np.ndarray:
        """A file of the current generation, memory-mapped read-only."""
        return np.load(self.path / name, mmap_mode="r", allow_pickle=False)

    def commit(self, manifest: dict[str, Any], files: Iterable[str]) -> None:
        """Make ``manifest`` current and remove the files it no longer names."""
        keep = set(files)
        atomic_write_text(self.path / "manifest.json",
                          json.dumps({**manifest, "files": sorted(keep)}), durable=False)
        for path in self.path.glob("*.npy"):
            if path.name not in keep:
                path.unlink(missing_ok=True)

    @contextmanager
    def lock(self) -> Iterator[None]:
        """One writer at a time across processes (an ingest and a watch, say)."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            handle = open(self.path / "lock", "a+b")  # noqa: SIM115 - held across the yield
        except OSError as exc:
            raise StorageError("lock the search index in", self.path, exc) from exc
        with handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


class ProcessFolder(IndexFolder):
    """No folder: an index kept in this process's memory only (a store in a database
    server, whose hosts share no files). Nothing is written or read back; the lock is
    the process's."""

    def __init__(self, name: str) -> None:
        super().__init__(Path(name))
        self._lock = threading.Lock()

    def read(self) -> dict[str, Any] | None:
        return None

    def write_array(self, stem: str, array: np.ndarray) -> str:
        return stem

    def commit(self, manifest: dict[str, Any], files: Iterable[str]) -> None:
        return None

    @contextmanager
    def lock(self) -> Iterator[None]:
        with self._lock:
            yield


class _Codes(dict[str | None, int]):
    """A case-insensitive vocabulary of one field: value as written -> int32 code (-1:
    none). Looked up as written first: values repeat, and casefold costs more."""

    def __init__(self, values: list[str]) -> None:
        super().__init__({None: -1})
        self.values = values
        self.codes = {value: code for code, value in enumerate(values)}

    def __missing__(self, value: str) -> int:
        key = value.casefold()
        found = self.codes.get(key)
        if found is None:
            found = self.codes[key] = len(self.values)
            self.values.append(key)
        self[value] = found
        return found

    def known(self, values: Iterable[str]) -> list[int]:
        return [self.codes[key] for key in {value.casefold() for value in values}
                if key in self.codes]


def any_of(array: np.ndarray, codes: list[int]) -> np.ndarray:
    """``np.isin`` for a few codes (a comparison per code is several times faster)."""
    if len(codes) > 8:
        return np.isin(array, codes)
    found = np.zeros(array.shape, np.bool_)
    for code in codes:
        found |= array == code
    return found


_COLUMNS = {"alive": np.bool_, "ts": np.float64, "source": np.int32, "logbook": np.int32,
            "author": np.int32}
_FIELDS = ("source", "logbook", "author")


class DocMeta:
    """Alive flag, time, source, logbook, author and tags of every row, by rowid.

    ``DocMeta.open(store, root)`` keeps its files in ``root / "meta"`` (``root`` is the
    folder of search indexes beside the database); :meth:`refresh` catches up with the
    store; :meth:`mask` turns Filters into a boolean array over rowids, and
    :meth:`query_mask` does the same for everything a parsed query says about fields.
    Arrays are as long as the largest rowid seen plus one; rows never seen are not alive.
    """

    def __init__(self, store: LogbookStore, folder: IndexFolder) -> None:
        self.store = store
        self.folder = folder
        self._reset()

    def _reset(self) -> None:
        self.seq = 0
        self.size = 0
        self._arrays = {name: np.zeros(0, dtype) for name, dtype in _COLUMNS.items()}
        self._tag_rows = np.zeros(0, np.int32)
        self._tag_codes = np.zeros(0, np.int32)
        self._new_tags: list[np.ndarray] = []  # (rowid, code) pairs not yet in the arrays
        self._vocab = {name: _Codes([]) for name in (*_FIELDS, "tag")}

    def bound_to(self, store: LogbookStore) -> DocMeta:
        """This metadata read through ``store`` from now on (another connection to the
        same database), sharing the arrays: a worker keeps one copy per database, and each
        logbook opened on it starts from that copy instead of reading every row."""
        copy = DocMeta.__new__(DocMeta)
        copy.__dict__.update(self.__dict__)
        copy.store = store
        return copy

    @classmethod
    def open(cls, store: LogbookStore, root: Path) -> DocMeta:
        meta = cls(store, IndexFolder(root / "meta"))
        meta._load()
        return meta

    # -- reading ------------------------------------------------------------------------

    @property
    def alive(self) -> np.ndarray:
        """Read-only: True for rows the store holds now."""
        return self._view("alive")

    @property
    def ts(self) -> np.ndarray:
        """Read-only: entry times in UTC seconds."""
        return self._view("ts")

    def _view(self, name: str) -> np.ndarray:
        view = self._arrays[name][:self.size]
        view.flags.writeable = False
        return view

    def _tags(self) -> tuple[np.ndarray, np.ndarray]:
        if self._new_tags:
            new = np.concatenate(self._new_tags)
            self._tag_rows = np.concatenate([self._tag_rows, new[:, 0]])
            self._tag_codes = np.concatenate([self._tag_codes, new[:, 1]])
            self._new_tags = []
        return self._tag_rows, self._tag_codes

    def mask(self, filters: Filters) -> np.ndarray:
        """Alive rows that every filter allows (the rules of :meth:`Filters.allows`)."""
        allowed = self.alive.copy()
        for name, wanted in (("source", filters.sources), ("logbook", filters.logbooks),
                             ("author", filters.authors)):
            if wanted:
                allowed &= any_of(self._arrays[name][:self.size],
                                  self._vocab[name].known(wanted))
        if filters.tags:
            rows, codes = self._tags()
            tagged = np.zeros(self.size, np.bool_)
            tagged[rows[any_of(codes, self._vocab["tag"].known(filters.tags))]] = True
            allowed &= tagged
        if filters.since is not None:
            allowed &= self.ts >= filters.since.timestamp()
        if filters.until is not None:
            allowed &= self.ts <= filters.until.timestamp()
        return allowed

    def where(self, node: Node) -> np.ndarray:
        """The alive rows a field-only expression (fields under AND, OR, NOT) allows."""
        if isinstance(node, Field):
            return self.mask(node.filters)
        if isinstance(node, Not):
            return self.alive & ~self.where(node.child)
        if isinstance(node, And | Or):
            parts = [self.where(child) for child in node.children]
            combined = parts[0].copy()
            for part in parts[1:]:
                if isinstance(node, And):
                    combined &= part
                else:
                    combined |= part
            return combined
        raise ValueError(f"{node} is not a field filter")

    def query_mask(self, query: ParsedQuery) -> np.ndarray:
        """The alive rows that everything ``query`` says about fields allows, including
        what Filters cannot hold (``NOT author:bot``): for arms that cannot read words."""
        allowed = self.alive.copy()
        for node in query.restrictions:
            allowed &= self.where(node)
        return allowed

    # -- catching up --------------------------------------------------------------------

    def refresh(self, progress: Callable[[int, int], None] | None = None) -> int:
        """Catch up with the store's changes; returns how many rows were added."""
        with self.folder.lock():
            self.reload()
            return self.catch_up(progress)

    def catch_up(self, progress: Callable[[int, int], None] | None = None) -> int:
        """:meth:`refresh` for a caller that holds the lock and has reloaded."""
        changes = self.store.changes_since(self.seq)
        if changes.last == self.seq:
            return 0
        self.remove(changes.removed)
        done = 0
        for batch in self.store.docs(changes.added, batch=BATCH):
            self.add(batch)
            done += len(batch)
            if progress is not None:
                progress(done, len(changes.added))
        self.save(changes.last)
        return done

    def add(self, rows: list[DocRow]) -> None:
        """Record new rows (each rowid once: a row's content never changes)."""
        if not rows:
            return
        rowids = np.fromiter((row.rowid for row in rows), np.int64, len(rows))
        self._grow(int(rowids.max()) + 1)
        arrays = self._arrays
        arrays["alive"][rowids] = True
        arrays["ts"][rowids] = [row.ts for row in rows]
        for name in _FIELDS:
            codes = self._vocab[name]
            arrays[name][rowids] = list(map(codes.__getitem__,
                                            [getattr(row, name) for row in rows]))
        tag = self._vocab["tag"].__getitem__
        pairs = [(row.rowid, tag(value)) for row in rows for value in row.tags]
        if pairs:
            self._new_tags.append(np.array(pairs, np.int32))

    def remove(self, rowids: list[int]) -> None:
        known = np.array([rowid for rowid in rowids if rowid < self.size], np.int64)
        if known.size:
            self._writable()
            self._arrays["alive"][known] = False

    def _grow(self, size: int) -> None:
        self._writable()
        if size > len(self._arrays["alive"]):
            capacity = max(size, len(self._arrays["alive"]) * 3 // 2, 1024)
            for name, array in self._arrays.items():
                grown = np.zeros(capacity, array.dtype)
                if name in _FIELDS:
                    grown[:] = -1
                grown[:len(array)] = array
                self._arrays[name] = grown
        self.size = max(self.size, size)

    def _writable(self) -> None:
        """Loaded arrays are read-only maps: copy them before the first change."""
        for name, array in self._arrays.items():
            if not array.flags.writeable:
                self._arrays[name] = np.array(array)

    # -- files --------------------------------------------------------------------------

    def save(self, seq: int) -> None:
        """Write the arrays as a new generation reflecting the store up to change ``seq``."""
        files = {name: self.folder.write_array(name, array[:self.size])
                 for name, array in self._arrays.items()}
        rows, codes = self._tags()
        files["tag_rows"] = self.folder.write_array("tag_rows", rows)
        files["tag_codes"] = self.folder.write_array("tag_codes", codes)
        self.folder.commit({"format": META_FORMAT, "seq": seq, "size": self.size,
                            "arrays": files,
                            "vocab": {name: codes.values for name, codes in self._vocab.items()}},
                           files.values())
        self.seq = seq

    def reload(self) -> None:
        """Take up what another process wrote; start over if the store is not the one
        indexed (its change log is behind the index)."""
        manifest = self.folder.read()
        if manifest is not None and manifest.get("seq", 0) != self.seq:
            self._load()
        if self.store.last_change() < self.seq:
            self._reset()

    def _load(self) -> None:
        """The current generation; an unreadable or foreign one starts empty (the next
        refresh rebuilds it from the store)."""
        for _ in range(3):  # a writer may replace the generation between two reads
            manifest = self.folder.read()
            if manifest is None or manifest.get("format") != META_FORMAT:
                return
            try:
                arrays = {name: self.folder.load_array(file)
                          for name, file in manifest["arrays"].items()}
                size = int(manifest["size"])
                vocab = {name: _Codes(list(values)) for name, values in manifest["vocab"].items()}
                if set(vocab) != set(self._vocab) or any(
                        len(arrays[name]) != size for name in _COLUMNS):
                    return
            except FileNotFoundError:
                continue
            except (OSError, ValueError, KeyError, TypeError):
                return
            self._tag_rows = arrays.pop("tag_rows")
            self._tag_codes = arrays.pop("tag_codes")
            self._new_tags = []
            self._arrays = arrays
            self._vocab = vocab
            self.size = size
            self.seq = int(manifest["seq"])
            return
