"""Keyword search: BM25 over an in-process inverted index beside the SQLite store.

FTS5 answers a common-word OR query over a million entries in most of a second; this
index answers it in a few milliseconds by scoring whole posting lists at once with numpy.
SQLite stays the source of truth: the index follows the store's change log and can always
be rebuilt from it.

Layout. Postings live in *segments*, each covering the rows added by one or more
refreshes (rowid ranges never overlap, a row's content never changes). A segment holds,
for each term (a 64-bit hash, see :mod:`tokenize`), its rows in order with their weighted
term frequency (title occurrences count ``TITLE_WEIGHT`` times) and positions (phrases
are checked exactly, here, not in SQLite). Removed rows stay in the
postings but are dead in :class:`DocMeta` (masked, and not counted in N, the average
length or any document frequency: statistics are exact after deletions); merges drop
them. New rows go into a new segment; segments of similar size are merged, so there are
about log4(rows / smallest refresh) of them.

Queries evaluate the parsed expression to one boolean array over rowids (filters, NOT,
AND, phrases applied inside, never after ranking), add every ranking term's BM25
contribution into one dense score array, and take the top k with a partition.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from osprey_core.logbook.docmeta import DocMeta, IndexFolder
from osprey_core.logbook.query import (
    And,
    Field,
    Node,
    Not,
    Or,
    ParsedQuery,
    Phrase,
    Word,
    walk_positive,
)
from osprey_core.logbook.tokenize import (
    ANALYZER_VERSION,
    PART,
    RAW_TOKEN,
    Token,
    analyze_raw,
    spans,
    term_hash,
)

if TYPE_CHECKING:
    from osprey_core.logbook.store import DocRow, LogbookStore

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

_ARRAYS = ("terms", "offsets", "occ_offsets", "docs", "tfs", "occ_starts", "positions",
           "rows", "lengths")
_DOC, _FIELD = -1, -2  # separators in a batch's term stream: next row, title -> text
_DOC_MARK, _FIELD_MARK = "\ue000", "\ue001"  # private-use characters: never part of a token


@dataclass(slots=True)
class Segment:
    """Postings of a range of rows. For term ``terms[i]`` (sorted hashes) the postings are
    ``offsets[i]:offsets[i+1]`` of ``docs`` (rowids, ascending) and ``tfs`` (weighted term
    frequency, saturating at 65535); its positions are ``occ_offsets[i]:occ_offsets[i+1]``
    of ``positions``, posting after posting, each posting's from ``occ_starts`` (counted
    from the term's first position, so a posting's positions are found without reading
    the postings before it)."""

    terms: np.ndarray
    offsets: np.ndarray
    occ_offsets: np.ndarray
    docs: np.ndarray
    tfs: np.ndarray
    occ_starts: np.ndarray
    positions: np.ndarray
    rows: np.ndarray  # every row of the segment (ascending), with its weighted length
    lengths: np.ndarray
    files: dict[str, str] | None = None  # written as these files
    has_dead: bool = False

    @property
    def size(self) -> int:
        return len(self.docs)

    def find(self, term: int) -> int:
        """The index of ``term`` in this segment, or -1."""
        at = int(np.searchsorted(self.terms, np.uint64(term)))
        return at if at < len(self.terms) and int(self.terms[at]) == term else -1

    def counts(self) -> np.ndarray:
        """Positions per posting, for all postings."""
        starts = self.occ_offsets[_owners(self.offsets)] + self.occ_starts
        return np.diff(starts, append=self.occ_offsets[-1])

    def occurrences(self, at: int, picked: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Where the positions of postings ``picked`` (of term ``at``) start, and how
        many there are."""
        last = int(self.offsets[at + 1])
        block = int(self.occ_offsets[at])
        starts = self.occ_starts[picked].astype(np.int64)
        after = picked + 1
        ends = np.where(after < last, self.occ_starts[np.minimum(after, last - 1)],
                        int(self.occ_offsets[at + 1]) - block).astype(np.int64)
        return block + starts, ends - starts


def _distinct(ordered: np.ndarray) -> np.ndarray:
    """The distinct values of a sorted array (``np.unique`` hashes or sorts again)."""
    if not len(ordered):
        return ordered
    keep = np.empty(len(ordered), np.bool_)
    keep[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=keep[1:])
    return ordered[keep]


