"""Keyword search on the real store: ranking, identifiers, phrases, operators and filters
applied inside the query (on both engines: the index files beside SQLite, and PostgreSQL's
text search); incremental refresh, persistence, snippets; property tests against a
brute-force evaluation over the live entries; SciFact quality."""

from __future__ import annotations

import json
import math
import multiprocessing
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from support.postgres import StoreEngine

from osprey_core.logbook.docmeta import DocMeta
from osprey_core.logbook.keyword import KeywordIndex, snippet
from osprey_core.logbook.keyword.evaluation import QueryRun
from osprey_core.logbook.models import Filters, LogEntry
from osprey_core.logbook.query import (
    And,
    Field,
    Node,
    Not,
    Or,
    ParsedQuery,
    Phrase,
    Word,
    parse_query,
)
from osprey_core.logbook.storage import LogbookStore
from osprey_core.logbook.store import SQLiteLogbook
from osprey_core.logbook.tokenize import tokens

T0 = datetime(2026, 11, 1, tzinfo=UTC)
SCIFACT = Path(__file__).resolve().parents[2] / "shared" / "benchdata" / "scifact"


def entry(native_id: str, title: str = "", text: str = "", *, hours: float = 0,
          **fields: object) -> LogEntry:
    return LogEntry(source=str(fields.pop("source", "als")), native_id=native_id,
                    timestamp=T0 + timedelta(hours=hours), title=title, text=text,
                    **fields)  # type: ignore[arg-type]


@pytest.fixture
def sqlite(tmp_path: Path) -> Iterator[SQLiteLogbook]:
    """An SQLite store (the tests of the index files)."""
    logbook = SQLiteLogbook(tmp_path / "logbook.db")
    yield logbook
    logbook.close()


@pytest.fixture
def store(run_store_engine: StoreEngine) -> Iterator[LogbookStore]:
    """A store of each engine: the keyword arm is the index files, or PostgreSQL's text
    search (the same interface)."""
    logbook = run_store_engine.logbook()
    yield logbook
    logbook.close()


def index_of(store: LogbookStore, entries: list[LogEntry]) -> KeywordIndex:
    """The store's keyword arm, as the query layer opens it, after ``entries``."""
    store.upsert(entries)
    indexes = store.search_indexes()  # type: ignore[attr-defined]
    index = indexes.keyword(indexes.docmeta())
    index.refresh()
    return index


def ids(store: LogbookStore, index: KeywordIndex, text: str, k: int = 50) -> list[str]:
    rowids = index.search(parse_query(text), k=k).rowids
    found = store.by_rowids(rowids)
    return [found[rowid].native_id for rowid in rowids]


# -- a brute-force reading of the same expression ------------------------------------------

def analysis(item: LogEntry) -> tuple[set[str], list[list[str]]]:
    """Every term of an entry, and its title's and text's words in order."""
    fields = [tokens(item.title), tokens(item.text)]
    terms = {term for found in fields for token in found for term in token.terms}
    return terms, [[part for token in found for part in token.parts] for found in fields]


def holds(node: Node, item: LogEntry) -> bool:
    terms, sequences = analysis(item)
    if isinstance(node, Word):
        return node.whole in terms or all(part in terms for part in node.parts)
    if isinstance(node, Phrase):
        size = len(node.words)
        return any(list(node.words) == words[at:at + size] for words in sequences
                   for at in range(len(words) - size + 1))
    if isinstance(node, Field):
        return node.filters.allows(item)
    if isinstance(node, Not):
        return not holds(node.child, item)
    if isinstance(node, And):
        return all(holds(child, item) for child in node.children)
    assert isinstance(node, Or)
    return any(holds(child, item) for child in node.children)


def live_entries(store: LogbookStore) -> dict[int, LogEntry]:
    return store.by_rowids(store.live_rowids())


def matching(query: ParsedQuery, items: dict[int, LogEntry]) -> set[int]:
    """The rowids of ``items`` that ``query`` matches, by brute force."""
    return {rowid for rowid, item in items.items()
            if query.expression is None or holds(query.expression, item)}


# -- ranking and matching -------------------------------------------------------------------

