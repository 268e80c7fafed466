"""The Archiver Appliance archiver against a local server speaking its JSON retrieval API."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from support.http_fakes import ArchiverApplianceService, bin_samples, epoch, unused_port

from osprey_core.config import load_config
from osprey_core.control.archiver_appliance import (
    ArchiverApplianceConnector,
    ArchiverApplianceSettings,
    ArchiverRequestError,
    format_time,
)
from osprey_core.control.errors import ChannelNotFoundError, ControlSystemError, ReadTimeoutError
from osprey_core.control.types import Sample, Severity, samples_to_dataframe
from osprey_core.errors import ConfigError, OspreyError
from osprey_core.plugin_host import load_plugins

START = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
END = START + timedelta(minutes=10)


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


@pytest.fixture
def appliance() -> Iterator[ArchiverApplianceService]:
    with ArchiverApplianceService() as fake:
        base = epoch(START)
        # One sample every 10 s for 10 minutes, with a MINOR HIGH alarm in the middle.
        fake.add("SR:DCCT:Current", [
            (base + 10 * i + 0.5, 400.0 + i, 1 if 20 <= i < 25 else 0, 4 if 20 <= i < 25 else 0)
            for i in range(60)])
        fake.add("SR:BPM1:X", [(base + 30 * i, 0.01 * i, 0, 0) for i in range(20)])
        fake.add("SR:BPM1:Waveform", [(base + 60, [1.0, 2.0, 3.0], 0, 0)])
        fake.add("SR:Mode", [(base + 5, "top-up", 0, 0), (base + 400, "decay", 3, 9)])
        fake.add("SR:Quiet", [])  # archived, nothing in the range
        fake.silent.add("SR:Ghost")
        yield fake


def archiver(appliance: ArchiverApplianceService, *, timeout: float = 5.0,
             **settings: Any) -> ArchiverApplianceConnector:
    return ArchiverApplianceConnector({"url": f"{appliance.url}/retrieval", **settings},
                                      timeout=timeout)


def test_retrieves_typed_utc_samples(appliance: ArchiverApplianceService) -> None:
    history = run(archiver(appliance).retrieve(["SR:DCCT:Current"], START, END))
    samples = history["SR:DCCT:Current"]
    assert len(samples) == 60
    first = samples[0]
    assert first == Sample(START + timedelta(seconds=0.5), 400.0, Severity.NO_ALARM, "NO_ALARM")
    assert first.timestamp.tzinfo is not None and first.timestamp.utcoffset() == timedelta(0)
    assert samples[20].severity is Severity.MINOR and samples[20].status == "HIGH"
    assert [sample.timestamp for sample in samples] == sorted(s.timestamp for s in samples)


def test_sends_utc_times_with_z_and_milliseconds(appliance: ArchiverApplianceService) -> None:
    # The same instants given in another timezone go out identically, in UTC.
    tz = timezone(timedelta(hours=2))
    start = datetime(2024, 5, 1, 14, 0, 0, 123456, tzinfo=tz)
    run(archiver(appliance).retrieve(["SR:BPM1:X"], start, start + timedelta(minutes=5)))
    [request] = appliance.requests
    assert request.path == "/retrieval/data/getData.json"
    assert request.query == {"pv": ["SR:BPM1:X"], "from": ["2024-05-01T12:00:00.123Z"],
                             "to": ["2024-05-01T12:05:00.123Z"]}
    assert format_time(START) == "2024-05-01T12:00:00.000Z"


def test_naive_datetimes_are_refused(appliance: ArchiverApplianceService) -> None:
    naive = datetime(2024, 5, 1, 12, 0)
    with pytest.raises(ArchiverRequestError, match=r"has no timezone.*UTC") as caught:
        run(archiver(appliance).retrieve(["SR:BPM1:X"], naive, END))
    assert isinstance(caught.value, OspreyError) and isinstance(caught.value, ValueError)
    with pytest.raises(ArchiverRequestError, match=r"end .* has no timezone"):
        run(archiver(appliance).retrieve(["SR:BPM1:X"], START, naive))
    with pytest.raises(ArchiverRequestError, match="is after end"):
        run(archiver(appliance).retrieve(["SR:BPM1:X"], END, START))
    assert appliance.requests == []


def test_operator_wraps_the_pv_and_the_server_bins(appliance: ArchiverApplianceService) -> None:
    history = run(archiver(appliance).retrieve(["SR:DCCT:Current"], START, END,
                                               operator="mean_60"))
    [request] = appliance.requests
    assert request.query["pv"] == ["mean_60(SR:DCCT:Current)"]
    samples = history["SR:DCCT:Current"]
    assert len(samples) == 10  # ten one-minute bins
    raw = appliance.archive["SR:DCCT:Current"].samples
    expected = bin_samples(raw, 60, "mean")
    assert [sample.value for sample in samples] == [point[1] for point in expected]
    assert samples[0].value == pytest.approx(sum(400.0 + i for i in range(6)) / 6)
    assert samples[0].timestamp == START
    assert samples[3].severity is Severity.MINOR  # bin 3 holds samples 18..23


@pytest.mark.parametrize("operator", ["max_60", "firstSample_3600", "meanSample_60", "nth_5",
                                      "ignoreflyers_60_2.5", "raw", None])
def test_valid_operators_pass_through(operator: str | None) -> None:
    lv = ArchiverApplianceConnector({"url": "http://127.0.0.1:1/retrieval"})
    expected = "PV" if operator in (None, "raw") else f"{operator}(PV)"
    assert lv.wrap("PV", operator) == expected


@pytest.mark.parametrize(("operator", "message"), [
    ("average_60", "unknown operator 'average'"),
    ("mean_60(x)", "not of the form"),
    ("mean 60", "not of the form"),
    ("mean_-1", "not of the form"),
])
def test_bad_operators_are_refused_before_any_request(
        appliance: ArchiverApplianceService, operator: str, message: str) -> None:
    with pytest.raises(ArchiverRequestError, match=message):
        run(archiver(appliance).retrieve(["SR:BPM1:X"], START, END, operator=operator))
    assert appliance.requests == []


def test_extra_operators_can_be_allowed() -> None:
    lv = ArchiverApplianceConnector({"url": "http://127.0.0.1:1/retrieval",
                                     "extra_operators": ["average"]})
    assert lv.wrap("PV", "average_60") == "average_60(PV)"


def test_unknown_pv_is_channel_not_found(appliance: ArchiverApplianceService) -> None:
    with pytest.raises(ChannelNotFoundError, match="does not archive SR:Nope") as caught:
        run(archiver(appliance).retrieve(["SR:BPM1:X", "SR:Nope"], START, END))
    assert caught.value.channel == "SR:Nope"
    assert "Unable to find typeinfo" in str(caught.value)  # the server's words, no HTML
    assert "<" not in str(caught.value)


def test_empty_body_is_not_found_but_empty_list_is_no_samples(
        appliance: ArchiverApplianceService) -> None:
    with pytest.raises(ChannelNotFoundError, match="not archived"):
        run(archiver(appliance).retrieve(["SR:Ghost"], START, END))
    assert run(archiver(appliance).retrieve(["SR:Quiet"], START, END)) == {"SR:Quiet": []}


def test_waveforms_strings_and_alarm_codes(appliance: ArchiverApplianceService) -> None:
    history = run(archiver(appliance).retrieve(["SR:BPM1:Waveform", "SR:Mode"], START, END))
    assert history["SR:BPM1:Waveform"][0].value == [1.0, 2.0, 3.0]
    mode = history["SR:Mode"]
    assert [sample.value for sample in mode] == ["top-up", "decay"]
    assert mode[1].severity is Severity.INVALID and mode[1].status == "COMM"


def test_channels_are_fetched_concurrently(appliance: ArchiverApplianceService) -> None:
    appliance.delay = 0.3
    channels = ["SR:DCCT:Current", "SR:BPM1:X", "SR:BPM1:Waveform", "SR:Mode", "SR:Quiet"]
    started = time.monotonic()
    history = run(archiver(appliance).retrieve(channels, START, END))
    elapsed = time.monotonic() - started
    assert list(history) == channels
    assert appliance.max_in_flight >= 4
    assert elapsed < 1.0  # five requests of 0.3 s each, in parallel


def test_concurrency_is_bounded(appliance: ArchiverApplianceService) -> None:
    appliance.delay = 0.1
    channels = ["SR:DCCT:Current", "SR:BPM1:X", "SR:BPM1:Waveform", "SR:Mode"]
    run(archiver(appliance, max_concurrency=2).retrieve(channels, START, END))
    assert appliance.max_in_flight == 2


def test_timeout_is_honoured(appliance: ArchiverApplianceService) -> None:
    appliance.delay = 2.0
    started = time.monotonic()
    with pytest.raises(ReadTimeoutError, match=r"within 0\.3 s"):
        run(archiver(appliance, timeout=0.3).retrieve(["SR:BPM1:X"], START, END))
    assert time.monotonic() - started < 1.5


def test_settings_timeout_overrides_archiver_timeout(appliance: ArchiverApplianceService) -> None:
    appliance.delay = 2.0
    lv = ArchiverApplianceConnector({"url": f"{appliance.url}/retrieval", "timeout": 0.3},
                                    timeout=30.0)
    assert lv.effective_timeout == 0.3
    with pytest.raises(ReadTimeoutError, match=r"within 0\.3 s"):
        run(lv.retrieve(["SR:BPM1:X"], START, END))


def test_unreachable_appliance_is_a_clear_error() -> None:
    lv = ArchiverApplianceConnector({"url": f"http://127.0.0.1:{unused_port()}/retrieval"})
    with pytest.raises(ControlSystemError, match="cannot connect"):
        run(lv.retrieve(["SR:BPM1:X"], START, END))


@pytest.mark.parametrize(("answer", "message"), [
    ((500, "<html><body>java.lang.NullPointerException</body></html>",
      {"Content-Type": "text/html"}), r"HTTP 500 Internal Server Error: java.lang.NullPointer"),
    ((200, b"[{\"meta\": ", {"Content-Type": "application/json"}), r"is not JSON"),
    ((200, {"data": []}, {}), r"expected a list, got dict"),
])
def test_broken_answers_are_clear_errors(appliance: ArchiverApplianceService,
                                         monkeypatch: pytest.MonkeyPatch,
                                         answer: Any, message: str) -> None:
    monkeypatch.setattr(appliance, "handle", lambda request: answer)
    with pytest.raises(ControlSystemError, match=message) as caught:
        run(archiver(appliance).retrieve(["SR:BPM1:X"], START, END))
    assert caught.value.channel == "SR:BPM1:X"


def test_credentials_in_the_url_are_sent_but_never_shown(
        appliance: ArchiverApplianceService) -> None:
    url = appliance.url.replace("http://", "http://reader:pa55@")
    lv = ArchiverApplianceConnector({"url": f"{url}/retrieval"})
    assert run(lv.retrieve(["SR:BPM1:X"], START, END))["SR:BPM1:X"]
    assert appliance.requests[-1].headers["authorization"].startswith("Basic ")
    with pytest.raises(ChannelNotFoundError) as caught:
        run(lv.retrieve(["SR:Nope"], START, END))
    assert "pa55" not in str(caught.value) and "127.0.0.1" in str(caught.value)


def test_missing_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"archiver_appliance\.url is not set"):
        run(ArchiverApplianceConnector().retrieve(["SR:BPM1:X"], START, END))


@pytest.mark.parametrize(("settings", "message"), [
    ({"url": "ftp://host/retrieval"}, "http:// or https://"),
    ({"url": "http://host/retrieval?x=1"}, "query"),
    ({"timeout": 0}, "greater than 0"),
    ({"extra_operators": ["bad_name"]}, "letters only"),
    ({"unknown": 1}, "Extra inputs"),
])
def test_bad_settings_are_refused(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ArchiverApplianceSettings.model_validate(settings)


def test_samples_to_dataframe(appliance: ArchiverApplianceService) -> None:
    pandas = pytest.importorskip("pandas")
    history = run(archiver(appliance).retrieve(["SR:BPM1:X", "SR:Mode"], START, END))
    frame = samples_to_dataframe(history)
    assert isinstance(frame, pandas.DataFrame)
    assert len(frame) == len(history["SR:BPM1:X"]) + 2
    assert str(frame["timestamp"].dt.tz) == "UTC"
    assert set(frame["channel"]) == {"SR:BPM1:X", "SR:Mode"}


# -- as a plugin ----------------------------------------------------------------------------


@pytest.mark.exercises_hook("register_archivers")
def test_registered_as_a_builtin_plugin() -> None:
    host = load_plugins()
    assert host.archivers().get("archiver_appliance") is ArchiverApplianceConnector
    assert host.archivers().origin("archiver_appliance") == "archiver_appliance"


@pytest.mark.exercises_hook("register_config_sections")
def test_configured_archiver_end_to_end(appliance: ArchiverApplianceService,
                                        tmp_path: Path) -> None:
    from osprey_core.control.service import build_archiver

    config_file = tmp_path / "osprey.yml"
    config_file.write_text(
        "archiver:\n  type: archiver_appliance\n  timeout: 5\n"
        f"archiver_appliance:\n  url: {appliance.url}/retrieval/\n", encoding="utf-8")
    host = load_plugins()
    config = load_config(host, config_file, environ={"OSPREY_HOME": str(tmp_path / "home")})
    section = config.section("archiver_appliance")
    assert isinstance(section, ArchiverApplianceSettings)
    assert section.url == f"{appliance.url}/retrieval"  # trailing slash dropped
    archiver = build_archiver(config, host, notice=None)
    assert isinstance(archiver, ArchiverApplianceConnector) and archiver.timeout == 5
    history = run(archiver.retrieve(["SR:BPM1:X"], START, END, operator="mean_60"))
    assert len(history["SR:BPM1:X"]) == 10
