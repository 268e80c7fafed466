"""The logbook's search terms in PostgreSQL's text-search types.

PostgreSQL's own parser reads ``HCM1:SP`` as two words and ``ALM-2231`` as ``alm`` and the
number ``-2231``, and keeps host names and paths only whole. So the ``tsvector`` of an
entry is built from the terms of :mod:`osprey_core.logbook.tokenize`, the analyzer of the
SQLite engine's keyword index: stemmed words, identifiers whole and by their parts (the
whole at the position of its first part), the title's terms weighted ``A`` and the
text's ``D``, with a gap between them so that no phrase spans the two. Queries are
``tsquery`` values made of the same terms, so both engines match the same entries;
PostgreSQL matches (``@@``, GIN-indexed), checks phrases (``<->``) and ranks
(``ts_rank``).
"""

from __future__ import annotations

from collections.abc import Iterable

from osprey_core.logbook.models import Filters
from osprey_core.logbook.query import And, Field, Node, Not, Phrase, Word
from osprey_core.logbook.tokenize import tokens

#: PostgreSQL's limits: positions above are stored as this; positions kept per lexeme;
#: bytes in a lexeme.
MAX_POSITION = 16383
MAX_POSITIONS = 256
MAX_LEXEME_BYTES = 2046


def quote(term: str) -> str:
    """A term as a quoted lexeme of the ``tsvector``/``tsquery`` input syntax."""
    return "'" + term.replace("\\", "\\\\").replace("'", "''") + "'"


def tsvector_text(title: str, text: str) -> str:
    """The ``tsvector`` input of an entry (cast by the database, never re-parsed)."""
    positions: dict[str, list[str]] = {}
    at = 0
    for field, weight in ((title, "A"), (text, "")):
        at += 1  # a gap: phrases never run from the title into the text
        for token in tokens(field):
            first = at + 1
            for term in token.parts:
                at += 1
                _add(positions, term, at, weight)
            if token.whole is not None:
                _add(positions, token.whole, first, weight)
    return " ".join(f"{quote(term)}:{','.join(places)}" for term, places in positions.items()
                    if len(term.encode()) <= MAX_LEXEME_BYTES)


def _add(positions: dict[str, list[str]], term: str, at: int, weight: str) -> None:
    places = positions.setdefault(term, [])
    if len(places) < MAX_POSITIONS:
        places.append(f"{min(at, MAX_POSITION)}{weight}")


def word_query(node: Word) -> str:
    """A word: its whole identifier, or all of its parts anywhere (as on SQLite)."""
    parts = " & ".join(quote(part) for part in dict.fromkeys(node.parts))
    if node.whole is None:
        return parts
    return f"{quote(node.whole)} | ({parts})" if parts else quote(node.whole)


def phrase_query(words: Iterable[str]) -> str:
    """Words adjacent and in order."""
    return " <-> ".join(quote(word) for word in words)


def expression_sql(node: Node) -> tuple[str, list[object]]:
    """A parsed expression as an SQL condition on ``logbook_entries`` (fields as column
    conditions, words and phrases as ``terms @@ tsquery``) and its parameters."""
    if isinstance(node, Word):
        return "terms @@ %s::tsquery", [word_query(node)]
    if isinstance(node, Phrase):
        return "terms @@ %s::tsquery", [phrase_query(node.words)]
    if isinstance(node, Field):
        return filters_sql(node.filters)
    if isinstance(node, Not):
        inner, params = expression_sql(node.child)
        return f"NOT ({inner})", params
    joiner = " AND " if isinstance(node, And) else " OR "
    parts, params = [], []
    for child in node.children:
        sql, more = expression_sql(child)
        parts.append(f"({sql})")
        params += more
    return joiner.join(parts), params


def filters_sql(filters: Filters) -> tuple[str, list[object]]:
    """:class:`~osprey_core.logbook.models.Filters` as an SQL condition (the rules of
    ``Filters.allows``: values compared case-insensitively, times inclusive)."""
    clauses: list[str] = []
    params: list[object] = []
    for column, wanted in (("author", filters.authors), ("logbook", filters.logbooks),
                           ("source", filters.sources)):
        if wanted:
            # an entry without the field fails the condition, and NOT of it holds
            clauses.append(f"coalesce(lower({column}) = ANY(%s), false)")
            params.append([value.lower() for value in wanted])
    if filters.tags:
        clauses.append("rowid IN (SELECT rowid FROM logbook_entry_tags WHERE tag = ANY(%s))")
        params.append([tag.casefold() for tag in filters.tags])
    for bound, operator in (("since", ">="), ("until", "<=")):
        moment = getattr(filters, bound)
        if moment is not None:
            clauses.append(f"ts {operator} %s")
            params.append(moment.timestamp())
    return (" AND ".join(clauses) or "TRUE"), params
