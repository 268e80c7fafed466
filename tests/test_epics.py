"""The EPICS connector against real IOCs: a caproto IOC and a pythonSoftIOC on loopback.

Values are checked with caproto's own pure-Python client (``direct_read`` /
``direct_write``), never with the connector under test, so "the IOC has this value"
means what it says.
"""

from __future__ import annotations

import asyncio
import gc
import importlib.util
import math
import os
import signal
import threading
import time
from collections.abc import Awaitable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

pytest.importorskip("epics")
pytest.importorskip("caproto")
if importlib.util.find_spec("softioc") is None:  # never import it here: an in-process IOC
    pytest.skip("needs pythonSoftIOC", allow_module_level=True)  # changes libca

from support import iocs
from support.iocs import IOC, direct_read, direct_write, free_port, start_ioc

from osprey_core.control.epics import (
    EpicsConnector,
    EpicsSettings,
    UnsupportedValueError,
)
from osprey_core.control.errors import (
    ChannelNotFoundError,
    ConnectionTimeoutError,
    ControlSystemError,
    ReadTimeoutError,
    WriteTimeoutError,
)
from osprey_core.control.limits import LimitsConfig, LimitsDatabase
from osprey_core.control.system import ControlSystem
from osprey_core.control.types import (
    ChannelValue,
    Reason,
    Severity,
    WriteRequest,
    WriteStatus,
)

# the IOC fixtures, session-scoped, shared with the property test
ca_repeater = iocs.ca_repeater
caproto_ioc = iocs.caproto_ioc
softioc_ioc = iocs.softioc_ioc
epics_client_env = iocs.epics_client_env

REQUEST = WriteRequest(actor="tester", interface="test")
pytestmark = pytest.mark.usefixtures("epics_client_env")


def run[T](coroutine: Awaitable[T], timeout: float = 30.0) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coroutine, timeout)

    return asyncio.run(bounded())


def connector(*iocs: IOC, **options: Any) -> EpicsConnector:
    timeouts = {key: options.pop(key) for key in ("connection_timeout", "read_timeout",
                                                  "write_timeout") if key in options}
    settings = EpicsSettings(addr_list=[ioc.address for ioc in iocs], auto_addr_list=False,
                             **options)
    return EpicsConnector(settings, **{"connection_timeout": 2.0, "read_timeout": 2.0,
                                       "write_timeout": 3.0, **timeouts})


def control(conn: EpicsConnector, channels: Mapping[str, Mapping[str, Any]], *,
            writes_enabled: bool = True, verify_timeout: float = 0.5) -> ControlSystem:
    limits = LimitsDatabase(LimitsConfig.model_validate({"channels": channels}))
    return ControlSystem(conn, limits, writes_enabled=writes_enabled,
                         verify_timeout=verify_timeout)


@pytest.fixture
def both(caproto_ioc: IOC, softioc_ioc: IOC) -> tuple[IOC, IOC]:
    return caproto_ioc, softioc_ioc


# -- settings and names -------------------------------------------------------------------

def test_settings_take_lists_or_the_environment_form_and_refuse_garbage() -> None:
    settings = EpicsSettings.model_validate({"addr_list": "10.0.0.1 gw.example.org:5066",
                                             "auto_addr_list": False,
                                             "write_gateway": ["10.0.0.2:5068"]})
    assert settings.addr_list == ["10.0.0.1", "gw.example.org:5066"]
    assert settings.read_environment()["EPICS_CA_ADDR_LIST"] == "10.0.0.1 gw.example.org:5066"
    assert settings.read_environment()["EPICS_CA_AUTO_ADDR_LIST"] == "NO"
    assert settings.write_environment() == {
        "EPICS_CA_ADDR_LIST": "10.0.0.2:5068", "EPICS_CA_AUTO_ADDR_LIST": "NO",
        "EPICS_CA_SERVER_PORT": None, "EPICS_CA_MAX_ARRAY_BYTES": None}
    # unset fields leave the process environment alone
    assert set(EpicsSettings().read_environment().values()) == {None}
    for bad in ({"addr_list": ["10.0.0.1:99999"]}, {"addr_list": ["host name"]},
                {"write_gateway": "a:b"}, {"adr_list": []}, {"put_timeout": 0},
                {"max_array_bytes": 10}):
        with pytest.raises(ValueError):
            EpicsSettings.model_validate(bad)


