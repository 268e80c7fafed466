"""The ALS-style elog adapter against a real HTTP server on loopback: time windows,
retries with backoff, timeouts, malformed records, HTML answers, credentials and TLS."""

from __future__ import annotations

import itertools
import logging
import math
import random
import ssl
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from support.http_fakes import ElogService

from osprey_core.errors import ConfigError
from osprey_core.hookspecs.logbook_adapters import LogbookSourceError
from osprey_core.logbook.adapters.als import AlsAdapter
from osprey_core.logbook.ingest import IngestError, ingest
from osprey_core.logbook.models import BadRecord, LogEntry
from osprey_core.logbook.store import SQLiteLogbook
from osprey_core.settings import LogbookSourceSettings

NOW = datetime.now(UTC).replace(microsecond=0)
START = NOW - timedelta(days=3)


def record(number: int, moment: datetime, **fields: Any) -> dict[str, Any]:
    return {"id": str(number), "timestamp": str(int(moment.timestamp())), "author": "jdoe",
            "subject": f"entry {number}", "details": f"details of entry {number}",
            "level": "Operations", "category": "RF", "tag": "0", "linkedto": "0",
            "attachments": [], **fields}


class Reader:
    """An ``als`` adapter whose retries wait for nobody: the waits are recorded."""

    def __init__(self, **options: Any) -> None:
        self.adapter = AlsAdapter.create("als", {
            "start": START.isoformat(), "window_days": 1, "backoff_seconds": 1.0,
            "max_attempts": 3, "timeout_seconds": 5, **options})
        self.waits: list[float] = []
        self.adapter.sleep = self.waits.append
        self.adapter.rng = lambda: 1.0  # no jitter: exact delays

    def read(self, url: str, since: datetime | None = None) -> list[LogEntry | BadRecord]:
        return list(self.adapter.iter_entries(url, since=since))


@pytest.fixture
def elog() -> Iterator[ElogService]:
    records = [record(1, START + timedelta(hours=12)), record(2, START + timedelta(days=1)),
               record(3, START + timedelta(days=1, hours=6)),
               record(4, NOW - timedelta(hours=1))]
    with ElogService(records) as service:
        yield service


def test_reads_the_history_in_windows_without_gaps_or_duplicates(elog: ElogService) -> None:
    entries = Reader().read(elog.api)

    # entry 2 sits on a window boundary: asked for twice, delivered once
    assert [entry.native_id for entry in entries] == ["1", "2", "3", "4"]
    windows = elog.windows()
    assert len(windows) in (3, 4)  # three days of one-day windows (and the seconds since)
    assert windows[0][0] == math.floor(START.timestamp())
    assert windows[-1][1] >= NOW.timestamp()
    assert all(after[0] <= before[1] for before, after in itertools.pairwise(windows))
    first = entries[0]
    assert isinstance(first, LogEntry)
    assert (first.title, first.text, first.author, first.logbook, first.tags) == (
        "entry 1", "details of entry 1", "jdoe", "Operations", ("RF",))
    assert first.utc == START + timedelta(hours=12)


def test_since_asks_only_for_the_newer_span(elog: ElogService) -> None:
    since = NOW - timedelta(hours=2)
    entries = Reader().read(elog.api, since=since)

    assert [entry.native_id for entry in entries] == ["4"]
    assert elog.windows() == [(math.floor(since.timestamp()), elog.windows()[0][1])]


def test_the_location_may_carry_its_own_query(elog: ElogService) -> None:
    entries = Reader(query={}).read(f"{elog.api}?op=retrieve&book=ops")

    assert len(entries) == 4
    assert all(seen.query["book"] == ["ops"] for seen in elog.seen("GET", "/api"))


def test_a_server_error_is_retried_with_exponential_backoff(elog: ElogService) -> None:
    elog.script = [500, 503]
    reader = Reader()

    entries = reader.read(elog.api)

    assert len(entries) == 4
    assert reader.waits == [1.0, 2.0]
    assert len(elog.seen("GET", "/api")) == len(set(elog.windows())) + 2


def test_backoff_is_capped_and_jittered(elog: ElogService) -> None:
    elog.script = [502, 502, 502, 502]
    reader = Reader(max_attempts=5, backoff_seconds=1.0, max_backoff_seconds=3.0)
    reader.adapter.rng = random.Random(7).random

    reader.read(elog.api)

    bases = [1.0, 2.0, 3.0, 3.0]
    assert len(reader.waits) == 4
    assert all(base / 2 <= wait <= base for wait, base in zip(reader.waits, bases, strict=True))


