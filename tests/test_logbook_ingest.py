"""Ingest into the logbook store (an SQLite file, or a PostgreSQL database: the store
fixture runs on both engines): counts, incremental reads from the high-water
mark, edits, bad records skipped or fatal, sources failing part-way, dry runs, watch, and
the no-gap property (an ingest repeated as a stream grows equals one full ingest)."""

from __future__ import annotations

import json
import tempfile
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.postgres import StoreEngine

from osprey_core.errors import OspreyError, PluginError
from osprey_core.hookspecs.logbook_adapters import LogbookSourceError
from osprey_core.logbook.adapters.generic import JsonLinesAdapter
from osprey_core.logbook.ingest import LISTED_BAD, IngestError, IngestReport, ingest, watch
from osprey_core.logbook.models import BadRecord, LogEntry
from osprey_core.logbook.storage import LogbookStore
from osprey_core.logbook.store import HighWater, SQLiteLogbook
from osprey_core.settings import LogbookSourceSettings
from osprey_core.testing.fakes import FakeLogbookAdapter

T0 = datetime(2024, 3, 1, 8, 0, tzinfo=UTC)


def entry(number: int, seconds: float = 0, text: str = "", source: str = "ops") -> LogEntry:
    return LogEntry(source=source, native_id=str(number),
                    timestamp=T0 + timedelta(seconds=seconds if seconds else number * 60),
                    text=text or f"entry {number}")


def source(location: str = "export", **fields: Any) -> LogbookSourceSettings:
    return LogbookSourceSettings(adapter="jsonl", location=location, **fields)


def fake(*items: Any) -> FakeLogbookAdapter:
    return FakeLogbookAdapter.named("fake", entries=items)("ops")


@pytest.fixture
def store(run_store_engine: StoreEngine) -> Iterator[LogbookStore]:
    """The logbook store, once per engine (SQLite file, PostgreSQL database)."""
    opened = run_store_engine.logbook()
    yield opened
    opened.close()