def _owners(offsets: np.ndarray) -> np.ndarray:
    """For CSR ``offsets``: the block each element belongs to."""
    return np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))


@dataclass(frozen=True, slots=True)
class KeywordHits:
    """Rowids in rank order with their BM25 scores; ``total`` matched before the top k."""

    rowids: list[int]
    scores: list[float]
    total: int


# -- building -----------------------------------------------------------------------------

class _Column:
    """An append-only numpy array: values gather in a list and reach the array in one
    assignment when it is read (an element written to numpy one at a time is slow)."""

    def __init__(self, dtype: type) -> None:
        self.array = np.zeros(1024, dtype)
        self.size = 0
        self.pending: list[int] = []

    def __len__(self) -> int:
        return self.size + len(self.pending)

    def add(self, values: Iterable[int]) -> None:
        self.pending.extend(values)

    def values(self) -> np.ndarray:
        if self.pending:
            end = self.size + len(self.pending)
            if end > len(self.array):
                grown = np.zeros(max(end, 2 * len(self.array)), self.array.dtype)
                grown[:self.size] = self.array[:self.size]
                self.array = grown
            self.array[self.size:end] = self.pending
            self.size, self.pending = end, []
        return self.array[:self.size]


class _Vocabulary:
    """Terms of this process as small ids while a batch is sorted (cheap to sort). Each
    distinct raw token and each distinct white-space chunk of text is analysed once: a
    batch becomes one dictionary lookup per chunk (run in C by ``map``) and an expansion
    of the chunks' term ids by numpy."""

    #: Distinct chunks remembered (a logbook's numbers and codes keep coming).
    CHUNK_LIMIT = 2_000_000

    def __init__(self) -> None:
        self.hashes = _Column(np.uint64)
        self.whole = _Column(np.bool_)
        self.ids: dict[int, int] = {}
        self.raw: dict[str, tuple[int, ...]] = {}
        self._forget_chunks()

    def _forget_chunks(self) -> None:
        self.chunks = _Chunks(self)
        self.table = _Column(np.int64)  # the chunks' term ids, chunk after chunk
        self.starts = _Column(np.int64)
        self.sizes = _Column(np.int64)
        self.chunks[_DOC_MARK] = self.add_chunk((_DOC,))
        self.chunks[_FIELD_MARK] = self.add_chunk((_FIELD,))

    def _id(self, term: str, whole: bool) -> int:
        digest = term_hash(term, whole=whole)
        found = self.ids.get(digest)
        if found is None:
            found = self.ids[digest] = len(self.ids)
            self.hashes.add((digest,))
            self.whole.add((whole,))
        return found

    def of_raw(self, raw: str) -> tuple[int, ...]:
        """Ids in stream order: first part, the whole (same position), other parts."""
        found = self.raw.get(raw)
        if found is None:
            token = analyze_raw(raw)
            ids = [self._id(part, False) for part in token.parts]
            if token.whole is not None:
                ids.insert(1, self._id(token.whole, True))
            if len(self.raw) > self.CHUNK_LIMIT:
                self.raw.clear()
            found = self.raw[raw] = tuple(ids)
        return found

    def add_chunk(self, ids: tuple[int, ...]) -> int:
        number = len(self.starts)
        self.starts.add((len(self.table),))
        self.sizes.add((len(ids),))
        self.table.add(ids)
        return number

    def stream(self, text: str) -> np.ndarray:
        """The term ids of ``text``, with the marks' ids where they stand."""
        if len(self.chunks) > self.CHUNK_LIMIT:
            self._forget_chunks()
        numbers = np.array(list(map(self.chunks.__getitem__, text.split())), np.int64)
        return self.table.values()[_spread(self.starts.values()[numbers],
                                           self.sizes.values()[numbers])]


class _Chunks(dict[str, int]):
    """White-space chunk -> its number in the vocabulary's chunk table."""

    def __init__(self, vocabulary: _Vocabulary) -> None:
        super().__init__()
        self.vocabulary = vocabulary

    def __missing__(self, chunk: str) -> int:
        of_raw = self.vocabulary.of_raw
        found = self[chunk] = self.vocabulary.add_chunk(tuple(chain.from_iterable(
            of_raw(raw) for raw in RAW_TOKEN.findall(chunk.lower()))))
        return found


