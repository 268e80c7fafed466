"""The Tango connector against real device servers (pytango ``DeviceTestContext``, no
database, each in its own process on 127.0.0.1)."""

from __future__ import annotations

import asyncio
import math
import re
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

pytest.importorskip("tango")

from support.tango_devices import Corrector, SlowSupply
from tango.test_context import MultiDeviceTestContext

from osprey_core.control.errors import (
    ChannelNotFoundError,
    ControlSystemError,
    ReadTimeoutError,
    ServerRejectedError,
    WriteTimeoutError,
)
from osprey_core.control.limits import ChannelLimits, LimitsConfig, LimitsDatabase
from osprey_core.control.system import ControlSystem
from osprey_core.control.tango import (
    TangoChannelMetadata,
    TangoConnector,
    TangoEnumError,
    TangoSettings,
    TangoValueError,
    parse_name,
    precision_of,
    translate_error,
)
from osprey_core.control.types import (
    ChannelValue,
    Reason,
    Severity,
    WriteRequest,
    WriteStatus,
)

DEVICE = "sr/ps/hcm01"
REQUEST = WriteRequest(actor="tester", interface="pytest")


def run[T](coro: Awaitable[T]) -> T:
    return asyncio.run(asyncio.wait_for(coro, 20))


SLOW_DEVICE = "sr/ps/slow"


def addresses(context: MultiDeviceTestContext, device: str) -> SimpleNamespace:
    access = context.get_device_access(device)  # tango://127.0.0.1:<port>/<device>#dbase=no
    base, fragment = access.split("#")
    host = base.removeprefix("tango://").split("/")[0]
    return SimpleNamespace(access=access, host=host,
                           attr=lambda attribute: f"{base}/{attribute}#{fragment}")


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[SimpleNamespace, SimpleNamespace]]:
    """One device server process (no database) with both test devices.

    ``MultiDeviceTestContext`` is the base of ``DeviceTestContext``; one process for both
    devices means one fork, done before this process has any Tango client thread (a
    second fork would copy omniORB's threads' locks). Tango serialises calls per device,
    so the slow device holds up nothing else.
    """
    context = MultiDeviceTestContext(
        [{"class": Corrector, "devices": [{"name": DEVICE}]},
         {"class": SlowSupply, "devices": [{"name": SLOW_DEVICE}]}],
        server_name="OspreyTest", process=True, host="127.0.0.1", port=0, timeout=15)
    # No TANGO_HOST override in this process: names must carry their own address.
    context.enable_test_context_tango_host_override = False
    context.start()
    try:
        yield addresses(context, DEVICE), addresses(context, SLOW_DEVICE)
    finally:
        context.stop()


@pytest.fixture
def server(servers: tuple[SimpleNamespace, SimpleNamespace]) -> SimpleNamespace:
    return servers[0]


@pytest.fixture
def slow_server(servers: tuple[SimpleNamespace, SimpleNamespace]) -> SimpleNamespace:
    return servers[1]


@pytest.fixture
def connector(monkeypatch: pytest.MonkeyPatch) -> Iterator[TangoConnector]:
    monkeypatch.delenv("TANGO_HOST", raising=False)
    tango = TangoConnector(TangoSettings(), connection_timeout=2.0, read_timeout=2.0,
                           write_timeout=3.0)
    yield tango
    run(tango.close())


def control(connector: TangoConnector, *channels: str, writes_enabled: bool = True,
            **limits: Any) -> ControlSystem:
    """A ControlSystem whose limits are wide open for ``channels``: the server decides."""
    entry = ChannelLimits(writable=True, verification="readback",
                          **({"min": -1e9, "max": 1e9} | limits))
    config = LimitsConfig(channels=dict.fromkeys(channels, entry))
    return ControlSystem(connector, LimitsDatabase(config), writes_enabled=writes_enabled,
                         verify_timeout=1.0)


async def put(connector: TangoConnector, channel: str, value: Any) -> None:
    await connector.connect()
    await connector.write(channel, value)


# -- names and settings (no server) ----------------------------------------------------


