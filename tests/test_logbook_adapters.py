"""The built-in logbook adapters on real files: field mappings, times and zones, encodings,
and damaged input (each an error or a bad record naming the file and line)."""

from __future__ import annotations

import codecs
import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from osprey_core.errors import ConfigError
from osprey_core.hookspecs.logbook_adapters import LogbookAdapter, LogbookSourceError
from osprey_core.logbook.adapters.als import AlsAdapter
from osprey_core.logbook.adapters.generic import CsvAdapter, JsonAdapter, JsonLinesAdapter
from osprey_core.logbook.adapters.jlab import JlabAdapter
from osprey_core.logbook.adapters.ornl import OrnlAdapter
from osprey_core.logbook.adapters.records import html_text
from osprey_core.logbook.models import MAX_TEXT_CHARS, BadRecord, LogEntry
from osprey_core.plugin_host import load_plugins

EPOCH = 1_700_000_000  # 2023-11-14T22:13:20Z


def read(adapter: type[LogbookAdapter], location: Path | str, since: datetime | None = None,
         **options: Any) -> list[LogEntry | BadRecord]:
    return list(adapter.create("src", options).iter_entries(str(location), since=since))


def lines(path: Path, *records: Any) -> Path:
    path.write_text("".join(json.dumps(item) + "\n" for item in records))
    return path


def entries(results: list[LogEntry | BadRecord]) -> list[LogEntry]:
    assert all(isinstance(item, LogEntry) for item in results), results
    return results  # type: ignore[return-value]


# -- the plugin -----------------------------------------------------------------------------


def test_the_plugin_registers_the_six_built_in_adapters() -> None:
    registry = load_plugins().logbook_adapters()

    assert registry.names() == ["als", "csv", "jlab", "json", "jsonl", "ornl"]
    for name in registry.names():
        adapter = registry.get(name)
        assert adapter.description and adapter.options_model is not None
        assert isinstance(adapter.create("src"), LogbookAdapter)