def build_segment(rows: list[DocRow], vocabulary: _Vocabulary, *,
                  title_weight: int) -> Segment:
    """One segment of ``rows`` (ascending rowids). Python only maps text chunks to term
    ids; positions, frequencies and the grouping by term are done by numpy."""
    text = f" {_DOC_MARK} ".join(f"{row.title} {_FIELD_MARK} {row.text}" for row in rows)
    if text.count(_DOC_MARK) != len(rows) - 1 or text.count(_FIELD_MARK) != len(rows):
        clean = str.maketrans({_DOC_MARK: " ", _FIELD_MARK: " "})
        text = f" {_DOC_MARK} ".join(f"{row.title.translate(clean)} {_FIELD_MARK} "
                                     f"{row.text.translate(clean)}" for row in rows)
    stream = vocabulary.stream(text)
    is_doc = stream == _DOC
    is_field = stream == _FIELD
    doc = np.cumsum(is_doc)
    advance = np.ones(len(stream), np.int64)
    terms = stream >= 0
    advance[terms] = ~vocabulary.whole.values()[stream[terms]]
    advance[is_doc] = 0
    climb = np.cumsum(advance)  # positions: per-row count of advancing terms (+1 gap)
    base = np.zeros(len(rows), np.int64)
    base[1:] = climb[is_doc]
    positions = climb - base[doc] - 1
    weights = np.where(np.cumsum(is_field) > doc, 1, title_weight)

    ids, doc, positions, weights = stream[terms], doc[terms], positions[terms], weights[terms]
    rowids = np.fromiter((row.rowid for row in rows), np.int64, len(rows))
    lengths = np.bincount(doc, weights=weights, minlength=len(rows)).astype(np.float32)
    present = np.flatnonzero(np.bincount(ids))
    hashes = vocabulary.hashes.values()[present]
    by_hash = np.argsort(hashes)
    rank = np.empty(int(present[-1]) + 1 if len(present) else 0, np.int64)
    rank[present[by_hash]] = np.arange(len(present))
    keys = np.sort((rank[ids] << 32) | np.arange(len(ids)))
    order = keys & 0xFFFFFFFF
    ranks = keys >> 32
    docs = rowids[doc[order]]
    new = np.ones(len(keys), np.bool_)
    new[1:] = (ranks[1:] != ranks[:-1]) | (docs[1:] != docs[:-1])
    starts = np.flatnonzero(new)
    term_starts = np.flatnonzero(np.diff(ranks[starts], prepend=-1) != 0)
    offsets = np.append(term_starts, len(starts)).astype(np.int64)
    occ_offsets = np.append(starts[term_starts], len(keys)).astype(np.int64)
    return Segment(
        terms=hashes[by_hash], offsets=offsets, occ_offsets=occ_offsets,
        docs=docs[starts].astype(np.int32),
        tfs=np.minimum(np.add.reduceat(weights[order], starts) if len(starts) else
                       np.zeros(0, np.int64), 65535).astype(np.uint16),
        occ_starts=(starts - occ_offsets[_owners(offsets)]).astype(np.uint32),
        positions=positions[order].astype(np.uint32),
        rows=rowids.astype(np.int32), lengths=lengths)


