"""The one write path (:class:`ControlSystem`) and the service that builds it from config.

Every safety rule is checked against an in-memory connector that records what reached it,
so "blocked" always means the connector saw no write, not just a status string.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Mapping
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from osprey_core.config import load_config
from osprey_core.control.errors import ServerRejectedError
from osprey_core.control.limits import LimitsConfig, LimitsDatabase
from osprey_core.control.service import (
    ARCHIVER_NOTICE,
    CONTROL_SYSTEM_NOTICE,
    build_archiver,
    build_control_system,
    store_audit_sink,
)
from osprey_core.control.system import ControlSystem
from osprey_core.control.types import (
    ChannelValue,
    Reason,
    WriteAck,
    WriteRequest,
    WriteResult,
    WriteStatus,
    type_name,
)
from osprey_core.errors import ConfigError
from osprey_core.models import AuditRecord
from osprey_core.store import RunStore
from osprey_core.testing.fakes import FakeArchiver, FakeConnector, fake_plugin

REQUEST = WriteRequest(actor="ana", interface="test", run_id="run-1", approval_id="apv-1")
CHANNELS = {"HCM1:SP": 0.0, "HCM1:RB": 0.0, "SR:MODE": "USER", "SR:CURRENT": 500.0,
            "QF:SP": 10.0, "WF:SP": [0.0, 0.0], "N:SP": 3}
WRITABLE = {"writable": True, "verification": "none"}


class Recorder:
    """An audit sink keeping every record; ``fail`` makes it raise instead."""

    def __init__(self, fail: bool = False) -> None:
        self.records: list[AuditRecord] = []
        self.fail = fail

    def __call__(self, record: AuditRecord) -> None:
        if self.fail:
            raise OSError("audit log unavailable")
        self.records.append(record)

    def actions(self) -> list[str]:
        return [record.action for record in self.records]


def system(limits: Mapping[str, Any], *, connector: type[FakeConnector] | None = None,
           writes_enabled: bool = True, audit: Recorder | None = None,
           verify_timeout: float = 0.2, write_timeout: float = 5.0
           ) -> tuple[ControlSystem, FakeConnector, Recorder]:
    cls = connector or FakeConnector.named("fake_cs", channels=CHANNELS)
    instance = cls(write_timeout=write_timeout)
    recorder = audit or Recorder()
    control = ControlSystem(instance, LimitsDatabase(LimitsConfig.model_validate(limits)),
                            writes_enabled=writes_enabled, verify_timeout=verify_timeout,
                            audit=recorder)
    return control, instance, recorder


def write(control: ControlSystem, channel: str, value: Any) -> WriteResult:
    return asyncio.run(control.write(channel, value, REQUEST))


def listed(**entries: Mapping[str, Any]) -> dict[str, Any]:
    return {"channels": {name.replace("__", ":"): {**WRITABLE, **entry}
                         for name, entry in entries.items()}}


def blocked(result: WriteResult, reason: Reason) -> None:
    assert (result.status, result.reason) == (WriteStatus.BLOCKED, reason), result


# -- master switch and the limits database ---------------------------------------------------


def test_writes_disabled_blocks_every_write_before_the_connector() -> None:
    control, connector, audit = system(listed(HCM1__SP={}), writes_enabled=False)
    result = write(control, "HCM1:SP", 1.0)
    blocked(result, Reason.WRITES_DISABLED)
    assert "writes_enabled is false" in result.message
    assert connector.writes == [] and connector.channels["HCM1:SP"] == 0.0
    assert audit.actions() == ["channel_write_blocked"]


def test_unlisted_channels_are_not_writable() -> None:
    control, connector, _ = system(listed(HCM1__SP={}))
    blocked(write(control, "QF:SP", 11.0), Reason.UNLISTED_CHANNEL)
    assert connector.writes == []


def test_an_entry_marked_not_writable_is_blocked() -> None:
    control, connector, _ = system(listed(HCM1__SP={"writable": False}))
    blocked(write(control, "HCM1:SP", 1.0), Reason.NOT_WRITABLE)
    assert connector.writes == []


def test_the_defaults_block_applies_to_entries_and_to_unlisted_channels() -> None:
    limits = {"allow_unlisted": True,
              "defaults": {"writable": True, "min": -10, "max": 10, "verification": "none"},
              "channels": {"HCM1:SP": {"max": 2}}}
    control, connector, _ = system(limits)
    assert write(control, "QF:SP", 9.0).ok  # unlisted, under the defaults
    blocked(write(control, "QF:SP", 11.0), Reason.ABOVE_MAX)
    blocked(write(control, "HCM1:SP", 3.0), Reason.ABOVE_MAX)  # its own max wins
    blocked(write(control, "HCM1:SP", -11.0), Reason.BELOW_MIN)  # min from the defaults
    assert connector.writes == [("QF:SP", 9.0)]


def test_without_allow_unlisted_the_defaults_do_not_open_other_channels() -> None:
    limits = {"defaults": {"writable": True, "verification": "none"},
              "channels": {"HCM1:SP": {}}}
    control, connector, _ = system(limits)
    assert write(control, "HCM1:SP", 1.0).ok  # writable through the defaults
    blocked(write(control, "QF:SP", 1.0), Reason.UNLISTED_CHANNEL)
    assert connector.writes == [("HCM1:SP", 1.0)]


def test_patterns_match_by_glob_and_exact_entries_win() -> None:
    limits = {"patterns": {"HCM*:SP": {**WRITABLE, "min": -1, "max": 1}},
              "channels": {"HCM1:SP": {**WRITABLE, "max": 5}}}
    control, connector, _ = system(limits)
    assert write(control, "HCM1:SP", 4.0).ok  # exact entry: max 5
    connector.channels["HCM2:SP"] = 0.0
    blocked(write(control, "HCM2:SP", 4.0), Reason.ABOVE_MAX)  # pattern: max 1
    assert write(control, "HCM2:SP", 0.5).ok
    blocked(write(control, "VCM1:SP", 0.5), Reason.UNLISTED_CHANNEL)


# -- values ----------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_numbers_are_blocked(value: float) -> None:
    control, connector, _ = system(listed(HCM1__SP={"min": -5, "max": 5}))
    blocked(write(control, "HCM1:SP", value), Reason.NOT_FINITE)
    blocked(write(control, "WF:SP", [1.0, value]), Reason.UNLISTED_CHANNEL)
    assert connector.writes == []


def test_nan_is_blocked_even_without_numeric_limits() -> None:
    control, connector, _ = system(listed(HCM1__SP={"type": "float"}, WF__SP={"type": "array"}))
    blocked(write(control, "HCM1:SP", math.nan), Reason.NOT_FINITE)
    blocked(write(control, "WF:SP", [1.0, math.nan]), Reason.NOT_FINITE)
    assert connector.writes == []


@pytest.mark.parametrize("value", ["2.0", True, None, [1.0], {"value": 1.0}])
def test_wrong_types_for_a_float_channel_are_blocked(value: Any) -> None:
    control, connector, _ = system(listed(HCM1__SP={"type": "float", "min": -5, "max": 5}))
    blocked(write(control, "HCM1:SP", value), Reason.WRONG_TYPE)
    assert connector.writes == []


def test_int_channels_take_integers_only_and_values_are_never_converted() -> None:
    control, connector, _ = system(listed(N__SP={"type": "int", "min": 0, "max": 10}))
    blocked(write(control, "N:SP", 1.5), Reason.WRONG_TYPE)
    assert write(control, "N:SP", 4).ok
    assert connector.writes == [("N:SP", 4)]
    assert type(connector.channels["N:SP"]) is int


def test_min_and_max_are_inclusive() -> None:
    control, connector, _ = system(listed(HCM1__SP={"min": -2, "max": 2}))
    assert write(control, "HCM1:SP", 2.0).ok
    assert write(control, "HCM1:SP", -2).ok
    blocked(write(control, "HCM1:SP", 2.0001), Reason.ABOVE_MAX)
    blocked(write(control, "HCM1:SP", -2.0001), Reason.BELOW_MIN)
    assert connector.writes == [("HCM1:SP", 2.0), ("HCM1:SP", -2)]


def test_max_step_is_measured_from_a_fresh_read() -> None:
    control, connector, _ = system(listed(HCM1__SP={"max_step": 1.0}))
    blocked(write(control, "HCM1:SP", 1.5), Reason.STEP_TOO_LARGE)
    connector.set_value("HCM1:SP", 1.0)  # the machine moved since: the step is now small
    result = write(control, "HCM1:SP", 1.5)
    assert result.ok and result.previous is not None and result.previous.value == 1.0
    assert connector.writes == [("HCM1:SP", 1.5)]


@pytest.mark.parametrize("current", [math.nan, math.inf, [1.0, 2.0]])
def test_max_step_fails_closed_when_the_current_value_is_not_a_finite_number(
        current: Any) -> None:
    control, connector, _ = system(listed(HCM1__SP={"max_step": 1.0}))
    connector.set_value("HCM1:SP", current)  # NaN compares false with everything
    result = write(control, "HCM1:SP", 100.0)
    assert result.status is WriteStatus.BLOCKED
    assert result.reason in (Reason.VALIDATION_ERROR, Reason.WRONG_TYPE)
    assert connector.writes == []


class UnreadableSetpoint(FakeConnector):
    """Reads of HCM1:SP fail (writes would work), like a channel that lost its readback."""

    name = "unreadable"
    initial_values = CHANNELS

    async def read(self, channel: str) -> Any:
        if channel == "HCM1:SP":
            raise OSError("connection lost")
        return await super().read(channel)


def test_max_step_fails_closed_when_the_current_value_cannot_be_read() -> None:
    control, connector, audit = system(listed(HCM1__SP={"max_step": 5.0}),
                                       connector=UnreadableSetpoint)
    result = write(control, "HCM1:SP", 0.1)
    blocked(result, Reason.VALIDATION_ERROR)
    assert "cannot read the current value" in result.message
    assert connector.writes == []
    assert audit.actions() == ["channel_write_blocked"]


def test_allowed_values_for_enums_and_strings() -> None:
    control, connector, _ = system(listed(
        SR__MODE={"type": "enum", "allowed": ["SHUTDOWN", "MD", "USER"]}))
    assert write(control, "SR:MODE", "MD").ok
    blocked(write(control, "SR:MODE", "BEAM"), Reason.NOT_ALLOWED_VALUE)
    assert write(control, "SR:MODE", 2).ok  # an enum index
    blocked(write(control, "SR:MODE", 3), Reason.NOT_ALLOWED_VALUE)
    blocked(write(control, "SR:MODE", 1.0e9), Reason.NOT_ALLOWED_VALUE)
    blocked(write(control, "SR:MODE", True), Reason.WRONG_TYPE)
    assert connector.writes == [("SR:MODE", "MD"), ("SR:MODE", 2)]


def test_array_channels_take_lists_of_finite_numbers_within_limits() -> None:
    control, connector, _ = system(listed(WF__SP={"type": "array", "min": -1, "max": 1}))
    assert write(control, "WF:SP", [0.5, -0.5]).ok
    blocked(write(control, "WF:SP", 0.5), Reason.WRONG_TYPE)
    blocked(write(control, "WF:SP", [0.5, 2.0]), Reason.ABOVE_MAX)
    blocked(write(control, "WF:SP", [0.5, "x"]), Reason.WRONG_TYPE)
    assert connector.writes == [("WF:SP", [0.5, -0.5])]


def test_an_invalid_channel_name_is_blocked() -> None:
    control, connector, _ = system({"allow_unlisted": True,
                                    "defaults": {"writable": True, "verification": "none"}})
    blocked(write(control, "HCM1 SP", 1.0), Reason.VALIDATION_ERROR)
    assert connector.writes == []


# -- verification ----------------------------------------------------------------------------


def test_verification_none_reports_the_write_unverified() -> None:
    control, _, _ = system(listed(HCM1__SP={"verification": "none"}))
    result = write(control, "HCM1:SP", 1.0)
    assert (result.status, result.verification, result.verified) == (WriteStatus.OK, "none",
                                                                      None)


class Unconfirmed(FakeConnector):
    name = "unconfirmed"
    initial_values = CHANNELS

    async def write(self, channel: str, value: Any) -> WriteAck:
        await super().write(channel, value)
        return WriteAck(confirmed=False, message="(no put callback)")


def test_callback_verification_needs_the_control_systems_confirmation() -> None:
    control, _, _ = system(listed(HCM1__SP={"verification": "callback"}))
    result = write(control, "HCM1:SP", 1.0)
    assert (result.status, result.verified) == (WriteStatus.OK, True)
    control, connector, _ = system(listed(HCM1__SP={"verification": "callback"}),
                                   connector=Unconfirmed)
    result = write(control, "HCM1:SP", 1.0)
    assert (result.status, result.reason, result.verified) == (
        WriteStatus.FAILED, Reason.VERIFICATION_FAILED, False)
    assert connector.writes == [("HCM1:SP", 1.0)]


def offset_readback(offset: float) -> type[FakeConnector]:
    """Writing HCM1:SP moves HCM1:RB to the value plus ``offset`` (a power supply)."""

    class PowerSupply(FakeConnector):
        name = "power_supply"
        initial_values = CHANNELS

        async def write(self, channel: str, value: Any) -> WriteAck:
            ack = await super().write(channel, value)
            self.set_value("HCM1:RB", value + offset)
            return ack

    return PowerSupply


@pytest.mark.parametrize(("tolerance", "offset", "ok"), [
    ({"absolute": 0.01}, 0.009, True),
    ({"absolute": 0.01}, 0.011, False),
    ({"relative": 0.01}, 0.019, True),   # 1 % of 2.0 is 0.02
    ({"relative": 0.01}, 0.021, False),
    ({"absolute": 0.05, "relative": 0.001}, 0.04, True),  # the larger allowance wins
    ({}, 1e-6, False),  # no tolerance given: equal up to rounding
])
def test_readback_verification_with_tolerances(tolerance: dict[str, float], offset: float,
                                               ok: bool) -> None:
    limits = listed(HCM1__SP={"verification": "readback", "readback_channel": "HCM1:RB",
                              "tolerance": tolerance})
    control, _, _ = system(limits, connector=offset_readback(offset), verify_timeout=0.05)
    result = write(control, "HCM1:SP", 2.0)
    assert result.ok is ok, result
    assert result.readback is not None and result.readback.channel == "HCM1:RB"
    assert result.readback.value == pytest.approx(2.0 + offset)
    if not ok:
        assert result.reason is Reason.VERIFICATION_FAILED and result.verified is False


def test_a_silently_clamped_write_fails_verification_with_the_readback() -> None:
    clamped = FakeConnector.named("clamping", channels=CHANNELS, clamps={"HCM1:SP": (-1, 1)})
    control, connector, audit = system(listed(HCM1__SP={"verification": "readback"}),
                                       connector=clamped, verify_timeout=0.05)
    result = write(control, "HCM1:SP", 3.0)
    assert (result.status, result.reason) == (WriteStatus.FAILED, Reason.VERIFICATION_FAILED)
    assert result.readback is not None and result.readback.value == 1
    assert "readback of HCM1:SP is 1" in result.message
    assert connector.writes == [("HCM1:SP", 3.0)]
    assert audit.actions() == ["channel_write_started", "channel_write_failed"]
    assert audit.records[-1].details["readback"]["value"] == 1


def test_readback_that_settles_within_the_timeout_is_accepted() -> None:
    class Slow(FakeConnector):
        name = "slow_supply"
        initial_values = CHANNELS

        async def write(self, channel: str, value: Any) -> WriteAck:
            ack = await super().write(channel, value)
            asyncio.get_running_loop().call_later(0.05, self.set_value, "HCM1:RB", value)
            return ack

    limits = listed(HCM1__SP={"verification": "readback", "readback_channel": "HCM1:RB"})
    control, _, _ = system(limits, connector=Slow, verify_timeout=2.0)
    assert write(control, "HCM1:SP", 1.25).ok


class Rejecting(FakeConnector):
    name = "rejecting"
    initial_values = CHANNELS

    async def write(self, channel: str, value: Any) -> WriteAck:
        raise ServerRejectedError("value out of the attribute's range", channel=channel)


def test_a_value_the_server_rejects_is_blocked_with_its_reason() -> None:
    control, _, audit = system(listed(HCM1__SP={}), connector=Rejecting)
    result = write(control, "HCM1:SP", 1.0)
    blocked(result, Reason.REJECTED_BY_SERVER)
    assert "out of the attribute's range" in result.message
    assert audit.actions() == ["channel_write_started", "channel_write_blocked"]


class Hanging(FakeConnector):
    name = "hanging"
    initial_values = CHANNELS

    async def write(self, channel: str, value: Any) -> WriteAck:
        await asyncio.sleep(10)
        raise AssertionError("the write timeout did not apply")


def test_a_write_that_does_not_complete_in_time_fails_with_timeout() -> None:
    control, _, audit = system(listed(HCM1__SP={}), connector=Hanging, write_timeout=0.05)
    result = write(control, "HCM1:SP", 1.0)
    assert (result.status, result.reason) == (WriteStatus.FAILED, Reason.TIMEOUT)
    assert audit.actions() == ["channel_write_started", "channel_write_failed"]


# -- the audit ---------------------------------------------------------------------------------


def test_every_attempt_is_audited_with_who_which_run_and_which_approval() -> None:
    control, _, audit = system(listed(HCM1__SP={"max": 1}))
    write(control, "HCM1:SP", 0.5)   # ok: started + ok
    write(control, "HCM1:SP", 5.0)   # blocked: only the outcome
    write(control, "QF:SP", 1.0)     # unlisted
    assert audit.actions() == ["channel_write_started", "channel_write_ok",
                               "channel_write_blocked", "channel_write_blocked"]
    for record in audit.records:
        assert (record.actor, record.interface, record.run_id, record.approval_id) == (
            "ana", "test", "run-1", "apv-1")
    started, ok, too_high, unlisted = audit.records
    assert started.details == {"channel": "HCM1:SP", "requested": 0.5,
                               "previous": started.details["previous"]}
    assert started.details["previous"]["value"] == 0.0
    assert (ok.details["status"], ok.details["requested"]) == ("ok", 0.5)
    assert (too_high.details["reason"], unlisted.details["reason"]) == ("above_max",
                                                                        "unlisted_channel")


def test_a_write_that_cannot_be_audited_does_not_happen() -> None:
    control, connector, _ = system(listed(HCM1__SP={}), audit=Recorder(fail=True))
    try:
        result: WriteResult | None = write(control, "HCM1:SP", 1.0)
    except OSError:
        result = None  # the blocked outcome could not be recorded either
    assert result is None or result.status is WriteStatus.BLOCKED
    assert connector.writes == []
    assert connector.channels["HCM1:SP"] == 0.0


def test_write_many_stops_at_the_first_write_that_does_not_succeed() -> None:
    control, connector, audit = system(listed(HCM1__SP={"max": 1}, QF__SP={}, SR__MODE={}))
    writes = [("QF:SP", 11.0), ("HCM1:SP", 2.0), ("SR:MODE", "MD"), ("QF:SP", 12.0)]
    results = asyncio.run(control.write_many(writes, REQUEST))
    assert [(r.status, r.reason) for r in results] == [
        (WriteStatus.OK, None), (WriteStatus.BLOCKED, Reason.ABOVE_MAX),
        (WriteStatus.BLOCKED, Reason.SKIPPED), (WriteStatus.BLOCKED, Reason.SKIPPED)]
    assert "HCM1:SP did not succeed" in results[2].message
    assert connector.writes == [("QF:SP", 11.0)]
    assert audit.actions() == ["channel_write_started", "channel_write_ok",
                               "channel_write_blocked", "channel_write_blocked",
                               "channel_write_blocked"]


# -- building it from the configuration --------------------------------------------------------


def host_with(*plugins: object) -> Any:
    from osprey_core.plugin_host import load_plugins

    host = load_plugins(environ={"OSPREY_LOAD_PLUGINS": "", "OSPREY_STRICT_PLUGINS": "1"})
    for plugin in plugins:
        host.register(plugin)
    return host


def config_for(tmp_path: Path, host: Any, data: Mapping[str, Any],
               environ: Mapping[str, str] | None = None) -> Any:
    path = tmp_path / "site" / "osprey.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"home": "home", **data}), encoding="utf-8")
    return load_config(host, path, environ=dict(environ or {}))


class Notices:
    def __init__(self) -> None:
        self.shown: list[str] = []

    def __call__(self, text: str) -> None:
        self.shown.append(text)


uses_connectors = pytest.mark.exercises_hook("register_connectors")


@uses_connectors
def test_the_connector_is_chosen_by_type_and_built_with_timeouts_home_and_lock_dir(
        tmp_path) -> None:
    cls = FakeConnector.named("plant", channels=CHANNELS)
    host = host_with(fake_plugin(name="plant", connectors=[cls]))
    config = config_for(tmp_path, host, {"control_system": {
        "type": "plant", "connection_timeout": 0.5, "read_timeout": 0.75,
        "write_timeout": 1.25, "verify_timeout": 3.0, "writes_enabled": True}})
    notices = Notices()
    control = build_control_system(config, host, notice=notices)
    [connector] = cls.instances
    assert control.connector is connector
    assert (connector.connection_timeout, connector.read_timeout, connector.write_timeout) == (
        0.5, 0.75, 1.25)
    assert connector.home == tmp_path / "site" / "home"
    assert control.lock_dir == tmp_path / "site" / "home" / "locks" / "writes"
    assert (control.writes_enabled, control.verify_timeout) == (True, 3.0)
    assert notices.shown == []  # the type was set explicitly


@uses_connectors
def test_an_unknown_type_names_it_and_lists_the_registered_ones(tmp_path) -> None:
    host = host_with(fake_plugin(name="plant", connectors=[FakeConnector.named("plant")]))
    with pytest.raises(ConfigError, match=r"control_system\.type.*'epcis'.*registered"
                                          r"( connectors)?: plant"):  # at load or at build
        build_control_system(config_for(tmp_path, host, {"control_system": {"type": "epcis"}}),
                             host)


@uses_connectors
def test_the_default_mock_type_comes_with_a_notice(tmp_path) -> None:
    mock = FakeConnector.named("mock", channels=CHANNELS)
    host = host_with(fake_plugin(name="fake_mock", connectors=[mock]))
    notices = Notices()
    config = config_for(tmp_path, host, {"control_system": {"writes_enabled": False}})
    control = build_control_system(config, host, notice=notices)
    assert control.connector.name == "mock"
    assert notices.shown == [CONTROL_SYSTEM_NOTICE]
    assert "no real control system is contacted" in CONTROL_SYSTEM_NOTICE
    notices.shown.clear()
    config = config_for(tmp_path, host, {}, environ={"OSPREY__CONTROL_SYSTEM__TYPE": "mock"})
    build_control_system(config, host, notice=notices)
    assert notices.shown == []


@uses_connectors
@pytest.mark.exercises_hook("register_config_sections")
def test_a_connector_with_a_settings_model_gets_its_config_section(tmp_path) -> None:
    from pydantic import BaseModel, ConfigDict

    class PlantSettings(BaseModel):
        model_config = ConfigDict(extra="forbid")
        gateway: str = "localhost"

    cls = FakeConnector.named("plant")
    cls.settings_model = PlantSettings
    host = host_with(fake_plugin(name="plant", connectors=[cls],
                                 config_sections={"plant": PlantSettings}))
    config = config_for(tmp_path, host, {"control_system": {"type": "plant"},
                                         "plant": {"gateway": "gw.example:5064"}})
    build_control_system(config, host)
    assert cls.instances[-1].settings == PlantSettings(gateway="gw.example:5064")


def limits_yaml(path: Path, channel: str) -> Path:
    path.write_text(f"channels:\n  '{channel}': {{writable: true, max: 3}}\n", encoding="utf-8")
    return path


@uses_connectors
def test_a_relative_limits_file_is_relative_to_the_config_file(tmp_path, monkeypatch) -> None:
    host = host_with(fake_plugin(name="plant", connectors=[FakeConnector.named("plant")]))
    (tmp_path / "site").mkdir()
    limits_yaml(tmp_path / "site" / "limits.yml", "HCM1:SP")
    monkeypatch.chdir(tmp_path)  # not where the file is
    config = config_for(tmp_path, host, {"control_system": {"type": "plant",
                                                            "limits_file": "limits.yml"}})
    limits = build_control_system(config, host).limits_for("HCM1:SP")
    assert limits is not None and limits.max == 3


@uses_connectors
def test_limits_file_problems_are_config_errors(tmp_path) -> None:
    host = host_with(fake_plugin(name="plant", connectors=[FakeConnector.named("plant")]))
    config = config_for(tmp_path, host, {"control_system": {"type": "plant",
                                                            "limits_file": "missing.yml"}})
    with pytest.raises(ConfigError, match=r"missing\.yml does not exist"):
        build_control_system(config, host)
    limits_yaml(tmp_path / "site" / "limits.yml", "HCM1:SP")
    config = config_for(tmp_path, host, {"control_system": {
        "type": "plant", "limits_file": "limits.yml",
        "limits": {"channels": {"QF:SP": {"writable": True}}}}})
    with pytest.raises(ConfigError, match="either limits_file or inline limits"):
        build_control_system(config, host)
    (tmp_path / "site" / "limits.yml").write_text("channels:\n  X: {max: nan, min: 1}\n")
    config = config_for(tmp_path, host, {"control_system": {"type": "plant",
                                                            "limits_file": "limits.yml"}})
    with pytest.raises(ConfigError, match=r"limits\.yml: channels\.X"):
        build_control_system(config, host)


@pytest.mark.exercises_hook("register_archivers")
def test_the_archiver_is_chosen_by_type_with_its_timeout_and_a_notice_by_default(
        tmp_path) -> None:
    mock = FakeArchiver.named("mock")
    other = FakeArchiver.named("appliance")
    host = host_with(fake_plugin(name="archivers", archivers=[mock, other]))
    notices = Notices()
    archiver = build_archiver(config_for(tmp_path, host, {"archiver": {"timeout": 4}}), host,
                              notice=notices)
    assert (archiver.name, archiver.timeout) == ("mock", 4)
    assert notices.shown == [ARCHIVER_NOTICE]
    notices.shown.clear()
    config = config_for(tmp_path, host, {"archiver": {"type": "appliance"}})
    assert build_archiver(config, host, notice=notices).name == "appliance"
    assert notices.shown == []
    with pytest.raises(ConfigError, match=r"registered( archivers)?: appliance, mock"):
        build_archiver(config_for(tmp_path, host, {"archiver": {"type": "nope"}}), host)


def test_the_store_audit_sink_commits_each_record_durably(tmp_path) -> None:
    store = RunStore(tmp_path / "osprey.db")
    try:
        control, _, _ = system(listed(HCM1__SP={}))
        control._audit = store_audit_sink(store)
        assert write(control, "HCM1:SP", 1.0).ok
        other = RunStore(tmp_path / "osprey.db")  # a second connection sees it committed
        try:
            actions = [(record.action, record.approval_id) for record in other.audit()]
        finally:
            other.close()
        assert actions == [("channel_write_started", "apv-1"), ("channel_write_ok", "apv-1")]
    finally:
        store.close()


def test_notice_is_printed_once_per_process(capsys) -> None:
    from osprey_core.control import service

    service._shown.discard("test notice")
    service.stderr_once("test notice")
    service.stderr_once("test notice")
    assert capsys.readouterr().err == "Notice: test notice\n"


class LabelledEnum(FakeConnector):
    """Stores an enum written by index as its label, as EPICS and the mock machine read it."""

    name = "labelled_enum"
    initial_values: ClassVar[Mapping[str, Any]] = {"SR:MODE": "Shutdown"}
    labels = ("Shutdown", "User", "Machine development")

    async def write(self, channel: str, value: Any) -> WriteAck:
        return await super().write(channel, self.labels[value] if isinstance(value, int)
                                   else value)


def test_an_enum_written_by_index_verifies_against_its_label() -> None:
    limits = listed(SR__MODE={"type": "enum", "allowed": list(LabelledEnum.labels),
                              "verification": "readback"})
    control, connector, _ = system(limits, connector=LabelledEnum)

    by_index = write(control, "SR:MODE", 1)
    by_label = write(control, "SR:MODE", "Machine development")

    assert (by_index.status, by_index.verified, by_index.readback.value) == (
        WriteStatus.OK, True, "User")
    assert (by_label.status, by_label.verified) == (WriteStatus.OK, True)
    blocked(write(control, "SR:MODE", 3), Reason.NOT_ALLOWED_VALUE)
    assert connector.writes == [("SR:MODE", "User"), ("SR:MODE", "Machine development")]


# -- any Python value: a result and an audit trail, never an exception -------------------------

TYPED = {"F:SP": 0.0, "I:SP": 3, "B:SP": False, "S:SP": "a", "E:SP": "OFF",
         "A:SP": [0.0, 0.0], "U:SP": 0.0}
TYPED_LIMITS = {"channels": {
    "F:SP": {"type": "float", "min": -5, "max": 5, "max_step": 2, "verification": "readback"},
    "I:SP": {"type": "int", "min": -10, "max": 10, "verification": "readback"},
    "B:SP": {"type": "bool", "verification": "readback"},
    "S:SP": {"type": "string", "allowed": ["a", "b"], "verification": "readback"},
    "E:SP": {"type": "enum", "allowed": ["OFF", "ON"], "verification": "readback"},
    "A:SP": {"type": "array", "min": -5, "max": 5, "verification": "readback"},
    "U:SP": {"verification": "none"}},
    "defaults": {"writable": True}}


class Liar(float):
    """Claims to be within every range and converts to 0; holds 99 or whatever it was given."""

    def __lt__(self, other: object) -> bool:
        return False

    __gt__ = __le__ = __ge__ = __lt__

    def __float__(self) -> float:
        return 0.0

    def __sub__(self, other: object) -> float:
        return 0.0

    __rsub__ = __sub__


class Alias(str):
    """A channel name that says it is F:SP, whatever it holds."""

    def __eq__(self, other: object) -> bool:
        return True

    def __hash__(self) -> int:
        return hash("F:SP")


class Hostile:
    """Every dunder a serialiser or a check might call raises."""

    def __repr__(self) -> str:
        raise RuntimeError("no repr")

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("no eq")

    __hash__ = None  # type: ignore[assignment]

    def __float__(self) -> float:
        raise RuntimeError("no float")

    def __index__(self) -> int:
        raise RuntimeError("no index")


def typed_system(audit: Any = None) -> tuple[ControlSystem, FakeConnector]:
    connector = FakeConnector.named("typed", channels=TYPED)()
    control = ControlSystem(connector, LimitsDatabase(LimitsConfig.model_validate(TYPED_LIMITS)),
                            writes_enabled=True, verify_timeout=0.05, audit=audit or Recorder())
    return control, connector


@pytest.mark.parametrize(("channel", "value", "written"), [
    ("F:SP", np.float32(0.5), 0.5),
    ("F:SP", np.float64(1.25), 1.25),
    ("F:SP", np.float16(-1.5), -1.5),
    ("F:SP", np.array(1.5), 1.5),
    ("I:SP", np.int64(4), 4),
    ("I:SP", np.uint8(2), 2),
    ("B:SP", np.bool_(True), True),
    ("S:SP", np.str_("b"), "b"),
    ("A:SP", np.array([1.0, -2.5]), [1.0, -2.5]),
    ("A:SP", np.array([1, 2], dtype=np.int32), [1, 2]),
    ("A:SP", (np.float32(0.25), 1), [0.25, 1]),
])
def test_numpy_values_are_written_as_the_python_values_they_equal(
        channel: str, value: Any, written: Any) -> None:
    audit = Recorder()
    control, connector = typed_system(audit)
    result = write(control, channel, value)
    assert result.ok, result
    [(_, sent)] = connector.writes
    assert sent == written and type(sent) is type(written)
    if isinstance(sent, list):
        assert [type(item) for item in sent] == [type(item) for item in written]
    assert audit.actions() == ["channel_write_started", "channel_write_ok"]
    assert audit.records[0].details["requested"] == written
    assert audit.records[0].details["given"] == type_name(value)  # what the caller passed
    json.dumps([record.details for record in audit.records], allow_nan=False)


longdouble_is_wider = np.finfo(np.longdouble).nmant > np.finfo(np.float64).nmant


@pytest.mark.parametrize(("channel", "value", "reason"), [
    ("A:SP", np.array([[1.0, 2.0]]), Reason.WRONG_TYPE),
    ("F:SP", np.array([1.0]), Reason.WRONG_TYPE),
    ("A:SP", np.float32(1.0), Reason.WRONG_TYPE),
    ("F:SP", np.float64("nan"), Reason.NOT_FINITE),
    ("F:SP", np.float32("inf"), Reason.NOT_FINITE),
    ("A:SP", np.array([1.0, np.nan]), Reason.NOT_FINITE),
    ("F:SP", np.complex128(1), Reason.WRONG_TYPE),
    ("F:SP", np.datetime64("2024-01-01"), Reason.WRONG_TYPE),
    ("I:SP", np.int64(11), Reason.ABOVE_MAX),
    pytest.param("F:SP", np.longdouble(1) / 3, Reason.WRONG_TYPE, marks=pytest.mark.skipif(
        not longdouble_is_wider, reason="long double is double here")),
])
def test_numpy_values_that_are_not_a_legitimate_value_are_refused_and_audited(
        channel: str, value: Any, reason: Reason) -> None:
    audit = Recorder()
    control, connector = typed_system(audit)
    blocked(write(control, channel, value), reason)
    assert connector.writes == []
    assert audit.actions() == ["channel_write_blocked"]
    json.dumps(audit.records[0].details, allow_nan=False)


def test_a_number_that_lies_in_its_comparisons_is_checked_by_what_it_holds() -> None:
    control, connector = typed_system()
    blocked(write(control, "F:SP", Liar(99.0)), Reason.ABOVE_MAX)
    assert write(control, "F:SP", Liar(1.0)).ok
    assert connector.writes == [("F:SP", 1.0)] and type(connector.writes[0][1]) is float


def test_a_channel_name_that_lies_about_equality_is_looked_up_by_what_it_holds() -> None:
    control, connector = typed_system()
    blocked(write(control, Alias("Q:SP"), 1.0), Reason.UNLISTED_CHANNEL)
    assert connector.writes == []


def test_an_outcome_that_cannot_be_audited_is_still_returned() -> None:
    control, connector = typed_system(Recorder(fail=True))
    result = write(control, "F:SP", 1.0)
    blocked(result, Reason.VALIDATION_ERROR)  # the intent could not be recorded: no put
    assert "audit" in result.message
    assert connector.writes == []


class StoreSink:
    """The real store sink, with any exception it raises kept for the test to see."""

    def __init__(self, store: RunStore) -> None:
        self.sink = store_audit_sink(store)
        self.records: list[AuditRecord] = []
        self.errors: list[BaseException] = []

    def __call__(self, record: AuditRecord) -> None:
        try:
            self.sink(record)
        except BaseException as exc:
            self.errors.append(exc)
            raise
        self.records.append(record)


HOSTILE_VALUES = [
    None, Hostile(), object(), {"a": 1}, {1: 2}, {1, 2}, frozenset(), b"\xff", bytearray(b"x"),
    1j, Decimal("1.5"), Decimal("NaN"), Fraction(1, 3), 10**400, -(10**5000), 2**63,
    "\ud800", "x" * 50_000, [1.0, [2.0, [3.0]]], [[[[[[[[[[[[1.0]]]]]]]]]]]], [Hostile()],
    (1.0, None), [1.0] * 200_000, Liar(2.0), Alias("x"), math.nan, -math.inf, True, ...,
    lambda: None, ValueError("boom"), np.float64("nan"), np.array([np.inf]),
    np.zeros((2, 2, 2)), np.array([], dtype=float), np.array(["a", "b"]),
    np.array([Hostile()], dtype=object), np.array(1, dtype=object), np.void(b"\x00"),
    np.bytes_(b"x"), np.timedelta64(1, "s"), np.float16("inf"), np.uint64(2**64 - 1),
]
try:
    import pandas
except ImportError:  # pandas is optional
    pass
else:
    HOSTILE_VALUES += [pandas.NA, pandas.NaT, pandas.Timestamp("2024-01-01"),
                       pandas.Series([1.0, 2.0]), pandas.DataFrame({"a": [1]})]

NUMPY_DTYPES = st.sampled_from(["float16", "float32", "float64", "longdouble", "int8", "int64",
                                "uint16", "uint64", "bool", "complex64", "U3", "S2", "M8[s]",
                                "m8[s]", "O"])
LEAVES = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), st.text(
        st.characters(exclude_categories=()), max_size=5), st.binary(max_size=3),
    st.complex_numbers(), st.decimals(), st.fractions(),
    st.integers(0, len(HOSTILE_VALUES) - 1).map(lambda index: HOSTILE_VALUES[index]),
    NUMPY_DTYPES.flatmap(lambda dtype: hnp.from_dtype(np.dtype(dtype))),
    NUMPY_DTYPES.flatmap(lambda dtype: hnp.arrays(np.dtype(dtype), hnp.array_shapes(
        min_dims=0, max_dims=3, min_side=0, max_side=3))))
ANY_VALUE = st.recursive(LEAVES, lambda children: st.one_of(
    st.lists(children, max_size=3), st.tuples(children, children),
    st.dictionaries(st.text(max_size=2), children, max_size=2)), max_leaves=6)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Any:
    store = RunStore(tmp_path_factory.mktemp("audit") / "osprey.db")
    yield store
    store.close()


@settings(max_examples=300, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(channel=st.sampled_from(sorted(TYPED)), value=ANY_VALUE)
def test_any_value_ends_in_a_result_and_one_stored_outcome(store: RunStore, channel: str,
                                                           value: Any) -> None:
    sink = StoreSink(store)
    control, connector = typed_system(sink)
    result = write(control, channel, value)

    assert isinstance(result, WriteResult)
    assert sink.errors == []
    json.dumps(result.to_json(), allow_nan=False)
    actions = [record.action for record in sink.records]
    assert actions[-1] == f"channel_write_{result.status}"
    assert actions[:-1] == (["channel_write_started"] if connector.writes else [])
    if connector.writes:
        [(_, sent)] = connector.writes
        for item in sent if isinstance(sent, list) else [sent]:
            assert type(item) in (bool, int, float, str), sent
    if result.ok:
        assert connector.writes


@settings(max_examples=200, deadline=None, database=None)
@given(requested=ANY_VALUE, value=ANY_VALUE, channel=ANY_VALUE,
       status=st.sampled_from(list(WriteStatus)))
def test_a_write_result_always_has_a_json_form(requested: Any, value: Any, channel: Any,
                                               status: WriteStatus) -> None:
    from datetime import UTC, datetime

    reading = ChannelValue("X", value, datetime.now(UTC))
    result = WriteResult(channel, requested, status, Reason.WRONG_TYPE, "message",
                         previous=reading, readback=reading)
    text = json.dumps(result.to_json(), allow_nan=False)
    assert len(text) < 2_000_000


def test_write_many_audits_every_pair_whatever_the_values() -> None:
    audit = Recorder()
    control, connector = typed_system(audit)
    writes = [("F:SP", np.float32(1.0)), ("U:SP", Hostile()), ("F:SP", 2.0)]
    results = asyncio.run(control.write_many(writes, REQUEST))
    assert [(r.status, r.reason) for r in results] == [
        (WriteStatus.OK, None), (WriteStatus.BLOCKED, Reason.WRONG_TYPE),
        (WriteStatus.BLOCKED, Reason.SKIPPED)]
    assert audit.actions() == ["channel_write_started", "channel_write_ok",
                               "channel_write_blocked", "channel_write_blocked"]
    json.dumps([record.details for record in audit.records], allow_nan=False)
    assert connector.writes == [("F:SP", 1.0)]