def test_names_follow_epics_rules() -> None:
    conn = EpicsConnector()
    for good in ("SR:C01-BI{DCCT:1}I-I", "XF:23ID-ID{EPU:1-Ax:Gap}Mtr.RBV", "rec.VAL$",
                 "ring:current", 'rec.VAL{"dbnd":{"abs":1.5}}', "a_b-c+d[0]<1>;2", "Q1.DESC"):
        assert conn.validate_name(good), good
    for bad in ("", "has space", "tab\there", "new\nline", "rec.val", "rec.VAL.EGU",
                ".VAL", "quote'd", 'dq"', "x" * 1001, "é:accent", "rec..VAL"):
        assert not conn.validate_name(bad), bad


def test_plugin_registers_the_connector_and_its_config_section() -> None:
    from osprey_core.plugin_host import load_plugins

    host = load_plugins(environ={"OSPREY_LOAD_PLUGINS": "epics", "OSPREY_STRICT_PLUGINS": "1"})
    assert host.connectors().get("epics") is EpicsConnector
    assert host.config_sections()["epics"][0] is EpicsSettings


@pytest.mark.exercises_hook("register_connectors")
@pytest.mark.exercises_hook("register_config_sections")
def test_built_from_config_reads_through_the_control_system(tmp_path, softioc_ioc: IOC
                                                            ) -> None:
    import json

    from osprey_core.config import load_config
    from osprey_core.control.service import build_control_system
    from osprey_core.plugin_host import load_plugins

    host = load_plugins(environ={"OSPREY_LOAD_PLUGINS": "epics", "OSPREY_STRICT_PLUGINS": "1"})
    path = tmp_path / "osprey.yml"
    path.write_text(json.dumps({
        "home": "home",
        "control_system": {"type": "epics", "connection_timeout": 0.5, "read_timeout": 0.75},
        "epics": {"addr_list": [softioc_ioc.address], "auto_addr_list": False}}))
    system = build_control_system(load_config(host, path, environ={}), host, notice=None)
    assert isinstance(system.connector, EpicsConnector)
    assert (system.connector.connection_timeout, system.connector.read_timeout) == (0.5, 0.75)

    async def scenario() -> ChannelValue:
        async with system:
            return await system.read(softioc_ioc.pv("AO"))

    assert run(scenario()).units == "A"


# -- reading -----------------------------------------------------------------------------

READS = [  # (ioc, suffix, python type, units)
    ("caproto", "FLOAT", float, "mA"),
    ("caproto", "INT", int, "counts"),
    ("caproto", "STRING", str, None),
    ("caproto", "ENUM", str, None),
    ("caproto", "ARRAY", list, None),
    ("caproto", "CHARS", str, None),
    ("softioc", "AO", float, "A"),
    ("softioc", "LONG", int, "counts"),
    ("softioc", "STR", str, None),
    ("softioc", "MODE", str, None),
    ("softioc", "WAVE", list, None),
    ("softioc", "LSTR", str, None),
]


@pytest.mark.parametrize(("kind", "suffix", "python_type", "units"), READS,
                         ids=[f"{kind}-{suffix}" for kind, suffix, *_ in READS])
def test_read_gives_python_values_with_timestamp_alarm_and_units(
        both: tuple[IOC, IOC], kind: str, suffix: str, python_type: type, units: str | None
) -> None:
    ioc = both[0] if kind == "caproto" else both[1]
    name = ioc.pv(suffix)
    conn = connector(ioc)

    async def scenario() -> ChannelValue:
        await conn.connect()
        try:
            return await conn.read(name)
        finally:
            await conn.close()

    value = run(scenario())
    assert value.channel == name
    assert type(value.value) is python_type
    if python_type is list:
        assert value.value and all(type(item) is float for item in value.value)
    expected = direct_read(ioc, name)
    if isinstance(expected, list) and python_type is str:  # char waveform as bytes
        expected = bytes(expected).split(b"\0")[0].decode()
    assert value.value == expected
    assert value.timestamp.tzinfo is UTC
    assert abs(value.timestamp - datetime.now(UTC)) < timedelta(days=1)
    assert value.severity in tuple(Severity)
    assert value.units == units
    assert value.to_json()["channel"] == name


