"""The logbook as the rest of osprey sees it: one database, its indexes, three search modes
and answers.

``Logbook`` ties the store (the source of truth) to the indexes beside it (document
metadata for filters, keyword postings, one vector matrix per embedding model) and keeps
them current: every search first folds in whatever the store changed since the indexes
last looked. Filters become one mask over the documents, applied by every arm inside its
ranking. Hybrid search fuses the keyword and semantic scores on fixed scales (or by
reciprocal rank, as configured); when the query has operators (AND, NOT,
a phrase), the semantic arm may only rank documents that satisfy them, so no hybrid hit
ever breaks an operator either.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from osprey_core.errors import OspreyError
from osprey_core.logbook.models import Filters, Hit, LogEntry, SearchResult
from osprey_core.logbook.storage import UpsertCounts

if TYPE_CHECKING:
    import numpy as np

    from osprey_core.config import OspreyConfig
    from osprey_core.logbook.answers import Answer
    from osprey_core.logbook.docmeta import DocMeta
    from osprey_core.logbook.indexes import IndexedStore, KeywordSearch
    from osprey_core.logbook.query import ParsedQuery
    from osprey_core.logbook.semantic import SemanticIndex
    from osprey_core.settings import LLMSettings, LogbookSettings

Mode = Literal["keyword", "semantic", "hybrid"]
MODES: tuple[Mode, ...] = ("keyword", "semantic", "hybrid")
Progress = Callable[[int, int], None]
#: How deep each arm ranks before hybrid fusion.
FUSION_DEPTH = 100


class LogbookError(OspreyError):
    """A logbook operation was refused (bad query, unknown entry, unusable model)."""


@dataclass
class RefreshReport:
    keyword: int = 0
    semantic: int = 0
    semantic_missing: int = 0
    notices: list[str] = field(default_factory=list)


class Logbook:
    """One logbook database and its search indexes."""

    def __init__(self, store: IndexedStore, settings: LogbookSettings, plugins: Any,
                 *, llm: LLMSettings | None = None,
                 environ: dict[str, str] | None = None) -> None:
        self.store = store
        self.settings = settings
        self.plugins = plugins
        self.llm = llm
        self.environ = environ
        self.indexes = store.search_indexes()
        self._docmeta: DocMeta | None = None
        self._keyword: KeywordSearch | None = None
        self._semantic: SemanticIndex | None = None
        self._semantic_problem: str | None = None

    @classmethod
    def open(cls, path: Path, settings: LogbookSettings, plugins: Any, *,
             llm: LLMSettings | None = None,
             environ: dict[str, str] | None = None) -> Logbook:
        """The SQLite logbook in the file ``path``."""
        from osprey_core.logbook.store import SQLiteLogbook

        return cls(SQLiteLogbook(path), settings, plugins, llm=llm, environ=environ)

    @classmethod
    def from_config(cls, config: OspreyConfig, plugins: Any) -> Logbook:
        """The logbook an installation is configured for: in the PostgreSQL database of
        ``store.url``, else in the SQLite file ``logbook.path``."""
        from osprey_core.logbook.engines import open_store

        return cls(open_store(config), config.section("logbook"), plugins,
                   llm=config.section("llm"))

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Logbook:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- indexes ------------------------------------------------------------------------

    @property
    def docmeta(self) -> DocMeta:
        if self._docmeta is None:
            self._docmeta = self.indexes.docmeta()
        return self._docmeta

    @property
    def keyword(self) -> KeywordSearch:
        if self._keyword is None:
            self._keyword = self.indexes.keyword(self.docmeta)
        return self._keyword

    def semantic(self) -> SemanticIndex | None:
        """The vector index of the configured model, or ``None`` (with the reason kept in
        :attr:`semantic_problem`) when the model cannot be used here."""
        if self._semantic is None and self._semantic_problem is None:
            try:
                self._semantic = self._open_semantic()
            except OspreyError as exc:
                self._semantic_problem = str(exc)
        return self._semantic

    @property
    def semantic_problem(self) -> str | None:
        return self._semantic_problem

    def _open_semantic(self) -> SemanticIndex:
        return self.indexes.semantic(self.embedding_model())

    def embedding_model(self, name: str | None = None) -> Any:
        settings = self.settings.embeddings
        if name is not None:
            settings = settings.model_copy(update={"model": name})
        cls = self.plugins.embedding_models().get(settings.model)
        return cls(settings, llm=self.llm, environ=self.environ)

    def add(self, entries: Iterable[LogEntry]) -> UpsertCounts:
        """Store entries (new ones added, edited ones replaced); indexes follow on refresh."""
        return self.store.upsert(list(entries))

    def refresh(self, progress: Progress | None = None, *, semantic: bool = True,
                semantic_progress: Progress | None = None) -> RefreshReport:
        """Bring every index up to date with the store: metadata and keyword postings
        always; vectors of what is missing when ``semantic`` (embedding is the slow part,
        so callers can leave it for later)."""
        report = RefreshReport()
        report.keyword = self.keyword.refresh(progress)  # the metadata comes along
        if semantic:
            index = self.semantic()
            if index is None:
                report.notices.append(f"semantic search is unavailable: {self.semantic_problem}")
            else:
                report.semantic = index.refresh(semantic_progress)
        elif (index := self.semantic()) is not None:
            report.semantic_missing = index.missing()
        return report

    def reembed(self, model: str | None = None, progress: Progress | None = None) -> int:
        """Embed every entry with ``model`` (default: the configured one); the vectors of
        the model in use stay until the new ones are complete. Returns how many."""
        index = self.indexes.semantic(self.embedding_model(model))
        count = index.reembed(progress)
        if model is None or model == self.settings.embeddings.model:
            self._semantic = index
        return count

    # -- searching ----------------------------------------------------------------------

    def search(self, query: str, *, mode: Mode | None = None, filters: Filters | None = None,
               k: int = 10) -> SearchResult:
        from osprey_core.logbook.query import parse_query

        started = time.perf_counter()
        mode = mode or self.settings.default_mode
        if mode not in MODES:
            raise LogbookError(f"unknown search mode {mode!r}; use one of {', '.join(MODES)}")
        if not 1 <= k <= 1000:
            raise LogbookError(f"k must be between 1 and 1000, not {k}")
        parsed = parse_query(query)
        notices = list(parsed.notices)
        self.keyword.refresh()
        # The query's own fields are part of its expression; these are the caller's.
        mask = self.docmeta.mask(filters) if filters else None
        semantic = self.semantic() if mode != "keyword" else None
        if mode != "keyword" and semantic is None:
            notices.append(f"{mode} search fell back to keyword search: "
                           f"{self.semantic_problem}")
            mode = "keyword"
        if semantic is not None and semantic.missing():
            notices.append(f"{semantic.missing()} entries are not embedded yet and are found "
                           "by keyword only (osprey logbook ingest embeds them)")
        if mode == "keyword":
            ranked, total = self._keyword_ranking(parsed, mask, k)
            ranks = {rowid: {"keyword": rank} for rank, (rowid, _) in enumerate(ranked, 1)}
        elif mode == "semantic":
            ranked, total = self._semantic_ranking(parsed, mask, k, semantic)
            ranks = {rowid: {"semantic": rank} for rank, (rowid, _) in enumerate(ranked, 1)}
        else:
            ranked, total, ranks = self._hybrid(parsed, mask, k, semantic)
        hits = self._hits(ranked, parsed, ranks)
        return SearchResult(query, mode, hits, total, notices,
                            time.perf_counter() - started)

    def _keyword_ranking(self, parsed: ParsedQuery, mask: np.ndarray | None,
                         k: int) -> tuple[list[tuple[int, float]], int]:
        found = self.keyword.search(parsed, mask=mask, k=k)
        return list(zip(found.rowids, found.scores, strict=True)), found.total

    def _semantic_ranking(self, parsed: ParsedQuery, mask: np.ndarray | None, k: int,
                          index: SemanticIndex) -> tuple[list[tuple[int, float]], int]:
        text = parsed.free_text.strip()
        if not text:
            return [], 0
        found = index.search(text, mask=self._semantic_mask(parsed, mask), k=k)
        return list(zip(found.rowids, found.scores, strict=True)), len(found.rowids)

    def _semantic_mask(self, parsed: ParsedQuery, mask: np.ndarray | None) -> np.ndarray:
        """What the semantic arm may rank: the caller's filters, the query's fields (NOT
        author:x included), and, when the query is boolean (typed operators) or binds
        words, only the entries that satisfy it: meaning alone cannot tell whether they
        do. Natural-language words only rank, so paraphrases are still found."""
        from osprey_core.logbook.query import binds_words

        if parsed.boolean or binds_words(parsed.expression):
            return self.keyword.matches(parsed, mask=mask)
        allowed = self.docmeta.query_mask(parsed)
        return allowed if mask is None else _and(allowed, mask)

    def _hybrid(self, parsed: ParsedQuery, mask: np.ndarray | None, k: int,
                index: SemanticIndex | None
                ) -> tuple[list[tuple[int, float]], int, dict[int, dict[str, int]]]:
        depth = max(FUSION_DEPTH, k)
        found = self.keyword.search(parsed, mask=mask, k=depth)
        keyword = list(zip(found.rowids, found.scores, strict=True))
        semantic: list[tuple[int, float]] = []
        if index is not None:
            semantic, _ = self._semantic_ranking(parsed, mask, depth, index)
        if self.settings.fusion == "rrf":
            fused = reciprocal_rank_fusion({"keyword": [rowid for rowid, _ in keyword],
                                            "semantic": [rowid for rowid, _ in semantic]},
                                           self.settings.rrf_k)
        else:
            fused = convex_fusion(keyword, found.ceiling, semantic,
                                  self.settings.semantic_weight)
        ranked = fused[:k]
        ranks: dict[int, dict[str, int]] = {rowid: {} for rowid, _ in ranked}
        for arm, ranking in (("keyword", keyword), ("semantic", semantic)):
            for rank, (rowid, _) in enumerate(ranking, 1):
                if rowid in ranks:
                    ranks[rowid][arm] = rank
        total = len({rowid for rowid, _ in keyword} | {rowid for rowid, _ in semantic})
        return ranked, max(total, found.total), ranks

    def _hits(self, ranked: list[tuple[int, float]], parsed: ParsedQuery,
              ranks: dict[int, dict[str, int]]) -> list[Hit]:
        from osprey_core.logbook.keyword import snippet

        entries = self.store.by_rowids([rowid for rowid, _ in ranked])
        hits = []
        for rowid, score in ranked:
            entry = entries.get(rowid)
            if entry is None:  # deleted between ranking and reading: never shown
                continue
            text = f"{entry.title}\n{entry.text}" if entry.title else entry.text
            hits.append(Hit(entry, score, len(hits) + 1, snippet(text, parsed),
                            ranks.get(rowid, {})))
        return hits

    # -- answers and entries --------------------------------------------------------------

    def ask(self, question: str, *, filters: Filters | None = None,
            k: int | None = None) -> Answer:
        from osprey_core.logbook.answers import answer

        return answer(self, question, filters=filters or Filters(),
                      k=k or self.settings.answer_top_k)

    def entry(self, entry_id: str) -> LogEntry:
        found = self.store.get([entry_id])
        if not found:
            raise LogbookError(f"no logbook entry {entry_id!r}")
        return found[0]


def _and(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Two row masks combined (they may differ in length while the store grows)."""
    size = min(len(first), len(second))
    return first[:size] & second[:size]