def test_retry_after_is_honoured(elog: ElogService) -> None:
    elog.script = [("retry-after", 7)]
    reader = Reader()

    reader.read(elog.api)

    assert reader.waits == [7.0]


def test_a_server_that_stays_down_stops_with_the_url_and_the_window(
        elog: ElogService) -> None:
    elog.script = [500, 500, 500]
    reader = Reader()

    with pytest.raises(LogbookSourceError) as caught:
        reader.read(elog.api)

    message = str(caught.value)
    assert elog.api in message and f"start={math.floor(START.timestamp())}" in message
    assert "after 3 attempts (last: HTTP 500)" in message
    assert reader.waits == [1.0, 2.0]


def test_a_timeout_is_retried(elog: ElogService) -> None:
    elog.script = ["hang"]
    reader = Reader(timeout_seconds=0.3)

    assert len(reader.read(elog.api)) == 4
    assert reader.waits == [1.0]


def test_a_server_that_never_answers_is_an_error_not_a_hang(elog: ElogService) -> None:
    elog.script = ["hang", "hang"]
    reader = Reader(timeout_seconds=0.3, max_attempts=2)

    with pytest.raises(LogbookSourceError, match=r"after 2 attempts \(last: no answer within "
                       r"0.3 s\)"):
        reader.read(elog.api)


def test_malformed_records_are_reported_with_url_window_and_item(elog: ElogService) -> None:
    moment = START + timedelta(hours=13)
    elog.records += [{"timestamp": str(int(moment.timestamp())), "subject": "no id"},
                     record(9, moment, subject=["not", "text"]),
                     record(10, moment, timestamp="yesterday")]

    results = Reader().read(elog.api)

    bad = [item for item in results if isinstance(item, BadRecord)]
    assert sorted(item.native_id for item in results if isinstance(item, LogEntry)) == [
        "1", "2", "3", "4"]
    assert [item.reason for item in bad] == ["no id", "the subject must be text, not list"]
    assert all(item.where.startswith(f"{elog.api}?op=retrieve&start=") and "&end=" in item.where
               for item in bad)
    assert bad[1].where.endswith("item 4 (id 9)")  # entries 1 and 2, the one without id, 9
    # a record whose time the server cannot read is not served: the fake files it at 0


def test_an_html_answer_is_an_error_naming_the_url_and_not_retried(
        elog: ElogService) -> None:
    elog.script = ["html"]

    with pytest.raises(LogbookSourceError) as caught:
        Reader().read(elog.api)

    message = str(caught.value)
    assert message.startswith(f"{elog.api}?op=retrieve&start=")
    assert "answered HTML, not JSON ('Single Sign-On')" in message
    assert len(elog.seen("GET", "/api")) == 1


def test_a_missing_page_is_an_error_not_an_empty_logbook(elog: ElogService) -> None:
    with pytest.raises(LogbookSourceError, match="HTTP 404"):
        Reader().read(f"{elog.url}/wrong")


