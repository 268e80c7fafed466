"""The LabVIEW connector against a real local HTTP server behaving like a LabVIEW web service."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from support.http_fakes import LabviewWebService, blackhole_listener, unused_port

from osprey_core.config import load_config
from osprey_core.control.errors import (
    ChannelNotFoundError,
    ConnectionTimeoutError,
    ControlSystemError,
    ReadTimeoutError,
)
from osprey_core.control.labview import (
    AuthenticationError,
    LabviewConnector,
    LabviewSettings,
    NotWritableError,
    extract,
    parse_json_path,
)
from osprey_core.control.limits import LimitsConfig, LimitsDatabase
from osprey_core.control.system import ControlSystem
from osprey_core.control.types import Reason, Severity, WriteRequest, WriteStatus
from osprey_core.errors import ConfigError
from osprey_core.models import AuditRecord
from osprey_core.plugin_host import load_plugins

PASSWORD_ENV = "OSPREY_TEST_LABVIEW_PASSWORD"
REQUEST = WriteRequest(actor="tester", interface="pytest")


def write_call(vi: str) -> dict[str, Any]:
    return {"url": f"/SR/{vi}", "body": {"name": "{channel}", "value": "{value}"}}


READ_VALUE = {"url": "/SR/ReadValue", "params": {"name": "{channel}"}}
CHANNELS: list[dict[str, Any]] = [
    {"pattern": "SR:*", "read": READ_VALUE, "write": write_call("WriteValue"), "units": "A"},
    {"pattern": "LIM:*", "read": READ_VALUE, "write": write_call("WriteLimited")},
    {"pattern": "CLAMP:*", "read": READ_VALUE, "write": write_call("WriteClamped")},
    {"pattern": "ILK:*", "read": READ_VALUE, "write": write_call("WriteInterlocked")},
    {"pattern": "SLOW:*", "read": {"url": "/SR/Slow", "params": {"name": "{channel}"}},
     "write": {"url": "/SR/Slow", "body": {"name": "{channel}", "value": "{value}"}}},
    {"pattern": "NESTED:*", "data_type": "float", "units": "mA", "precision": 2,
     "description": "stored beam current",
     "read": {"url": "/SR/Status", "params": {"name": "{channel}"},
              "value_path": "$.data.value", "timestamp_path": "data.timestamp",
              "severity_path": "data.severity"}},
    {"pattern": "TXT:*", "data_type": "float",
     "read": {"url": "/SR/Text/{1}", "response": "text"}},
    {"pattern": "FORM:*", "read": READ_VALUE,
     "write": {"url": "/SR/WriteForm", "body_format": "form",
               "body": {"name": "{channel}", "value": "{value}"}}},
    {"pattern": "RO:Temperature", "read": READ_VALUE, "units": "degC"},
]
INITIAL = {"SR:Current": 401.5, "SR:HCM1:SP": 1.0, "LIM:Quad": 50.0, "CLAMP:Kicker": 1.0,
           "ILK:Septum": 2.0, "NESTED:Current": 399.25, "A/B": 7.5, "FORM:Gap": 20.0,
           "RO:Temperature": 23.5, "SR:Mode": "top-up", "SR:Enabled": True,
           "SR:Profile": [1.0, 2.0, 3.0]}


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


@pytest.fixture
def service(monkeypatch: pytest.MonkeyPatch) -> Iterator[LabviewWebService]:
    monkeypatch.setenv(PASSWORD_ENV, "s3cret")
    with LabviewWebService(users={"operator": "s3cret"}) as fake:
        fake.values.update(INITIAL)
        yield fake


def settings(url: str, **overrides: Any) -> dict[str, Any]:
    return {"base_url": url, "poll_interval": 0.05, "channels": CHANNELS,
            "auth": {"type": "basic", "username": "operator", "password_env": PASSWORD_ENV},
            **overrides}


def connector(url: str, *, connection_timeout: float = 2.0, read_timeout: float = 2.0,
              write_timeout: float = 2.0, **overrides: Any) -> LabviewConnector:
    return LabviewConnector(settings(url, **overrides), connection_timeout=connection_timeout,
                            read_timeout=read_timeout, write_timeout=write_timeout)


def control_system(lv: LabviewConnector, *, writes_enabled: bool = True,
                   audit: list[AuditRecord] | None = None) -> ControlSystem:
    entry = {"writable": True, "min": -1000, "max": 1000, "verification": "readback",
             "tolerance": {"absolute": 1e-9}}
    limits = LimitsDatabase(LimitsConfig.model_validate({
        "patterns": {pattern: entry for pattern in
                     ("SR:*", "LIM:*", "CLAMP:*", "ILK:*", "SLOW:*", "FORM:*", "RO:*")}}))
    return ControlSystem(lv, limits, writes_enabled=writes_enabled, verify_timeout=0.3,
                         audit=None if audit is None else audit.append)


# -- reading --------------------------------------------------------------------------------


def test_read_calls_the_read_vi_with_credentials(service: LabviewWebService) -> None:
    before = datetime.now(UTC)
    value = run(connector(service.url).read("SR:Current"))
    assert value.channel == "SR:Current" and value.value == 401.5 and value.units == "A"
    assert value.timestamp.tzinfo is not None and value.timestamp >= before
    assert value.severity is Severity.NO_ALARM
    [request] = service.seen("GET", "/SR/ReadValue")
    assert request.query == {"name": ["SR:Current"]}
    assert request.headers["authorization"].startswith("Basic ")


def test_read_keeps_json_types(service: LabviewWebService) -> None:
    lv = connector(service.url)
    batch = run(lv.read_many(["SR:Mode", "SR:Enabled", "SR:Profile", "SR:HCM1:SP"]))
    assert {name: value.value for name, value in batch.values.items()} == {
        "SR:Mode": "top-up", "SR:Enabled": True, "SR:Profile": [1.0, 2.0, 3.0],
        "SR:HCM1:SP": 1.0}
    assert not batch.errors


def test_read_many_reports_each_failure_by_channel(service: LabviewWebService) -> None:
    batch = run(connector(service.url).read_many(["SR:Current", "SR:Nope", "XX:Unmapped"]))
    assert set(batch.values) == {"SR:Current"}
    assert isinstance(batch.errors["SR:Nope"], ChannelNotFoundError)
    assert "unknown variable 'SR:Nope'" in str(batch.errors["SR:Nope"])
    assert isinstance(batch.errors["XX:Unmapped"], ChannelNotFoundError)
    assert "labview.channels" in str(batch.errors["XX:Unmapped"])
    # The unmapped channel never reached the server.
    assert sorted(r.query["name"][0] for r in service.seen("GET")) == ["SR:Current", "SR:Nope"]


def test_read_many_runs_requests_concurrently_within_max_concurrency(
        service: LabviewWebService) -> None:
    service.delay = 0.2
    names = [f"SR:C{index}" for index in range(6)]
    service.values.update(dict.fromkeys(names, 1.0))
    started = time.monotonic()
    batch = run(connector(service.url, max_concurrency=3).read_many(names))
    elapsed = time.monotonic() - started
    assert len(batch.values) == 6
    assert service.max_in_flight == 3
    assert 0.35 < elapsed < 1.0  # two waves of three, not six in a row


def test_nested_value_path_timestamp_severity_and_metadata(service: LabviewWebService) -> None:
    service.severities["NESTED:Current"] = 1
    lv = connector(service.url)
    value = run(lv.read("NESTED:Current"))
    assert value.value == 399.25 and value.units == "mA"
    assert value.timestamp == datetime.fromtimestamp(1_700_000_000.25, UTC)
    assert value.severity is Severity.MINOR and value.status == "MINOR"
    meta = run(lv.metadata("NESTED:Current"))
    assert (meta.data_type, meta.units, meta.precision, meta.writable) == (
        "float", "mA", 2, False)
    assert meta.description == "stored beam current"
    # Without a configured type, metadata reads once to tell it.
    assert run(lv.metadata("SR:Mode")).data_type == "string"
    assert run(lv.metadata("SR:Current")).writable is True


def test_text_answer_and_wildcard_in_the_url_path_are_encoded(
        service: LabviewWebService) -> None:
    value = run(connector(service.url).read("TXT:A/B"))
    assert value.value == 7.5
    [request] = service.seen("GET")
    assert request.raw_path == "/SR/Text/A%2FB"  # the wildcard is one path segment


def test_channel_names_cannot_inject_query_parameters(service: LabviewWebService) -> None:
    with pytest.raises(ChannelNotFoundError):
        run(connector(service.url).read("SR:X&name=SR:Current"))
    [request] = service.seen("GET")
    assert request.query == {"name": ["SR:X&name=SR:Current"]}


def test_unmapped_channel_is_not_found_without_a_request(service: LabviewWebService) -> None:
    with pytest.raises(ChannelNotFoundError, match=r"no entry in labview\.channels"):
        run(connector(service.url).read("BTS:Current"))
    assert service.requests == []


# -- writing through the one write path ----------------------------------------------------


def test_write_then_readback_verification(service: LabviewWebService) -> None:
    audit: list[AuditRecord] = []
    result = run(control_system(connector(service.url), audit=audit).write(
        "SR:HCM1:SP", 2.5, REQUEST))
    assert result.status is WriteStatus.OK, result.message
    assert result.verified is True and result.readback is not None
    assert result.readback.value == 2.5 and result.previous is not None
    assert result.previous.value == 1.0
    assert service.writes == [("WriteValue", "SR:HCM1:SP", 2.5)]
    [post] = service.seen("POST")
    assert post.json() == {"name": "SR:HCM1:SP", "value": 2.5}  # typed, not "2.5"
    assert post.headers["content-type"] == "application/json"
    assert [record.action for record in audit] == ["channel_write_started",
                                                   "channel_write_ok"]


def test_clamped_write_fails_verification_with_the_readback(service: LabviewWebService) -> None:
    result = run(control_system(connector(service.url)).write("CLAMP:Kicker", 8.0, REQUEST))
    assert result.status is WriteStatus.FAILED
    assert result.reason is Reason.VERIFICATION_FAILED and result.verified is False
    assert result.readback is not None and result.readback.value == 5.0
    assert service.values["CLAMP:Kicker"] == 5.0


def test_server_rejection_is_blocked_with_its_message(service: LabviewWebService) -> None:
    result = run(control_system(connector(service.url)).write("LIM:Quad", 150.0, REQUEST))
    assert result.status is WriteStatus.BLOCKED
    assert result.reason is Reason.REJECTED_BY_SERVER
    assert "value 150.0 out of range [0, 100]" in result.message
    assert service.values["LIM:Quad"] == 50.0 and service.writes == []


def test_labview_error_cluster_in_a_200_answer_is_a_rejection(
        service: LabviewWebService) -> None:
    result = run(control_system(connector(service.url)).write("ILK:Septum", 3.0, REQUEST))
    assert result.status is WriteStatus.BLOCKED
    assert result.reason is Reason.REJECTED_BY_SERVER
    assert "interlock active: beam on" in result.message and "5001" in result.message
    assert service.values["ILK:Septum"] == 2.0


def test_form_encoded_write(service: LabviewWebService) -> None:
    result = run(control_system(connector(service.url)).write("FORM:Gap", 21.5, REQUEST))
    assert result.ok, result.message
    [post] = service.seen("POST")
    assert post.headers["content-type"] == "application/x-www-form-urlencoded"
    assert post.body == b"name=FORM%3AGap&value=21.5"


def test_success_path_false_is_a_rejection(service: LabviewWebService) -> None:
    channels = [{"pattern": "SR:*", "read": READ_VALUE,
                 "write": {**write_call("WriteValue"), "success_path": "status",
                           "error_path": None}}]
    lv = connector(service.url, channels=channels)
    assert run(lv.write("SR:HCM1:SP", 3.0)).confirmed is True  # "ok" counts as success
    channels[0]["write"]["success_path"] = "accepted"  # absent from the answer
    lv = connector(service.url, channels=channels)
    with pytest.raises(ControlSystemError) as caught:
        run(lv.write("SR:HCM1:SP", 4.0))
    assert caught.value.reason is Reason.REJECTED_BY_SERVER


def test_channel_without_write_method_is_not_writable(service: LabviewWebService) -> None:
    lv = connector(service.url)
    with pytest.raises(NotWritableError):
        run(lv.write("RO:Temperature", 30.0))
    result = run(control_system(lv).write("RO:Temperature", 30.0, REQUEST))
    assert result.status is WriteStatus.FAILED and result.reason is Reason.NOT_WRITABLE
    assert service.seen("POST") == []


def test_writes_disabled_blocks_before_any_request(service: LabviewWebService) -> None:
    cs = control_system(connector(service.url), writes_enabled=False)
    result = run(cs.write("SR:HCM1:SP", 2.0, REQUEST))
    assert result.status is WriteStatus.BLOCKED and result.reason is Reason.WRITES_DISABLED
    assert service.values["SR:HCM1:SP"] == 1.0
    assert service.writes == [] and service.seen("POST") == []


# -- authentication ---------------------------------------------------------------------------


def test_wrong_password_is_a_clear_authentication_error(service: LabviewWebService,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSWORD_ENV, "wrong")
    lv = connector(service.url)
    with pytest.raises(AuthenticationError, match="authentication failed") as caught:
        run(lv.read("SR:Current"))
    assert "HTTP 401" in str(caught.value) and "basic credentials" in str(caught.value)
    result = run(control_system(lv).write("SR:HCM1:SP", 2.0, REQUEST))
    assert result.status is WriteStatus.FAILED and result.reason is Reason.IO_ERROR
    assert "authentication failed" in result.message
    assert service.writes == [] and service.values["SR:HCM1:SP"] == 1.0


def test_missing_credentials_say_so(service: LabviewWebService) -> None:
    lv = connector(service.url, auth={"type": "none"})
    with pytest.raises(AuthenticationError, match="no credentials are configured"):
        run(lv.read("SR:Current"))


def test_missing_password_variable_is_a_config_error(service: LabviewWebService,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PASSWORD_ENV)
    with pytest.raises(ConfigError, match=PASSWORD_ENV):
        run(connector(service.url).connect())


def test_bearer_token() -> None:
    with LabviewWebService(token="t0ken") as fake:
        fake.values["SR:Current"] = 1.5
        good = connector(fake.url, auth={"type": "bearer", "token": "t0ken"})
        assert run(good.read("SR:Current")).value == 1.5
        assert fake.requests[0].headers["authorization"] == "Bearer t0ken"
        bad = connector(fake.url, auth={"type": "bearer", "token": "nope"})
        with pytest.raises(AuthenticationError, match="bearer credentials"):
            run(bad.read("SR:Current"))


# -- timeouts -------------------------------------------------------------------------------


def test_read_timeout_is_honoured(service: LabviewWebService) -> None:
    service.values["SLOW:Motor"] = 1.0
    lv = connector(service.url, connection_timeout=5.0, read_timeout=0.4)
    started = time.monotonic()
    with pytest.raises(ReadTimeoutError, match=r"within 0.4 s \(read_timeout\)"):
        run(lv.read("SLOW:Motor"))
    assert 0.35 < time.monotonic() - started < 1.5


def test_write_timeout_fails_the_write(service: LabviewWebService) -> None:
    service.values["SLOW:Motor"] = 1.0
    # The previous value is read first (for the record): it times out after read_timeout.
    lv = connector(service.url, read_timeout=0.2, write_timeout=0.4)
    started = time.monotonic()
    result = run(control_system(lv).write("SLOW:Motor", 2.0, REQUEST))
    assert result.status is WriteStatus.FAILED and result.reason is Reason.TIMEOUT
    assert "write_timeout" in result.message or "0.4 s" in result.message
    assert 0.55 < time.monotonic() - started < 1.5


def test_connection_timeout_is_honoured_separately() -> None:
    with blackhole_listener() as port:
        lv = connector(f"http://127.0.0.1:{port}", connection_timeout=0.4, read_timeout=10.0,
                       auth={"type": "none"})
        started = time.monotonic()
        with pytest.raises(ConnectionTimeoutError, match="connection_timeout"):
            run(lv.read("SR:Current"))
        assert 0.35 < time.monotonic() - started < 1.5


def test_refused_connection_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSWORD_ENV, "s3cret")
    lv = connector(f"http://127.0.0.1:{unused_port()}", connection_timeout=2.0)
    started = time.monotonic()
    with pytest.raises(ControlSystemError, match="cannot connect") as caught:
        run(lv.read("SR:Current"))
    assert not isinstance(caught.value, ConnectionTimeoutError)
    assert time.monotonic() - started < 1.0


@pytest.mark.parametrize(("answer", "message"), [
    ((500, {"error": "VI crashed"}, {}), r"HTTP 500 Internal Server Error: VI crashed"),
    ((200, b"{not json", {"Content-Type": "application/json"}), r"the answer is not JSON"),
    ((200, b"x" * 5000, {}), r"answer larger than 1024 bytes"),
])
def test_broken_answers_are_clear_errors(service: LabviewWebService,
                                         monkeypatch: pytest.MonkeyPatch,
                                         answer: Any, message: str) -> None:
    monkeypatch.setattr(service, "handle", lambda request: answer)
    lv = connector(service.url, max_response_bytes=1024)
    with pytest.raises(ControlSystemError, match=message) as caught:
        run(lv.read("SR:Current"))
    assert caught.value.channel == "SR:Current"


def test_one_client_serves_many_requests_and_closes(service: LabviewWebService) -> None:
    lv = connector(service.url)

    async def session() -> list[float]:
        values = [(await lv.read("SR:Current")).value for _ in range(3)]
        await lv.close()
        return values

    assert run(session()) == [401.5] * 3
    assert lv._session is None  # closed with the connector


def test_missing_base_url_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"labview.base_url is not set"):
        run(LabviewConnector().connect())


# -- subscriptions --------------------------------------------------------------------------


def test_polling_subscription_fires_on_change_only(service: LabviewWebService) -> None:
    async def scenario() -> list[Any]:
        lv = connector(service.url)
        seen: list[Any] = []
        loop = asyncio.get_running_loop()
        changed = asyncio.Event()

        def callback(value: Any) -> None:
            assert asyncio.get_running_loop() is loop  # called on the event loop
            seen.append(value.value)
            changed.set()

        handle = await lv.subscribe("SR:Current", callback)
        await asyncio.wait_for(changed.wait(), 2)
        changed.clear()
        await asyncio.sleep(0.3)  # several polls, no change
        assert seen == [401.5]
        with service.lock:
            service.values["SR:Current"] = 402.0
        await asyncio.wait_for(changed.wait(), 2)
        await lv.unsubscribe(handle)
        polls = len(service.seen("GET"))
        await asyncio.sleep(0.2)
        assert len(service.seen("GET")) == polls  # polling stopped
        await lv.close()
        return seen

    assert run(scenario()) == [401.5, 402.0]


def test_subscribing_to_an_unmapped_channel_fails_at_once(service: LabviewWebService) -> None:
    with pytest.raises(ChannelNotFoundError):
        run(connector(service.url).subscribe("XX:Nope", lambda value: None))


def test_close_stops_every_poll(service: LabviewWebService) -> None:
    async def scenario() -> None:
        lv = connector(service.url)
        await lv.subscribe("SR:Current", lambda value: None)
        await lv.subscribe("SR:HCM1:SP", lambda value: None)
        await asyncio.sleep(0.12)
        await lv.close()
        polls = len(service.requests)
        await asyncio.sleep(0.2)
        assert len(service.requests) == polls

    run(scenario())


# -- TLS ------------------------------------------------------------------------------------


def test_https_with_the_facility_ca_and_verification(certificate: tuple[Path, Path],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(PASSWORD_ENV, "s3cret")
    cert, key = certificate
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    with LabviewWebService(users={"operator": "s3cret"}, ssl_context=context) as fake:
        fake.values["SR:Current"] = 3.0
        assert fake.url.startswith("https://")
        assert run(connector(fake.url, ca_file=str(cert)).read("SR:Current")).value == 3.0
        with pytest.raises(ControlSystemError, match="TLS certificate verification failed"):
            run(connector(fake.url).read("SR:Current"))
        assert run(connector(fake.url, verify_tls=False).read("SR:Current")).value == 3.0


# -- settings -------------------------------------------------------------------------------


@pytest.mark.parametrize(("change", "message"), [
    ({"base_url": "ftp://host"}, "http:// or https://"),
    ({"base_url": "http://user:pw@host"}, "credentials"),
    ({"auth": {"type": "basic", "username": "op"}}, "exactly one of password"),
    ({"auth": {"type": "bearer"}}, "exactly one of token"),
    ({"channels": [{"pattern": "A:*", "read": {"url": "/r/{2}"}}]}, "only 1 wildcard"),
    ({"channels": [{"pattern": "A", "read": {"url": "/r/{valu}"}}]}, "unknown placeholder"),
    ({"channels": [{"pattern": "A", "read": {"url": "/r?x={value}"}}]},
     "unknown placeholder"),
    ({"channels": [{"pattern": "A", "read": {"url": "/r/{channel!r}"}}]}, "plain placeholders"),
    ({"channels": [{"pattern": "A", "read": {"url": "http://evil/r"}}]}, "relative"),
    ({"channels": [{"pattern": "A", "read": {"url": "/r", "body": {"a": 1}}}]}, "no body"),
    ({"channels": [{"pattern": "A", "read": {"url": "/r", "value_path": "a..b"}}]},
     "invalid JSON path"),
    ({"channels": [{"pattern": "A", "read": {"url": "/r"}, "writable": True}]},
     "no write method"),
    ({"channels": [{"pattern": "A", "read": {"url": "/r"}},
                   {"pattern": "A", "read": {"url": "/s"}}]}, "mapped twice"),
    ({"channels": [{"pattern": "A", "read": {"url": "/r"}, "extra": 1}]}, "Extra inputs"),
])
def test_bad_settings_are_refused(change: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        LabviewSettings.model_validate(settings("http://127.0.0.1:1") | change)


def test_json_paths() -> None:
    document = {"data": {"items": [{"value": 1}, {"value": 2}]}, "a b": 3}
    assert parse_json_path("$.data.items[1].value") == ("data", "items", 1, "value")
    assert extract(document, "data.items[-1].value") == 2
    assert extract(document, "data.items.0.value") == 1
    assert extract(document, "$['a b']") == 3
    assert extract(document, "$") is document


def test_exact_names_win_over_patterns_then_first_pattern(service: LabviewWebService) -> None:
    channels = [{"pattern": "SR:*", "read": READ_VALUE, "units": "pattern"},
                {"pattern": "SR:Cur*", "read": READ_VALUE, "units": "later pattern"},
                {"pattern": "SR:Current", "read": READ_VALUE, "units": "exact"}]
    lv = connector(service.url, channels=channels)
    assert lv.mapping("SR:Current")[0].units == "exact"
    assert lv.mapping("SR:Curve")[0].units == "pattern"


# -- as a plugin ----------------------------------------------------------------------------


@pytest.mark.exercises_hook("register_connectors")
def test_registered_as_a_builtin_plugin() -> None:
    host = load_plugins()
    assert host.connectors().get("labview") is LabviewConnector
    assert host.connectors().origin("labview") == "labview"
    assert LabviewConnector.settings_model is LabviewSettings


CONFIG = """\
control_system:
  type: labview
  writes_enabled: {writes}
  read_timeout: 1.5
  verify_timeout: 0.5
  limits:
    patterns:
      'SR:*': {{writable: true, min: 0, max: 10, verification: readback}}