def convex_fusion(keyword: list[tuple[int, float]], ceiling: float,
                  semantic: list[tuple[int, float]], weight: float
                  ) -> list[tuple[int, float]]:
    """Documents by ``(1 - weight) * bm25 / ceiling + weight * cosine``.

    Both arms are put on fixed scales rather than scaled to their own best hit: BM25
    divided by the most this query could score (``ceiling``), cosines as they are (below
    zero counts as zero). A keyword match on one word of a paraphrase then stays weak
    however it ranks, while a whole identifier stays strong; scaling each arm to its own
    best hit, or fusing ranks, lets the noisier arm's top hits win. Measured in
    docs/logbook-search.md. Ties keep keyword order, then semantic order."""
    scores: dict[int, float] = {}
    if ceiling > 0:
        for rowid, score in keyword:
            scores[rowid] = (1.0 - weight) * score / ceiling
    else:  # no ranking word (only filters): keep the keyword arm's order
        scores.update((rowid, 0.0) for rowid, _ in keyword)
    for rowid, cosine in semantic:
        scores[rowid] = scores.get(rowid, 0.0) + weight * max(cosine, 0.0)
    return sorted(scores.items(), key=lambda item: -item[1])


def reciprocal_rank_fusion(rankings: dict[str, list[int]], k: float) -> list[tuple[int, float]]:
    """Documents by the sum over rankings of ``1 / (k + rank)``; ties keep the order of
    first appearance (keyword before semantic), so fusion is deterministic."""
    scores: dict[int, float] = {}
    for ranking in rankings.values():
        for rank, rowid in enumerate(ranking, 1):
            scores[rowid] = scores.get(rowid, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda item: -item[1])