def _spread(starts: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Indices ``starts[i] .. starts[i] + sizes[i]`` concatenated, without a loop."""
    total = int(sizes.sum())
    if not total:
        return np.zeros(0, np.int64)
    shift = np.repeat(starts.astype(np.int64) - np.cumsum(sizes) + sizes, sizes)
    return shift + np.arange(total)


def merge_segments(segments: list[Segment], alive: np.ndarray) -> Segment:
    """One segment holding the live rows of ``segments`` (given in rowid order). No sort
    of the postings: every posting's place is computed from per-term counts."""
    union = _distinct(np.sort(np.concatenate([segment.terms for segment in segments])))
    parts = []
    post_total = np.zeros(len(union), np.int64)
    occ_total = np.zeros(len(union), np.int64)
    for segment in segments:
        live = alive[segment.docs] if segment.has_dead else None
        blocks = segment.offsets[:-1]
        counts = segment.counts()
        if live is None:
            post_counts = np.diff(segment.offsets)
            occ_counts = np.diff(segment.occ_offsets)
        else:
            post_counts = np.add.reduceat(live.astype(np.int64), blocks) if len(blocks) else \
                np.zeros(0, np.int64)
            occ_counts = np.add.reduceat(np.where(live, counts, 0), blocks) if len(blocks) \
                else np.zeros(0, np.int64)
        where = np.searchsorted(union, segment.terms)
        parts.append((segment, live, counts, where, post_counts, occ_counts))
        post_total[where] += post_counts
        occ_total[where] += occ_counts
    keep = post_total > 0
    renumber = np.cumsum(keep) - 1
    offsets = np.concatenate([[0], np.cumsum(post_total[keep])])
    occ_offsets = np.concatenate([[0], np.cumsum(occ_total[keep])])
    out = {name: np.empty(int(offsets[-1]), dtype) for name, dtype in
           (("docs", np.int32), ("tfs", np.uint16), ("counts", np.int64))}
    positions = np.empty(int(occ_offsets[-1]), np.uint32)
    post_fill = offsets[:-1].copy()  # next free place per term
    occ_fill = occ_offsets[:-1].copy()
    rows, lengths = [], []
    for segment, live, counts, where, post_counts, occ_counts in parts:
        target = renumber[where]
        used = post_counts > 0
        target, post_counts, occ_counts = target[used], post_counts[used], occ_counts[used]
        dest = _spread(post_fill[target], post_counts)
        occ_dest = _spread(occ_fill[target], occ_counts)
        if live is None:
            out["docs"][dest], out["tfs"][dest] = segment.docs, segment.tfs
            out["counts"][dest] = counts
            positions[occ_dest] = segment.positions
        else:
            out["docs"][dest], out["tfs"][dest] = segment.docs[live], segment.tfs[live]
            out["counts"][dest] = counts[live]
            positions[occ_dest] = segment.positions[np.repeat(live, counts)]
        post_fill[target] += post_counts
        occ_fill[target] += occ_counts
        row_live = alive[segment.rows] if segment.has_dead else slice(None)
        rows.append(segment.rows[row_live])
        lengths.append(segment.lengths[row_live])
    counts = out.pop("counts")
    starts = np.cumsum(counts) - counts
    return Segment(terms=union[keep], offsets=offsets, occ_offsets=occ_offsets,
                   occ_starts=(starts - occ_offsets[_owners(offsets)]).astype(np.uint32),
                   positions=positions, rows=np.concatenate(rows),
                   lengths=np.concatenate(lengths), **out)


# -- the index ----------------------------------------------------------------------------

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
        self._vocabulary: _Vocabulary | None = None
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
                self._vocabulary = _Vocabulary()
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
                                merge_segments(built, self._alive))
            while len(segments) > 1 and (
                    segments[-2].size <= MERGE_RATIO * segments[-1].size
                    or len(segments) > MAX_SEGMENTS):
                segments[-2:] = [merge_segments(segments[-2:], self._alive)]
            self._save(segments, changes.last)
            return done

    # -- searching ----------------------------------------------------------------------

    def matches(self, query: ParsedQuery, *, mask: np.ndarray | None = None) -> np.ndarray:
        """Every live row ``query`` matches (and ``mask`` allows), as a boolean array
        over rowids: what another arm may rank when the query has operators."""
        allowed = self._allowed(mask)
        if query.expression is None:
            return allowed
        return _Run(self, len(allowed)).evaluate(query.expression, allowed)

    def search(self, query: ParsedQuery, *, mask: np.ndarray | None = None,
               k: int = 10) -> KeywordHits:
        """The best ``k`` live entries matching ``query`` (and ``mask``, a boolean array
        over rowids), by BM25; with no ranking words, the newest first."""
        allowed = self._allowed(mask)
        run = _Run(self, len(allowed))
        weights = Counter(chain.from_iterable(
            ((node.whole, *node.parts) if isinstance(node, Word) and node.whole is not None
             else node.parts if isinstance(node, Word) else node.words)
            for node in walk_positive(query.expression)))
        if _bag_of_words(query.expression):
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
        if not total or k <= 0:
            return KeywordHits([], [], total)
        if len(candidates) > k:
            threshold = np.partition(scores, len(scores) - k)[len(scores) - k]
            keep = scores >= threshold
            candidates, scores = candidates[keep], scores[keep]
        order = np.lexsort((-candidates, -scores))[:k]
        shown = scores[order] if weights else np.zeros(len(order))
        return KeywordHits([int(rowid) for rowid in candidates[order]],
                           [float(score) for score in shown], total)

    def idf(self, term: str) -> float:
        """The inverse document frequency of one analysed term (a stemmed word or a whole
        identifier), as BM25 weighs it: answers weigh a question's words by it."""
        allowed = self._allowed(None)
        frequency = int(_Run(self, len(allowed)).has(term)[: len(allowed)][allowed].sum())
        return math.log(1 + (self.count - frequency + 0.5) / (frequency + 0.5))

    def _allowed(self, mask: np.ndarray | None) -> np.ndarray:
        """Live indexed rows that ``mask`` allows."""
        if self._stats_seq != self.meta.seq:  # the meta was refreshed on its own
            self._stats()
        allowed = self._alive.copy()
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
        self._alive = live
        self._stats_seq = self.meta.seq
        self._norm = (K1 * (1 - B + B * lengths / np.float32(self.average or 1.0))
                      ).astype(np.float32)

    def _save(self, segments: list[Segment], seq: int) -> None:
        """Write the new segments, then the manifest naming all of them."""
        named = []
        for segment in segments:
            if segment.files is None:  # merged or built by this refresh
                segment.files = {name: self.folder.write_array(name, getattr(segment, name))
                                 for name in _ARRAYS}
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
                                       for name in _ARRAYS}, files=dict(files))
                            for files in manifest["segments"]]
            except FileNotFoundError:
                continue
            except (OSError, ValueError, KeyError, TypeError):
                return
            self.segments = segments
            self.seq = int(manifest["seq"])
            self._stats()
            return