labview:
  base_url: {url}
  auth: {{type: basic, username: operator, password_env: {env}}}
  channels:
    - pattern: 'SR:*'
      read: {{url: /SR/ReadValue, params: {{name: '{{channel}}'}}}}
      write: {{url: /SR/WriteValue, body: {{name: '{{channel}}', value: '{{value}}'}}}}
"""


@pytest.mark.exercises_hook("register_config_sections")
@pytest.mark.parametrize("writes", [True, False])
def test_configured_labview_control_system_end_to_end(service: LabviewWebService,
                                                      tmp_path: Path, writes: bool) -> None:
    from osprey_core.control.service import build_control_system

    config_file = tmp_path / "osprey.yml"
    config_file.write_text(CONFIG.format(writes=str(writes).lower(), url=service.url,
                                         env=PASSWORD_ENV), encoding="utf-8")
    host = load_plugins()
    config = load_config(host, config_file, environ={"OSPREY_HOME": str(tmp_path / "home")})
    assert config.sections["labview"] == "labview"
    assert isinstance(config.section("labview"), LabviewSettings)
    cs = build_control_system(config, host, notice=None)
    assert isinstance(cs.connector, LabviewConnector)
    assert cs.connector.read_timeout == 1.5

    async def scenario() -> Any:
        async with cs:
            assert (await cs.read("SR:Current")).value == 401.5
            return await cs.write("SR:HCM1:SP", 4.0, REQUEST)

    result = run(scenario())
    if writes:
        assert result.ok and result.verified is True, result.message
        assert service.writes == [("WriteValue", "SR:HCM1:SP", 4.0)]
    else:
        assert result.reason is Reason.WRITES_DISABLED
        assert service.writes == [] and service.seen("POST") == []
    # The password itself never lands in the displayed config.
    assert "s3cret" not in str(config.to_display())


def test_default_config_needs_no_labview_section(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no osprey.yml here
    config = load_config(load_plugins(), None, environ={})
    assert config.section("labview") == LabviewSettings()
