"""Snippets for people: the part of an entry around the query's words, with them marked."""

from __future__ import annotations

from osprey_core.logbook.query import ParsedQuery, Phrase, walk_positive
from osprey_core.logbook.tokenize import PART, Token, spans


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