@pytest.mark.parametrize("name", [
    "tango://127.0.0.1:10000/sr/ps/hcm01/current",
    "tango://127.0.0.1:45001/sr/ps/hcm01/current#dbase=no",
    "TANGO://localhost:10000/SR/PS/HCM-01.a/Current_SP",
    "sr/ps/hcm01/current",
    "sys/tg_test/1/double_scalar",
])
def test_valid_names(name: str) -> None:
    assert TangoConnector().validate_name(name)


@pytest.mark.parametrize("name", [
    "", "current", "sr/ps/hcm01", "sr/ps/hcm01/current/extra", "sr//hcm01/current",
    "sr/ps/hcm 01/current", "tango://127.0.0.1/sr/ps/hcm01/current",
    "tango://127.0.0.1:0/sr/ps/hcm01/current", "tango://127.0.0.1:99999/sr/ps/hcm01/x",
    "http://127.0.0.1:10000/sr/ps/hcm01/current", "sr/ps/hcm01/current#dbase=no",
    "tango://127.0.0.1:10000/sr/ps/hcm01/current#dbase=maybe", "sr/ps/hcm01/current\n",
    "SR:PS:HCM01:CURRENT",
])
def test_invalid_names(name: str) -> None:
    assert not TangoConnector().validate_name(name)
    with pytest.raises(ControlSystemError, match="invalid"):
        TangoConnector().parse(name)


def test_short_names_use_the_configured_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TANGO_HOST", "db.example:10000")
    assert parse_name("a/b/c/x", None).device == "a/b/c"  # Tango resolves it itself
    assert parse_name("a/b/c/x", "h:1").device == "tango://h:1/a/b/c"
    assert parse_name("a/b/c/x", "h:1", database=False).device == "tango://h:1/a/b/c#dbase=no"
    assert parse_name("a/b/c/x", "h:1,g:2").device == "a/b/c"  # several databases
    from_env = TangoConnector()
    assert from_env.parse("a/b/c/x").device == "tango://db.example:10000/a/b/c"
    configured = TangoConnector(TangoSettings(tango_host="127.0.0.1:2"))
    assert configured.parse("a/b/c/x").device == "tango://127.0.0.1:2/a/b/c"
    full = parse_name("tango://127.0.0.1:5/A/B/C/Attr#DBASE=no", "h:1")
    assert (full.device, full.attribute) == ("tango://127.0.0.1:5/A/B/C#dbase=no", "Attr")
    assert full.key == parse_name("tango://127.0.0.1:5/a/b/c/attr#dbase=no", None).key


def test_settings_are_strict() -> None:
    with pytest.raises(ValueError, match="extra"):
        TangoSettings.model_validate({"tango_hots": "127.0.0.1:10000"})
    with pytest.raises(ValueError, match="host:port"):
        TangoSettings(tango_host="127.0.0.1")
    with pytest.raises(ValueError, match="host:port"):
        TangoSettings(tango_host="127.0.0.1:70000")
    settings = TangoSettings(tango_host=" 127.0.0.1:10000 ")
    assert settings.tango_host == "127.0.0.1:10000"
    with pytest.raises(ValueError, match="frozen"):
        settings.database = False  # type: ignore[misc]
    assert TangoConnector({"database": False}).settings.database is False


def test_precision_from_format() -> None:
    assert precision_of("%6.3f") == 3
    assert precision_of("%.2e") == 2
    assert precision_of("%d") == 0
    assert precision_of("%s") is None
    assert precision_of("Not specified") is None
    assert precision_of(None) is None


def test_devfailed_reasons_become_typed_errors() -> None:
    def failed(*reasons: str) -> Exception:
        return Exception(*(SimpleNamespace(reason=reason, desc=f"{reason} happened")
                           for reason in reasons))

    rejected = translate_error(failed("API_WAttrOutsideLimit"), "a/b/c/x", "write")
    assert isinstance(rejected, ServerRejectedError)
    assert "API_WAttrOutsideLimit: API_WAttrOutsideLimit happened" in str(rejected)
    # The same reason on a read is not a rejected write.
    assert not isinstance(translate_error(failed("API_AttrNotWritable"), "x", "read"),
                          ServerRejectedError)
    timeout = failed("API_CorbaException", "API_DeviceTimedOut")
    assert isinstance(translate_error(timeout, "x", "read"), ReadTimeoutError)
    assert isinstance(translate_error(timeout, "x", "write"), WriteTimeoutError)
    missing = translate_error(failed("API_CorbaException", "API_DeviceNotDefined"), "x", "read")
    assert isinstance(missing, ChannelNotFoundError)
    assert "API_DeviceNotDefined" in str(missing)
    other = translate_error(failed("PyDs_PythonError"), "x", "write")
    assert type(other) is ControlSystemError and other.reason is Reason.IO_ERROR
    assert isinstance(translate_error(TypeError("no"), "x", "write"), TangoValueError)