def write(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return path


# -- counts and marks -----------------------------------------------------------------------


def test_ingest_stores_entries_and_the_high_water_mark(store: LogbookStore) -> None:
    report = ingest(store, "ops", source(), fake(*(entry(n) for n in range(5))), batch_size=2)

    assert (report.read, report.added, report.updated, report.unchanged, report.bad) == (
        5, 5, 0, 0, 0)
    assert report.high_water_before is None
    assert report.high_water_after == HighWater(T0 + timedelta(minutes=4), "4")
    assert store.high_water("ops") == report.high_water_after
    assert store.count("ops") == 5 and report.seconds > 0
    assert store.sources()[0].adapter == "fake"


def test_again_is_unchanged_and_an_edit_replaces_the_old_version(
        store: LogbookStore) -> None:
    ingest(store, "ops", source(), fake(*(entry(n) for n in range(3))))

    report = ingest(store, "ops", source(), fake(entry(0), entry(1, text="corrected"),
                                                  entry(2)))

    assert (report.added, report.updated, report.unchanged) == (0, 1, 2)
    assert store.get(["ops/1"])[0].text == "corrected"
    assert store.count("ops") == 3


def test_incremental_ingest_reads_from_the_mark_less_the_overlap(
        store: LogbookStore) -> None:
    settings = source(overlap_seconds=600)
    ingest(store, "ops", settings, fake(entry(1, 100), entry(2, 5000)))
    adapter = fake()

    report = ingest(store, "ops", settings, adapter)

    assert adapter.since == [T0 + timedelta(seconds=5000 - 600)]
    assert report.since == adapter.since[0]
    assert store.high_water("ops") == HighWater(T0 + timedelta(seconds=5000), "2")

    full = fake()
    ingest(store, "ops", settings, full, full=True)
    assert full.since == [None]


def test_an_entry_dated_in_the_future_does_not_move_the_mark_past_now(
        store: LogbookStore) -> None:
    future = LogEntry(source="ops", native_id="typo", timestamp=datetime(2099, 1, 1, tzinfo=UTC))
    before = datetime.now(UTC)

    ingest(store, "ops", source(), fake(entry(1), future))

    mark = store.high_water("ops")
    assert mark is not None and before <= mark.timestamp <= datetime.now(UTC)
    assert store.count("ops") == 2


def test_dry_run_parses_and_counts_without_writing(store: LogbookStore) -> None:
    report = ingest(store, "ops", source(), fake(entry(1), BadRecord("export:2", "no id"),
                                                  entry(3)), dry_run=True)

    assert (report.read, report.bad, report.added, report.dry_run) == (2, 1, 0, True)
    assert report.high_water_after == HighWater(T0 + timedelta(minutes=3), "3")  # would be
    assert store.count() == 0 and store.high_water("ops") is None and store.sources() == []


def test_progress_is_reported_per_batch_and_at_the_end(store: LogbookStore) -> None:
    calls: list[tuple[int, int | None]] = []

    ingest(store, "ops", source(), fake(*(entry(n) for n in range(5))), batch_size=2,
           progress=lambda done, total: calls.append((done, total)))

    assert calls == [(2, None), (4, None), (5, 5)]


def test_the_report_serialises() -> None:
    report = IngestReport("ops", "jsonl", "export", bad_records=[BadRecord("f:1", "no id")],
                          high_water_after=HighWater(T0, "7"))

    data = report.to_json()

    assert data["bad_records"] == [{"where": "f:1", "reason": "no id"}]
    assert data["high_water_after"] == {"timestamp": T0.isoformat(), "id": "7"}
    json.dumps(data)


# -- bad records and failures ---------------------------------------------------------------


def test_bad_records_are_skipped_counted_and_listed(store: LogbookStore) -> None:
    items = [entry(0)] + [BadRecord(f"export:{n}", "no id") for n in range(1, 31)] + [entry(31)]

    report = ingest(store, "ops", source(), fake(*items))

    assert (report.read, report.added, report.bad) == (2, 2, 30)
    assert report.bad_records == items[1:LISTED_BAD + 1]
    assert store.high_water("ops") is not None


def test_fail_on_a_bad_record_stores_nothing_of_the_current_batch(
        store: LogbookStore) -> None:
    items = [entry(n) for n in range(5)] + [BadRecord("export:6", "no time")] + [entry(7)]

    with pytest.raises(IngestError) as caught:
        ingest(store, "ops", source(on_bad_record="fail"), fake(*items), batch_size=2)

    assert str(caught.value) == (
        "logbook source 'ops': bad record at export:6: no time (on_bad_record is fail; the "
        "batch being read was not stored). The 4 entries stored before it are kept and the "
        "high-water mark did not move: the next ingest reads this span again")
    assert store.count("ops") == 4  # two full batches; entry 4 was in the batch being read
    assert store.high_water("ops") is None
    assert caught.value.report.bad_records == [BadRecord("export:6", "no time")]


def test_a_source_failing_part_way_keeps_what_was_read_and_the_mark(
        store: LogbookStore) -> None:
    ingest(store, "ops", source(), fake(entry(1)))
    mark = store.high_water("ops")
    failing = fake(entry(2), entry(3), LogbookSourceError("https://elog/api: HTTP 503"))

    with pytest.raises(IngestError, match=r"^logbook source 'ops': https://elog/api: HTTP 503. "
                       r"The 2 entries stored before it are kept"):
        ingest(store, "ops", source(), failing)

    assert store.count("ops") == 3
    assert store.high_water("ops") == mark  # the next ingest reads the span again
    again = fake(entry(2), entry(3), entry(4))
    report = ingest(store, "ops", source(), again)
    assert (report.added, report.unchanged) == (1, 2)


def test_a_failing_store_stops_the_ingest_and_keeps_the_mark(tmp_path: Path) -> None:
    class Failing(SQLiteLogbook):
        calls = 0

        def upsert(self, entries: Any) -> Any:
            self.calls += 1
            if self.calls == 2:
                raise OspreyError("disk full")
            return super().upsert(entries)

    store = Failing(tmp_path / "logbook.db")

    with pytest.raises(IngestError, match="disk full"):
        ingest(store, "ops", source(), fake(*(entry(n) for n in range(10))), batch_size=2)

    assert store.count("ops") == 2 and store.high_water("ops") is None


@pytest.mark.parametrize(("item", "message"), [
    (entry(1, source="other"), "made an entry for source 'other' while reading 'ops'"),
    ({"id": 1}, "yielded a dict, not a LogEntry or BadRecord"),
])
def test_an_adapter_yielding_the_wrong_thing_is_a_plugin_error(
        store: LogbookStore, item: Any, message: str) -> None:
    with pytest.raises(IngestError) as caught:
        ingest(store, "ops", source(), fake(entry(0), item))

    assert isinstance(caught.value.__cause__, PluginError)
    assert message in str(caught.value)


def test_a_damaged_export_loses_nothing_already_ingested(tmp_path: Path,
                                                         store: LogbookStore) -> None:
    path = write(tmp_path / "ops.jsonl", [{"id": n, "time": 1_700_000_000 + n}
                                          for n in range(4)])
    adapter = JsonLinesAdapter.create("ops", {})
    ingest(store, "ops", source(str(path)), adapter)

    path.write_bytes(path.read_bytes()[:-20] + b"\xff\xfe garbage")  # cut and mangled
    with pytest.raises(IngestError, match=r"ops.jsonl:4: byte .* is not valid utf-8"):
        ingest(store, "ops", source(str(path)), adapter)

    assert store.count("ops") == 4


def test_a_truncated_jsonl_export_ingests_the_entries_before_the_damage(
        tmp_path: Path, store: LogbookStore) -> None:
    path = write(tmp_path / "ops.jsonl", [{"id": n, "time": 1_700_000_000 + n}
                                          for n in range(4)])
    path.write_text(path.read_text()[:-15])

    report = ingest(store, "ops", source(str(path)), JsonLinesAdapter.create("ops", {}))

    assert (report.added, report.bad) == (3, 1)
    assert report.bad_records[0].where == f"{path}:4"


# -- watch ----------------------------------------------------------------------------------


def test_watch_polls_and_backs_off_while_the_source_fails(store: LogbookStore) -> None:
    class Flaky(FakeLogbookAdapter):
        name = "flaky"
        outcomes: ClassVar[list[str]] = ["ok", "down", "down", "down", "ok", "ok"]

        def iter_entries(self, location: str, *, since: datetime | None = None) -> Any:
            if self.outcomes.pop(0) == "down":
                raise LogbookSourceError("https://elog/api: no usable answer")
            yield entry(len(self.outcomes))

    waits: list[float] = []
    seen: list[str] = []

    cycles = watch(store, "ops", source(), Flaky("ops"), interval=10, max_backoff=35,
                   max_cycles=6, wait=waits.append, rng=lambda: 1.0,
                   on_cycle=lambda report, error: seen.append("ok" if error is None else "err"))

    assert cycles == 6
    assert seen == ["ok", "err", "err", "err", "ok", "ok"]
    assert waits == [10, 20, 35, 35, 10]  # doubling, capped, reset by a success
    assert store.count("ops") == 3


def test_watch_stops_when_asked(store: LogbookStore) -> None:
    stop = threading.Event()

    cycles = watch(store, "ops", source(), fake(entry(1)), interval=0.01,
                   stop=stop, on_cycle=lambda report, error: stop.set())

    assert cycles == 1


def test_watch_does_not_hide_bugs(store: LogbookStore) -> None:
    with pytest.raises(ZeroDivisionError):
        watch(store, "ops", source(), fake(ZeroDivisionError()), max_cycles=3)


# -- no gaps --------------------------------------------------------------------------------

#: One change to the source between ingests: a new entry ``advance`` seconds after the
#: newest so far, less ``late`` (within the overlap); an edit of a recent entry; or an ingest.
events = st.lists(st.one_of(
    st.tuples(st.just("new"), st.integers(0, 300), st.integers(0, 100)),
    st.tuples(st.just("edit"), st.integers(0, 1000), st.just(0)),
    st.tuples(st.just("ingest"), st.just(0), st.just(0))), max_size=40)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events=events, overlap=st.sampled_from([0, 100]), batch=st.integers(1, 5))
