"""Keyword search on PostgreSQL: the store's ``terms`` column, GIN-indexed, matched and
ranked by the database's own text search.

The interface is :class:`~osprey_core.logbook.keyword.KeywordIndex`'s, so the query layer
runs one code path on both engines: a parsed query becomes one SQL condition (words and
phrases as ``terms @@ tsquery``, fields as column conditions, AND/OR/NOT as SQL), the
caller's mask becomes a condition on rowids, and both hold in the ``WHERE`` clause, before
``ORDER BY ... LIMIT k``: no hit ever violates a filter or an operator.

Ranking is the database's ``ts_rank`` of each ranking term on its own (term frequency,
saturating; a title term counts three times a text term; divided by the log of the
entry's length, then saturated into [0, 1)), weighted by the term's idf as BM25 weighs
it, with document frequencies counted by the GIN index, and summed. One ``ts_rank_cd``
over the whole query has no idf: on SciFact it scored nDCG@10 0.306 against 0.680 for
this sum (0.686 for the BM25 of the index files through the same facade). A score never
exceeds the sum of the weights, the ceiling hybrid fusion divides by, as on SQLite.
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from collections.abc import Callable
from itertools import chain
from typing import TYPE_CHECKING, Any

import numpy as np

from osprey_core.logbook.keyword import KeywordHits
from osprey_core.logbook.pg_terms import expression_sql, quote
from osprey_core.logbook.query import ParsedQuery, ranking_weights

if TYPE_CHECKING:
    from osprey_core.logbook.docmeta import DocMeta
    from osprey_core.logbook.pg_database import LogbookDatabase

#: ``ts_rank`` weights of D, C, B, A: text terms are D, title terms A (three times).
WEIGHTS = "{0.333333, 0.333333, 0.333333, 1.0}"
#: ``ts_rank`` divided by 1 + log(the entry's length).
NORMALISATION = 1
#: Each term's rank ``r`` counts ``s r / (s r + 1)`` of its weight, in [0, 1) (so a score
#: never exceeds the sum of the weights, the ceiling): one occurrence in the text of an
#: entry of 50 to 120 terms (r about 0.03) counts about a quarter, in its title (r about
#: 0.12) about half, near what BM25 gives on SQLite, so the fusion weighs both engines'
#: keyword arms alike. SciFact nDCG@10: s = 3 0.685, 10 0.680, 30 0.672.
SATURATION = 10.0
#: A mask allowing at most this share of rows is sent as its rowids, a wider one as the
#: rowids it refuses.
NARROW = 0.5


#: Per database: the newest metadata this process has read (every logbook opened on the
#: database, one per request in the service, starts from it and hands back what it read).
_METAS: dict[str, DocMeta] = {}
_METAS_LOCK = threading.Lock()


def process_meta(store: LogbookDatabase) -> DocMeta:
    """The per-entry metadata of ``store``'s database, kept in this process's memory (the
    hosts of a database server share no files), read through ``store``."""
    from osprey_core.logbook.docmeta import DocMeta, ProcessFolder

    with _METAS_LOCK:
        known = _METAS.get(store.url)
        if known is None:
            known = _METAS[store.url] = DocMeta(store, ProcessFolder("meta"))
        return known.bound_to(store)


def _keep(url: str, meta: DocMeta) -> None:
    with _METAS_LOCK:
        known = _METAS.get(url)
        if known is None or meta.seq >= known.seq:
            _METAS[url] = meta


class PostgresKeywordIndex:
    """Keyword search by the database; :attr:`meta` (this process's copy of the
    per-entry metadata) is what the other arms' masks come from."""

    def __init__(self, store: LogbookDatabase, meta: DocMeta) -> None:
        self.store = store
        self.meta = meta

    def refresh(self, progress: Callable[[int, int], None] | None = None) -> int:
        """Catch the metadata up with the store; the terms are written with each entry,
        so there is nothing else to index. Returns how many rows were new here."""
        added = self.meta.refresh(progress)
        _keep(self.store.url, self.meta)
        return added

    def search(self, query: ParsedQuery, *, mask: np.ndarray | None = None,
               k: int = 10) -> KeywordHits:
        """The best ``k`` entries matching ``query`` (and ``mask``, a boolean array over
        rowids), by the idf-weighted sum of each ranking term's ``ts_rank``; with no
        ranking words, the newest first."""
        where, params = self._where(query, mask)
        weights = self._weights(ranking_weights(query.expression))
        ranked = [(term, weight) for term, (weight, frequency) in weights.items() if frequency]
        score = " + ".join(f"%s * (1 - 1 / (1 + {SATURATION} * ts_rank('{WEIGHTS}', terms, "
                           f"%s::tsquery, {NORMALISATION})))" for _ in ranked) or "0.0"
        order = "score DESC, rowid DESC" if weights else "ts DESC, rowid DESC"
        rows = self.store.rows(
            f"SELECT rowid, {score} AS score, count(*) OVER () FROM logbook_entries "
            f"WHERE {where} ORDER BY {order} LIMIT %s",
            [*chain.from_iterable((weight, quote(term)) for term, weight in ranked),
             *params, max(k, 1)])
        total = int(rows[0][2]) if rows else 0
        if k <= 0:
            rows = []
        return KeywordHits([int(row[0]) for row in rows], [float(row[1]) for row in rows],
                           total, sum(weight for weight, _ in weights.values()))

    def _weights(self, terms: Counter[str]) -> dict[str, tuple[float, int]]:
        """Each ranking term's weight (how often the query holds it times its idf) and
        document frequency, from one statement (GIN lookups). A term no entry holds counts
        at its highest idf in the ceiling, as on SQLite, and ranks nothing."""
        if not terms:
            return {}
        count, *frequencies = self.store.rows(
            "SELECT (SELECT count(*) FROM logbook_entries)" + "".join(
                ", (SELECT count(*) FROM logbook_entries WHERE terms @@ %s::tsquery)"
                for _ in terms), [quote(term) for term in terms])[0]
        return {term: (repeat * _idf(count, frequency), frequency)
                for (term, repeat), frequency in zip(terms.items(), frequencies, strict=True)}

    def matches(self, query: ParsedQuery, *, mask: np.ndarray | None = None) -> np.ndarray:
        """Every entry ``query`` matches (and ``mask`` allows), as a boolean array over
        rowids: what another arm may rank when the query has operators."""
        where, params = self._where(query, mask)
        rowids = np.array([row[0] for row in self.store.rows(
            f"SELECT rowid FROM logbook_entries WHERE {where}", params)], np.int64)
        size = max(self.meta.size, int(rowids.max()) + 1 if len(rowids) else 0)
        found = np.zeros(size, np.bool_)
        found[rowids] = True
        return found

    def idf(self, term: str) -> float:
        """BM25's inverse document frequency of one analysed term (answers weigh a
        question's words by it)."""
        return self._weights(Counter([term]))[term][0]

    def _where(self, query: ParsedQuery, mask: np.ndarray | None) -> tuple[str, list[Any]]:
        clauses, params = [], []
        if query.expression is not None:
            sql, params = expression_sql(query.expression)
            clauses.append(f"({sql})")
        if mask is not None:
            sql, more = mask_sql(mask)
            clauses.append(sql)
            params = [*params, *more]
        return " AND ".join(clauses) or "TRUE", params


def _idf(count: int, frequency: int) -> float:
    return math.log(1 + (count - frequency + 0.5) / (frequency + 0.5))


def mask_sql(mask: np.ndarray) -> tuple[str, list[Any]]:
    """A boolean array over rowids as a condition (rowids past its end are not allowed):
    the rowids it allows, or, when it allows most, those below its end it refuses."""
    allowed = np.flatnonzero(mask)
    if len(allowed) <= NARROW * len(mask):
        return "rowid = ANY(%s)", [allowed.tolist()]
    return "rowid < %s AND NOT rowid = ANY(%s)", [len(mask), np.flatnonzero(~mask).tolist()]