def _bag_of_words(node: Node | None) -> bool:
    """Plain words side by side: every scoring row matches and every match scores."""
    if isinstance(node, Or):
        return all(_bag_of_words(child) for child in node.children)
    return isinstance(node, Word) and node.whole is None


def _compatible(manifest: dict[str, Any]) -> bool:
    return (manifest.get("format") == KEYWORD_FORMAT
            and manifest.get("analyzer") == ANALYZER_VERSION
            and manifest.get("title_weight") == TITLE_WEIGHT)


class _Run:
    """One query's evaluation: posting lists looked up once, sets as masks over rowids.

    A posting list is read whole only when most of it matters; for a few rows (a rare
    term's, a filter's) the rows are looked up in it by binary search instead, so a
    common word beside a rare one costs little.
    """

    #: Rows per posting below which rows are looked up, and below which the postings of
    #: the rows are picked out rather than all postings read.
    LOOKUP_BELOW = 1 / 16
    PICK_BELOW = 1 / 2

    def __init__(self, index: KeywordIndex, size: int) -> None:
        self.index = index
        self.size = size
        self._postings: dict[str, list[tuple[Segment, int, int, int]]] = {}

    def postings(self, term: str) -> list[tuple[Segment, int, int, int]]:
        """(segment, term index, first, last posting) for each segment holding ``term``."""
        found = self._postings.get(term)
        if found is None:
            digest = term_hash(term, whole=PART.fullmatch(term) is None)
            found = self._postings[term] = [
                (segment, at, int(segment.offsets[at]), int(segment.offsets[at + 1]))
                for segment in self.index.segments if (at := segment.find(digest)) >= 0]
        return found

    def length(self, term: str) -> int:
        return sum(last - first for _, _, first, last in self.postings(term))

    def has(self, term: str) -> np.ndarray:
        found = np.zeros(self.size, np.bool_)
        for segment, _, first, last in self.postings(term):
            found[segment.docs[first:last]] = True
        return found

    def picked(self, term: str, rows: np.ndarray, among: np.ndarray
               ) -> Iterator[tuple[Segment, int, np.ndarray | slice]]:
        """For each segment holding ``term``: its postings (absolute indices) of the rows
        ``rows`` (sorted), which are the rows set in ``among`` — or, when most of them
        are, all its postings (a slice)."""
        for segment, term_at, first, last in self.postings(term):
            docs = segment.docs[first:last]
            low, high = np.searchsorted(rows, (docs[0], docs[-1] + 1))
            if high - low == 0:
                continue
            share = (high - low) / (last - first)
            if share < self.LOOKUP_BELOW:  # a few rows: look each one up
                mine = rows[low:high]
                at = np.minimum(np.searchsorted(docs, mine), last - first - 1)
                yield segment, term_at, first + at[docs[at] == mine]
            elif share < self.PICK_BELOW:
                yield segment, term_at, first + np.flatnonzero(among[docs])
            else:
                yield segment, term_at, slice(first, last)

    def evaluate(self, node: Node, scope: np.ndarray) -> np.ndarray:
        """The rows of ``scope`` that ``node`` matches."""
        if isinstance(node, Word):
            found = self._all(node.parts, scope)
            if node.whole is not None:
                found |= self.has(node.whole) & scope
            return found
        if isinstance(node, Phrase):
            return self._phrase(node.words, self._all(node.words, scope))
        if isinstance(node, Field):
            found = np.zeros(self.size, np.bool_)
            found[:self.index.meta.size] = self.index.meta.mask(node.filters)
            return found & scope
        if isinstance(node, Not):
            return scope & ~self.evaluate(node.child, scope)
        if isinstance(node, And):
            found = scope
            # phrases last: their positions are read only for what the rest allows
            for child in sorted(node.children, key=lambda child: isinstance(child, Phrase)):
                found = self.evaluate(child, found)
            return found
        assert isinstance(node, Or)
        found = np.zeros(self.size, np.bool_)
        for child in node.children:
            found |= self.evaluate(child, scope)
        return found

    def _all(self, terms: Iterable[str], scope: np.ndarray) -> np.ndarray:
        """The rows of ``scope`` holding every term, the rarest term first."""
        found = scope
        for count, term in enumerate(sorted(set(terms), key=self.length)):
            if count == 0:
                found = found & self.has(term)
                continue
            narrowed = np.zeros(self.size, np.bool_)
            for segment, _, picked in self.picked(term, np.flatnonzero(found), found):
                narrowed[segment.docs[picked]] = True
            found &= narrowed
        return found

    def _phrase(self, words: tuple[str, ...], candidates: np.ndarray) -> np.ndarray:
        """The candidates holding ``words`` at consecutive positions: keys (row, position
        of the first word) kept while each next word is found one place further on."""
        if len(words) < 2:
            return candidates
        rows = np.flatnonzero(candidates)
        keys = np.zeros(0, np.int64)
        for offset, word in enumerate(words):
            found = []
            for segment, at, picked in self.picked(word, rows, candidates):
                if isinstance(picked, slice):  # all postings: keep the candidates'
                    picked = picked.start + np.flatnonzero(candidates[segment.docs[picked]])
                starts, counts = segment.occurrences(at, picked)
                positions = segment.positions[_spread(starts, counts)].astype(np.int64) - offset
                owners = np.repeat(segment.docs[picked].astype(np.int64), counts)
                fits = positions >= 0
                found.append((owners[fits] << 32) | positions[fits])
            mine = np.concatenate(found) if found else np.zeros(0, np.int64)
            if offset and len(mine):
                at = np.minimum(np.searchsorted(mine, keys), len(mine) - 1)
                keys = keys[mine[at] == keys]
            else:
                keys = mine
            rows = _distinct(keys >> 32)
            candidates = np.zeros(self.size, np.bool_)
            candidates[rows] = True
            if not len(rows):
                break
        return candidates

    def every(self, term: str) -> Iterator[tuple[Segment, int, slice]]:
        for segment, at, first, last in self.postings(term):
            yield segment, at, slice(first, last)

    def scores(self, weights: Counter[str], rows: np.ndarray | None,
               matched: np.ndarray | None) -> np.ndarray:
        """BM25 for the ranking terms (``weights``: how often each occurs in the query)
        of the matched ``rows`` (or of every row), as an array over rowids. Document
        frequencies count live rows only, matched or not."""
        index = self.index
        scores = np.zeros(self.size, np.float32)
        for term, weight in weights.items():
            frequency = sum(
                int(index._alive[segment.docs[first:last]].sum()) if segment.has_dead
                else last - first for segment, _, first, last in self.postings(term))
            if not frequency:
                continue
            idf = np.float32(weight * math.log(
                1 + (index.count - frequency + 0.5) / (frequency + 0.5)))
            for segment, _, picked in (self.picked(term, rows, matched) if rows is not None
                                       else self.every(term)):
                docs = segment.docs[picked]
                part = segment.tfs[picked].astype(np.float32)
                norm = index._norm[docs]
                norm += part
                np.divide(part, norm, out=part)
                part *= idf
                scores[docs] += part
        return scores