def test_title_ranks_above_text(store: LogbookStore) -> None:
    index = index_of(store, [
        entry("text", "Shift summary", "the klystron was replaced during the shift"),
        entry("title", "Klystron replaced", "done during the shift summary"),
    ])
    assert ids(store, index, "klystron") == ["title", "text"]


def test_the_ceiling_bounds_every_score_and_a_fuller_match_comes_closer(
        sqlite: SQLiteLogbook) -> None:
    words = ["klystron", "arc", "vacuum", "kicker", "septum", "magnet", "orbit", "feedback"]
    index = index_of(sqlite, [entry(f"e{n}", "", " ".join(words[:n] * n)) for n in range(1, 9)]
                     + [entry("none", "", "nothing relevant here")])
    for query in ("klystron", "klystron arc vacuum", " ".join(words),
                  "klystron AND NOT vacuum", "klystron unheardofword", "author:nobody"):
        found = index.search(parse_query(query), k=20)
        assert all(0 <= score <= found.ceiling for score in found.scores), query
    full = index.search(parse_query(" ".join(words[:3])), k=20)
    assert full.scores[0] / full.ceiling > 0.5  # every word, often
    partial = index.search(parse_query(" ".join(words[:3]) + " unheardofword"), k=20)
    assert partial.scores[0] / partial.ceiling < full.scores[0] / full.ceiling
    assert index.search(parse_query("author:nobody"), k=5).ceiling == 0.0


def test_identifiers_whole_above_parts_and_found_by_parts(store: LogbookStore) -> None:
    index = index_of(store, [
        entry("parts", "Corrector", "HCM1 RB and SP values compared"),
        entry("whole", "Corrector", "HCM1:SP set to 2.5 A"),
        entry("other", "Corrector", "HCM2:SP set to 1.5 A"),
    ])
    assert ids(store, index, "HCM1:SP") == ["whole", "parts"]
    assert set(ids(store, index, "HCM1")) == {"whole", "parts"}
    assert set(ids(store, index, "SP")) == {"whole", "parts", "other"}
    assert ids(store, index, '"HCM1:SP"') == ["whole"]


@pytest.mark.parametrize(("query", "expected"), [
    ("ALM-2231", {"alarm"}),
    ("alm-2231", {"alarm"}),
    ("ioc-sr-01.als.lbl.gov", {"host"}),
    ("ioc-sr-01", {"host"}),
    ("/var/log/rf.log", {"file"}),
    ("rf.log", {"file"}),
    ("llrf_ctl.py", {"script"}),
    ("llrf", {"script"}),
    ("SR:CURRENT", {"pv"}),
])
def test_identifiers_operators_type(store: LogbookStore, query: str,
                                    expected: set[str]) -> None:
    index = index_of(store, [
        entry("alarm", "Alarm", "ALM-2231 raised twice"),
        entry("host", "Reboot", "rebooted ioc-sr-01.als.lbl.gov at 08:00"),
        entry("file", "RF", "errors in /var/log/rf.log since noon"),
        entry("script", "LLRF", "llrf_ctl.py crashed, restarted"),
        entry("pv", "Current", "SR:CURRENT dropped to 0"),
    ])
    assert set(ids(store, index, query)) == expected


def test_stemming_finds_other_forms(store: LogbookStore) -> None:
    index = index_of(store, [entry("1", "Losses", "the magnets tripped")])
    assert ids(store, index, "loss") == ["1"]
    assert ids(store, index, "tripping magnet") == ["1"]


def test_phrases_are_exact(store: LogbookStore) -> None:
    index = index_of(store, [
        entry("exact", "RF", "beam loss at injection"),
        entry("apart", "RF", "beam was fine, loss of vacuum later"),
        entry("reversed", "RF", "loss beam"),
        entry("split", "beam", "loss in the text only"),  # across title and text
        entry("ident", "Trip", "HCM1:SP tripped again"),
    ])
    assert ids(store, index, '"beam loss"') == ["exact"]
    assert ids(store, index, '"loss beam"') == ["reversed"]
    assert ids(store, index, '"HCM1 SP tripped"') == ["ident"]
    assert ids(store, index, '"SP tripped again"') == ["ident"]
    assert ids(store, index, '"tripped HCM1"') == []