def test_alarm_status_and_severity_come_from_the_ioc(softioc_ioc: IOC) -> None:
    name = softioc_ioc.pv("ALARM")
    conn = connector(softioc_ioc)

    async def scenario() -> list[ChannelValue]:
        readings = []
        async with control(conn, {}) as system:
            for value in (0.0, 6.0, 9.0, 0.0):
                await asyncio.to_thread(direct_write, softioc_ioc, name, value)
                readings.append(await system.read(name))
        return readings

    calm, minor, major, calm_again = run(scenario())
    assert (calm.status, calm.severity) == ("NO_ALARM", Severity.NO_ALARM)
    assert (minor.status, minor.severity) == ("HIGH", Severity.MINOR)
    assert (major.status, major.severity) == ("HIHI", Severity.MAJOR)
    assert calm_again.severity is Severity.NO_ALARM


def test_read_many_mixes_both_iocs_and_keeps_failures_apart(both: tuple[IOC, IOC]) -> None:
    caproto, softioc = both
    names = [caproto.pv("FLOAT"), softioc.pv("AO"), softioc.pv("MODE"), caproto.pv("ARRAY"),
             "OSPTMISSING:NOTHERE", "bad name", softioc.pv("AO")]
    conn = connector(caproto, softioc, connection_timeout=0.5)

    async def scenario() -> Any:
        async with control(conn, {}) as system:
            started = time.monotonic()
            with pytest.raises(ControlSystemError, match="invalid channel name"):
                await system.read_many(names)  # the core refuses bad names up front
            batch = await conn.read_many(names)
            return batch, time.monotonic() - started

    batch, elapsed = run(scenario())
    assert set(batch.values) == {caproto.pv("FLOAT"), softioc.pv("AO"), softioc.pv("MODE"),
                                 caproto.pv("ARRAY")}
    assert isinstance(batch.errors["OSPTMISSING:NOTHERE"], ChannelNotFoundError)
    assert batch.errors["OSPTMISSING:NOTHERE"].reason is Reason.NOT_FOUND
    assert "bad name" in batch.errors
    assert batch.values[softioc.pv("MODE")].value in ("OFF", "ON", "STANDBY")
    assert elapsed < 1.5  # one connection timeout for the whole batch, not one per channel


def test_a_missing_channel_costs_the_connection_timeout_not_five_seconds(
        caproto_ioc: IOC) -> None:
    conn = connector(caproto_ioc, connection_timeout=0.5)

    async def timed(call: Awaitable[Any]) -> tuple[BaseException, float]:
        started = time.monotonic()
        with pytest.raises(ControlSystemError) as caught:
            await call
        return caught.value, time.monotonic() - started

    async def scenario() -> list[tuple[BaseException, float]]:
        async with control(conn, {"OSPTMISSING:SP": {"writable": True}}) as system:
            results = [await timed(system.read("OSPTMISSING:RB")),
                       await timed(system.metadata("OSPTMISSING:RB")),
                       await timed(system.subscribe("OSPTMISSING:RB", print))]
            started = time.monotonic()
            result = await system.write("OSPTMISSING:SP", 1.0, REQUEST)
            # the core's read of the previous value already finds it missing: one wait
            assert (result.status, result.reason) == (WriteStatus.FAILED, Reason.NOT_FOUND)
            write_elapsed = time.monotonic() - started
            assert "OSPTMISSING:RB" not in conn._read.channels  # typos do not pile up
            return [*results, (ChannelNotFoundError(result.message), write_elapsed)]

    for error, elapsed in run(scenario()):
        assert isinstance(error, ChannelNotFoundError), error
        assert "no EPICS server answered within 0.5 s" in str(error)
        assert 0.45 <= elapsed < 1.5, elapsed


def test_read_and_put_timeouts_are_separate_from_the_connection_timeout() -> None:
    ioc = start_ioc("caproto")
    conn = connector(ioc, connection_timeout=5.0, read_timeout=0.3, write_timeout=5.0,
                     put_timeout=0.4)
    name = ioc.pv("FLOAT")

    async def scenario() -> tuple[float, float]:
        await conn.connect()
        try:
            await conn.read(name)  # connected and ready
            ioc.process.send_signal(signal.SIGSTOP)  # the IOC stops answering
            try:
                started = time.monotonic()
                with pytest.raises(ReadTimeoutError, match="connected, but no value within"):
                    await conn.read(name)
                read_elapsed = time.monotonic() - started
                started = time.monotonic()
                with pytest.raises(WriteTimeoutError, match="did not report completion"):
                    await conn.write(name, 2.0)
                return read_elapsed, time.monotonic() - started
            finally:
                ioc.process.send_signal(signal.SIGCONT)
        finally:
            await conn.close()

    try:
        read_elapsed, write_elapsed = run(scenario())
    finally:
        ioc.stop()
    assert 0.25 <= read_elapsed < 1.5
    assert 0.35 <= write_elapsed < 1.5


