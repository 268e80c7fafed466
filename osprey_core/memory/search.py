"""Relevance ranking of memories: BM25 over words, then a plain substring fallback.

Words are case-folded, common endings dropped (``BPMs`` finds ``BPM``), words mixing
letters and digits also count by part (``BPM01`` finds ``BPM``), and common words are
ignored, so a whole request ("what do you remember about the BPMs?") can be the query.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from osprey_core.words import STOP_WORDS, fold

if TYPE_CHECKING:
    from osprey_core.memory.models import MemoryEntry

_WORD = re.compile(r"\w+")
_PARTS = re.compile(r"[^\W\d_]+|\d+")


def tokenize(text: str) -> list[str]:
    """Searchable words of ``text`` (see the module docstring)."""
    tokens: list[str] = []
    for word in _WORD.findall(text.casefold()):
        if word in STOP_WORDS:
            continue
        tokens.append(fold(word))
        parts = _PARTS.findall(word)
        if len(parts) > 1:
            tokens.extend(fold(part) for part in parts if part not in STOP_WORDS)
    return tokens


def rank(entries: Sequence[MemoryEntry], query: str) -> list[tuple[MemoryEntry, float]]:
    """Entries relevant to ``query``, best first, with their scores.

    BM25 hits (sharing at least one word with the query) come first; entries that only
    contain the query as a substring follow with score 0. Ties go to the newest entry. A
    query made only of common words matches nothing.
    """
    words = list(dict.fromkeys(tokenize(query)))
    if not words:  # only common words: nothing can be relevant
        return []
    scored: dict[int, float] = {}
    corpus = [tokenize(" ".join([entry.text, *entry.tags])) for entry in entries]
    if any(corpus):
        from rank_bm25 import BM25Plus

        # delta=0: a memory sharing no word with the query scores exactly 0.
        scores = BM25Plus(corpus, delta=0).get_scores(words)
        scored = {index: float(score) for index, score in enumerate(scores) if score > 0}
    needle = " ".join(query.casefold().split())
    for index, entry in enumerate(entries):
        if index not in scored and needle in " ".join(entry.text.casefold().split()):
            scored[index] = 0.0
    order = sorted(scored, key=lambda index: (-scored[index], -entries[index].updated_at
                                              .timestamp(), -index))
    return [(entries[index], scored[index]) for index in order]