# -- snippets -----------------------------------------------------------------------------

def _highlighted(query: ParsedQuery) -> tuple[set[str], set[tuple[str, ...]], set[str]]:
    """What the query ranks by: whole identifiers, identifiers' runs of parts (``rf.log``
    inside ``/var/log/rf.log``), and single words (phrase words included)."""
    wholes: set[str] = set()
    runs: set[tuple[str, ...]] = set()
    words: set[str] = set()
    for node in walk_positive(query.expression):
        if isinstance(node, Phrase):
            words.update(node.words)
        elif node.whole is not None:
            wholes.add(node.whole)
            runs.add(node.parts)
        else:
            words.update(node.parts)
    return wholes, runs, words


def _marks(text: str, found: list[tuple[int, int, Token]],
           query: ParsedQuery) -> list[tuple[int, int, str]]:
    """Where ``text`` holds the query's terms: (start, end, term), in order."""
    wholes, runs, words = _highlighted(query)
    marks: list[tuple[int, int, str]] = []
    for start, end, token in found:
        if token.whole in wholes:
            marks.append((start, end, token.whole))  # type: ignore[arg-type]
            continue
        if token.whole is None:
            if token.parts[0] in words:
                marks.append((start, end, token.parts[0]))
            continue
        pieces = [(part.start(), part.end()) for part in PART.finditer(text, start, end)]
        taken = [False] * len(pieces)
        for run in runs:
            for at in range(len(pieces) - len(run) + 1):
                if token.parts[at:at + len(run)] == run and not any(taken[at:at + len(run)]):
                    marks.append((pieces[at][0], pieces[at + len(run) - 1][1], "/".join(run)))
                    taken[at:at + len(run)] = [True] * len(run)
        marks += [(*piece, term) for piece, term, used in zip(pieces, token.parts, taken,
                                                              strict=True)
                  if not used and term in words]
    return sorted(marks)