def test_metadata_comes_from_the_control_fields(both: tuple[IOC, IOC]) -> None:
    caproto, softioc = both
    conn = connector(caproto, softioc)
    names = {"cf": caproto.pv("FLOAT"), "ci": caproto.pv("INT"), "ce": caproto.pv("ENUM"),
             "cr": caproto.pv("READONLY"), "cs": caproto.pv("STRING"),
             "ca": caproto.pv("ARRAY"), "sa": softioc.pv("AO"), "sl": softioc.pv("LONG"),
             "sm": softioc.pv("MODE"), "sw": softioc.pv("WAVE"), "ss": softioc.pv("LSTR")}

    async def scenario() -> dict[str, Any]:
        async with control(conn, {}) as system:
            results = await asyncio.gather(*(system.metadata(name) for name in names.values()))
            return dict(zip(names, results, strict=True))

    meta = run(scenario())
    cf = meta["cf"]
    assert (cf.data_type, cf.units, cf.precision) == ("float", "mA", 3)
    assert (cf.display_limits, cf.control_limits) == ((-20.0, 20.0), (-10.0, 10.0))
    assert cf.description == "caproto test float" and cf.writable
    assert (meta["ci"].data_type, meta["ci"].units, meta["ci"].precision) == ("int", "counts",
                                                                             None)
    assert meta["ce"].data_type == "enum"
    assert meta["ce"].enum_strings == ("OFF", "ON", "STANDBY")
    assert meta["cr"].writable is False
    assert meta["cs"].data_type == "string" and meta["ca"].data_type == "array"
    sa = meta["sa"]
    assert (sa.data_type, sa.units, sa.precision, sa.description) == (
        "float", "A", 3, "softIOC test ao")
    assert sa.control_limits == (-10.0, 10.0)  # DRVL / DRVH
    assert sa.display_limits == (-20.0, 20.0)  # LOPR / HOPR
    assert sa.writable and sa.status == "NO_ALARM"
    assert meta["sl"].data_type == "int" and meta["sl"].control_limits == (-100.0, 100.0)
    assert meta["sm"].enum_strings == ("OFF", "ON", "STANDBY")
    assert meta["sw"].data_type == "array" and meta["ss"].data_type == "string"
    assert meta["sa"].to_json()["severity"] == "NO_ALARM"


# -- writing -----------------------------------------------------------------------------

WRITES = [  # (ioc, suffix, value written, value the IOC then holds)
    ("caproto", "FLOAT", 2.25, 2.25),
    ("caproto", "INT", -17, -17),
    ("caproto", "STRING", "osprey was here", "osprey was here"),
    ("caproto", "ENUM", "STANDBY", "STANDBY"),
    ("caproto", "ENUM", 1, "ON"),
    ("caproto", "ARRAY", [4.5, 5.5, 6.5], [4.5, 5.5, 6.5]),
    ("caproto", "CHARS", "text in chars", "text in chars"),
    ("softioc", "AO", -3.125, -3.125),
    ("softioc", "LONG", 42, 42),
    ("softioc", "STR", "hello softioc", "hello softioc"),
    ("softioc", "MODE", "ON", "ON"),
    ("softioc", "MODE", 2, "STANDBY"),
    ("softioc", "WAVE", [9.0, 8.0, 7.0], [9.0, 8.0, 7.0]),
    ("softioc", "LSTR", "a longer text than forty characters fits here", "a longer text "
     "than forty characters fits here"),
]


@pytest.mark.parametrize(("kind", "suffix", "value", "held"), WRITES,
                         ids=[f"{kind}-{suffix}-{value!r}"[:40] for kind, suffix, value, _ in
                              WRITES])