@pytest.mark.parametrize(("adapter", "options", "message"), [
    (JsonLinesAdapter, {"timezone": "Mars/Olympus"}, "timezone: unknown time zone"),
    (JsonLinesAdapter, {"encoding": "klingon"}, "encoding: unknown encoding 'klingon'"),
    (JsonLinesAdapter, {"fields": {"body": "x"}}, "fields.body: Input should be 'id'"),
    (JsonLinesAdapter, {"fields": {"text": ""}}, "fields: give a record key (or a list of "
                                                  "keys) for text"),
    (JsonLinesAdapter, {"epoch_unit": "us"}, "epoch_unit: Input should be 'auto'"),
    (CsvAdapter, {"delimiter": ";;"}, "delimiter: String should have at most 1 character"),
    (OrnlAdapter, {"entries_path": "x"}, "entries_path: Extra inputs"),
])
def test_bad_options_are_config_errors_naming_source_and_key(
        adapter: type[LogbookAdapter], options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        adapter.create("src", options)
    assert str(caught.value).startswith(f"logbook source 'src' ({adapter.name} adapter) "
                                        "options: ")
    assert message in str(caught.value)


# -- generic mapping ------------------------------------------------------------------------


def test_jsonl_default_field_names(tmp_path: Path) -> None:
    path = lines(tmp_path / "log.jsonl", {
        "id": 17, "timestamp": "2024-03-01T08:30:00+01:00", "author": "jdoe",
        "title": "RF trip", "text": "Cavity 2 tripped", "logbook": ["ops", "rf"],
        "tags": "RF, trip ,", "links": [12, "13"],
        "attachments": ["https://elog/plot.png", {"filename": "log.txt", "size": 12}]})

    [entry] = entries(read(JsonLinesAdapter, path))

    assert entry.id == "src/17"
    assert entry.utc == datetime(2024, 3, 1, 7, 30, tzinfo=UTC)
    assert entry.utc_offset_minutes == 60
    assert (entry.author, entry.title, entry.text) == ("jdoe", "RF trip", "Cavity 2 tripped")
    assert entry.logbook == "ops" and entry.tags == ("RF", "trip", "rf")
    assert entry.linked_to == ("12", "13")
    assert [(item.name, item.url, item.size) for item in entry.attachments] == [
        ("plot.png", "https://elog/plot.png", None), ("log.txt", None, 12)]


def test_alternative_names_dotted_paths_and_a_default_logbook(tmp_path: Path) -> None:
    path = lines(tmp_path / "log.jsonl",
                 {"entry_id": "a1", "created": {"at": EPOCH}, "user": "op", "subject": "s",
                  "body": "b", "categories": ["x"]},
                 {"entry_id": "a2", "created": {"at": EPOCH * 1000 + 500}, "message": "m"})

    first, second = entries(read(JsonLinesAdapter, path, logbook="control room",
                                 fields={"timestamp": "created.at"}))

    assert (first.native_id, first.author, first.title, first.text, first.tags) == (
        "a1", "op", "s", "b", ("x",))
    assert first.logbook == second.logbook == "control room"
    assert first.utc == datetime.fromtimestamp(EPOCH, UTC)
    assert second.utc == datetime.fromtimestamp(EPOCH + 0.5, UTC)  # milliseconds, detected
    assert first.utc_offset_minutes is None  # an epoch carries no offset of its own


@pytest.mark.parametrize(("value", "options", "expected", "offset"), [
    ("2024-03-01T08:30:00Z", {}, datetime(2024, 3, 1, 8, 30, tzinfo=UTC), 0),
    ("2024-03-01 08:30", {"timezone": "America/Chicago"},
     datetime(2024, 3, 1, 14, 30, tzinfo=UTC), -360),
    ("2024-07-01 08:30", {"timezone": "America/Chicago"},
     datetime(2024, 7, 1, 13, 30, tzinfo=UTC), -300),
    ("01/03/2024 08:30", {"time_format": "%d/%m/%Y %H:%M", "timezone": "UTC"},
     datetime(2024, 3, 1, 8, 30, tzinfo=UTC), 0),
    (str(EPOCH), {}, datetime.fromtimestamp(EPOCH, UTC), None),
    (EPOCH * 1000, {"timezone": "Europe/Berlin"}, datetime.fromtimestamp(EPOCH, UTC), 60),
    (1_000_000, {"epoch_unit": "ms"}, datetime.fromtimestamp(1000, UTC), None),
    ("20240301", {"timezone": "UTC"}, datetime(2024, 3, 1, tzinfo=UTC), 0),
])
def test_times(tmp_path: Path, value: Any, options: dict[str, Any], expected: datetime,
               offset: int | None) -> None:
    path = lines(tmp_path / "log.jsonl", {"id": 1, "time": value})

    [entry] = entries(read(JsonLinesAdapter, path, **options))

    assert (entry.utc, entry.utc_offset_minutes) == (expected, offset)


@pytest.mark.parametrize(("value", "reason"), [
    ("2024-03-01 08:30", "'2024-03-01 08:30' has no UTC offset: set the source's timezone "
                         "option"),
    ("yesterday", "'yesterday' is not a time"),
    (None, "no time (looked for timestamp, time, date, datetime, created, created_at)"),
    (True, "True is not a time"),
    (float("inf"), "inf is not a time"),
    ([2024], "a time must be text or a number, not list"),
])
def test_unreadable_times_are_bad_records(tmp_path: Path, value: Any, reason: str) -> None:
    path = tmp_path / "log.jsonl"
    path.write_text(json.dumps({"id": 1, "time": value}) + "\n" if value is not None
                    else '{"id": 1}\n')

    [bad] = read(JsonLinesAdapter, path)

    assert isinstance(bad, BadRecord) and bad.where == f"{path}:1"
    assert bad.reason.startswith(reason)


def test_since_leaves_out_older_entries(tmp_path: Path) -> None:
    path = lines(tmp_path / "log.jsonl", *({"id": n, "time": EPOCH + n} for n in range(10)))

    found = entries(read(JsonLinesAdapter, path, since=datetime.fromtimestamp(EPOCH + 7, UTC)))

    assert [entry.native_id for entry in found] == ["7", "8", "9"]


def test_records_that_cannot_be_entries_name_their_line(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    path.write_text('{"id": 1, "time": 1700000000}\n\n[1, 2]\n{"id": "a b", "time": 1}\n'
                    '{"time": 1700000000}\n{"id": 5, "time": 1700000000, "title": {"x": 1}}\n'
                    "{not json}\n")

    results = read(JsonLinesAdapter, path)

    assert isinstance(results[0], LogEntry)
    assert [(bad.where, bad.reason.split(" (")[0]) for bad in results[1:]] == [
        (f"{path}:3", "a record must be a JSON object, not list"),
        (f"{path}:4", "native_id: an entry id is 1-200 printable characters without white "
                      "space, '[', ']' or '#'"),
        (f"{path}:5", "no id"),
        (f"{path}:6", "the title must be text, not dict"),
        (f"{path}:7", "not valid JSON"),
    ]


# -- damaged files --------------------------------------------------------------------------


def test_a_truncated_jsonl_file_keeps_the_entries_before_the_damage(tmp_path: Path) -> None:
    path = lines(tmp_path / "log.jsonl", *({"id": n, "time": EPOCH + n} for n in range(3)))
    path.write_text(path.read_text() + '{"id": 3, "time": 17000')

    results = read(JsonLinesAdapter, path)

    assert [item.native_id for item in results[:3]] == ["0", "1", "2"]  # type: ignore[union-attr]
    assert results[3] == BadRecord(f"{path}:4", "not valid JSON (Expecting ',' delimiter, "
                                   "column 24); the line is cut short: is the file truncated?")


def test_a_truncated_json_file_is_an_error_with_file_and_position(tmp_path: Path) -> None:
    path = tmp_path / "log.json"
    text = json.dumps([{"id": n, "time": EPOCH + n, "text": "x"} for n in range(3)], indent=1)
    path.write_text(text[:-30])
    found: list[LogEntry | BadRecord] = []

    with pytest.raises(LogbookSourceError) as caught:
        found.extend(JsonAdapter.create("src").iter_entries(str(path)))

    assert [item.native_id for item in found] == ["0", "1"]  # type: ignore[union-attr]
    assert str(caught.value).startswith(f"{path}:")
    assert str(caught.value).endswith("the file ends in the middle of the document: is it "
                                      "truncated?")


@pytest.mark.parametrize(("content", "message"), [
    ("", "is empty: expected a JSON export"),
    ("<!DOCTYPE html><html>", "is HTML: it starts with '<!DOCTYPE html><html>'"),
    ("hello", "is not JSON: it starts with 'hello'"),
    ('{"data": []}', "is a JSON object without an entries array (looked for 'entries')"),
    ('[{"id": 1, "time": 1700000000}] []', ":1:33: not valid JSON (more data after the end"),
    ('[{"id": 1, "time": 1700000000} {"id": 2}]', ":1:32: not valid JSON (expected ',' or ']'"),
])
def test_json_files_that_are_not_exports(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "log.json"
    path.write_text(content)

    with pytest.raises(LogbookSourceError) as caught:
        read(JsonAdapter, path)

    assert str(caught.value).startswith(str(path)) and message in str(caught.value)


def test_json_entries_in_an_object_are_streamed_with_their_lines(tmp_path: Path) -> None:
    path = tmp_path / "log.json"
    path.write_text(json.dumps({"exported": "2024", "meta": {"entries": "not these"},
                                "result": {"entries": [{"id": n, "time": EPOCH + n}
                                                       for n in range(3)] + [{"id": 3}]},
                                "count": 4}, indent=2))

    results = read(JsonAdapter, path, entries_path="result.entries")

    assert [entry.native_id for entry in results[:3]] == ["0", "1", "2"]  # type: ignore[union-attr]
    assert results[3] == BadRecord(f"{path}:20 (entry 4)", "no time (looked for timestamp, "
                                   "time, date, datetime, created, created_at)")


def test_a_large_json_export_is_read_in_pieces(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from osprey_core.logbook.adapters import files

    monkeypatch.setattr(files.JsonStream, "CHUNK", 64)  # entries and numbers cross chunks
    path = tmp_path / "log.json"
    path.write_text(json.dumps([{"id": n, "time": EPOCH + n, "text": "é" * n}
                                for n in range(200)]))

    found = entries(read(JsonAdapter, path))

    assert [entry.text for entry in found] == ["é" * n for n in range(200)]
    assert found[-1].utc == datetime.fromtimestamp(EPOCH + 199, UTC)


@pytest.mark.parametrize("adapter", [JsonLinesAdapter, JsonAdapter])
def test_a_100_mb_entry_is_refused_as_a_bad_record(tmp_path: Path,
                                                   adapter: type[LogbookAdapter]) -> None:
    huge = "x" * 100_000_000
    records = [{"id": 1, "time": EPOCH, "text": "before"},
               {"id": 2, "time": EPOCH, "text": huge}, {"id": 3, "time": EPOCH, "text": "after"}]
    path = tmp_path / "log"
    with path.open("w") as out:
        if adapter is JsonAdapter:
            json.dump(records, out)
        else:
            out.writelines(json.dumps(item) + "\n" for item in records)
    del huge, records

    results = read(adapter, path)

    assert [item.native_id for item in results if isinstance(item, LogEntry)] == ["1", "3"]
    [bad] = [item for item in results if isinstance(item, BadRecord)]
    if adapter is JsonLinesAdapter:
        assert bad.where == f"{path}:2"
        assert bad.reason.startswith("the line is 100,000,042 bytes; lines over "
                                     "max_record_bytes (16,777,216) are refused")
    else:
        assert bad.where == f"{path}:1 (entry 2)"
        assert bad.reason == (f"text: the text is 100000000 characters; at most "
                              f"{MAX_TEXT_CHARS} are kept per entry")


# -- encodings ------------------------------------------------------------------------------


def test_a_latin_1_file_read_as_utf_8_is_an_error_naming_line_and_option(
        tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    path.write_bytes('{"id": 1, "time": 1700000000, "text": "ok"}\n'
                     '{"id": 2, "time": 1700000000, "text": "Kältemaschine"}\n'.encode("latin-1"))
    found: list[LogEntry | BadRecord] = []

    with pytest.raises(LogbookSourceError) as caught:
        found.extend(JsonLinesAdapter.create("src").iter_entries(str(path)))

    assert [item.native_id for item in found] == ["1"]  # type: ignore[union-attr]
    assert str(caught.value) == (
        f"{path}:2: byte 41 of the line (0xe4) is not valid utf-8: set the source's encoding "
        "option to the file's encoding (latin-1 and cp1252 are common for older exports)")
    assert entries(read(JsonLinesAdapter, path, encoding="latin-1"))[1].text == "Kältemaschine"


@pytest.mark.parametrize("adapter", [JsonLinesAdapter, JsonAdapter, CsvAdapter])
def test_a_utf_16_file_needs_its_encoding(tmp_path: Path,
                                          adapter: type[LogbookAdapter]) -> None:
    path = tmp_path / "log"
    text = {JsonLinesAdapter: '{"id": 1, "time": 1700000000, "text": "Kälte"}\n',
            JsonAdapter: '[{"id": 1, "time": 1700000000, "text": "Kälte"}]',
            CsvAdapter: "id,time,text\n1,1700000000,Kälte\n"}[adapter]
    path.write_bytes(text.encode("utf-16"))  # with its byte-order mark

    with pytest.raises(LogbookSourceError, match=f"^{path} starts with a UTF-16 byte-order "
                       "mark but is read as utf-8: set the source's encoding option to "
                       "utf-16$"):
        read(adapter, path)
    [entry] = entries(read(adapter, path, encoding="utf-16"))
    assert entry.text == "Kälte"


def test_utf_16_without_a_byte_order_mark_is_recognised(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl"
    path.write_bytes('{"id": 1, "time": 1700000000}\n'.encode("utf-16-le"))

    with pytest.raises(LogbookSourceError, match="starts with NUL bytes, so it is not utf-8: "
                       "probably UTF-16 without a byte-order mark"):
        read(JsonLinesAdapter, path)
    assert len(entries(read(JsonLinesAdapter, path, encoding="utf-16-le"))) == 1


def test_a_utf_8_byte_order_mark_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    path.write_bytes(codecs.BOM_UTF8 + b"id,time,text\n1,1700000000,ok\n")

    [entry] = entries(read(CsvAdapter, path))

    assert entry.native_id == "1"


def test_a_latin_1_csv_read_as_utf_8_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    path.write_bytes("id,time,text\n1,1700000000,Kältemaschine\n".encode("latin-1"))

    with pytest.raises(LogbookSourceError, match=f"^{path}: after line .*not valid utf-8"):
        read(CsvAdapter, path)
    assert entries(read(CsvAdapter, path, encoding="cp1252"))[0].text == "Kältemaschine"


# -- csv ------------------------------------------------------------------------------------


def test_csv_columns_map_like_json_fields(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    path.write_text('Entry;When;Who;Text;Tags\n7;2024-03-01 08:30;jdoe;"two\nlines";a,b\n'
                    "8;2024-03-01 09:00;;;\n")

    first, second = entries(read(
        CsvAdapter, path, delimiter=";", timezone="Europe/Paris",
        fields={"id": "Entry", "timestamp": "When", "author": "Who", "text": "Text",
                "tags": "Tags"}))

    assert (first.native_id, first.author, first.text, first.tags) == (
        "7", "jdoe", "two\nlines", ("a", "b"))
    assert first.utc == datetime(2024, 3, 1, 7, 30, tzinfo=UTC)
    assert (second.author, second.text, second.tags) == (None, "", ())


def test_a_csv_without_the_required_columns_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    path.write_text("number,text\n1,beam lost\n")

    with pytest.raises(LogbookSourceError) as caught:
        read(CsvAdapter, path)

    assert str(caught.value) == (
        f"{path}: the header row has no column for id (one of: id, native_id, entry_id, "
        "lognumber); timestamp (one of: timestamp, time, date, datetime, created, "
        "created_at). Its columns are: number, text. Name them with the source's fields "
        "option")


def test_csv_rows_of_the_wrong_width_are_bad_records(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    path.write_text("id,time,text\n1,1700000000,a\n2,1700000000\n3,1700000000,c,extra\n"
                    ",1700000000,no id\n")

    results = read(CsvAdapter, path)

    assert [item.native_id for item in results if isinstance(item, LogEntry)] == ["1"]
    assert [item for item in results if isinstance(item, BadRecord)] == [
        BadRecord(f"{path}:3", "the row has 2 fields, the header has 3"),
        BadRecord(f"{path}:4", "the row has 4 fields, the header has 3"),
        BadRecord(f"{path}:5", "no id (looked for id, native_id, entry_id, lognumber)")]


@pytest.mark.parametrize("content", ["", "\n"])
def test_an_empty_csv_is_an_error(tmp_path: Path, content: str) -> None:
    path = tmp_path / "log.csv"
    path.write_text(content)

    with pytest.raises(LogbookSourceError, match="is empty: a CSV export needs a header row"):
        read(CsvAdapter, path)


# -- locations ------------------------------------------------------------------------------


def test_locations_name_a_file_or_a_glob(tmp_path: Path) -> None:
    for day in (2, 1):
        lines(tmp_path / f"2024-03-0{day}.jsonl", {"id": day, "time": EPOCH + day})

    found = entries(read(JsonLinesAdapter, tmp_path / "*.jsonl"))

    assert [entry.native_id for entry in found] == ["1", "2"]
    for location, message in [(tmp_path / "none.jsonl", "none.jsonl: no such file"),
                              ("https://elog/api", "is a URL, and this adapter reads export"),
                              (tmp_path / "*.json", "no file matches"),
                              (tmp_path, "is a directory: give a file, or a glob")]:
        with pytest.raises(LogbookSourceError, match=message):
            read(JsonLinesAdapter, location)


# -- facility formats -----------------------------------------------------------------------


def test_als_export(tmp_path: Path) -> None:
    path = lines(tmp_path / "als.jsonl", {
        "id": "4711", "timestamp": str(EPOCH), "author": "jdoe", "subject": "SR RF trip",
        "details": "Cavity 2 tripped.", "level": "Operations", "category": ",RF,,Beam Loss,",
        "tag": "815", "linkedto": "4710", "attachments": [{"url": "/attachments/a/plot.png"}]},
        {"id": "4712", "timestamp": EPOCH, "tag": "0", "linkedto": "0", "attachments": []})

    first, second = entries(read(AlsAdapter, path, attachment_base_url="https://elog.example"))

    assert (first.id, first.title, first.text, first.author, first.logbook) == (
        "src/4711", "SR RF trip", "Cavity 2 tripped.", "jdoe", "Operations")
    assert first.tags == ("RF", "Beam Loss", "loto:815") and first.linked_to == ("4710",)
    assert first.attachments[0].url == "https://elog.example/attachments/a/plot.png"
    assert first.utc == datetime.fromtimestamp(EPOCH, UTC)
    assert first.utc_offset_minutes == -480  # Berkeley in November
    assert (second.tags, second.linked_to, second.logbook) == ((), (), None)


def test_jlab_export(tmp_path: Path) -> None:
    path = tmp_path / "jlab.json"
    path.write_text(json.dumps({"stat": "ok", "data": {"currentPage": 1, "entries": [
        {"lognumber": 3_900_001, "created": {"timestamp": str(EPOCH), "string": "..."},
         "title": "Hall A beam", "body": {"format": "html", "content":
                                          "<p>Beam on <b>target</b></p><p>1&nbsp;uA</p>"},
         "author": {"username": "asmith", "firstname": "Ann"}, "books": ["ELOG", "HALOG"],
         "tags": [{"name": "Readme"}], "attachments": [
             {"url": "https://logbooks.example/files/1.png", "type": "image/png",
              "caption": "screen"}]},
        {"id": "3900002", "created": "2023-11-14 17:00", "title": "plain", "body": "text",
         "author": {"firstname": "Ann", "lastname": "Smith"}}]}}))

    first, second = entries(read(JlabAdapter, path))

    assert (first.native_id, first.title, first.text, first.author) == (
        "3900001", "Hall A beam", "Beam on target\n1 uA", "asmith")
    assert (first.logbook, first.tags) == ("ELOG", ("Readme", "HALOG"))
    assert (first.attachments[0].name, first.attachments[0].mime_type) == (
        "screen", "image/png")
    assert second.author == "Ann Smith" and second.text == "text"
    assert second.local_time().replace(tzinfo=None) == datetime(2023, 11, 14, 17, 0)
    assert second.utc_offset_minutes == -300


def test_ornl_export(tmp_path: Path) -> None:
    path = tmp_path / "ornl.json"
    path.write_text(json.dumps({"entries": [
        {"ID": 77, "entry_time": "2023-11-14T12:00:00", "event_time": "2023-11-14T11:50:00",
         "title": "Ring RF", "content": "HPRF fault", "author": "ops", "logbook": "SNS Ops",
         "segment/area": "Ring", "reference": 76, "attachment": "Y",
         "attachment_header": "scope.png"},
        {"id": "78", "entry_time": EPOCH, "title": "t", "logbook": ["A", "B"],
         "attachments": [{"url": "https://x/f.pdf", "filename": "f.pdf", "type": None}]}]}))

    first, second = entries(read(OrnlAdapter, path))

    assert (first.native_id, first.title, first.text, first.logbook, first.tags) == (
        "77", "Ring RF", "HPRF fault", "SNS Ops", ("Ring",))
    assert first.linked_to == ("76",)
    assert [item.name for item in first.attachments] == ["scope.png"]
    assert first.timestamp == datetime(2023, 11, 14, 12, tzinfo=timezone(timedelta(hours=-5)))
    assert (second.logbook, second.tags, second.attachments[0].url) == (
        "A", ("B",), "https://x/f.pdf")


@pytest.mark.parametrize(("adapter", "record", "reason"), [
    (AlsAdapter, {"timestamp": EPOCH}, "no id"),
    (AlsAdapter, {"id": 1}, "no time"),
    (JlabAdapter, {"created": {"timestamp": EPOCH}}, "no lognumber (or id)"),
    (JlabAdapter, {"lognumber": 1, "created": {}}, "no time"),
    (OrnlAdapter, {"entry_time": EPOCH}, "no ID"),
    (OrnlAdapter, {"ID": 1, "entry_time": EPOCH, "attachments": [{"type": "x"}]},
     "an attachment has neither a name nor a URL"),
])
def test_facility_records_without_what_they_need_are_bad_records(
        tmp_path: Path, adapter: type[LogbookAdapter], record: dict[str, Any],
        reason: str) -> None:
    path = tmp_path / "export"
    path.write_text(json.dumps(record) + "\n" if adapter is AlsAdapter
                    else json.dumps([record]))

    [bad] = read(adapter, path)

    assert isinstance(bad, BadRecord) and bad.reason == reason


def test_html_bodies_become_plain_text() -> None:
    assert html_text("<div>Beam &amp; RF<br>tripped</div><script>x()</script>"
                     "<ul><li>one</li><li>two  words</li></ul>") == (
        "Beam & RF\ntripped\none\ntwo words")