def snippet(text: str, query: ParsedQuery, *, width: int = 200) -> str:
    """About ``width`` characters of ``text`` around its densest cluster of query terms,
    with each match wrapped in «» (the whole identifier when it matched whole)."""
    shown, found = spans(" ".join(text.split()))
    marks = _marks(shown, found, query)
    if not marks:
        return _cut(shown, 0, 0, width, [])
    best, best_key = 0, (-1, -1)
    for first, (start, _, _) in enumerate(marks[:200]):
        inside = [mark for mark in marks[first:] if mark[1] <= start + width]
        key = (len({term for _, _, term in inside}), len(inside))
        if key > best_key:
            best, best_key = first, key
    anchor = marks[best][0]
    return _cut(shown, max(0, anchor - width // 5), anchor, width, marks)


def _cut(text: str, start: int, anchor: int, width: int,
         marks: list[tuple[int, int, str]]) -> str:
    """``text[start:start + width]`` on word boundaries (never past ``anchor``), with
    marks wrapped."""
    if start > 0:
        space = text.find(" ", start, anchor)
        start = space + 1 if space >= 0 else start
    end = min(len(text), start + width)
    if end < len(text):
        space = text.rfind(" ", start, end)
        end = space if space > start else end
    pieces, at = [], start
    for first, last, _ in marks:
        if first >= at and last <= end:
            pieces += [text[at:first], "«", text[first:last], "»"]
            at = last
    pieces.append(text[at:end])
    return ("…" if start > 0 else "") + "".join(pieces) + ("…" if end < len(text) else "")