def test_writes_of_every_type_land_on_the_ioc_and_verify_by_readback(
        both: tuple[IOC, IOC], kind: str, suffix: str, value: Any, held: Any) -> None:
    ioc = both[0] if kind == "caproto" else both[1]
    name = ioc.pv(suffix)
    conn = connector(ioc)
    limits: dict[str, Any] = {"writable": True, "verification": "readback"}
    if suffix in ("ENUM", "MODE"):  # the states let the core verify an index by its name
        limits |= {"type": "enum", "allowed": ["OFF", "ON", "STANDBY"]}

    async def scenario() -> Any:
        async with control(conn, {name: limits}) as system:
            return await system.write(name, value, REQUEST)

    result = run(scenario())
    assert result.ok, result
    assert result.verified is True
    got = direct_read(ioc, name)
    if isinstance(got, list) and isinstance(held, str):  # char waveform
        got = bytes(got).split(b"\0")[0].decode()
    if isinstance(held, list):
        got = got[:len(held)]
    assert got == held


def test_the_connector_alone_reports_the_put_callback(softioc_ioc: IOC) -> None:
    conn = connector(softioc_ioc)

    async def scenario() -> Any:
        async with conn:
            return await conn.write(softioc_ioc.pv("AO"), 1.5)

    ack = run(scenario())
    assert ack.confirmed and "put callback" in ack.message


def test_values_the_channel_type_cannot_hold_are_refused_before_sending(
        both: tuple[IOC, IOC]) -> None:
    caproto, softioc = both
    conn = connector(caproto, softioc)
    cases = [
        (softioc.pv("MODE"), "BOGUS", Reason.NOT_ALLOWED_VALUE),
        (softioc.pv("MODE"), 7, Reason.NOT_ALLOWED_VALUE),
        (softioc.pv("MODE"), 1.5, Reason.WRONG_TYPE),
        (softioc.pv("LONG"), 2**40, Reason.WRONG_TYPE),
        (softioc.pv("LONG"), 2.5, Reason.WRONG_TYPE),
        (softioc.pv("LONG"), "twelve", Reason.WRONG_TYPE),
        (softioc.pv("AO"), None, Reason.WRONG_TYPE),
        (softioc.pv("AO"), {"a": 1}, Reason.WRONG_TYPE),
        (softioc.pv("AO"), [1.0, 2.0], Reason.WRONG_TYPE),  # a scalar takes one element
        (softioc.pv("STR"), "x" * 40, Reason.WRONG_TYPE),  # 39 bytes at most
        (softioc.pv("STR"), None, Reason.WRONG_TYPE),
        (softioc.pv("WAVE"), [1.0] * 6, Reason.WRONG_TYPE),  # NELM is 5
        (softioc.pv("WAVE"), [], Reason.WRONG_TYPE),
        (softioc.pv("LSTR"), "y" * 80, Reason.WRONG_TYPE),  # 79 bytes + NUL
        (caproto.pv("ARRAY"), [1.0, "two"], Reason.WRONG_TYPE),
    ]
    before = {name: direct_read(softioc if name.startswith(softioc.prefix) else caproto, name)
              for name, _, _ in cases}

    async def scenario() -> list[BaseException]:
        errors = []
        async with conn:
            for name, value, _ in cases:
                with pytest.raises(UnsupportedValueError) as caught:
                    await conn.write(name, value)
                errors.append(caught.value)
        return errors

    for (name, value, reason), error in zip(cases, run(scenario()), strict=True):
        assert error.reason is reason, (name, value, error)
        assert name in str(error)
    after = {name: direct_read(softioc if name.startswith(softioc.prefix) else caproto, name)
             for name, _, _ in cases}
    assert after == before  # nothing was sent


def test_a_write_the_ioc_refuses_is_blocked_and_changes_nothing(caproto_ioc: IOC) -> None:
    name = caproto_ioc.pv("GUARDED")
    direct_write(caproto_ioc, name, 1.0)
    conn = connector(caproto_ioc)

    async def scenario() -> Any:
        async with control(conn, {name: {"writable": True, "verification": "readback"}}
                           ) as system:
            return await system.write(name, 99.0, REQUEST)

    result = run(scenario())
    assert (result.status, result.reason) == (WriteStatus.BLOCKED, Reason.REJECTED_BY_SERVER)
    assert "refused by the server" in result.message
    assert direct_read(caproto_ioc, name) == 1.0