def test_operators_and_fields_inside_the_query(store: LogbookStore) -> None:
    index = index_of(store, [
        entry("1", "RF trip", "cavity tripped", author="Jane Doe", tags=["rf"], hours=1),
        entry("2", "RF trip", "cavity tripped again", author="bob", logbook="RF", hours=2),
        entry("3", "Vacuum", "valve closed", author="bob", tags=["vacuum"], hours=3),
        entry("4", "Vacuum and RF", "cavity vacuum", author="Jane Doe", hours=4, source="jlab"),
    ])
    assert set(ids(store, index, "cavity AND vacuum")) == {"4"}
    assert set(ids(store, index, "cavity -vacuum")) == {"1", "2"}
    assert set(ids(store, index, 'cavity author:"jane doe"')) == {"1", "4"}
    # OR is loosest: trip OR (valve AND NOT author:bob)
    assert set(ids(store, index, "trip OR valve NOT author:bob")) == {"1", "2"}
    assert set(ids(store, index, "(trip OR valve) NOT author:bob")) == {"1"}
    assert set(ids(store, index, "logbook:rf")) == {"2"}
    assert set(ids(store, index, "tag:RF OR tag:vacuum")) == {"1", "3"}
    assert set(ids(store, index, "source:jlab")) == {"4"}
    assert set(ids(store, index, "since:2026-11-01T02:00 until:2026-11-01T03:00")) == {"2", "3"}
    assert ids(store, index, "author:bob") == ["3", "2"]  # nothing ranks: newest first


def test_matches_gives_every_matching_row(store: LogbookStore) -> None:
    index = index_of(store, [entry("1", "RF", "cavity trip"), entry("2", "RF", "cavity"),
                             entry("3", "Vacuum", "valve")])
    rowids = store.rowids(["als/1", "als/2", "als/3"])
    matched = index.matches(parse_query("cavity -trip OR valve"))
    assert set(np.flatnonzero(matched)) == {rowids["als/2"], rowids["als/3"]}


def test_mask_from_the_caller_is_applied_inside(store: LogbookStore) -> None:
    index = index_of(store, [entry(str(i), "beam", "beam loss") for i in range(5)])
    rowids = store.rowids(["als/1", "als/3"])
    mask = np.zeros(3, np.bool_)  # shorter than the rowids: the rest is not allowed
    mask[rowids["als/1"]] = True
    hits = index.search(parse_query("beam"), mask=mask, k=10)
    assert hits.rowids == [rowids["als/1"]]
    assert hits.total == 1


def test_top_k_and_total(store: LogbookStore) -> None:
    index = index_of(store, [entry(str(i), "", "beam " * (1 + i % 4) + "x" * i)
                             for i in range(30)])
    hits = index.search(parse_query("beam"), k=5)
    assert hits.total == 30 and len(hits.rowids) == 5
    assert hits.scores == sorted(hits.scores, reverse=True)
    everything = index.search(parse_query("beam"), k=100)
    assert everything.rowids[:5] == hits.rowids
    assert index.search(parse_query("beam"), k=0).rowids == []
    assert index.search(parse_query("nothing"), k=5).total == 0


# -- changes, persistence ---------------------------------------------------------------------

def test_edits_and_deletes_reach_the_index(store: LogbookStore) -> None:
    index = index_of(store, [entry("1", "RF trip", "cavity"), entry("2", "Vacuum", "valve")])
    store.upsert([entry("1", "RF trip", "klystron")])  # an edit: a new row
    store.delete(["als/2"])
    assert index.refresh() == 1
    assert ids(store, index, "cavity") == []
    assert ids(store, index, "klystron") == ["1"]
    assert ids(store, index, "valve") == []
    assert index.refresh() == 0


def test_statistics_ignore_deleted_rows(sqlite: SQLiteLogbook, tmp_path: Path) -> None:
    entries = [entry(str(i), "", f"beam {'loss' if i % 3 else 'dump'} word{i}")
               for i in range(12)]
    index = index_of(sqlite, entries)
    sqlite.delete([f"als/{i}" for i in range(0, 12, 2)])
    index.refresh()
    fresh = KeywordIndex.open(sqlite, tmp_path / "fresh")
    fresh.refresh()
    for text in ("beam", "loss dump", "word3"):
        ours, theirs = (i.search(parse_query(text), k=20) for i in (index, fresh))
        assert ours.rowids == theirs.rowids
        assert ours.scores == pytest.approx(theirs.scores, rel=1e-6)


