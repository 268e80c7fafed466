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

from osprey_core.logbook.keyword.index import KeywordHits, KeywordIndex
from osprey_core.logbook.keyword.snippets import snippet

__all__ = ["KeywordHits", "KeywordIndex", "snippet"]
