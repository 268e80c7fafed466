"""Semantic search: chunking, the vector sets on disk (resumable, crash-safe, one per
model), deleted entries and filter masks, exact top-k, reembed."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.postgres import StoreEngine, shared_database

from osprey_core.logbook import semantic
from osprey_core.logbook.models import LogEntry
from osprey_core.logbook.pg_vectors import PostgresVectorSets
from osprey_core.logbook.postgres import PostgresLogbook
from osprey_core.logbook.semantic import (
    SemanticHits,
    SemanticIndex,
    SemanticIndexError,
    VectorSets,
    chunk_texts,
)
from osprey_core.logbook.storage import LogbookStore
from osprey_core.logbook.store import SQLiteLogbook
from osprey_core.settings import EmbeddingSettings
from osprey_core.testing.fakes import FakeEmbeddingModel

Hash32 = FakeEmbeddingModel.named("hash32", dimension=32)
Hash16 = FakeEmbeddingModel.named("hash16", dimension=16)

TOPICS = ["beam current dropped after injection", "vacuum pressure spike in sector four",
          "RF cavity tripped on reflected power", "cryoplant compressor stopped",
          "orbit feedback lost a BPM", "kicker timing drifted overnight"]


def entry(number: int, text: str, title: str = "") -> LogEntry:
    moment = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(minutes=number)
    return LogEntry(source="als", native_id=str(number), timestamp=moment, title=title,
                    text=text)


def forty(logbook: LogbookStore) -> LogbookStore:
    logbook.upsert([entry(number, f"{TOPICS[number % len(TOPICS)]} shift {number}")
                    for number in range(40)])
    return logbook


@pytest.fixture
def sqlite(tmp_path: Path) -> Iterator[SQLiteLogbook]:
    """Forty entries in an SQLite file (the tests of the vector files)."""
    logbook = SQLiteLogbook(tmp_path / "logbook.db")
    yield forty(logbook)  # type: ignore[misc]
    logbook.close()


@pytest.fixture
def store(run_store_engine: StoreEngine) -> Iterator[LogbookStore]:
    """Forty entries, once per engine: vectors in files, or in the PostgreSQL database."""
    logbook = run_store_engine.logbook()
    yield forty(logbook)
    logbook.close()


def index_dir(store: SQLiteLogbook) -> Path:
    return store.path.with_suffix(".index")


def vector_sets(store: LogbookStore) -> Path | VectorSets:
    """Where ``store`` keeps its vector sets: files beside it, or its database."""
    if isinstance(store, SQLiteLogbook):
        return index_dir(store)
    return PostgresVectorSets(store)  # type: ignore[arg-type]


def open_index(store: LogbookStore, model: FakeEmbeddingModel | None = None,
               **settings: int) -> SemanticIndex:
    return SemanticIndex.open(store, vector_sets(store), model or Hash32(),
                              settings=EmbeddingSettings(**settings))


def interrupt_at(count: int) -> Callable[[int, int], None]:
    """A progress callback that stops the refresh (as Ctrl-C would) after ``count``."""
    def progress(done: int, total: int) -> None:
        if done == count:
            raise KeyboardInterrupt
    return progress


def best_chunk_scores(index: SemanticIndex, store: LogbookStore, text: str,
                      allowed: set[int]) -> dict[int, float]:
    """Each allowed entry's score, computed the slow obvious way: its best chunk."""
    query = index.model.embed_query(text)
    best: dict[int, float] = {}
    for rows in store.docs(sorted(allowed)):
        for doc in rows:
            chunks = chunk_texts(doc.title, doc.text, *index._set.chunking)
            best[doc.rowid] = float(np.max(index.model.embed(chunks) @ query))
    return best


def assert_exact(hits: SemanticHits, best: dict[int, float], k: int) -> None:
    """The hits are a top k of ``best`` (ties may be broken either way)."""
    expected = sorted(best.values(), reverse=True)[:k]
    assert hits.scores == pytest.approx(expected, abs=1e-5)
    assert [best[rowid] for rowid in hits.rowids] == pytest.approx(hits.scores, abs=1e-5)


# -- chunking ------------------------------------------------------------------------------


def test_a_short_entry_is_one_chunk_with_its_title() -> None:
    assert chunk_texts("RF trip", "cavity 2 tripped", 200, 40) == ["RF trip cavity 2 tripped"]
    assert chunk_texts("", "  cavity 2 tripped ", 200, 40) == ["cavity 2 tripped"]
    assert chunk_texts("Title only", "", 200, 40) == ["Title only"]