def test_rows_the_index_has_not_read_match_nothing(sqlite: SQLiteLogbook) -> None:
    index = index_of(sqlite, [entry("1", "RF", "cavity")])
    sqlite.upsert([entry("2", "RF", "beam")])
    index.meta.refresh()  # the metadata knows the new row, the postings do not yet
    assert ids(sqlite, index, "NOT beam") == ["1"]
    assert ids(sqlite, index, "logbook:nothing OR source:als") == ["1"]
    index.refresh()
    assert ids(sqlite, index, "source:als") == ["2", "1"]


def test_reopened_index_answers_without_refresh(sqlite: SQLiteLogbook) -> None:
    index = index_of(sqlite, [entry("1", "RF", "cavity"), entry("2", "RF", "klystron")])
    again = KeywordIndex.open(sqlite, sqlite.path.with_suffix(".index"))
    assert again.seq == index.seq
    assert ids(sqlite, again, "klystron") == ["2"]


def test_another_process_refreshes_the_same_folder(sqlite: SQLiteLogbook) -> None:
    index = index_of(sqlite, [entry("1", "RF", "cavity")])
    sqlite.upsert([entry("2", "RF", "klystron")])
    context = multiprocessing.get_context("spawn")
    worker = context.Process(target=_refresh, args=(sqlite.path,))
    worker.start()
    worker.join(60)
    assert worker.exitcode == 0
    assert index.refresh() == 0  # takes up what the other process wrote
    assert ids(sqlite, index, "klystron") == ["2"]


def _refresh(path: Path) -> None:
    other = SQLiteLogbook(path)
    KeywordIndex.open(other, path.with_suffix(".index")).refresh()
    other.close()


