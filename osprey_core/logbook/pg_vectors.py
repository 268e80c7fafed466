"""Vector sets in PostgreSQL, ranked in the worker.

pgvector is not available on these machines, so a vector is a plain column: the float32
bytes of one chunk's embedding in ``logbook_vectors``, keyed by (vector set, entry rowid,
chunk) and numbered by an identity ``seq``. Each process keeps the matrix of a set in
memory and brings it up to date by asking only for rows past the last ``seq`` it holds,
so a search costs one small query plus the product with numpy that
:class:`~osprey_core.logbook.semantic.SemanticIndex` does for the file-based sets.
Appends are serialised per set by an advisory lock held while a process embeds (held by
another process: refused at once, as for the files), so ``seq`` grows in commit order.

Where pgvector is installed, the set's rows would get a ``vector(N)`` column with an HNSW
index, and :meth:`SemanticIndex.search` would become one query,
``... WHERE <filters> ORDER BY embedding <=> %s LIMIT k``, behind the same interface;
nothing would be loaded into the worker.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import numpy as np

from osprey_core.logbook.semantic import SemanticIndexError, check_dimension

if TYPE_CHECKING:
    from osprey_core.logbook.pg_database import LogbookDatabase


class _Cached:
    """A set's vectors as this process holds them."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.generation: str | None = None
        self.seq = 0
        self.matrix = np.zeros((0, 0), np.float32)
        self.rowids = np.zeros(0, np.int64)


#: (database, set) -> its vectors in this process: every Logbook opened on the same
#: database (one per request in the service) shares them.
_CACHE: dict[tuple[str, str], _Cached] = {}
_CACHE_LOCK = threading.Lock()


class PostgresVectorSet:
    """One vector set in the database (the interface of the file-based sets)."""

    def __init__(self, store: LogbookDatabase, name: str, fingerprint: str,
                 chunking: tuple[int, int]) -> None:
        self.store = store
        self.name = name
        self.fingerprint = fingerprint
        self.chunking = chunking
        self.path = f"{store.path} (vector set {name})"
        self.dimension: int | None = None
        self._seen: tuple[str | None, int] = (None, 0)
        with _CACHE_LOCK:
            self._cached = _CACHE.setdefault((store.url, name), _Cached())
        self.reload()

    @property
    def rows(self) -> int:
        """Rows as of this object's last :meth:`reload` (the process's copy may be ahead:
        another index in this process reloaded it)."""
        return self._seen[1]

    def matrix(self) -> np.ndarray:
        return self._cached.matrix[:self.rows]

    def rowids(self) -> np.ndarray:
        return self._cached.rowids[:self.rows]

    def reload(self) -> bool:
        """Fetch the rows committed since this process last asked; True if the set
        changed since this object last looked. A set deleted or made again elsewhere
        (another generation) is read again whole."""
        self._fetch()
        seen = (self._cached.generation, len(self._cached.rowids))
        changed, self._seen = seen != self._seen, seen
        return changed

    def _fetch(self) -> None:
        cached = self._cached
        with cached.lock:
            found = self.store.rows("SELECT generation::text, dimension FROM logbook_vector_sets "
                                     "WHERE name = %s", [self.name])
            generation, dimension = found[0] if found else (None, None)
            if generation != cached.generation:
                cached.generation, cached.seq = generation, 0
                cached.matrix = np.zeros((0, dimension or 0), np.float32)
                cached.rowids = np.zeros(0, np.int64)
            self.dimension = dimension
            if generation is None:
                return
            rows = self.store.rows("SELECT seq, rowid, embedding FROM logbook_vectors "
                                    "WHERE vector_set = %s AND seq > %s ORDER BY seq",
                                    [self.name, cached.seq])
            if not rows:
                return
            added = np.frombuffer(b"".join(row[2] for row in rows), np.float32)
            cached.matrix = np.concatenate(
                (cached.matrix.reshape(-1, dimension), added.reshape(-1, dimension)))
            cached.rowids = np.concatenate(
                (cached.rowids, np.fromiter((row[1] for row in rows), np.int64, len(rows))))
            cached.seq = int(rows[-1][0])

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Hold the set's write lock (one embedding process per set, on any host) for
        as long as the block runs; the set is made if new."""
        key = f"osprey logbook vectors {self.name}"
        with self.store.connection() as conn:
            taken = conn.execute("SELECT pg_try_advisory_lock(hashtext(%s))", [key]
                                 ).fetchone()[0]  # type: ignore[index]
            if not taken:
                raise SemanticIndexError(f"another process is embedding into {self.path}; "
                                         "try again when it has finished")
            try:
                conn.execute("INSERT INTO logbook_vector_sets (name, fingerprint, chunk_words, "
                             "chunk_overlap) VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                             [self.name, self.fingerprint, *self.chunking])
                self.reload()
                yield
            finally:
                conn.execute("SELECT pg_advisory_unlock(hashtext(%s))", [key])

    def append(self, vectors: np.ndarray, rowids: np.ndarray) -> None:
        """Add rows in one transaction (a chunk number per row of the same entry)."""
        check_dimension(self, vectors)
        vectors = np.ascontiguousarray(vectors, np.float32)
        chunks: list[int] = []
        for at, rowid in enumerate(rowids.tolist()):
            chunks.append(chunks[-1] + 1 if at and rowids[at - 1] == rowid else 0)
        with self.store.connection() as conn, conn.transaction():
            conn.execute("UPDATE logbook_vector_sets SET dimension = %s WHERE name = %s",
                         [vectors.shape[1], self.name])
            with conn.cursor().copy("COPY logbook_vectors (vector_set, rowid, chunk, "
                                    "embedding) FROM STDIN") as copy:
                for row, (rowid, chunk) in enumerate(zip(rowids.tolist(), chunks,
                                                         strict=True)):
                    copy.write_row((self.name, rowid, chunk, vectors[row].tobytes()))
        self.reload()


class PostgresVectorSets:
    """The vector sets of a PostgreSQL logbook."""

    def __init__(self, store: LogbookDatabase) -> None:
        self.store = store

    def open(self, name: str, fingerprint: str, chunking: tuple[int, int]) -> Any:
        return PostgresVectorSet(self.store, name, fingerprint, chunking)

    def remove_others(self, keep: str) -> None:
        """Delete every other set (their rows go with them), unless one is being
        written."""
        with self.store.connection() as conn, conn.transaction():
            for (name,) in conn.execute("SELECT name FROM logbook_vector_sets WHERE name <> %s "
                                        "FOR UPDATE", [keep]).fetchall():
                key = f"osprey logbook vectors {name}"
                if not conn.execute("SELECT pg_try_advisory_xact_lock(hashtext(%s))",
                                    [key]).fetchone()[0]:  # type: ignore[index]
                    raise SemanticIndexError(f"another process is embedding into the vector "
                                             f"set {name}; it was not deleted, run reembed "
                                             "again later")
                conn.execute("DELETE FROM logbook_vector_sets WHERE name = %s", [name])