def test_without_put_callback_a_refused_write_is_caught_by_readback(caproto_ioc: IOC) -> None:
    name = caproto_ioc.pv("GUARDED")
    direct_write(caproto_ioc, name, 2.0)
    conn = connector(caproto_ioc, use_put_callback=False)

    async def scenario() -> Any:
        async with control(conn, {name: {"writable": True, "verification": "readback"}},
                           verify_timeout=0.3) as system:
            return await system.write(name, 99.0, REQUEST)

    result = run(scenario())
    assert (result.status, result.reason) == (WriteStatus.FAILED, Reason.VERIFICATION_FAILED)
    assert result.readback is not None and result.readback.value == 2.0
    assert result.verified is False
    assert direct_read(caproto_ioc, name) == 2.0


def test_a_value_clamped_by_the_ioc_fails_readback_verification(softioc_ioc: IOC) -> None:
    name = softioc_ioc.pv("AO")  # DRVH = 10
    direct_write(softioc_ioc, name, 0.0)
    conn = connector(softioc_ioc)

    async def scenario() -> tuple[Any, Any]:
        async with control(conn, {name: {"writable": True, "verification": "readback"}},
                           verify_timeout=0.3) as checked:
            clamped = await checked.write(name, 99.0, REQUEST)
        trusting = control(connector(softioc_ioc),
                           {name: {"writable": True, "verification": "callback"}})
        async with trusting:
            called_back = await trusting.write(name, 50.0, REQUEST)
        return clamped, called_back

    clamped, called_back = run(scenario())
    assert (clamped.status, clamped.reason) == (WriteStatus.FAILED, Reason.VERIFICATION_FAILED)
    assert clamped.readback is not None and clamped.readback.value == 10.0
    assert "readback" in clamped.message and "10.0" in clamped.message
    # the put callback alone reports success for a clamped value: only readback sees it
    assert called_back.ok and called_back.verification == "callback"
    assert direct_read(softioc_ioc, name) == 10.0


def test_a_read_only_channel_is_refused_by_the_server(caproto_ioc: IOC) -> None:
    name = caproto_ioc.pv("READONLY")
    conn = connector(caproto_ioc)

    async def scenario() -> Any:
        async with control(conn, {name: {"writable": True}}) as system:
            return await system.write(name, 1.0, REQUEST)

    result = run(scenario())
    assert (result.status, result.reason) == (WriteStatus.BLOCKED, Reason.REJECTED_BY_SERVER)
    assert "no write access" in result.message
    assert direct_read(caproto_ioc, name) == 42.0


@pytest.mark.parametrize("kind", ["caproto", "softioc"])
def test_writes_disabled_blocks_every_write_and_the_ioc_keeps_its_value(
        both: tuple[IOC, IOC], kind: str) -> None:
    ioc = both[0] if kind == "caproto" else both[1]
    names = [ioc.pv(suffix) for suffix in (("FLOAT", "STRING", "ENUM", "ARRAY")
                                           if kind == "caproto"
                                           else ("AO", "STR", "MODE", "WAVE"))]
    values = [3.0, "never", "ON", [1.0, 1.0]]
    before = {name: direct_read(ioc, name) for name in names}
    conn = connector(ioc)

    async def scenario() -> list[Any]:
        system = control(conn, {name: {"writable": True} for name in names},
                         writes_enabled=False)
        async with system:
            return [await system.write(name, value, REQUEST)
                    for name, value in zip(names, values, strict=True)]

    for result in run(scenario()):
        assert (result.status, result.reason) == (WriteStatus.BLOCKED, Reason.WRITES_DISABLED)
    assert {name: direct_read(ioc, name) for name in names} == before


# -- monitors ----------------------------------------------------------------------------