def test_an_index_of_another_analyzer_is_rebuilt(sqlite: SQLiteLogbook,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    index_of(sqlite, [entry("1", "RF", "cavity")])
    monkeypatch.setattr("osprey_core.logbook.keyword.index.ANALYZER_VERSION", "another")
    index = KeywordIndex.open(sqlite, sqlite.path.with_suffix(".index"))
    assert index.seq == 0 and index.segments == []
    assert index.refresh() == 1
    assert ids(sqlite, index, "cavity") == ["1"]


def test_a_store_behind_the_index_means_a_rebuild(tmp_path: Path) -> None:
    first = SQLiteLogbook(tmp_path / "a.db")
    index_of(first, [entry(str(i), "RF", "cavity") for i in range(3)])
    other = SQLiteLogbook(tmp_path / "b.db")  # a new database where the old one was
    other.upsert([entry("9", "RF", "klystron")])
    index = KeywordIndex.open(other, tmp_path / "a.index")
    assert index.refresh() == 1
    assert ids(other, index, "klystron") == ["9"] and ids(other, index, "cavity") == []


def test_segments_merge_as_refreshes_accumulate(sqlite: SQLiteLogbook) -> None:
    index = index_of(sqlite, [entry("0", "start", "beam")])
    for round_ in range(1, 40):
        sqlite.upsert([entry(str(round_), "round", f"beam n{round_}")])
        index.refresh()
    assert len(index.segments) <= 8
    assert len(ids(sqlite, index, "beam")) == 40
    folder = sqlite.path.with_suffix(".index") / "keyword"
    named = set(json.loads((folder / "manifest.json").read_text())["files"])
    assert {path.name for path in folder.glob("*.npy")} == named


def test_progress_is_reported(sqlite: SQLiteLogbook) -> None:
    sqlite.upsert([entry(str(i), "t", "x") for i in range(12)])
    seen: list[tuple[int, int]] = []
    index = KeywordIndex.open(sqlite, sqlite.path.with_suffix(".index"))
    assert index.refresh(lambda done, total: seen.append((done, total))) == 12
    assert seen[-1] == (12, 12)


# -- document metadata ---------------------------------------------------------------------

def test_docmeta_masks_agree_with_filters(sqlite: SQLiteLogbook) -> None:
    sqlite.upsert([
        entry("1", author="Jane Doe", logbook="RF", tags=["rf", "Trip"], hours=1),
        entry("2", author="bob", logbook="ops", hours=2),
        entry("3", author=None, tags=["vacuum"], hours=3, source="jlab"),
    ])
    meta = DocMeta.open(sqlite, sqlite.path.with_suffix(".index"))
    assert meta.refresh() == 3
    items = live_entries(sqlite)
    for filters in (Filters(), Filters(authors=("JANE DOE", "nobody")), Filters(tags=("trip",)),
                    Filters(logbooks=("rf", "ops")), Filters(sources=("jlab",)),
                    Filters(since=T0 + timedelta(hours=2)),
                    Filters(until=T0 + timedelta(hours=2), authors=("bob",)),
                    Filters(authors=("unknown",))):
        mask = meta.mask(filters)
        assert {rowid for rowid in items if mask[rowid]} == {
            rowid for rowid, item in items.items() if filters.allows(item)}, filters
    for text in ("beam -author:bob", "-author:bob tag:rf OR tag:vacuum", "beam OR tag:rf"):
        query = parse_query(text)
        allowed = meta.query_mask(query)
        assert {rowid for rowid in items if allowed[rowid]} == {
            rowid for rowid, item in items.items()
            if all(holds(node, item) for node in query.restrictions)}, text
    assert parse_query("beam OR tag:rf").restrictions == ()  # mixed: nothing for other arms
    with pytest.raises(ValueError, match="not a field"):
        meta.where(Word("x", None, ("x",)))
    sqlite.delete(["als/1"])
    assert meta.refresh() == 0
    assert not meta.alive[sqlite.rowids(["als/2"])["als/2"] - 1]
    reopened = DocMeta.open(sqlite, sqlite.path.with_suffix(".index"))
    assert reopened.seq == meta.seq
    assert list(reopened.alive) == list(meta.alive)


# -- snippets ------------------------------------------------------------------------------

def test_snippet_highlights_around_the_best_match() -> None:
    text = ("Routine shift. " * 30 + "Then HCM1:SP tripped and the beam was lost; "
            "HCM1 was reset. " + "Quiet night. " * 30)
    found = snippet(text, parse_query("HCM1:SP beam lost"), width=120)
    assert "«HCM1:SP» tripped" in found and "«beam»" in found and "«lost»" in found
    assert found.startswith("…") and found.endswith("…")
    assert len(found.replace("«", "").replace("»", "")) <= 122
    assert "«HCM1» was reset" in snippet(text, parse_query("HCM1"), width=200)
    assert snippet("a short text", parse_query("beam")) == "a short text"
    assert snippet("Losses\nat   the ring", parse_query("loss")) == "«Losses» at the ring"
    assert snippet("log in /var/log/rf.log", parse_query("rf.log")) == \
        "log in /var/log/«rf.log»"
    assert snippet("HCM1:SP and HCM1", parse_query("HCM1")) == "«HCM1»:SP and «HCM1»"
    assert snippet("Beam loss, beam", parse_query('"beam loss"')) == "«Beam» «loss», «beam»"


# -- properties ----------------------------------------------------------------------------

VOCABULARY = ["beam", "loss", "vacuum", "valve", "rf", "cavity", "the", "HCM1:SP", "HCM1",
              "SP", "BPM1:X", "ALM-2231", "sector", "dump"]
_words = st.lists(st.sampled_from(VOCABULARY), max_size=8).map(" ".join)
_entries = st.builds(
    lambda native, title, text, author, logbook, tags, minutes, source: entry(
        str(native), title, text, author=author, logbook=logbook, tags=tags,
        hours=minutes / 60, source=source),
    st.integers(0, 12), _words, _words, st.sampled_from([None, "Jane Doe", "bob"]),
    st.sampled_from([None, "ops", "RF"]),
    st.lists(st.sampled_from(["rf", "vacuum", "Test"]), max_size=2, unique=True),
    st.integers(0, 600), st.sampled_from(["als", "jlab"]))
_steps = st.lists(st.one_of(
    st.tuples(st.just("upsert"), st.lists(_entries, min_size=1, max_size=6)),
    st.tuples(st.just("delete"), st.lists(st.integers(0, 12).map(str), max_size=3)),
    st.tuples(st.just("refresh"), st.none())), min_size=1, max_size=8)

_leaves = st.one_of(
    st.sampled_from(VOCABULARY),
    st.tuples(st.sampled_from(VOCABULARY), st.sampled_from(VOCABULARY)).map(
        lambda pair: f'"{pair[0]} {pair[1]}"'),
    st.sampled_from(['author:"Jane Doe"', "author:bob", "logbook:ops", "logbook:rf",
                     "tag:rf", "tag:test", "source:jlab", "since:2026-11-01T03:00",
                     "until:2026-11-01T06:00"]))
_queries = st.recursive(_leaves, lambda inner: st.one_of(
    st.tuples(inner, inner).map(lambda pair: f"({pair[0]} AND {pair[1]})"),
    st.tuples(inner, inner).map(lambda pair: f"({pair[0]} OR {pair[1]})"),
    st.tuples(inner, inner).map(lambda pair: f"({pair[0]} {pair[1]})"),
    inner.map(lambda query: f"NOT {query}"),
    inner.map(lambda query: f"-{query}")), max_leaves=6)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(_steps, st.lists(_queries, min_size=1, max_size=6))
def test_no_hit_violates_the_query_and_incremental_equals_full(
        steps: list[tuple[str, object]], queries: list[str]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        logbook = SQLiteLogbook(Path(folder) / "logbook.db")
        index = KeywordIndex.open(logbook, Path(folder) / "index")
        for action, argument in steps:
            if action == "upsert":
                logbook.upsert(argument)  # type: ignore[arg-type]
            elif action == "delete":
                logbook.delete([f"als/{native}" for native in argument])  # type: ignore[union-attr]
            index.refresh()
        full = KeywordIndex.open(logbook, Path(folder) / "full")
        full.refresh()
        items = live_entries(logbook)
        for text in queries:
            query, hits, expected = agrees_with_brute_force(index, text, items)
            event("some match" if expected else "no match")
            rebuilt = full.search(query, k=100)
            assert hits.rowids == rebuilt.rowids
            assert hits.scores == pytest.approx(rebuilt.scores, rel=1e-5)
            for lookup, pick in ((math.inf, math.inf), (0, math.inf), (0, 0)):
                with pytest.MonkeyPatch.context() as patch:  # each way to read postings
                    patch.setattr(QueryRun, "LOOKUP_BELOW", lookup)
                    patch.setattr(QueryRun, "PICK_BELOW", pick)
                    assert index.search(query, k=100) == hits
        logbook.close()


def agrees_with_brute_force(index: Any, text: str,
                            items: dict[int, LogEntry]) -> tuple[Any, Any, set[int]]:
    """``index`` (either engine's) finds for ``text`` exactly the live entries the query
    matches when each is read by hand, counts them right and keeps its order at any k."""
    query = parse_query(text)
    hits = index.search(query, k=100)
    expected = matching(query, items)
    assert set(hits.rowids) == expected, (text, str(query.expression))
    assert hits.total == len(expected)
    assert index.search(query, k=3).rowids == hits.rowids[:3]
    return query, hits, expected


# -- quality -------------------------------------------------------------------------------

@pytest.mark.skipif(not (SCIFACT / "corpus.jsonl").exists(),
                    reason="SciFact evaluation data (../shared/benchdata/scifact) not present")
def test_scifact_ndcg_at_10(sqlite: SQLiteLogbook) -> None:
    corpus = [json.loads(line) for line in (SCIFACT / "corpus.jsonl").open()]
    queries = {item["_id"]: item["text"]
               for item in map(json.loads, (SCIFACT / "queries.jsonl").open())}
    judged: dict[str, dict[str, int]] = {}
    for line in (SCIFACT / "qrels" / "test.tsv").read_text().splitlines()[1:]:
        query, document, score = line.split("\t")
        judged.setdefault(query, {})[document] = int(score)
    index = index_of(sqlite, [entry(item["_id"], item["title"], item["text"], source="scifact")
                             for item in corpus])
    native = {rowid: item.native_id for rowid, item in live_entries(sqlite).items()}
    total = 0.0
    for query_id, relevant in judged.items():
        found = index.search(parse_query(queries[query_id].replace('"', " ")), k=10).rowids
        gain = sum(relevant.get(native[rowid], 0) / math.log2(rank + 2)
                   for rank, rowid in enumerate(found))
        ideal = sum(1 / math.log2(rank + 2) for rank in range(min(10, len(relevant))))
        total += gain / ideal
    assert total / len(judged) >= 0.67
