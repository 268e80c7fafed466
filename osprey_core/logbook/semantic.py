"""Semantic search: entries chunked, embedded by a model plugin, ranked by cosine.

Vectors live beside the database, one *vector set* per model fingerprint and chunking
(``<db>.index/vectors/<fingerprint>.w200o40/``), so vectors of two models are never
compared. A set is a float32 matrix appended to ``vectors.f32``, the entry rowid of each
row in ``rowids.i64`` and ``state.json`` recording how many rows are complete. Rows are
written and fsynced before the count is: after a crash anything past the count is
ignored and trimmed, so embedding resumes where it stopped.

Search is exact: the matrix is memory-mapped and multiplied by the query in blocks,
only rows the caller's mask allows (and whose entry is alive) can score, then numpy picks
the top k. Filters are a mask applied before ranking, so no filtered-out entry takes a
place in the top k.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from osprey_core.errors import OspreyError, StorageError
from osprey_core.fileio import atomic_write_text

if TYPE_CHECKING:
    from osprey_core.hookspecs.embedding_models import EmbeddingModel
    from osprey_core.logbook.storage import DocRow, LogbookStore
    from osprey_core.settings import EmbeddingSettings

#: Layout of a vector set; a set of another format is rebuilt, never misread.
FORMAT = 1
#: Above this share of allowed rows, one product over the whole matrix is cheapest.
DENSE_ABOVE = 0.5
#: Rows multiplied at once below that: large enough for BLAS, small enough to skip.
BLOCK_ROWS = 65_536
#: Below this share of allowed rows in a block, gathering them beats multiplying all.
GATHER_BELOW = 0.1

type Progress = Callable[[int, int], None]


class SemanticIndexError(OspreyError):
    """A vector set is unusable (another model's, damaged, or busy); the message says
    what to do."""


@dataclass(frozen=True)
class SemanticHits:
    """Entries by descending cosine similarity (an entry scores its best chunk)."""

    rowids: list[int]
    scores: list[float]


def chunk_texts(title: str, text: str, words: int, overlap: int) -> list[str]:
    """The texts embedded for an entry: windows of ``words`` words of ``text``, each
    sharing ``overlap`` with the previous, each prefixed by ``title`` so a chunk keeps
    its subject. The last window ends at the last word instead of being a short tail."""
    tokens = text.split()
    step = max(words - overlap, 1)
    starts = [*range(0, max(len(tokens) - words, 0), step), max(len(tokens) - words, 0)]
    prefix = f"{title.strip()} " if title.strip() else ""
    return [(prefix + " ".join(tokens[start:start + words])).strip() for start in starts]


def check_dimension(vector_set: VectorSet, vectors: np.ndarray) -> None:
    """Refuse vectors of another width than the set's (another model's)."""
    if vector_set.dimension is not None and vectors.shape[1] != vector_set.dimension:
        raise SemanticIndexError(
            f"the model returned {vectors.shape[1]}-dimensional vectors for a set of "
            f"{vector_set.dimension}-dimensional ones ({vector_set.path}); vectors of "
            "different models are never mixed")


class _VectorSet:
    """The files of one model's vectors; appends are crash-safe and single-writer."""

    def __init__(self, path: Path, fingerprint: str, chunking: tuple[int, int]) -> None:
        self.path = path
        self.fingerprint = fingerprint
        self.chunking = chunking
        self.vectors_file = path / "vectors.f32"
        self.rowids_file = path / "rowids.i64"
        self.state_file = path / "state.json"
        self.dimension: int | None = None
        self.rows = 0
        self._stamp: tuple[int, int, int] | None = None
        self._matrix: np.ndarray | None = None
        self._rowids: np.ndarray | None = None
        self.reload()

    def reload(self) -> bool:
        """Read the state again if another process committed rows; True if it changed."""
        try:
            stat = self.state_file.stat()
        except FileNotFoundError:
            return False
        stamp = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        if stamp == self._stamp:
            return False
        try:
            state = json.loads(self.state_file.read_text("utf-8"))
        except (OSError, ValueError) as exc:
            raise self._damaged(f"its state.json is unreadable ({exc})") from None
        if state.get("format") != FORMAT:
            raise self._damaged(f"it has format {state.get('format')!r}, not {FORMAT}")
        if (state.get("fingerprint") != self.fingerprint
                or tuple(state.get("chunking", ())) != self.chunking):
            raise SemanticIndexError(
                f"{self.path} holds vectors of {state.get('fingerprint')!r} (chunking "
                f"{state.get('chunking')}), not {self.fingerprint!r} {list(self.chunking)}: "
                "vectors of different models are never mixed; move the directory away")
        rows, dimension = state.get("rows"), state.get("dimension")
        if not isinstance(rows, int) or rows < 0 or (rows and not isinstance(dimension, int)):
            raise self._damaged("its state.json is not a vector set's state")
        need = (rows * (dimension or 0) * 4, rows * 8)
        have = tuple(self._size(file) for file in (self.vectors_file, self.rowids_file))
        if have[0] < need[0] or have[1] < need[1]:
            raise self._damaged(f"{rows} rows are recorded but the files are shorter")
        self.rows, self.dimension, self._stamp = rows, dimension, stamp
        self._matrix = self._rowids = None
        return True

    @staticmethod
    def _size(file: Path) -> int:
        try:
            return file.stat().st_size
        except FileNotFoundError:
            return 0

    def _damaged(self, why: str) -> SemanticIndexError:
        return SemanticIndexError(f"the vector set {self.path} is damaged: {why}; delete "
                                  "the directory and embed again (osprey logbook reembed)")

    def matrix(self) -> np.ndarray:
        """The committed rows, memory-mapped read-only (shape ``(rows, dimension)``)."""
        if self._matrix is None:
            if self.rows == 0:
                self._matrix = np.zeros((0, self.dimension or 0), dtype=np.float32)
            else:
                mapped = np.memmap(self.vectors_file, dtype=np.float32, mode="r",
                                   shape=(self.rows, self.dimension or 0))
                # A plain ndarray view: slicing a np.memmap subclass costs per block.
                self._matrix = mapped.view(np.ndarray)
        return self._matrix

    def rowids(self) -> np.ndarray:
        """The entry rowid of each committed row."""
        if self._rowids is None:
            self._rowids = (np.fromfile(self.rowids_file, dtype=np.int64, count=self.rows)
                            if self.rows else np.zeros(0, dtype=np.int64))
        return self._rowids

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Hold the set's write lock (one embedding process per set) and drop whatever an
        interrupted writer left past the committed rows."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            lock = open(self.path / "lock", "a+b")  # noqa: SIM115 (held across the yield)
        except OSError as exc:
            raise StorageError("create", self.path, exc) from exc
        with lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise SemanticIndexError(f"another process is embedding into {self.path}; "
                                         "try again when it has finished") from None
            self.reload()
            try:
                for file, width in ((self.vectors_file, 4 * (self.dimension or 0)),
                                    (self.rowids_file, 8)):
                    with open(file, "ab") as handle:
                        handle.truncate(self.rows * width)
            except OSError as exc:
                raise StorageError("prepare", self.path, exc) from exc
            yield

    def append(self, vectors: np.ndarray, rowids: np.ndarray) -> None:
        """Add rows durably: data first, then the count that makes them visible."""
        check_dimension(self, vectors)
        try:
            for file, data in ((self.vectors_file, vectors), (self.rowids_file, rowids)):
                with open(file, "ab") as handle:
                    handle.write(data.tobytes())
                    handle.flush()
                    os.fsync(handle.fileno())
        except OSError as exc:
            raise StorageError("append to", self.path, exc,
                               outcome="the vectors embedded before are kept") from exc
        self._commit(self.rows + len(rowids), vectors.shape[1])
        self._matrix = self._rowids = None  # mapped and read again when searched

    def _commit(self, rows: int, dimension: int | None) -> None:
        state = {"format": FORMAT, "fingerprint": self.fingerprint,
                 "chunking": list(self.chunking), "dimension": dimension, "rows": rows}
        atomic_write_text(self.state_file, json.dumps(state) + "\n")
        self.rows, self.dimension = rows, dimension
        stat = self.state_file.stat()
        self._stamp = (stat.st_ino, stat.st_mtime_ns, stat.st_size)


