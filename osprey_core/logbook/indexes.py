"""Where a logbook's search arms keep their state, on each engine.

The query layer (:class:`~osprey_core.logbook.service.Logbook`) asks the store for its
:class:`SearchIndexes` and runs the same code on both engines:

============  =====================================  ======================================
arm           SQLite                                 PostgreSQL
============  =====================================  ======================================
metadata      arrays in files beside the database    the same arrays, in this process only
keyword       BM25 postings in files (numpy)         ``tsvector`` + GIN, ``ts_rank_cd``
vectors       float32 files, ranked with numpy       float32 rows, ranked with numpy
============  =====================================  ======================================
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from osprey_core.logbook.storage import LogbookStore

if TYPE_CHECKING:
    import numpy as np

    from osprey_core.hookspecs.embedding_models import EmbeddingModel
    from osprey_core.logbook.docmeta import DocMeta
    from osprey_core.logbook.keyword import KeywordHits
    from osprey_core.logbook.pg_database import LogbookDatabase
    from osprey_core.logbook.query import ParsedQuery
    from osprey_core.logbook.semantic import SemanticIndex


class KeywordSearch(Protocol):
    """The keyword arm as the query layer calls it (files: BM25 postings; PostgreSQL: its
    text search): filters and operators hold inside the ranking, before the top k."""

    def refresh(self, progress: Callable[[int, int], None] | None = None) -> int: ...
    def search(self, query: ParsedQuery, *, mask: np.ndarray | None = None,
               k: int = 10) -> KeywordHits: ...
    def matches(self, query: ParsedQuery, *, mask: np.ndarray | None = None
                ) -> np.ndarray: ...
    def idf(self, term: str) -> float: ...


class SearchIndexes(Protocol):
    """Opens a store's search arms (each has the same interface on every engine)."""

    def docmeta(self) -> DocMeta: ...
    def keyword(self, meta: DocMeta) -> KeywordSearch: ...
    def semantic(self, model: EmbeddingModel) -> SemanticIndex: ...


class FileIndexes:
    """Indexes in files beside an SQLite store (``logbook.index/``)."""

    def __init__(self, store: LogbookStore, directory: Path) -> None:
        self.store = store
        self.directory = directory

    def docmeta(self) -> DocMeta:
        from osprey_core.logbook.docmeta import DocMeta

        return DocMeta.open(self.store, self.directory)

    def keyword(self, meta: DocMeta) -> KeywordSearch:
        from osprey_core.logbook.keyword import KeywordIndex

        return KeywordIndex.open(self.store, self.directory, meta=meta)

    def semantic(self, model: EmbeddingModel) -> SemanticIndex:
        from osprey_core.logbook.semantic import SemanticIndex

        return SemanticIndex.open(self.store, self.directory, model)


class IndexedStore(LogbookStore, Protocol):
    """A store that says where its search arms keep their state."""

    def search_indexes(self) -> SearchIndexes: ...


class PostgresIndexes:
    """Search arms of a PostgreSQL store: the database ranks keywords, this process keeps
    the metadata and the vectors it reads and ranks them."""

    def __init__(self, store: LogbookDatabase) -> None:
        self.store = store

    def docmeta(self) -> DocMeta:
        from osprey_core.logbook.pg_keyword import process_meta

        return process_meta(self.store)

    def keyword(self, meta: DocMeta) -> KeywordSearch:
        from osprey_core.logbook.pg_keyword import PostgresKeywordIndex

        return PostgresKeywordIndex(self.store, meta)

    def semantic(self, model: EmbeddingModel) -> SemanticIndex:
        from osprey_core.logbook.pg_vectors import PostgresVectorSets
        from osprey_core.logbook.semantic import SemanticIndex

        return SemanticIndex.open(self.store, PostgresVectorSets(self.store), model)
