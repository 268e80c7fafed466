"""The keyword index: catching up with the store's change log, searching, and its state on
disk (segments and a manifest, replaced atomically)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from osprey_core.logbook.docmeta import DocMeta, IndexFolder
from osprey_core.logbook.keyword.evaluation import QueryRun, bag_of_words
from osprey_core.logbook.keyword.segments import (
    ARRAYS,
    Segment,
    Vocabulary,
    build_segment,
    merge_segments,
)
from osprey_core.logbook.query import ParsedQuery, ranking_weights
from osprey_core.logbook.tokenize import ANALYZER_VERSION

if TYPE_CHECKING:
    from osprey_core.logbook.storage import LogbookStore

#: BM25 parameters (measured on SciFact, see docs/logbook-search.md).
K1 = 1.2
B = 0.75
#: Title occurrences count this many times (BM25F-style field weight).
TITLE_WEIGHT = 3
KEYWORD_FORMAT = 1
#: Rows read from the store per batch while indexing.
BATCH = 5000
#: A segment is merged into the one before it when that one is at most this many times
#: larger; and never more than MAX_SEGMENTS segments.
MERGE_RATIO = 4
MAX_SEGMENTS = 12


@dataclass(frozen=True, slots=True)
class KeywordHits:
    """Rowids in rank order with their BM25 scores; ``total`` matched before the top k;
    ``ceiling`` bounds every score of this query (0 when no word ranks)."""

    rowids: list[int]
    scores: list[float]
    total: int
    ceiling: float = 0.0


class KeywordIndex:
    """BM25 keyword search over the store's live entries.

    ``KeywordIndex.open(store, root)`` keeps its files in ``root / "keyword"`` and uses the
    :class:`DocMeta` in ``root / "meta"`` (or the one given) for alive rows and filters.
    Call :meth:`refresh` before searching to include the store's latest changes (it costs
    one query when nothing changed).
    """

    def __init__(self, store: LogbookStore, folder: IndexFolder, meta: DocMeta) -> None:
        self.store = store
        self.folder = folder
        self.meta = meta
        self.seq = 0
        self.segments: list[Segment] = []
        self._vocabulary: Vocabulary | None = None
        self._stats()

    @classmethod
    def open(cls, store: LogbookStore, directory: Path, *,
             meta: DocMeta | None = None) -> KeywordIndex:
        index = cls(store, IndexFolder(directory / "keyword"),
                    meta or DocMeta.open(store, directory))
        index._load()
        return index

    # -- catching up --------------------------------------------------------------------

    def refresh(self, progress: Callable[[int, int], None] | None = None) -> int:
        """Index the rows the store added since the last refresh (and forget removed
        ones); returns how many rows were indexed."""
        meta = self.meta
        with self.folder.lock(), meta.folder.lock():
            self.reload()
            meta.reload()
            together = meta.seq == self.seq  # one read of the rows serves both
            changes = self.store.changes_since(self.seq)
            if not together:  # after reading changes: meta must cover all they add
                meta.catch_up()
            if changes.last == self.seq:
                self._stats()
                return 0
            if together:
                meta.remove(changes.removed)
            if self._vocabulary is None:
                self._vocabulary = Vocabulary()
            built, done = [], 0
            for batch in self.store.docs(changes.added, batch=BATCH):
                if together:
                    meta.add(batch)
                built.append(build_segment(batch, self._vocabulary, title_weight=TITLE_WEIGHT))
                done += len(batch)
                if progress is not None:
                    progress(done, len(changes.added))
            if together:
                meta.save(changes.last)
            self._stats()  # dead rows for the merges below
            segments = list(self.segments)
            if built:
                segments.append(built[0] if len(built) == 1 else
                                merge_segments(built, self.alive))
            while len(segments) > 1 and (
                    segments[-2].size <= MERGE_RATIO * segments[-1].size
                    or len(segments) > MAX_SEGMENTS):
                segments[-2:] = [merge_segments(segments[-2:], self.alive)]
            self._save(segments, changes.last)
            return done

    # -- searching ----------------------------------------------------------------------

    def matches(self, query: ParsedQuery, *, mask: np.ndarray | None = None) -> np.ndarray:
        """Every live row ``query`` matches (and ``mask`` allows), as a boolean array
        over rowids: what another arm may rank when the query has operators."""
        allowed = self._allowed(mask)
        if query.expression is None:
            return allowed
        return QueryRun(self, len(allowed)).evaluate(query.expression, allowed)

    def search(self, query: ParsedQuery, *, mask: np.ndarray | None = None,
               k: int = 10) -> KeywordHits:
        """The best ``k`` live entries matching ``query`` (and ``mask``, a boolean array
        over rowids), by BM25; with no ranking words, the newest first."""
        allowed = self._allowed(mask)
        run = QueryRun(self, len(allowed))
        weights = ranking_weights(query.expression)
        if bag_of_words(query.expression):
            # any of some words: what matches is what scores, so score every posting
            # and skip building the match set term by term
            every = run.scores(weights, None, None)
            candidates = np.flatnonzero(allowed & (every > 0))
            scores = every[candidates]
        else:
            matched = allowed if query.expression is None else run.evaluate(
                query.expression, allowed)
            candidates = np.flatnonzero(matched)
            if weights and len(candidates):
                scores = run.scores(weights, candidates, matched)[candidates]
            else:  # nothing ranks: newest first
                scores = self.meta.ts[candidates]
        total = len(candidates)
        ceiling = run.ceiling(weights) if weights else 0.0
        if not total or k <= 0:
            return KeywordHits([], [], total, ceiling)
        if len(candidates) > k:
            threshold = np.partition(scores, len(scores) - k)[len(scores) - k]
            keep = scores >= threshold
            candidates, scores = candidates[keep], scores[keep]
        order = np.lexsort((-candidates, -scores))[:k]
        shown = scores[order] if weights else np.zeros(len(order))
        return KeywordHits([int(rowid) for rowid in candidates[order]],
                           [float(score) for score in shown], total, ceiling)

    def idf(self, term: str) -> float:
        """The inverse document frequency of one analysed term (a stemmed word or a whole
        identifier), as BM25 weighs it: answers weigh a question's words by it."""
        run = QueryRun(self, len(self._allowed(None)))
        return run.idf(run.frequency(term))

    def _allowed(self, mask: np.ndarray | None) -> np.ndarray:
        """Live indexed rows that ``mask`` allows."""
        if self._stats_seq != self.meta.seq:  # the meta was refreshed on its own
            self._stats()
        allowed = self.alive.copy()
        if mask is not None:
            limit = min(len(mask), len(allowed))
            allowed[limit:] = False
            allowed[:limit] &= mask[:limit]
        return allowed

    # -- state --------------------------------------------------------------------------

    def _stats(self) -> None:
        """Corpus statistics over live indexed rows: N, average length, per-row norms."""
        size = max([self.meta.size, *(int(s.rows[-1]) + 1 for s in self.segments
                                      if len(s.rows))])
        alive = np.zeros(size, np.bool_)
        alive[:self.meta.size] = self.meta.alive
        lengths = np.zeros(size, np.float32)
        indexed = np.zeros(size, np.bool_)
        for segment in self.segments:
            lengths[segment.rows] = segment.lengths
            indexed[segment.rows] = True
            segment.has_dead = not alive[segment.rows].all()
        live = alive & indexed  # a row the metadata knows before this index: not yet
        self.count = int(live.sum())
        self.average = float(lengths[live].sum(dtype=np.float64) / self.count) \
            if self.count else 1.0
        self.alive = live
        self._stats_seq = self.meta.seq
        self.norm = (K1 * (1 - B + B * lengths / np.float32(self.average or 1.0))
                      ).astype(np.float32)

    def _save(self, segments: list[Segment], seq: int) -> None:
        """Write the new segments, then the manifest naming all of them."""
        named = []
        for segment in segments:
            if segment.files is None:  # merged or built by this refresh
                segment.files = {name: self.folder.write_array(name, getattr(segment, name))
                                 for name in ARRAYS}
            named.append(segment.files)
        self.folder.commit(
            {"format": KEYWORD_FORMAT, "analyzer": ANALYZER_VERSION,
             "title_weight": TITLE_WEIGHT, "seq": seq, "segments": named},
            [name for files in named for name in files.values()])
        self.segments = segments
        self.seq = seq
        self._stats()

    def reload(self) -> None:
        """Take up what another process wrote; start over if the store is not the one
        indexed (its change log is behind the index)."""
        manifest = self.folder.read()
        if manifest is not None and manifest.get("seq", 0) != self.seq:
            self._load()
        if self.store.last_change() < self.seq:
            self.segments, self.seq = [], 0
            self._stats()

    def _load(self) -> None:
        """The current generation; one in another format or analyzer, or unreadable, is
        left alone and the next refresh rebuilds from the store."""
        for _ in range(3):  # a writer may replace the generation between two reads
            manifest = self.folder.read()
            if manifest is None or not _compatible(manifest):
                return
            try:
                segments = [Segment(**{name: self.folder.load_array(files[name])
                                       for name in ARRAYS}, files=dict(files))
                            for files in manifest["segments"]]
            except FileNotFoundError:
                continue
            except (OSError, ValueError, KeyError, TypeError):
                return
            self.segments = segments
            self.seq = int(manifest["seq"])
            self._stats()
            return


def _compatible(manifest: dict[str, Any]) -> bool:
    return (manifest.get("format") == KEYWORD_FORMAT
            and manifest.get("analyzer") == ANALYZER_VERSION
            and manifest.get("title_weight") == TITLE_WEIGHT)