def test_the_token_comes_from_the_environment_and_is_never_shown(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    with ElogService([record(1, NOW - timedelta(hours=1))], token="s3cret-token") as elog:
        monkeypatch.setenv("ELOG_TOKEN", "s3cret-token")
        assert len(Reader(token_env="ELOG_TOKEN").read(elog.api)) == 1
        assert elog.seen()[0].headers["authorization"] == "Bearer s3cret-token"

        monkeypatch.setenv("ELOG_TOKEN", "wrong-token")
        with caplog.at_level(logging.DEBUG), pytest.raises(LogbookSourceError) as caught:
            Reader(token_env="ELOG_TOKEN").read(elog.api)
        assert "HTTP 401, access refused: check the token in ELOG_TOKEN" in str(caught.value)
        assert "wrong-token" not in str(caught.value) + caplog.text

        monkeypatch.delenv("ELOG_TOKEN")
        with pytest.raises(LogbookSourceError, match=r"variable ELOG_TOKEN .* is not set"):
            Reader(token_env="ELOG_TOKEN").read(elog.api)

        with pytest.raises(LogbookSourceError, match="set the source's token_env option"):
            Reader().read(elog.api)


@pytest.mark.parametrize(("options", "message"), [
    ({"token_env": "Bearer abc"}, "token_env: .*name of an environment variable"),
    ({"ca_file": "/nonexistent/ca.pem"}, "ca_file: .*no CA file"),
    ({"verify_tls": False, "ca_file": __file__}, "ca_file is given but verify_tls is false"),
    ({"start": "2003-01-01T00:00:00"}, "start: .*UTC offset"),
    ({"window_days": 0}, "window_days: "),
    ({"max_attempts": 0}, "max_attempts: "),
    ({"retries": 3}, "retries: Extra inputs"),
])
def test_bad_http_options_name_the_source_and_the_key(options: dict[str, Any],
                                                      message: str) -> None:
    with pytest.raises(ConfigError, match=r"logbook source 'als' \(als adapter\) options: "
                       + message):
        AlsAdapter.create("als", options)


# -- TLS ------------------------------------------------------------------------------------


@pytest.fixture
def tls_elog(certificate: tuple[Path, Path]) -> Iterator[ElogService]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    with ElogService([record(1, NOW - timedelta(hours=1))], ssl_context=context) as service:
        yield service


def test_a_self_signed_server_is_refused_by_default(tls_elog: ElogService) -> None:
    assert tls_elog.api.startswith("https://")
    reader = Reader()

    with pytest.raises(LogbookSourceError, match=r"TLS certificate verification failed .*"
                       r"ca_file option"):
        reader.read(tls_elog.api)
    assert reader.waits == []  # not a passing trouble: no retries


def test_a_self_signed_server_is_accepted_with_its_ca_file(
        tls_elog: ElogService, certificate: tuple[Path, Path]) -> None:
    entries = Reader(ca_file=str(certificate[0])).read(tls_elog.api)

    assert [entry.native_id for entry in entries] == ["1"]


def test_turning_verification_off_is_explicit_and_logged(
        tls_elog: ElogService, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        entries = Reader(verify_tls=False).read(tls_elog.api)

    assert len(entries) == 1
    assert "logbook source 'als': TLS certificate verification is OFF" in caplog.text


# -- ingest ---------------------------------------------------------------------------------


def test_incremental_ingest_over_http_reads_from_the_mark_less_the_overlap(
        elog: ElogService, tmp_path: Path) -> None:
    store = SQLiteLogbook(tmp_path / "logbook.db")
    settings = LogbookSourceSettings(adapter="als", location=elog.api, overlap_seconds=7200,
                                     options={"start": START.isoformat(), "window_days": 1})
    adapter = AlsAdapter.create("als", settings.options)

    first = ingest(store, "als", settings, adapter)
    assert (first.read, first.added) == (4, 4)
    assert first.high_water_after is not None
    assert first.high_water_after.native_id == "4"

    elog.records.append(record(5, NOW - timedelta(minutes=30)))
    elog.records[3] = record(4, NOW - timedelta(hours=1), details="corrected")
    asked = len(elog.windows())
    second = ingest(store, "als", settings, adapter)

    assert (second.read, second.added, second.updated) == (2, 1, 1)
    mark = first.high_water_after.timestamp - timedelta(seconds=7200)
    assert elog.windows()[asked:] == [(math.floor(mark.timestamp()),
                                       elog.windows()[asked][1])]
    assert store.get(["als/4"])[0].text == "corrected"
    assert store.count("als") == 5


def test_a_server_failing_mid_ingest_keeps_what_was_stored_and_the_mark(
        elog: ElogService, tmp_path: Path) -> None:
    store = SQLiteLogbook(tmp_path / "logbook.db")
    settings = LogbookSourceSettings(adapter="als", location=elog.api, options={
        "start": START.isoformat(), "window_days": 1, "max_attempts": 1})
    adapter = AlsAdapter.create("als", settings.options)
    original = elog.handle
    calls = {"n": 0}

    def third_window_fails(request: Any) -> Any:
        calls["n"] += 1
        return (200, "<html><title>Maintenance</title></html>", {"Content-Type": "text/html"}
                ) if calls["n"] == 3 else original(request)

    elog.handle = third_window_fails  # type: ignore[method-assign]
    with pytest.raises(IngestError, match="answered HTML") as caught:
        ingest(store, "als", settings, adapter, batch_size=1)

    assert caught.value.report.added == 3  # entries 1-3 came in the first two windows
    assert store.count("als") == 3
    assert store.high_water("als") is None
    elog.handle = original  # type: ignore[method-assign]
    again = ingest(store, "als", settings, adapter)
    assert (again.added, again.unchanged) == (1, 3)