@pytest.mark.parametrize(("kind", "suffix", "values"), [
    ("softioc", "AO", [1.25, -2.5]),
    ("softioc", "MODE", ["STANDBY", "OFF"]),
    ("caproto", "FLOAT", [4.0, -4.0]),
    ("caproto", "ARRAY", [[1.0, 2.0], [3.0, 4.0, 5.0]]),
])
def test_monitors_run_on_the_event_loop_for_changes_by_another_client(
        both: tuple[IOC, IOC], kind: str, suffix: str, values: list[Any]) -> None:
    ioc = both[0] if kind == "caproto" else both[1]
    name = ioc.pv(suffix)
    direct_write(ioc, name, values[1])
    conn = connector(ioc)

    async def scenario() -> tuple[int, list[tuple[int, ChannelValue]], int]:
        loop_thread = threading.get_ident()
        seen: list[tuple[int, ChannelValue]] = []
        arrived = asyncio.Event()

        def callback(value: ChannelValue) -> None:
            seen.append((threading.get_ident(), value))
            if value.value == values[0]:
                arrived.set()

        async with control(conn, {}) as system:
            handle = await system.subscribe(name, callback)
            await asyncio.to_thread(direct_write, ioc, name, values[0])  # another client
            await asyncio.wait_for(arrived.wait(), 5)
            await system.unsubscribe(handle)
            count = len(seen)
            await asyncio.to_thread(direct_write, ioc, name, values[1])
            await asyncio.sleep(0.3)
            await conn.unsubscribe(handle)  # a second time is harmless
            return loop_thread, seen, count

    loop_thread, seen, count = run(scenario())
    assert {thread for thread, _ in seen} == {loop_thread}
    assert seen[0][1].value == values[1]  # the current value arrives first
    assert seen[-1][1].value == values[0]
    assert all(value.channel == name and value.timestamp.tzinfo is UTC for _, value in seen)
    assert len(seen) == count  # nothing after unsubscribe


def test_a_failing_monitor_callback_does_not_stop_others(softioc_ioc: IOC) -> None:
    name = softioc_ioc.pv("LONG")
    direct_write(softioc_ioc, name, 0)
    conn = connector(softioc_ioc)

    async def scenario() -> list[Any]:
        got: list[Any] = []
        done = asyncio.Event()

        def broken(value: ChannelValue) -> None:
            raise RuntimeError("callback bug")

        def good(value: ChannelValue) -> None:
            got.append(value.value)
            if value.value == 5:
                done.set()

        async with conn:
            await conn.subscribe(name, broken)
            await conn.subscribe(name, good)
            await asyncio.to_thread(direct_write, softioc_ioc, name, 5)
            await asyncio.wait_for(done.wait(), 5)
            with pytest.raises(ValueError):
                await conn.unsubscribe("not a handle")
        return got

    assert run(scenario())[-1] == 5


# -- gateways and contexts ---------------------------------------------------------------

@pytest.fixture(scope="module")
def gateways() -> Iterator[tuple[IOC, IOC]]:
    """Two IOCs serving the same names: a 'read gateway' and a 'write gateway'."""
    read = start_ioc("caproto")
    try:
        write = start_ioc("caproto", prefix=read.prefix)
    except BaseException:
        read.stop()
        raise
    yield read, write
    read.stop()
    write.stop()


def test_writes_go_through_the_write_gateway_and_reads_through_the_read_one(
        gateways: tuple[IOC, IOC]) -> None:
    read_ioc, write_ioc = gateways
    name = read_ioc.pv("FLOAT")
    direct_write(read_ioc, name, 1.0)
    direct_write(write_ioc, name, 1.0)
    conn = connector(read_ioc, write_gateway=[write_ioc.address])

    async def scenario() -> tuple[Any, ChannelValue, Any, Any]:
        async with control(conn, {name: {"writable": True, "verification": "callback"}}
                           ) as system:
            result = await system.write(name, 7.5, REQUEST)
            seen = await system.read(name)
            meta = await system.metadata(name)
            read_only = await system.metadata(read_ioc.pv("READONLY"))
        return result, seen, meta, read_only

    result, seen, meta, read_only = run(scenario())
    assert result.ok
    assert direct_read(write_ioc, name) == 7.5  # landed on the write gateway
    assert direct_read(read_ioc, name) == 1.0  # not on the read gateway
    assert seen.value == 1.0  # reads use the read gateway
    assert meta.writable and not read_only.writable


def test_an_unreachable_write_gateway_fails_the_write_without_falling_back(
        gateways: tuple[IOC, IOC]) -> None:
    read_ioc, _ = gateways
    name = read_ioc.pv("INT")
    before = direct_read(read_ioc, name)
    conn = connector(read_ioc, write_gateway=[f"127.0.0.1:{free_port()}"],
                     connection_timeout=0.4)

    async def scenario() -> tuple[Any, float, Any]:
        async with control(conn, {name: {"writable": True}}) as system:
            started = time.monotonic()
            result = await system.write(name, before + 1, REQUEST)
            elapsed = time.monotonic() - started
            meta = await system.metadata(name)
        return result, elapsed, meta

    result, elapsed, meta = run(scenario())
    assert (result.status, result.reason) == (WriteStatus.FAILED, Reason.NOT_FOUND)
    assert "write gateway search list" in result.message
    assert elapsed < 1.5
    assert meta.writable is False  # readable through the read gateway, not writable
    assert direct_read(read_ioc, name) == before


