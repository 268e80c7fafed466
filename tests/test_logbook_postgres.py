"""The logbook on a real PostgreSQL server: keyword matching by the database's text search
against a brute-force reading of every query, ranking on a small corpus, filters applied
before the top k, vectors stored as float32 bytes and ranked by cosine in the worker,
writers on two connections, the schema's version, and a server that goes away and comes
back. (The store, keyword, semantic, ingest and service suites run on both engines.)"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.postgres import (
    PostgresServer,
    assert_outage_reported,
    shared_database,
    with_password,
)
from test_logbook_keyword import (
    _entries,
    _queries,
    agrees_with_brute_force,
    entry,
    live_entries,
)

from osprey_core.logbook.models import Filters, LogEntry
from osprey_core.logbook.postgres import PostgresLogbook
from osprey_core.logbook.query import parse_query
from osprey_core.logbook.semantic import chunk_texts
from osprey_core.logbook.service import Logbook
from osprey_core.plugin_host import load_plugins
from osprey_core.settings import EmbeddingSettings, LogbookSettings
from osprey_core.store_errors import StoreError, StoreUnavailableError
from osprey_core.testing.fakes import FakeEmbeddingModel, fake_plugin

Hash32 = FakeEmbeddingModel.named("hash32", dimension=32)


@pytest.fixture
def store(postgres_url: str) -> Iterator[PostgresLogbook]:
    opened = PostgresLogbook(postgres_url)
    yield opened
    opened.close()


def logbook_of(store: PostgresLogbook) -> Logbook:
    host = load_plugins(environ={})
    host.register(fake_plugin(name="hash_vectors", embedding_models=[Hash32]))
    settings = LogbookSettings(embeddings=EmbeddingSettings(model="hash32"))
    return Logbook(store, settings, host)


def ids(logbook: Logbook, query: str, **options: object) -> list[str]:
    return [hit.entry.native_id for hit in logbook.search(query, **options).hits]  # type: ignore[arg-type]


# -- matching: every query, read by brute force ----------------------------------------------


@pytest.fixture(scope="module")
def module_url(postgres_server: PostgresServer) -> Iterator[str]:
    with shared_database(postgres_server) as url:
        yield url


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(st.lists(_entries, min_size=1, max_size=12), st.lists(_queries, min_size=1,
                                                              max_size=6))
def test_the_database_matches_exactly_what_the_query_says(
        module_url: str, entries: list[LogEntry], queries: list[str]) -> None:
    store = PostgresLogbook(module_url)
    try:
        store.purge()
        store.upsert(entries)
        store.delete([f"als/{number}" for number in range(0, 13, 5)])
        index = store.search_indexes().keyword(store.search_indexes().docmeta())
        index.refresh()
        items = live_entries(store)
        for text in queries:
            query, _, expected = agrees_with_brute_force(index, text, items)
            assert set(np.flatnonzero(index.matches(query))) == expected
    finally:
        store.close()


# -- ranking ---------------------------------------------------------------------------------


def test_relevant_entries_rank_first(store: PostgresLogbook) -> None:
    store.upsert([
        entry("both", "RF cavity trip", "cavity 3 tripped on reflected power"),
        entry("text", "Shift summary", "quiet shift, one RF cavity trip at 03:00 and coffee"),
        entry("one", "Vacuum", "the cavity vacuum gauge was replaced"),
        entry("none", "Kicker", "injection kicker timing adjusted"),
        entry("pv", "Corrector", "HCM1:SP set to 2.5 A"),
        entry("parts", "Corrector", "HCM1 readback and SP compared"),
    ])
    logbook = logbook_of(store)
    found = ids(logbook, "RF cavity trip", mode="keyword")
    assert found[:2] == ["both", "text"] and found.index("text") < found.index("one")
    assert "none" not in found
    assert ids(logbook, "HCM1:SP", mode="keyword") == ["pv", "parts"]
    assert set(ids(logbook, '"cavity trip"', mode="keyword")) == {"both", "text"}
    found = logbook.keyword.search(parse_query("RF cavity trip"), k=10)
    assert all(0 < score <= found.ceiling for score in found.scores)  # the fusion's scale
    fuller = logbook.keyword.search(parse_query("RF cavity trip unheardofword"), k=10)
    assert fuller.scores[0] / fuller.ceiling < found.scores[0] / found.ceiling


def test_filters_hold_before_the_top_k(store: PostgresLogbook) -> None:
    store.upsert([entry(f"bob{n}", "beam beam", "beam beam beam loss", author="bob")
                  for n in range(30)]
                 + [entry(f"jane{n}", "", "one beam", author="Jane", hours=n)
                    for n in range(3)])
    logbook = logbook_of(store)
    in_query = logbook.search("beam author:jane", mode="keyword", k=2)
    assert [hit.entry.author for hit in in_query.hits] == ["Jane", "Jane"]
    assert in_query.total == 3
    given_filters = logbook.search("beam", mode="keyword", k=2,
                                   filters=Filters(authors=("jane",)))
    assert [hit.entry.author for hit in given_filters.hits] == ["Jane", "Jane"]
    assert given_filters.total == 3
    hybrid = logbook.search("beam", mode="hybrid", k=2, filters=Filters(authors=("jane",)))
    assert [hit.entry.author for hit in hybrid.hits] == ["Jane", "Jane"]


# -- vectors ---------------------------------------------------------------------------------


def test_vectors_round_trip_and_rank_by_cosine(store: PostgresLogbook, postgres_url: str) -> None:
    texts = ["beam current dropped after injection", "vacuum pressure spike in sector four",
             "RF cavity tripped on reflected power", "cryoplant compressor stopped"]
    store.upsert([entry(str(n), "", text) for n, text in enumerate(texts)])
    logbook = logbook_of(store)
    logbook.refresh()
    model = Hash32()
    with psycopg.connect(postgres_url) as conn:
        stored = conn.execute("SELECT e.text, v.chunk, v.embedding FROM logbook_vectors v "
                              "JOIN logbook_entries e USING (rowid) ORDER BY v.seq").fetchall()
    assert [(text, chunk) for text, chunk, _ in stored] == [(text, 0) for text in texts]
    for text, _, data in stored:
        assert np.frombuffer(data, np.float32).tolist() == pytest.approx(
            np.asarray(model.embed(chunk_texts("", text, 200, 40))[0], np.float32).tolist())

    query = "RF cavity tripped"
    result = logbook.search(query, mode="semantic", k=4)
    vector = np.asarray(model.embed_query(query), np.float32)
    expected = sorted(texts, key=lambda text: -float(
        np.asarray(model.embed([text])[0], np.float32) @ vector))
    assert [hit.entry.text for hit in result.hits] == expected
    assert [hit.score for hit in result.hits] == sorted(
        (hit.score for hit in result.hits), reverse=True)


def test_another_worker_sees_new_vectors_by_their_sequence(store: PostgresLogbook,
                                                            postgres_url: str) -> None:
    store.upsert([entry(str(n), "", f"entry {n} about the kicker") for n in range(5)])
    writer, reader = logbook_of(store), logbook_of(PostgresLogbook(postgres_url))
    try:
        writer.refresh()
        index = reader.semantic()
        assert index is not None and index.missing() == 0
        seen = index._set._cached.seq  # type: ignore[attr-defined]
        store.upsert([entry("late", "", "a late entry about the septum")])
        writer.refresh()
        assert reader.search("septum", mode="semantic", k=1).hits[0].entry.native_id == "late"
        assert index._set._cached.seq > seen  # type: ignore[attr-defined]
        assert index.rows == 6
    finally:
        reader.close()


# -- writers, schema, outages ----------------------------------------------------------------


def test_two_writers_get_distinct_rowids_and_an_ordered_change_log(
        store: PostgresLogbook, postgres_url: str) -> None:
    other = PostgresLogbook(postgres_url)

    def write(target: PostgresLogbook, prefix: str) -> None:
        for batch in range(10):
            target.upsert([entry(f"{prefix}{batch}-{n}", "", "beam") for n in range(20)])

    threads = [threading.Thread(target=write, args=(target, prefix))
               for target, prefix in ((store, "a"), (other, "b"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    other.close()
    live = store.live_rowids()
    assert len(live) == len(set(live)) == 400
    assert store.changes_since(0).added == live  # every add logged, in rowid order


def test_osprey_store_migrate_sets_up_the_logbook(postgres_url: str) -> None:
    from osprey_core.stores.transfer import migrate_store

    first = migrate_store(postgres_url)
    assert first.parts["logbook"] == (0, 1)
    assert migrate_store(postgres_url).parts["logbook"] == (1, 1)
    with psycopg.connect(postgres_url) as conn:
        tables = {row[0] for row in conn.execute(
            "SELECT tablename FROM pg_tables WHERE tablename LIKE 'logbook%'")}
    assert tables == {"logbook_entries", "logbook_entry_tags", "logbook_changes",
                      "logbook_sources", "logbook_vector_sets", "logbook_vectors"}


def test_a_newer_logbook_schema_is_refused(store: PostgresLogbook, postgres_url: str) -> None:
    assert store.schema_version == 1
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("INSERT INTO part_schema_version (part, version) VALUES ('logbook', 99)")
    with pytest.raises(StoreError, match="logbook schema version 99, newer"):
        PostgresLogbook(postgres_url)


def test_the_server_going_away_is_a_clear_error_and_its_return_needs_nothing(
        postgres_server: PostgresServer, postgres_url: str) -> None:
    url = with_password(postgres_url)
    store = PostgresLogbook(url, connect_timeout=2)
    store.upsert([entry("1", "RF trip", "cavity tripped")])
    logbook = logbook_of(store)
    assert ids(logbook, "cavity", mode="keyword") == ["1"]
    try:
        with postgres_server.stopped():
            with pytest.raises(StoreUnavailableError) as down:
                logbook.search("cavity", mode="keyword")
            with pytest.raises(StoreUnavailableError):
                store.upsert([entry("2", "RF trip", "cavity again")])
            with pytest.raises(StoreUnavailableError):
                PostgresLogbook(url, connect_timeout=2)
        assert_outage_reported(down.value, postgres_server)
        assert ids(logbook, "cavity", mode="keyword") == ["1"]  # same objects, no manual step
        store.upsert([entry("3", "RF trip", "cavity once more")])
        assert sorted(ids(logbook, "cavity", mode="keyword")) == ["1", "3"]  # no "2"
    finally:
        store.close()


def test_store_url_puts_the_logbook_in_the_database(postgres_url: str, tmp_path: Path) -> None:
    from osprey_core.config import load_config

    host = load_plugins(environ={})
    config = load_config(host, None, environ={"OSPREY_HOME": str(tmp_path / "home"),
                                               "OSPREY__STORE__URL": postgres_url})
    with Logbook.from_config(config, host) as logbook:
        assert isinstance(logbook.store, PostgresLogbook)
        logbook.add([entry("1", "RF", "cavity")])
    assert not (tmp_path / "home" / "logbook.db").exists()
    again = PostgresLogbook(postgres_url)
    assert again.count() == 1
    again.close()