class VectorSet(Protocol):
    """One model's vectors, wherever they are kept (files here, a PostgreSQL table in
    :mod:`~osprey_core.logbook.pg_vectors`): rows of a float32 matrix, each with the
    rowid of its entry, appended by one writer at a time, read by any process."""

    chunking: tuple[int, int]
    dimension: int | None

    @property
    def path(self) -> Path | str: ...
    @property
    def rows(self) -> int: ...
    def reload(self) -> bool: ...
    def matrix(self) -> np.ndarray: ...
    def rowids(self) -> np.ndarray: ...
    def writing(self) -> AbstractContextManager[None]: ...
    def append(self, vectors: np.ndarray, rowids: np.ndarray) -> None: ...


class VectorSets(Protocol):
    """Where the vector sets of a store are: opens one by name, removes the others."""

    def open(self, name: str, fingerprint: str, chunking: tuple[int, int]) -> VectorSet: ...
    def remove_others(self, keep: str) -> None: ...


class FileVectorSets:
    """Vector sets as folders beside the database (``<db>.index/vectors/<name>/``)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def open(self, name: str, fingerprint: str, chunking: tuple[int, int]) -> _VectorSet:
        return _VectorSet(self.directory / name, fingerprint, chunking)

    def remove_others(self, keep: str) -> None:
        for other in self.directory.iterdir():
            if other.is_dir() and other.name != keep:
                _remove_tree(other)


class SemanticIndex:
    """An embedding model's vectors of a logbook store: kept up to date by
    :meth:`refresh`, searched by :meth:`search`, replaced by :meth:`reembed`."""

    def __init__(self, store: LogbookStore, sets: VectorSets, model: EmbeddingModel,
                 settings: EmbeddingSettings) -> None:
        self.store = store
        self.sets = sets
        self.settings = settings
        self.model = model
        self._set = self._vector_set(model)
        self._seq = 0
        self._alive: np.ndarray | None = None  # by rowid
        self._embedded = np.zeros(0, dtype=bool)  # by rowid
        self._chunk_alive: np.ndarray | None = None  # by row of the set
        self._mark_embedded(self._set.rowids())

    @classmethod
    def open(cls, store: LogbookStore, where: Path | VectorSets, model: EmbeddingModel, *,
             settings: EmbeddingSettings | None = None) -> SemanticIndex:
        """The vector set of ``model`` in ``where/vectors`` (the index directory beside
        the database) or in ``where`` (vector sets kept elsewhere); the set is created
        empty if new, with chunking and batch size from ``settings`` (default: those the
        model was built with)."""
        if settings is None:
            from osprey_core.settings import EmbeddingSettings

            settings = model.settings or EmbeddingSettings()
        sets: VectorSets = (FileVectorSets(where / "vectors") if isinstance(where, Path)
                            else where)
        return cls(store, sets, model, settings)

    def _vector_set(self, model: EmbeddingModel) -> VectorSet:
        fingerprint = model.fingerprint
        if (not fingerprint or fingerprint[0] in ".-"
                or not all(char.isascii() and (char.isalnum() or char in "._-")
                           for char in fingerprint)):
            raise SemanticIndexError(f"embedding model {model.name!r} has the fingerprint "
                                     f"{fingerprint!r}: letters, digits, '.', '_' and '-' "
                                     "only, and not first '.' or '-'")
        chunking = (self.settings.chunk_words,
                    min(self.settings.chunk_overlap_words, self.settings.chunk_words - 1))
        self.name = f"{fingerprint}.w{chunking[0]}o{chunking[1]}"
        return self.sets.open(self.name, fingerprint, chunking)

    @property
    def path(self) -> Path | str:
        """The directory of the vector set in use."""
        return self._set.path

    @property
    def rows(self) -> int:
        """Vectors stored (chunks, including those of deleted entries)."""
        return self._set.rows

    # -- keeping up with the store -------------------------------------------------------

    def _mark_embedded(self, owners: np.ndarray) -> None:
        if len(owners):
            self._grow(int(owners.max()) + 1)
            self._embedded[owners] = True
        self._chunk_alive = None

    def _grow(self, size: int) -> None:
        if size > len(self._embedded):
            self._embedded = np.concatenate((self._embedded,
                                             np.zeros(size - len(self._embedded), bool)))
        if self._alive is not None and size > len(self._alive):
            self._alive = np.concatenate((self._alive, np.zeros(size - len(self._alive), bool)))

    def _sync(self) -> None:
        """Catch up with rows other processes embedded and entries added or deleted."""
        before = self._set.rows
        if self._set.reload():
            if self._set.rows < before:  # rebuilt elsewhere: start over
                self._embedded[:] = False
                before = 0
            self._mark_embedded(self._set.rowids()[before:])
        if self._alive is None:
            self._seq = self.store.last_change()  # first: what changes after is replayed
            live = np.fromiter(self.store.live_rowids(), dtype=np.int64)
            self._alive = np.zeros(len(self._embedded), dtype=bool)
            self._grow(int(live.max()) + 1 if len(live) else 0)
            self._alive[live] = True
            self._chunk_alive = None
        changes = self.store.changes_since(self._seq)
        if changes.added or changes.removed:
            self._grow(max([*changes.added, *changes.removed]) + 1)
            self._alive[changes.removed] = False
            self._alive[changes.added] = True
            self._chunk_alive = None
        self._seq = changes.last

    def _alive_rows(self) -> np.ndarray:
        """For each row of the set: is its entry still in the store."""
        if self._chunk_alive is None:
            assert self._alive is not None
            self._chunk_alive = self._alive[self._set.rowids()]
        return self._chunk_alive

    def _todo(self) -> np.ndarray:
        assert self._alive is not None
        return np.flatnonzero(self._alive & ~self._embedded[:len(self._alive)])

    def missing(self) -> int:
        """Entries in the store without vectors in this set."""
        self._sync()
        assert self._alive is not None
        return int(np.count_nonzero(self._alive & ~self._embedded[:len(self._alive)]))

    def refresh(self, progress: Progress | None = None) -> int:
        """Embed the entries that have no vectors, newest first, committing each batch:
        an interrupt loses at most the batch in progress. Returns entries embedded;
        ``progress(done, total)`` is called at the start and after every batch."""
        with self._set.writing():
            self._sync()
            todo = self._todo()[::-1]
            total, done = len(todo), 0
            if progress is not None:
                progress(0, total)
            batch = self.settings.batch_size
            for start in range(0, total, batch):
                wanted = todo[start:start + batch].tolist()
                docs = [row for rows in self.store.docs(wanted, batch=batch) for row in rows]
                self._add(docs)
                done += len(wanted)
                if progress is not None:
                    progress(done, total)
            return done

    def _add(self, docs: list[DocRow]) -> None:
        words, overlap = self._set.chunking
        texts: list[str] = []
        owners: list[int] = []
        for doc in docs:
            chunks = chunk_texts(doc.title, doc.text, words, overlap)
            texts += chunks
            owners += [doc.rowid] * len(chunks)
        if not texts:
            return
        vectors = np.asarray(self.model.embed(texts), dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) != len(texts) or not np.isfinite(vectors).all():
            raise SemanticIndexError(f"embedding model {self.model.name!r} returned "
                                     f"{getattr(vectors, 'shape', '?')} for {len(texts)} "
                                     "texts, or values that are not finite")
        rowids = np.asarray(owners, dtype=np.int64)
        self._set.append(vectors, rowids)
        self._mark_embedded(rowids)

    def reembed(self, progress: Progress | None = None) -> int:
        """Make this model's set complete, then delete the sets of other models (or other
        chunkings): open the index with the new model and call this. The old vectors
        stay untouched, and searchable with their model, until the new set is complete;
        an interrupted reembed resumes. Returns entries embedded."""
        embedded = self.refresh(progress)
        self.sets.remove_others(self.name)
        return embedded

    # -- searching -----------------------------------------------------------------------

    def search(self, text: str, *, mask: np.ndarray | None = None, k: int = 10
               ) -> SemanticHits:
        """The ``k`` entries most similar to ``text`` among those ``mask`` allows (a bool
        array by rowid; rowids past its end are not allowed; ``None``: every entry)."""
        self._sync()
        if k < 1 or self._set.rows == 0:
            return SemanticHits([], [])
        query = np.asarray(self.model.embed_query(text), dtype=np.float32).reshape(-1)
        if len(query) != self._set.dimension:
            raise SemanticIndexError(
                f"embedding model {self.model.name!r} returned a {len(query)}-dimensional "
                f"query vector for a set of {self._set.dimension}-dimensional ones")
        allowed = self._alive_rows()
        if mask is not None:
            mask = np.asarray(mask, dtype=bool)
            if len(mask) < len(self._embedded):  # rowids past its end are not allowed
                mask = np.concatenate((mask, np.zeros(len(self._embedded) - len(mask), bool)))
            allowed = allowed & mask[self._set.rowids()]
        return self._top(query, allowed, k)

    def _top(self, query: np.ndarray, allowed: np.ndarray, k: int) -> SemanticHits:
        rows, scores = _scores(self._set.matrix(), query, allowed)
        if len(scores) == 0:
            return SemanticHits([], [])
        owners = self._set.rowids()[rows]
        # The best chunk of an entry counts; widen until k distinct entries are found.
        wanted = min(len(scores), 2 * k)
        while True:
            top = np.argpartition(scores, len(scores) - wanted)[len(scores) - wanted:]
            top = top[np.lexsort((owners[top], -scores[top]))]  # ties: lower rowid first
            _, first = np.unique(owners[top], return_index=True)
            if len(first) >= k or wanted == len(scores):
                break
            wanted = min(len(scores), 4 * wanted)
        best = top[np.sort(first)[:k]]
        return SemanticHits(owners[best].tolist(), scores[best].astype(float).tolist())


def _scores(matrix: np.ndarray, query: np.ndarray, allowed: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray]:
    """The allowed rows and their cosines. A mostly open mask costs one matrix-vector
    product; a narrower one (a week, an author) goes by blocks, skipping those with no
    allowed row and gathering the rows of sparse ones."""
    rows = np.flatnonzero(allowed)
    if len(rows) > DENSE_ABOVE * len(matrix):
        return rows, (matrix @ query)[rows]
    bounds = np.searchsorted(rows, range(0, len(matrix) + BLOCK_ROWS, BLOCK_ROWS))
    parts = [np.zeros(0, dtype=np.float32)]
    for block, start in enumerate(range(0, len(matrix), BLOCK_ROWS)):
        inside = rows[bounds[block]:bounds[block + 1]]
        stop = min(start + BLOCK_ROWS, len(matrix))
        if len(inside) < GATHER_BELOW * (stop - start):
            parts.append(matrix[inside] @ query)
        else:
            parts.append((matrix[start:stop] @ query)[inside - start])
    return rows, np.concatenate(parts)


def _remove_tree(path: Path) -> None:
    """Delete a vector set unless a process is embedding into it; renamed first, so a
    crash never leaves half a set behind."""
    doomed = path.with_name(f".{path.name}.deleting")
    try:
        with open(path / "lock", "a+b") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise SemanticIndexError(f"another process is embedding into {path}; it "
                                         "was not deleted, run reembed again later") from None
            os.replace(path, doomed)
        shutil.rmtree(doomed)
    except OSError as exc:
        raise StorageError("delete", path, exc, outcome="the new vectors are in use") from exc