def test_incremental_ingest_of_a_growing_stream_equals_one_full_ingest(
        events: list[tuple[str, int, int]], overlap: int, batch: int) -> None:
    """Late entries arrive at most ``overlap`` seconds before the newest entry, and edits
    touch entries no older than that: the assumption under which the overlap window is
    documented to catch them."""
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "ops.jsonl"
        records: dict[str, dict[str, Any]] = {}  # the export, one line per id
        newest = 0
        settings_ = source(str(path), overlap_seconds=overlap)
        adapter = JsonLinesAdapter.create("ops", {})
        growing = SQLiteLogbook(Path(folder) / "incremental.db")
        for kind, amount, late in [*events, ("ingest", 0, 0)]:
            if kind == "new":
                moment = newest + amount - min(late, overlap)
                newest = max(newest, moment)
                key = str(len(records))
                records[key] = {"id": key, "time": 1_700_000_000 + moment, "text": "new"}
            elif kind == "edit":
                recent = [key for key, record in records.items()
                          if record["time"] - 1_700_000_000 >= newest - overlap]
                if recent:
                    chosen = records[recent[amount % len(recent)]]
                    chosen["text"] = f"edit {amount}"
            else:
                write(path, list(records.values()))
                ingest(growing, "ops", settings_, adapter, batch_size=batch)
        once = SQLiteLogbook(Path(folder) / "once.db")
        ingest(once, "ops", settings_, adapter, full=True)

        ids = [f"ops/{key}" for key in records]
        assert growing.count() == once.count() == len(records)
        assert ({item.id: item.content_hash() for item in growing.get(ids)}
                == {item.id: item.content_hash() for item in once.get(ids)})
        growing.close()
        once.close()
