"""One query evaluated against the index: boolean sets as masks over rowids, phrases checked
on positions, and BM25 scores summed into one dense array."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Protocol

import numpy as np

from osprey_core.logbook.keyword.segments import Segment, distinct, spread
from osprey_core.logbook.query import And, Field, Node, Not, Or, Phrase, Word
from osprey_core.logbook.tokenize import PART, term_hash

if TYPE_CHECKING:
    from osprey_core.logbook.docmeta import DocMeta


class IndexState(Protocol):
    """What an evaluation reads of the keyword index (a protocol: the index imports this)."""

    meta: DocMeta
    segments: list[Segment]
    count: int
    alive: np.ndarray
    norm: np.ndarray


def bag_of_words(node: Node | None) -> bool:
    """Plain words side by side: every scoring row matches and every match scores."""
    if isinstance(node, Or):
        return all(bag_of_words(child) for child in node.children)
    return isinstance(node, Word) and node.whole is None


class QueryRun:
    """One query's evaluation: posting lists looked up once, sets as masks over rowids.

    A posting list is read whole only when most of it matters; for a few rows (a rare
    term's, a filter's) the rows are looked up in it by binary search instead, so a
    common word beside a rare one costs little.
    """

    #: Rows per posting below which rows are looked up, and below which the postings of
    #: the rows are picked out rather than all postings read.
    LOOKUP_BELOW = 1 / 16
    PICK_BELOW = 1 / 2

    def __init__(self, index: IndexState, size: int) -> None:
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
                positions = segment.positions[spread(starts, counts)].astype(np.int64) - offset
                owners = np.repeat(segment.docs[picked].astype(np.int64), counts)
                fits = positions >= 0
                found.append((owners[fits] << 32) | positions[fits])
            mine = np.concatenate(found) if found else np.zeros(0, np.int64)
            if offset and len(mine):
                at = np.minimum(np.searchsorted(mine, keys), len(mine) - 1)
                keys = keys[mine[at] == keys]
            else:
                keys = mine
            rows = distinct(keys >> 32)
            candidates = np.zeros(self.size, np.bool_)
            candidates[rows] = True
            if not len(rows):
                break
        return candidates

    def every(self, term: str) -> Iterator[tuple[Segment, int, slice]]:
        for segment, at, first, last in self.postings(term):
            yield segment, at, slice(first, last)

    def frequency(self, term: str) -> int:
        """Live rows holding ``term``."""
        alive = self.index.alive
        return sum(int(alive[segment.docs[first:last]].sum()) if segment.has_dead
                   else last - first for segment, _, first, last in self.postings(term))

    def idf(self, frequency: int) -> float:
        count = self.index.count
        return math.log(1 + (count - frequency + 0.5) / (frequency + 0.5))

    def ceiling(self, weights: Counter[str]) -> float:
        """What a row would score holding every ranking term as often as saturation
        allows: the sum of the terms' weighted idf (a term no row holds counts at its
        highest idf). Dividing by it puts scores on a scale shared across queries."""
        return sum(weight * self.idf(self.frequency(term)) for term, weight in weights.items())

    def scores(self, weights: Counter[str], rows: np.ndarray | None,
               matched: np.ndarray | None) -> np.ndarray:
        """BM25 for the ranking terms (``weights``: how often each occurs in the query)
        of the matched ``rows`` (or of every row), as an array over rowids. Document
        frequencies count live rows only, matched or not."""
        index = self.index
        scores = np.zeros(self.size, np.float32)
        for term, weight in weights.items():
            frequency = self.frequency(term)
            if not frequency:
                continue
            idf = np.float32(weight * self.idf(frequency))
            for segment, _, picked in (self.picked(term, rows, matched) if rows is not None
                                       else self.every(term)):
                docs = segment.docs[picked]
                part = segment.tfs[picked].astype(np.float32)
                norm = index.norm[docs]
                norm += part
                np.divide(part, norm, out=part)
                part *= idf
                scores[docs] += part
        return scores