def test_long_entries_are_windows_that_overlap_and_cover_every_word() -> None:
    words = [f"w{number}" for number in range(450)]
    chunks = chunk_texts("Shift summary", " ".join(words), 200, 40)

    assert all(chunk.startswith("Shift summary w") for chunk in chunks)
    bodies = [chunk.removeprefix("Shift summary ").split() for chunk in chunks]
    assert all(len(body) == 200 for body in bodies)  # the last window is not a short tail
    assert bodies[0][:2] == ["w0", "w1"] and bodies[-1][-1] == "w449"
    assert set(words) == {word for body in bodies for word in body}
    for first, second in itertools.pairwise(bodies):
        assert len(set(first) & set(second)) >= 40


# -- filling the index ---------------------------------------------------------------------


def test_refresh_embeds_what_is_missing_and_search_finds_it(store: LogbookStore) -> None:
    index = open_index(store)
    assert index.missing() == 40
    calls: list[tuple[int, int]] = []

    assert index.refresh(lambda done, total: calls.append((done, total))) == 40
    assert calls[0] == (0, 40) and calls[-1] == (40, 40) and len(calls) == 2
    assert index.missing() == 0
    assert index.refresh() == 0  # nothing twice

    hits = index.search("RF cavity tripped on reflected power", k=5)
    assert len(hits.rowids) == 5
    assert {row.text.split(" shift")[0] for rows in store.docs(hits.rowids)
            for row in rows} == {TOPICS[2]}
    assert hits.scores == sorted(hits.scores, reverse=True)


def test_an_entry_scores_its_best_chunk_and_is_returned_once(store: LogbookStore) -> None:
    filler = " ".join(f"filler{number}" for number in range(120))
    store.upsert([entry(100, f"{filler} the undulator gap motor stalled again")])
    index = open_index(store, chunk_words=32, chunk_overlap_words=8)
    index.refresh()
    (rowid,) = store.rowids(["als/100"]).values()

    hits = index.search("the undulator gap motor stalled again", k=40)
    assert hits.rowids[0] == rowid
    assert hits.rowids.count(rowid) == 1
    assert index.rows > 40  # the long entry has several chunks
    assert_exact(hits, best_chunk_scores(index, store, "the undulator gap motor stalled again",
                                         set(store.live_rowids())), 40)


def test_chunking_follows_the_settings_the_model_was_built_with(sqlite: SQLiteLogbook) -> None:
    assert open_index(sqlite).path == index_dir(sqlite) / "vectors" / "fake-hash32-32.w200o40"
    model = Hash32(EmbeddingSettings(chunk_words=32, chunk_overlap_words=8))
    assert SemanticIndex.open(sqlite, index_dir(sqlite), model).path.name == (
        "fake-hash32-32.w32o8")
    assert SemanticIndex.open(sqlite, index_dir(sqlite), Hash32()).path.name == (
        "fake-hash32-32.w200o40")


def test_batches_are_committed_as_they_go_and_an_interrupt_resumes(
        store: LogbookStore) -> None:
    index = open_index(store, batch_size=8)
    with pytest.raises(KeyboardInterrupt):
        index.refresh(interrupt_at(16))
    reopened = open_index(store, batch_size=8)
    assert reopened.missing() == 24
    assert reopened.refresh() == 24
    owners = reopened._set.rowids()
    assert sorted(owners.tolist()) == store.live_rowids()  # each entry exactly once


def test_bytes_past_the_recorded_count_are_ignored_then_trimmed(sqlite: SQLiteLogbook) -> None:
    index = open_index(sqlite, batch_size=10)
    with pytest.raises(KeyboardInterrupt):
        index.refresh(interrupt_at(10))
    path = index.path
    # A writer killed between writing vectors and recording them leaves a partial tail.
    with open(path / "vectors.f32", "ab") as handle:
        handle.write(b"\x7f" * 1000)
    with open(path / "rowids.i64", "ab") as handle:
        handle.write(b"\x01" * 12)

    reopened = open_index(sqlite, batch_size=10)
    assert reopened.rows == 10 and reopened.missing() == 30
    assert all(np.isfinite(reopened.search("vacuum pressure spike", k=10).scores))
    reopened.refresh()
    assert (path / "vectors.f32").stat().st_size == reopened.rows * 32 * 4
    assert (path / "rowids.i64").stat().st_size == reopened.rows * 8
    assert sorted(reopened._set.rowids().tolist()) == sqlite.live_rowids()