# -- the plugin, from its entry point --------------------------------------------------


@pytest.mark.exercises_hook("register_connectors")
def test_connector_and_section_come_from_the_installed_plugin(
        server: SimpleNamespace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from osprey_core.config import load_config
    from osprey_core.control.service import build_control_system
    from osprey_core.plugin_host import load_plugins

    monkeypatch.delenv("TANGO_HOST", raising=False)
    host = load_plugins(environ={"OSPREY_LOAD_PLUGINS": "tango", "OSPREY_STRICT_PLUGINS": "1"})
    assert host.plugin("tango").status == "loaded"
    config_file = tmp_path / "osprey.yml"
    config_file.write_text(
        "control_system:\n  type: tango\n  connection_timeout: 1.5\n  read_timeout: 1.0\n"
        f"tango:\n  tango_host: '{server.host}'\n  database: false\n", encoding="utf-8")
    config = load_config(host, config_file, environ={})
    assert host.connectors().get("tango") is TangoConnector
    assert type(config.section("tango")) is TangoSettings
    system = build_control_system(config, host, notice=None)  # what osprey itself does
    tango = system.connector
    assert isinstance(tango, TangoConnector)
    assert (tango.connection_timeout, tango.read_timeout) == (1.5, 1.0)
    assert tango.settings.database is False and system.writes_enabled is False

    async def scenario() -> ChannelValue:
        async with system:
            return await system.read(f"{DEVICE}/beam")  # a short name, via tango_host

    reading = run(scenario())
    assert reading.value == 401.5 and reading.units == "mA"


# -- reading ---------------------------------------------------------------------------


def test_read_a_double_with_units_timestamp_and_alarm_state(
        server: SimpleNamespace, connector: TangoConnector) -> None:
    before = datetime.now(UTC)
    reading = run(connector.read(server.attr("beam")))
    assert reading.channel == server.attr("beam")
    assert reading.value == 401.5 and type(reading.value) is float
    assert reading.units == "mA"
    assert (reading.severity, reading.status) == (Severity.NO_ALARM, "NO_ALARM")
    assert reading.timestamp.tzinfo is UTC
    assert before - timedelta(seconds=1) <= reading.timestamp <= datetime.now(UTC)


def test_read_every_type_as_plain_python(server: SimpleNamespace,
                                         connector: TangoConnector) -> None:
    async def scenario() -> dict[str, Any]:
        names = ["label", "mode", "waveform", "count", "enabled", "State"]
        return {name: (await connector.read(server.attr(name))) for name in names}

    values = run(scenario())
    assert values["label"].value == "HCM01"
    assert values["mode"].value == "STANDBY"  # DevEnum: the label, not the index
    assert values["waveform"].value == [1.0, 2.0, 3.0]
    assert type(values["waveform"].value) is list
    assert all(type(item) is float for item in values["waveform"].value)
    assert values["waveform"].units == "V"
    assert values["count"].value == 7 and type(values["count"].value) is int
    assert values["enabled"].value is True
    assert values["State"].value == "ON"  # DevState: its name


@pytest.mark.parametrize(("quality", "severity", "status"), [
    ("ATTR_VALID", Severity.NO_ALARM, "NO_ALARM"),
    ("ATTR_WARNING", Severity.MINOR, "WARNING"),
    ("ATTR_ALARM", Severity.MAJOR, "ALARM"),
    ("ATTR_INVALID", Severity.INVALID, "INVALID"),
    ("ATTR_CHANGING", Severity.NO_ALARM, "CHANGING"),
])
def test_quality_maps_to_severity_and_status(server: SimpleNamespace, connector: TangoConnector,
                                             quality: str, severity: Severity,
                                             status: str) -> None:
    import tango

    proxy = tango.DeviceProxy(server.access)
    proxy.command_inout("SetQuality", quality)
    try:
        reading = run(connector.read(server.attr("probe")))
    finally:
        proxy.command_inout("SetQuality", "ATTR_VALID")
    assert (reading.severity, reading.status) == (severity, status)
    # Tango sends no value with an invalid quality.
    assert reading.value == (None if quality == "ATTR_INVALID" else 3.25)


def test_alarm_limits_of_the_server_set_the_severity(server: SimpleNamespace,
                                                     connector: TangoConnector) -> None:
    channel = server.attr("current")

    async def scenario() -> list[ChannelValue]:
        readings = []
        for value in (6.0, 9.0, 1.5):
            await put(connector, channel, value)
            readings.append(await connector.read(channel))
        return readings

    warning, alarm, normal = run(scenario())
    assert (warning.value, warning.severity, warning.status) == (6.0, Severity.MINOR, "WARNING")
    assert (alarm.value, alarm.severity, alarm.status) == (9.0, Severity.MAJOR, "ALARM")
    assert (normal.value, normal.severity) == (1.5, Severity.NO_ALARM)


def test_read_many_keeps_good_values_next_to_errors(server: SimpleNamespace,
                                                    connector: TangoConnector) -> None:
    good = [server.attr("beam"), server.attr("label"), server.attr("mode")]
    missing_attribute = server.attr("no_such_attribute")
    missing_device = server.attr("x").replace(DEVICE, "sr/ps/nothere")
    batch = run(connector.read_many([*good, missing_attribute, missing_device]))
    assert sorted(batch.values) == sorted(good)
    assert batch.values[server.attr("beam")].value == 401.5
    assert set(batch.errors) == {missing_attribute, missing_device}
    assert isinstance(batch.errors[missing_attribute], ChannelNotFoundError)
    assert "API_AttrNotFound" in str(batch.errors[missing_attribute])
    assert isinstance(batch.errors[missing_device], ChannelNotFoundError)
    assert "API_DeviceNotDefined" in str(batch.errors[missing_device])


def test_device_proxies_are_cached_per_device(server: SimpleNamespace,
                                              connector: TangoConnector) -> None:
    async def scenario() -> None:
        await connector.read_many([server.attr(name) for name in ("beam", "label", "count")])
        await connector.read(server.attr("beam").replace("BEAM", "beam").upper()
                             .replace("TANGO://", "tango://").replace("#DBASE=NO",
                                                                      "#dbase=no"))

    run(scenario())
    assert len(connector._proxies) == 1  # one read proxy, whatever the case of the name


# -- writing through the one write path --------------------------------------------------


def test_write_within_limits_is_verified_by_readback(server: SimpleNamespace,
                                                     connector: TangoConnector) -> None:
    channel = server.attr("current")
    system = control(connector, channel)

    async def scenario() -> tuple[Any, ChannelValue]:
        async with system:
            result = await system.write(channel, 2.5, REQUEST)
            return result, await system.read(channel)

    result, after = run(scenario())
    assert result.status is WriteStatus.OK, result.message
    assert result.verified is True and result.readback is not None
    assert result.readback.value == 2.5 and after.value == 2.5
    assert result.previous is not None and result.previous.value == 1.5
    run(put(connector, channel, 1.5))


def test_out_of_range_write_is_blocked_by_the_server(server: SimpleNamespace,
                                                     connector: TangoConnector) -> None:
    channel = server.attr("current")
    system = control(connector, channel)  # limits wide open: the device server refuses

    async def scenario() -> tuple[Any, ChannelValue]:
        async with system:
            return await system.write(channel, 50.0, REQUEST), await system.read(channel)

    result, after = run(scenario())
    assert result.status is WriteStatus.BLOCKED
    assert result.reason is Reason.REJECTED_BY_SERVER
    assert "API_WAttrOutsideLimit" in result.message
    assert "above the maximum" in result.message
    assert after.value == 1.5


def test_read_only_write_is_blocked_by_the_server(server: SimpleNamespace,
                                                  connector: TangoConnector) -> None:
    channel = server.attr("beam")
    system = control(connector, channel)

    async def scenario() -> Any:
        async with system:
            return await system.write(channel, 1.0, REQUEST)

    result = run(scenario())
    assert (result.status, result.reason) == (WriteStatus.BLOCKED, Reason.REJECTED_BY_SERVER)
    assert "API_AttrNotWritable" in result.message
    with pytest.raises(ServerRejectedError, match="API_AttrNotWritable"):
        run(put(connector, channel, 1.0))


def test_writes_disabled_are_blocked_and_change_nothing(server: SimpleNamespace,
                                                        connector: TangoConnector) -> None:
    channel = server.attr("current")
    system = control(connector, channel, writes_enabled=False)

    async def scenario() -> tuple[Any, ChannelValue]:
        async with system:
            return await system.write(channel, 3.0, REQUEST), await system.read(channel)

    result, after = run(scenario())
    assert (result.status, result.reason) == (WriteStatus.BLOCKED, Reason.WRITES_DISABLED)
    assert after.value == 1.5
    assert not any(kind == "write" for _, kind in connector._proxies)  # never even connected


def test_write_every_type(server: SimpleNamespace, connector: TangoConnector) -> None:
    writes: list[tuple[str, Any, Any]] = [
        ("mode", "ON", "ON"), ("mode", 0, "OFF"), ("mode", "standby", "STANDBY"),
        ("label", "HCM02", "HCM02"), ("label", "HCM01", "HCM01"),
        ("waveform", [4, 5.5], [4.0, 5.5]), ("waveform", [1.0, 2.0, 3.0], [1.0, 2.0, 3.0]),
        ("count", 9.0, 9), ("count", 7, 7), ("enabled", False, False), ("enabled", True, True),
    ]

    async def scenario() -> list[Any]:
        seen = []
        for attribute, value, _ in writes:
            await put(connector, server.attr(attribute), value)
            seen.append((await connector.read(server.attr(attribute))).value)
        return seen

    assert run(scenario()) == [expected for _, _, expected in writes]


@pytest.mark.parametrize(("attribute", "value", "error"), [
    ("mode", "BOOST", TangoEnumError),
    ("mode", 3, TangoEnumError),
    ("count", 2.5, TangoValueError),
    ("label", 5, TangoValueError),
    ("current", "high", TangoValueError),
    ("waveform", 1.0, TangoValueError),
    ("enabled", 1, TangoValueError),
])
def test_values_that_do_not_fit_are_refused_before_sending(
        server: SimpleNamespace, connector: TangoConnector, attribute: str, value: Any,
        error: type[Exception]) -> None:
    with pytest.raises(error):
        run(put(connector, server.attr(attribute), value))


def test_wrong_type_through_the_write_path_fails_without_writing(
        server: SimpleNamespace, connector: TangoConnector) -> None:
    channel = server.attr("label")
    system = ControlSystem(connector, LimitsDatabase(LimitsConfig(
        channels={channel: ChannelLimits(writable=True, verification="readback")})),
        writes_enabled=True)

    async def scenario() -> Any:
        async with system:
            return await system.write(channel, 5, REQUEST)

    result = run(scenario())
    assert result.status is not WriteStatus.OK and result.reason is Reason.WRONG_TYPE
    assert run(connector.read(channel)).value == "HCM01"


# -- metadata ----------------------------------------------------------------------------


def test_metadata_from_the_attribute_configuration(server: SimpleNamespace,
                                                   connector: TangoConnector) -> None:
    async def scenario() -> dict[str, Any]:
        names = ["current", "beam", "mode", "waveform", "label", "State", "count"]
        return {name: await connector.metadata(server.attr(name)) for name in names}

    meta = run(scenario())
    current = meta["current"]
    assert isinstance(current, TangoChannelMetadata)
    assert current.data_type == "float" and current.units == "A" and current.precision == 3
    assert current.description == "Horizontal corrector current"
    assert current.control_limits == (-10.0, 10.0)
    assert current.alarm_limits == (-8.0, 8.0) and current.warning_limits == (-5.0, 5.0)
    assert current.writable is True and current.label == "Current"
    assert (current.severity, current.status) == (Severity.NO_ALARM, "NO_ALARM")
    beam = meta["beam"]
    assert beam.writable is False and beam.units == "mA" and beam.control_limits is None
    assert beam.description == "Stored beam current"
    assert meta["mode"].data_type == "enum"
    assert meta["mode"].enum_strings == ("OFF", "STANDBY", "ON")
    assert meta["waveform"].data_type == "array" and meta["waveform"].units == "V"
    assert meta["label"].data_type == "string" and meta["label"].description is None
    assert meta["label"].units is None
    assert meta["State"].data_type == "enum" and "FAULT" in meta["State"].enum_strings
    assert meta["count"].data_type == "int" and meta["count"].precision == 0
    data = current.to_json()
    assert data["alarm_limits"] == (-8.0, 8.0) and data["severity"] == "NO_ALARM"


def test_metadata_reports_the_current_alarm_state(server: SimpleNamespace,
                                                  connector: TangoConnector) -> None:
    channel = server.attr("current")

    async def scenario() -> Any:
        await put(connector, channel, -9.0)
        try:
            return await connector.metadata(channel)
        finally:
            await put(connector, channel, 1.5)

    meta = run(scenario())
    assert (meta.severity, meta.status) == (Severity.MAJOR, "ALARM")
    assert math.isfinite(meta.control_limits[0])


# -- events ------------------------------------------------------------------------------


async def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def test_change_events_arrive_on_the_event_loop_until_unsubscribed(
        server: SimpleNamespace, connector: TangoConnector) -> None:
    import tango

    channel = server.attr("current")
    received: list[tuple[Any, int, Severity]] = []

    async def scenario() -> int:
        loop_thread = threading.get_ident()
        await connector.connect()
        handle = await connector.subscribe(
            channel, lambda value: received.append((value.value, threading.get_ident(),
                                                    value.severity)))
        await wait_until(lambda: len(received) >= 1)  # the current value first
        for value in (2.0, 6.5):
            await connector.write(channel, value)
        await wait_until(lambda: [item[0] for item in received][-2:] == [2.0, 6.5])
        count = len(received)
        # An event already queued on the loop when unsubscribing is dropped: block the
        # loop while the server pushes one, then unsubscribe before the loop runs again.
        tango.DeviceProxy(server.access).write_attribute("current", 2.75)
        time.sleep(0.3)
        await connector.unsubscribe(handle)
        await connector.write(channel, 3.0)
        await asyncio.sleep(0.5)
        assert len(received) == count, received
        await connector.unsubscribe(handle)  # a second time is harmless
        await connector.write(channel, 1.5)
        return loop_thread

    loop_thread = run(scenario())
    assert received[0][0] == 1.5
    assert {thread for _, thread, _ in received} == {loop_thread}
    assert received[-1][2] is Severity.MINOR  # 6.5 is in the warning band
    assert all(type(value) is float for value, _, _ in received)


def test_close_stops_every_subscription(server: SimpleNamespace,
                                        connector: TangoConnector) -> None:
    channel = server.attr("current")
    received: list[Any] = []

    async def scenario() -> None:
        await connector.connect()
        await connector.subscribe(channel, lambda value: received.append(value.value))
        await wait_until(lambda: bool(received))
        await connector.close()
        assert not connector._subscriptions and not connector._proxies
        count = len(received)
        other = TangoConnector(read_timeout=2.0)
        try:
            await put(other, channel, 4.0)
            await asyncio.sleep(0.5)
            assert len(received) == count
            await put(other, channel, 1.5)
        finally:
            await other.close()
        # The connector works again after close.
        assert (await connector.read(channel)).value == 1.5

    run(scenario())


def test_subscribing_to_an_attribute_without_events_says_why(
        server: SimpleNamespace, connector: TangoConnector) -> None:
    with pytest.raises(ControlSystemError, match="does not publish change events"):
        run(connector.subscribe(server.attr("quiet"), lambda value: None))


# -- failures and timeouts ---------------------------------------------------------------


def test_missing_device_fails_fast_as_not_found(server: SimpleNamespace,
                                                connector: TangoConnector) -> None:
    channel = server.attr("current").replace(DEVICE, "sr/ps/nothere")
    started = time.monotonic()
    with pytest.raises(ChannelNotFoundError, match="API_DeviceNotDefined"):
        run(connector.read(channel))
    assert time.monotonic() - started < 1.0
    assert not connector._proxies


def test_unresponsive_server_fails_within_connection_timeout() -> None:
    silent = socket.socket()  # accepts connections (backlog) and never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    port = silent.getsockname()[1]
    tango = TangoConnector(connection_timeout=0.5, read_timeout=5.0)
    channel = f"tango://127.0.0.1:{port}/sr/ps/silent/current#dbase=no"
    try:
        started = time.monotonic()
        with pytest.raises(ChannelNotFoundError, match=r"did not connect within 0\.5 s"):
            run(tango.read(channel))
        elapsed = time.monotonic() - started
        assert 0.45 <= elapsed < 1.0, elapsed
    finally:
        run(tango.close())
        silent.close()


def test_nothing_listening_fails_as_not_found() -> None:
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # the port is now free and closed
    tango = TangoConnector(connection_timeout=1.0)
    try:
        with pytest.raises(ChannelNotFoundError):
            run(tango.metadata(f"tango://127.0.0.1:{port}/sr/ps/gone/current#dbase=no"))
    finally:
        run(tango.close())


def test_read_and_write_timeouts_are_separate(server: SimpleNamespace,
                                              slow_server: SimpleNamespace) -> None:
    sluggish, setpoint = slow_server.attr("sluggish"), slow_server.attr("setpoint")
    tango = TangoConnector(connection_timeout=2.0, read_timeout=0.3, write_timeout=3.0)
    impatient = TangoConnector(read_timeout=2.0, write_timeout=0.2)
    try:
        # A write slower than the read timeout completes (0.5 s < 3 s) ...
        started = time.monotonic()
        run(put(tango, setpoint, 4.0))
        assert 0.45 <= time.monotonic() - started < 2.0
        assert run(tango.read(setpoint)).value == 4.0
        # ... and a read slower than the read timeout fails at the read timeout, told so
        # by Tango itself (the proxy carries the timeout).
        async def slow_and_quick() -> tuple[BaseException | ChannelValue, float]:
            slow = asyncio.ensure_future(tango.read(sluggish))
            await asyncio.sleep(0.05)  # the slow read is under way ...
            begun = time.monotonic()
            quick = await tango.read(server.attr("beam"))  # ... and holds up nothing else
            assert quick.value == 401.5
            quick_time = time.monotonic() - begun
            return (await asyncio.gather(slow, return_exceptions=True))[0], quick_time

        started = time.monotonic()
        outcome, quick_time = run(slow_and_quick())
        assert time.monotonic() - started < 0.3 + 0.2
        assert quick_time < 0.2
        assert isinstance(outcome, ReadTimeoutError)
        assert re.search(r"API_DeviceTimedOut.*\(300 mS\)", str(outcome)), outcome
        time.sleep(0.6)  # the device serialises calls: let the slow read finish
        # A write slower than the write timeout is a write timeout.
        with pytest.raises(WriteTimeoutError, match=r"API_DeviceTimedOut.*\(200 mS\)"):
            run(put(impatient, setpoint, 5.0))
    finally:
        run(tango.close())
        run(impatient.close())


def test_invalid_names_never_reach_tango(connector: TangoConnector) -> None:
    system = control(connector, "not a tango name")

    async def scenario() -> Any:
        with pytest.raises(ControlSystemError, match="invalid channel name"):
            await system.read("HCM01:CURRENT")
        return await system.write("not a tango name", 1.0, REQUEST)

    result = run(scenario())
    assert (result.status, result.reason) == (WriteStatus.BLOCKED, Reason.VALIDATION_ERROR)
    with pytest.raises(ControlSystemError, match="invalid Tango attribute name"):
        run(connector.read("HCM01:CURRENT"))
    with pytest.raises(ControlSystemError, match="not a Tango subscription"):
        run(connector.unsubscribe(object()))
