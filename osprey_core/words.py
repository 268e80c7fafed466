"""Plain-language words for the small rankers (capability shortlist, memories).

Requests are whole sentences ("compute something about HCM1:SP"), so common words are
dropped and word endings folded: otherwise "about" decides which capabilities the planner
sees, and "compute" misses a description that says "computed".
"""

from __future__ import annotations

STOP_WORDS = frozenset({
    "a", "about", "all", "am", "an", "and", "any", "are", "as", "at", "be", "been", "but",
    "by", "can", "could", "did", "do", "does", "for", "from", "had", "has", "have", "he",
    "her", "his", "how", "i", "if", "in", "into", "is", "it", "its", "know", "me", "my",
    "no", "not", "of", "on", "or", "our", "please", "recall", "remember", "said", "she",
    "so", "something", "tell", "that", "the", "their", "them", "then", "there", "these",
    "they", "this", "to", "us", "was", "we", "were", "what", "when", "where", "which", "who",
    "why", "will", "with", "would", "you", "your",
})

#: Endings folded, longest first; a stem keeps at least three letters.
_ENDINGS = ("ing", "ed", "es", "s", "e")


def fold(word: str) -> str:
    """``word`` without one common English ending: computed, computes, compute → comput;
    BPMs → bpm. A double ``ss`` is kept (pass, class)."""
    if word.endswith("ss"):
        return word
    for ending in _ENDINGS:
        if word.endswith(ending) and len(word) - len(ending) >= 3:
            return word[:-len(ending)]
    return word