def test_connectors_with_different_address_lists_share_the_process(both: tuple[IOC, IOC]
                                                                    ) -> None:
    caproto, softioc = both
    only_caproto = connector(caproto, connection_timeout=0.4)
    only_softioc = connector(softioc, connection_timeout=0.4)

    async def scenario() -> tuple[Any, Any, Any]:
        async with only_caproto, only_softioc:
            batch = await only_caproto.read_many([caproto.pv("FLOAT"), softioc.pv("AO")])
            value = await only_softioc.read(softioc.pv("AO"))
            with pytest.raises(ChannelNotFoundError):
                await only_softioc.read(caproto.pv("FLOAT"))
        return batch, value, None

    batch, value, _ = run(scenario())
    assert set(batch.values) == {caproto.pv("FLOAT")}
    assert isinstance(batch.errors[softioc.pv("AO")], ChannelNotFoundError)
    assert value.units == "A"


def test_plain_pyepics_in_the_same_process_is_untouched(softioc_ioc: IOC) -> None:
    import epics

    name = softioc_ioc.pv("LONG")
    direct_write(softioc_ioc, name, 11)
    conn = connector(softioc_ioc)

    async def scenario() -> int:
        async with conn:
            return (await conn.read(name)).value

    assert run(scenario()) == 11
    # pyepics' own context still uses the process environment
    assert epics.caget(name, use_monitor=False, connection_timeout=5.0) == 11
    assert os.environ["EPICS_CA_AUTO_ADDR_LIST"] == "NO"


def test_close_releases_everything_and_refuses_further_use(softioc_ioc: IOC) -> None:
    conn = connector(softioc_ioc)
    name = softioc_ioc.pv("AO")

    async def scenario() -> None:
        await conn.connect()
        await conn.connect()  # idempotent
        await conn.subscribe(name, lambda value: None)
        await conn.read(name)
        await conn.close()
        await conn.close()
        with pytest.raises(ControlSystemError, match="closed"):
            await conn.read(name)
        with pytest.raises(ControlSystemError, match="closed"):
            await conn.connect()

    run(scenario())
    gc.collect()  # PV objects of the destroyed context must not touch it again

    fresh = connector(softioc_ioc)

    async def again() -> float:
        with pytest.raises(ControlSystemError, match="not connected"):
            await fresh.read(name)
        async with fresh:
            return (await fresh.read(name)).value

    assert isinstance(run(again()), float)


def test_an_ioc_restart_reconnects_the_cached_channel() -> None:
    ioc = start_ioc("softioc")
    conn = connector(ioc, connection_timeout=8.0, read_timeout=1.0)
    name = ioc.pv("AO")

    async def scenario() -> tuple[float, float]:
        async with conn:
            first = (await conn.read(name)).value
            prefix, port = ioc.prefix, ioc.port
            await asyncio.to_thread(ioc.stop)
            conn.connection_timeout = 0.3
            with pytest.raises(ConnectionTimeoutError, match="did not reconnect"):
                await conn.read(name)
            # CA re-searches the channels of a lost circuit after its disconnect
            # governor period (about 10 s), whatever the beacons say
            conn.connection_timeout = 20.0
            restarted = await asyncio.to_thread(start_ioc, "softioc", prefix=prefix, port=port)
            try:
                second = (await conn.read(name)).value
            finally:
                await asyncio.to_thread(restarted.stop)
            return first, second

    try:
        first, second = run(scenario(), timeout=60)
    finally:
        ioc.stop()
    assert first == second == 1.0


def test_numbers_read_back_exactly(softioc_ioc: IOC) -> None:
    name = softioc_ioc.pv("AO")
    conn = connector(softioc_ioc)
    values = [0.1, -9.999999, 1e-300, 2.0 ** -30]

    async def scenario() -> list[float]:
        async with conn:
            out = []
            for value in values:
                await conn.write(name, value)
                out.append((await conn.read(name)).value)
            return out

    assert run(scenario()) == values
    assert all(math.isfinite(value) for value in values)