SLOW_REFRESH = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from osprey_core.logbook.semantic import SemanticIndex
    from osprey_core.logbook.store import SQLiteLogbook
    from osprey_core.settings import EmbeddingSettings
    from osprey_core.testing.fakes import FakeEmbeddingModel

    class Slow(FakeEmbeddingModel.named("hash32", dimension=32)):
        def embed(self, texts):
            time.sleep(0.05)
            return super().embed(texts)

    store = SQLiteLogbook(Path(sys.argv[1]))
    index = SemanticIndex.open(store, Path(sys.argv[2]), Slow(),
                               settings=EmbeddingSettings(batch_size=4))
    index.refresh(lambda done, total: print(done, flush=True))
""")


def test_a_refresh_killed_mid_way_leaves_a_set_that_resumes(sqlite: SQLiteLogbook) -> None:
    child = subprocess.Popen([sys.executable, "-c", SLOW_REFRESH, str(sqlite.path),
                              str(index_dir(sqlite))], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    while int(child.stdout.readline() or 40) < 12:
        pass
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=10)

    index = open_index(sqlite, batch_size=4)
    assert 12 <= index.rows < 40
    assert index.missing() == 40 - index.rows
    index.refresh()
    assert sorted(index._set.rowids().tolist()) == sqlite.live_rowids()


def test_another_process_filling_the_set_is_refused_not_joined(store: LogbookStore) -> None:
    first, second = open_index(store), open_index(store)
    with first._set.writing(), pytest.raises(SemanticIndexError, match="another process"):
        second.refresh()


def test_a_searcher_sees_rows_another_index_committed(store: LogbookStore) -> None:
    searcher, writer = open_index(store), open_index(store)
    assert searcher.search("cryoplant compressor stopped", k=3).rowids == []
    writer.refresh()
    assert len(searcher.search("cryoplant compressor stopped", k=3).rowids) == 3
    assert searcher.missing() == 0


# -- deleted entries and masks ---------------------------------------------------------------


def test_deleted_and_replaced_entries_are_never_returned(store: LogbookStore) -> None:
    index = open_index(store)
    index.refresh()
    cryo = store.rowids([f"als/{number}" for number in range(3, 40, 6)])
    store.delete(["als/3", "als/9"])
    store.upsert([entry(15, "cryoplant compressor stopped, replaced the seal")])  # an edit

    hits = index.search("cryoplant compressor stopped", k=40)
    assert not {cryo["als/3"], cryo["als/9"], cryo["als/15"]} & set(hits.rowids)
    assert set(hits.rowids) <= set(store.live_rowids())
    assert index.missing() == 1  # the new version of als/15
    index.refresh()
    (edited,) = store.rowids(["als/15"]).values()
    assert edited in index.search("replaced the seal", k=3).rowids


def test_a_mask_shorter_than_the_rowids_allows_nothing_past_its_end(
        store: LogbookStore) -> None:
    index = open_index(store)
    index.refresh()
    mask = np.ones(11, dtype=bool)  # rowids 0..10
    hits = index.search("beam current dropped", mask=mask, k=40)
    assert hits.rowids and max(hits.rowids) <= 10
    assert index.search("beam current dropped", mask=np.zeros(0, bool), k=5).rowids == []


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def filled(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
           ) -> Iterator[tuple[LogbookStore, SemanticIndex]]:
    """300 entries (every seventh deleted) and their vectors, once per engine."""
    with ExitStack() as stack:
        if request.param == "sqlite":
            logbook: LogbookStore = SQLiteLogbook(tmp_path_factory.mktemp("masks") /
                                                  "logbook.db")
        else:
            logbook = PostgresLogbook(stack.enter_context(
                shared_database(request.getfixturevalue("postgres_server"))))
        stack.callback(logbook.close)
        rng = np.random.default_rng(5)
        words = " ".join(TOPICS).split()
        logbook.upsert([entry(number, " ".join(rng.choice(words, rng.integers(3, 60))))
                        for number in range(300)])
        logbook.delete([f"als/{number}" for number in range(0, 300, 7)])
        index = SemanticIndex.open(logbook, vector_sets(logbook), Hash16(),
                                   settings=EmbeddingSettings(chunk_words=20,
                                                              chunk_overlap_words=5))
        index.refresh()
        yield logbook, index


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(allowed=st.sets(st.integers(0, 320)), k=st.integers(1, 30),
       block=st.sampled_from([4, 64, 100_000]), dense=st.sampled_from([0.0, 0.5, 1.0]),
       query=st.sampled_from(TOPICS))
def test_no_hit_outside_the_mask_and_the_top_k_is_exact(
        filled: tuple[LogbookStore, SemanticIndex], allowed: set[int], k: int, block: int,
        dense: float, query: str) -> None:
    logbook, index = filled
    mask = np.zeros(321, dtype=bool)
    mask[sorted(allowed)] = True
    # One product over all rows, or blocks skipped, gathered and multiplied whole.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(semantic, "BLOCK_ROWS", block)
        patch.setattr(semantic, "DENSE_ABOVE", dense)
        hits = index.search(query, mask=mask, k=k)

    alive = allowed & set(logbook.live_rowids())
    assert set(hits.rowids) <= alive
    assert len(hits.rowids) == len(set(hits.rowids)) == min(k, len(alive))
    assert_exact(hits, best_chunk_scores(index, logbook, query, alive), k)


# -- one set per model ---------------------------------------------------------------------


def test_reembed_keeps_the_old_set_until_the_new_one_is_complete(sqlite: SQLiteLogbook) -> None:
    old = open_index(sqlite)
    old.refresh()
    before = old.search("orbit feedback lost a BPM", k=5)
    new = open_index(sqlite, Hash16(), batch_size=8)

    with pytest.raises(KeyboardInterrupt):
        new.reembed(interrupt_at(16))
    assert old.path.is_dir() and new.path.is_dir()
    assert open_index(sqlite).search("orbit feedback lost a BPM", k=5) == before

    assert open_index(sqlite, Hash16(), batch_size=8).reembed() == 24
    assert sorted(path.name for path in (index_dir(sqlite) / "vectors").iterdir()) == [
        new.path.name]
    hits = open_index(sqlite, Hash16()).search("orbit feedback lost a BPM", k=5)
    assert len(hits.rowids) == 5


def test_vectors_of_two_models_are_never_mixed(sqlite: SQLiteLogbook) -> None:
    index = open_index(sqlite)
    index.refresh()
    state = json.loads((index.path / "state.json").read_text())

    # A set whose state names another model is refused, not searched with this one.
    (index.path / "state.json").write_text(json.dumps({**state, "fingerprint": "other"}))
    with pytest.raises(SemanticIndexError, match="never mixed"):
        open_index(sqlite)
    (index.path / "state.json").write_text(json.dumps(state))

    # A model whose fingerprint lies about its dimension cannot append or query.
    liar = FakeEmbeddingModel.named("hash32", dimension=16)
    liar.fingerprint = property(lambda self: "fake-hash32-32")  # type: ignore[assignment]
    sqlite.upsert([entry(500, "a new entry")])
    with pytest.raises(SemanticIndexError, match="never mixed"):
        open_index(sqlite, liar()).refresh()
    with pytest.raises(SemanticIndexError, match="16-dimensional query"):
        open_index(sqlite, liar()).search("beam", k=3)


def test_a_damaged_state_is_a_clear_error(sqlite: SQLiteLogbook) -> None:
    index = open_index(sqlite)
    index.refresh()
    (index.path / "state.json").write_text("{not json")
    with pytest.raises(SemanticIndexError, match=r"damaged.*reembed"):
        open_index(sqlite)
    (index.path / "state.json").write_text(json.dumps(
        {"format": 1, "fingerprint": "fake-hash32-32", "chunking": [200, 40],
         "dimension": 32, "rows": 10_000}))
    with pytest.raises(SemanticIndexError, match="files are shorter"):
        open_index(sqlite)


def test_a_fingerprint_must_be_a_safe_directory_name(sqlite: SQLiteLogbook) -> None:
    sneaky = FakeEmbeddingModel.named("sneaky")
    sneaky.fingerprint = property(lambda self: "../../etc")  # type: ignore[assignment]
    with pytest.raises(SemanticIndexError, match="letters, digits"):
        open_index(sqlite, sneaky())
