"""Segments of postings and how they are built from a batch of rows and merged.

A segment covers a range of rowids; for each term (a 64-bit hash) it holds the rows in
order, their weighted term frequency and the positions of every occurrence.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from itertools import chain
from typing import TYPE_CHECKING

import numpy as np

from osprey_core.logbook.tokenize import RAW_TOKEN, analyze_raw, term_hash

if TYPE_CHECKING:
    from osprey_core.logbook.storage import DocRow

ARRAYS = ("terms", "offsets", "occ_offsets", "docs", "tfs", "occ_starts", "positions",
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


def distinct(ordered: np.ndarray) -> np.ndarray:
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


class Vocabulary:
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
        return self.table.values()[spread(self.starts.values()[numbers],
                                           self.sizes.values()[numbers])]


class _Chunks(dict[str, int]):
    """White-space chunk -> its number in the vocabulary's chunk table."""

    def __init__(self, vocabulary: Vocabulary) -> None:
        super().__init__()
        self.vocabulary = vocabulary

    def __missing__(self, chunk: str) -> int:
        of_raw = self.vocabulary.of_raw
        found = self[chunk] = self.vocabulary.add_chunk(tuple(chain.from_iterable(
            of_raw(raw) for raw in RAW_TOKEN.findall(chunk.lower()))))
        return found


def build_segment(rows: list[DocRow], vocabulary: Vocabulary, *,
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


def spread(starts: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Indices ``starts[i] .. starts[i] + sizes[i]`` concatenated, without a loop."""
    total = int(sizes.sum())
    if not total:
        return np.zeros(0, np.int64)
    shift = np.repeat(starts.astype(np.int64) - np.cumsum(sizes) + sizes, sizes)
    return shift + np.arange(total)


def merge_segments(segments: list[Segment], alive: np.ndarray) -> Segment:
    """One segment holding the live rows of ``segments`` (given in rowid order). No sort
    of the postings: every posting's place is computed from per-term counts."""
    union = distinct(np.sort(np.concatenate([segment.terms for segment in segments])))
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
        dest = spread(post_fill[target], post_counts)
        occ_dest = spread(occ_fill[target], occ_counts)
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
