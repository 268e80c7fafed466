"""How logbook text becomes search terms (the keyword index, its queries and snippets).

Operators type identifiers — ``HCM1:SP``, ``ALM-2231``, ``ioc-sr-01.als.lbl.gov``,
``/var/log/rf.log``, ``llrf_ctl.py`` — as often as words. A *raw token* is a run of letters
and digits, possibly joined by connectors (``- _ . : / \\ @ #``). A raw token without
connectors is a word: lower-cased and, when it is all letters, stemmed (Snowball English,
so "losses" finds "loss"). A raw token with connectors is an identifier: it is indexed
whole (lower-cased, never stemmed) *and* by its parts (each treated like a word), so
``HCM1:SP`` matches exactly and ``HCM1`` still finds it.

Terms are stored as 64-bit hashes, so an index opens without loading a vocabulary. The
lowest bit marks an identifier's whole term: it shares the position of its first part, so
phrases match on parts ("HCM1:SP tripped" is the words hcm1, sp, tripped in a row).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import Stemmer

#: Raw tokens: letters and digits, possibly joined by identifier connectors.
RAW_TOKEN = re.compile(r"[^\W_]+(?:[-_.:/\\@#]+[^\W_]+)*")
#: The parts of an identifier (and the words FTS5 would see).
PART = re.compile(r"[^\W_]+")
#: Longest word handed to the stemmer (longer ones are codes, not English).
MAX_STEM_CHARS = 30
#: Words dropped from natural-language OR queries (they match nearly every entry and
#: slow a query down for nothing); kept in the index so phrases and explicit ``AND`` work.
STOPWORDS = frozenset({
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in", "into", "is",
    "it", "no", "not", "of", "on", "or", "such", "that", "the", "their", "then", "there",
    "these", "they", "this", "to", "was", "will", "with"})
#: Changes whenever terms would come out differently (the index refuses a mismatch).
ANALYZER_VERSION = "raw1-snowball-english-blake2b64"

_STEMMER = Stemmer.Stemmer("english")
#: Cache bound: a logbook's vocabulary (numbers, hosts, codes) keeps growing.
_CACHE_LIMIT = 1_000_000


@dataclass(frozen=True, slots=True)
class Token:
    """One raw token as terms: ``whole`` for an identifier, ``parts`` always (a word is
    its single part)."""

    raw: str
    whole: str | None
    parts: tuple[str, ...]

    @property
    def terms(self) -> tuple[str, ...]:
        return self.parts if self.whole is None else (self.whole, *self.parts)


def _word(part: str) -> str:
    if part.isalpha() and len(part) <= MAX_STEM_CHARS:
        return _STEMMER.stemWord(part)
    return part


def analyze_raw(raw: str) -> Token:
    """The terms of one lower-cased raw token."""
    parts = PART.findall(raw)
    if len(parts) == 1:
        return Token(raw, None, (_word(raw),))
    return Token(raw, raw, tuple(_word(part) for part in parts))


def tokens(text: str) -> list[Token]:
    """The raw tokens of ``text`` in order."""
    return [analyze_raw(raw) for raw in RAW_TOKEN.findall(text.lower())]


def spans(text: str) -> tuple[str, list[tuple[int, int, Token]]]:
    """The raw tokens of ``text`` with where they are. Text is lower-cased before it is
    split (as for indexing); the offsets are into the returned text: ``text`` itself,
    unless lower-casing changed its length (then the lower-cased text)."""
    lowered = text.lower()
    shown = text if len(lowered) == len(text) else lowered
    return shown, [(found.start(), found.end(), analyze_raw(found.group()))
                   for found in RAW_TOKEN.finditer(lowered)]


def term_hash(term: str, *, whole: bool = False) -> int:
    """The stored form of a term: 64 bits of BLAKE2b, the lowest bit set for an
    identifier's whole term (it does not advance the position)."""
    digest = hashlib.blake2b(term.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return (int.from_bytes(digest, "little") & ~1) | int(whole)
