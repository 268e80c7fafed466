"""The simulated machine: the ``mock`` connector and archiver against a real model."""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import subprocess
import sys
import textwrap
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from statistics import fmean
from typing import Any

import pytest
from support.cli import assert_exit, osprey
from support.dist import osprey_env

from osprey_core.control.errors import ChannelNotFoundError, ControlSystemError
from osprey_core.control.limits import LimitsConfig, LimitsDatabase
from osprey_core.control.mock_archiver import retrieve_history
from osprey_core.control.simulation import (
    BUILTIN_MACHINE,
    MockSettings,
    SetpointLog,
    SimulatedMachine,
    load_machine,
    open_machine,
    to_datetime,
    to_seconds,
)
from osprey_core.control.system import ControlSystem
from osprey_core.control.types import (
    Reason,
    Severity,
    WriteRequest,
    WriteStatus,
    samples_to_dataframe,
)
from osprey_core.errors import ConfigError
from osprey_core.plugins.mock_archiver import MockArchiver
from osprey_core.plugins.mock_connector import MockConnector

REQUEST = WriteRequest(actor="tester", interface="test")
T0 = 1_800_000_000.0  # a fixed epoch second, on the 180 s injection grid


class Clock:
    """A hand-driven clock for the model (epoch seconds)."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


ANY_NAME = {"any_name_reads": True}


def machine(clock: Callable[[], float], *, noise: bool = False, home: Path | None = None,
            **settings: Any) -> SimulatedMachine:
    return open_machine({"noise": noise, **settings}, home=home, clock=clock)


def run[T](coroutine: Any) -> T:
    return asyncio.run(coroutine)


FAST_MACHINE = """\
name: fast test machine
noise_interval: 0.05
channels:
  PS1:SP: {kind: setpoint, units: A, value: 0.0, control_limits: [-5, 5]}
  PS1:RB: {kind: readback, setpoint: PS1:SP, tau: 0.05, units: A, noise: 0.001}
  T1:TEMP: {kind: drift, value: 20.0, amplitude: 0.5, period: 60, noise: 0.1, units: degC}
"""


@pytest.fixture
def fast_machine(tmp_path: Path) -> Path:
    path = tmp_path / "fast.yml"
    path.write_text(FAST_MACHINE)
    return path


# -- the model -------------------------------------------------------------------------


def test_readback_follows_the_setpoint_with_a_lag_and_converges() -> None:
    clock = Clock()
    sim = machine(clock)
    tau = sim.channel("HCM1:RB").tau
    assert 0.1 <= tau <= 0.5
    assert sim.read("HCM1:RB").value == 0.0

    sim.write("HCM1:SP", 2.0)
    assert sim.read("HCM1:SP").value == 2.0  # a setpoint reads back at once
    assert sim.read("HCM1:RB").value == pytest.approx(0.0, abs=1e-9)
    trace = []
    for step in range(1, 40):
        clock.now = T0 + step * tau / 4
        trace.append(sim.read("HCM1:RB").value)
    assert trace == sorted(trace) and trace[-1] <= 2.0  # monotonic, no overshoot
    clock.now = T0 + tau
    assert sim.read("HCM1:RB").value == pytest.approx(2.0 * (1 - math.exp(-1)), rel=1e-6)
    clock.now = T0 + 30 * tau
    assert sim.read("HCM1:RB").value == 2.0  # settled exactly, not forever creeping

    # A new setpoint half-way through a transition starts from where the readback is.
    clock.now = T0 + 100
    sim.write("HCM1:SP", 0.0)
    clock.now = T0 + 100 + tau
    halfway = sim.read("HCM1:RB").value
    sim.write("HCM1:SP", 1.0)
    clock.now += 1e-6
    assert sim.read("HCM1:RB").value == pytest.approx(halfway, abs=1e-4)
    clock.now += 30 * tau
    assert sim.read("HCM1:RB").value == 1.0


def test_noise_is_bounded_and_deterministic() -> None:
    clock = Clock()
    noisy, clean, again = machine(clock, noise=True), machine(clock), machine(clock, noise=True)
    amplitude = noisy.channel("SR:TEMP:MAG1").noise
    deviations = set()
    for step in range(400):
        clock.now = T0 + step * 0.37
        value = noisy.read("SR:TEMP:MAG1").value
        deviation = value - clean.read("SR:TEMP:MAG1").value
        assert abs(deviation) <= amplitude
        assert again.read("SR:TEMP:MAG1").value == value  # a function of time, not a RNG
        deviations.add(round(deviation, 12))
    assert len(deviations) > 100  # it is noise, not a constant offset
    assert max(deviations) > amplitude / 2 and min(deviations) < -amplitude / 2
    clock.now = T0 + 0.01
    first = noisy.read("SR:TEMP:MAG1").value - clean.read("SR:TEMP:MAG1").value
    clock.now = T0 + 0.02  # same noise bucket: same noise
    second = noisy.read("SR:TEMP:MAG1").value - clean.read("SR:TEMP:MAG1").value
    assert second == pytest.approx(first, abs=1e-9)
    # Setpoints carry no noise; noise can be switched off.
    assert noisy.read("HCM2:SP").value == 0.5
    assert clean.read("SR:ENERGY").value == 1.9


def test_beam_current_decays_between_top_up_injections() -> None:
    clock = Clock()
    sim = machine(clock)
    spec = sim.channel("SR:CURRENT")
    interval, lifetime_s = spec.injection_interval, spec.lifetime * 3600
    clock.now = T0  # right at an injection
    assert sim.read("SR:CURRENT").value == pytest.approx(spec.fill)
    previous = spec.fill
    for step in range(1, 18):
        clock.now = T0 + step * interval / 18
        current = sim.read("SR:CURRENT").value
        assert current < previous  # decaying between injections
        previous = current
    clock.now = T0 + interval - 1e-3
    before = sim.read("SR:CURRENT").value
    assert before == pytest.approx(spec.fill * math.exp(-interval / lifetime_s), rel=1e-6)
    clock.now = T0 + interval + 1e-3
    assert sim.read("SR:CURRENT").value > before + 1  # the next top-up
    # The lifetime channel is coupled: it matches the decay rate of the current.
    clock.now = T0 + 60
    i1 = sim.read("SR:CURRENT").value
    clock.now = T0 + 61
    i2 = sim.read("SR:CURRENT").value
    measured_hours = -i1 / ((i2 - i1) / 1.0) / 3600
    assert sim.read("SR:LIFETIME").value == pytest.approx(measured_hours, rel=1e-3)
    # The vacuum pressure follows the current (photon-stimulated desorption).
    assert sim.read("SR:VAC:P1").value == pytest.approx(2.0e-10 + 1.0e-12 * i2, rel=1e-9)


def test_time_scale_speeds_up_the_slow_dynamics_only() -> None:
    clock = Clock()
    fast = machine(clock, time_scale=60)
    clock.now = T0 + 3 - 1e-3  # 3 s at 60x = one full injection interval
    spec = fast.channel("SR:CURRENT")
    assert fast.read("SR:CURRENT").value == pytest.approx(
        spec.fill * math.exp(-(180 - 0.06) / (spec.lifetime * 3600)), rel=1e-6)
    assert fast.read("SR:LIFETIME").value == pytest.approx(spec.lifetime / 60)


def test_machine_mode_switches_the_beam_off_and_on() -> None:
    clock = Clock(T0 + 10)
    sim = machine(clock)
    assert sim.read("SR:MODE").value == "User Operations"
    sim.write("SR:MODE", "Shutdown")
    reading = sim.read("SR:CURRENT")
    assert reading.value == 0.0
    assert (reading.status, reading.severity) == ("LOLO", Severity.MAJOR)
    assert sim.read("SR:LIFETIME").value == 0.0
    sim.write("SR:MODE", 2)  # an enum index is stored as its string
    assert sim.read("SR:MODE").value == "User Operations"
    assert sim.read("SR:CURRENT").value > 400


def test_orbit_responds_to_corrector_readbacks() -> None:
    clock = Clock()
    sim = machine(clock)
    before = [sim.read(f"BPM{n}:X").value for n in range(1, 5)]
    sim.write("HCM1:SP", 1.0)
    clock.now += 5
    after = [sim.read(f"BPM{n}:X").value for n in range(1, 5)]
    coefficients = [sim.channel(f"BPM{n}:X").inputs["HCM1:RB"] for n in range(1, 5)]
    for old, new, coefficient in zip(before, after, coefficients, strict=True):
        assert new - old == pytest.approx(coefficient, abs=1e-9)
    assert sim.read("BPM:XALL").value == after  # the waveform is the BPMs themselves
    assert sim.read("BPM1:Y").value == pytest.approx(0.005)  # vertical plane untouched


def test_waveform_matches_noisy_bpm_readings() -> None:
    clock = Clock(T0 + 12.3)
    sim = machine(clock, noise=True)
    assert sim.read("BPM:XALL").value == [sim.read(f"BPM{n}:X").value for n in range(1, 5)]


def test_undeclared_names_are_not_found_with_the_closest_declared_names() -> None:
    sim = machine(Clock())
    with pytest.raises(ChannelNotFoundError, match=r"did you mean SR:CURRENT\b") as caught:
        sim.read("SR:CURRNET")
    assert caught.value.channel == "SR:CURRNET"
    assert "mock.any_name_reads" in str(caught.value)
    with pytest.raises(ChannelNotFoundError, match="did you mean HCM1:SP"):
        sim.read("hcm1:sp")  # names are case-sensitive, suggestions are not
    with pytest.raises(ChannelNotFoundError, match=r"declares \d+ channels"):
        sim.read("QQQ:ZZZ:WWW")
    with pytest.raises(ChannelNotFoundError, match="no such channel"):
        sim.write("QF1:SP", 1.0)  # nothing stored for an undeclared name
    assert not sim.log.changes("QF1:SP")
    with pytest.raises(ChannelNotFoundError):
        sim.metadata("XY:TEMP")


def test_undeclared_names_read_plausible_values_when_allowed() -> None:
    clock = Clock()
    sim = machine(clock, noise=True, any_name_reads=True)
    assert sim.read("LN:TEMP:7").value == pytest.approx(25.0, abs=0.1)
    assert sim.read("LN:TEMP:7").units == "degC"
    assert sim.read("BTS:DCCT:CURRENT").value == pytest.approx(100.0, abs=1)
    assert sim.read("BTS:DCCT:CURRENT").units == "mA"
    assert sim.read("SR:GAUGE7:PRES").value == pytest.approx(1e-9, rel=0.1)
    assert sim.read("QF1:SP").value == 0.0
    assert abs(sim.read("QF1:RB").value) < 0.01
    assert abs(sim.read("SOMETHING:ELSE").value) < 0.01
    # Deterministic per name and time.
    assert sim.read("LN:TEMP:7").value == machine(
        clock, noise=True, any_name_reads=True).read("LN:TEMP:7").value
    # Writes to undeclared names are stored (the limits database decides if they happen).
    sim.write("QF1:SP", 3.5)
    assert sim.read("QF1:SP").value == 3.5
    clock.now += 5
    assert sim.read("QF1:RB").value == pytest.approx(3.5, abs=0.001)
    sim.write("SOMETHING:ELSE", "text")
    assert sim.read("SOMETHING:ELSE").value == "text"
    with pytest.raises(ChannelNotFoundError):
        sim.read("not a name")


def test_the_machine_refuses_what_a_real_one_would() -> None:
    sim = machine(Clock())
    from osprey_core.control.errors import ServerRejectedError

    for channel, value, why in [
        ("SR:CURRENT", 1.0, "read-only"),
        ("HCM1:RB", 1.0, "read-only"),
        ("HCM1:SP", 10.5, "control limits"),
        ("HCM1:SP", "two", "finite number"),
        ("HCM1:SP", math.nan, "finite number"),
        ("HCM1:SP", [1.0], "finite number"),
        ("SR:MODE", "Party", "not one of"),
        ("SR:MODE", 7, "not one of"),
    ]:
        with pytest.raises(ServerRejectedError, match=why):
            sim.write(channel, value)
    assert sim.log.changes("HCM1:SP") == []


def test_metadata_comes_from_the_declaration() -> None:
    sim = machine(Clock())
    corrector = sim.metadata("HCM1:SP")
    assert (corrector.data_type, corrector.units, corrector.precision) == ("float", "A", 3)
    assert corrector.control_limits == (-10.0, 10.0) and corrector.writable
    assert "setpoint" in (corrector.description or "")
    current = sim.metadata("SR:CURRENT")
    assert not current.writable and current.units == "mA"
    assert current.display_limits == (0.0, 550.0)
    mode = sim.metadata("SR:MODE")
    assert mode.data_type == "enum" and "Shutdown" in mode.enum_strings and mode.writable
    assert sim.metadata("BPM:XALL").data_type == "array"
    sim.write("HCM1:SP", 9.8)
    sim.clock = Clock(T0 + 10)
    readback = sim.metadata("HCM1:RB")
    assert (readback.status, readback.severity) == ("HIHI", Severity.MAJOR)
    undeclared = machine(sim.clock, any_name_reads=True).metadata("XY:TEMP")
    assert undeclared.units == "degC" and "undeclared" in (undeclared.description or "")


def test_the_built_in_machine_is_a_small_storage_ring() -> None:
    spec = load_machine()
    assert 15 <= len(spec.channels) <= 25
    for name in ("SR:CURRENT", "SR:LIFETIME", "SR:ENERGY", "SR:MODE", "RF:FREQ", "HCM1:SP",
                 "HCM3:RB", "VCM1:RB", "BPM4:Y", "BPM:XALL", "SR:VAC:P1", "SR:TEMP:MAG1"):
        assert name in spec.channels
    for name, channel in spec.channels.items():
        assert channel.description, name
        if channel.kind == "readback":
            assert 0.1 <= channel.tau <= 0.5, name
    assert BUILTIN_MACHINE.is_file()


@pytest.mark.parametrize(("body", "message"), [
    ("channels:\n  A:RB: {kind: readback, setpoint: A:SP}\n", "undeclared channel 'A:SP'"),
    ("channels:\n  A: {kind: constant, tau: 1}\n", "tau do(es) not apply to kind constant"),
    ("channels:\n  A: {kind: response, inputs: {B: 1}}\n"
     "  B: {kind: response, inputs: {A: 1}}\n", "cycle"),
    ("channels:\n  A: {kind: setpoint, type: enum, enum_strings: [x], value: y}\n",
     "not one of enum_strings"),
    ("channels:\n  A: {kind: constant, colour: red}\n", "colour"),
    ("channels: [1, 2\n", "cannot read it"),
])
def test_a_bad_machine_file_is_refused_naming_it(tmp_path: Path, body: str,
                                                 message: str) -> None:
    path = tmp_path / "bad-machine.yml"
    path.write_text(body)
    with pytest.raises(ConfigError) as caught:
        load_machine(path)
    assert str(path) in str(caught.value) and message in str(caught.value)


def test_a_users_own_machine_file(fast_machine: Path) -> None:
    sim = open_machine(MockSettings(machine_file=fast_machine, noise=False))
    assert sim.spec.name == "fast test machine"
    assert sim.read("T1:TEMP").units == "degC"
    assert "SR:CURRENT" not in sim.spec.channels
    with pytest.raises(ConfigError, match="machine_file"):
        open_machine({"machine_file": 3})


# -- the connector -----------------------------------------------------------------------


def test_connector_reads_writes_and_needs_connect(tmp_path: Path) -> None:
    async def scenario() -> None:
        connector = MockConnector(None, home=tmp_path)
        with pytest.raises(ControlSystemError, match="not connected"):
            await connector.read("SR:CURRENT")
        await connector.connect()
        ack = await connector.write("HCM2:SP", 1.25)
        assert ack.confirmed
        assert (await connector.read("HCM2:SP")).value == 1.25
        batch = await connector.read_many(["SR:CURRENT", "HCM2:SP", "bad name"])
        assert set(batch.values) == {"SR:CURRENT", "HCM2:SP"}
        assert isinstance(batch.errors["bad name"], ChannelNotFoundError)
        assert (await connector.metadata("HCM2:SP")).units == "A"
        await connector.close()

    run(scenario())
    assert MockConnector(None).validate_name("SR:VAC:P1")
    assert MockConnector(None).validate_name("BPM1:X.EGU")
    for bad in ("", "A B", "A\n", "x" * 200, "ä:SP", "SR:CURRENT;rm -rf"):
        assert not MockConnector(None).validate_name(bad), bad


def test_subscriptions_fire_on_change_and_on_write_and_stop(fast_machine: Path) -> None:
    settings = MockSettings(machine_file=fast_machine, update_interval=0.02)

    async def scenario() -> None:
        connector = MockConnector(settings)
        await connector.connect()
        drifting: list[float] = []
        setpoints: list[float] = []
        readbacks: list[float] = []
        handle = await connector.subscribe("T1:TEMP", lambda reading: drifting.append(
            reading.value))
        await connector.subscribe("PS1:SP", lambda reading: setpoints.append(reading.value))
        await connector.subscribe("PS1:RB", lambda reading: readbacks.append(reading.value))
        await asyncio.sleep(0.5)
        assert len(drifting) >= 4  # the noise changes every 0.05 s
        assert len(set(drifting)) == len(drifting) or len(set(drifting)) >= 4
        assert setpoints == []  # nothing changed: no callback
        await connector.write("PS1:SP", 2.0)
        assert setpoints == [2.0]  # fired at once, before the write returned
        await asyncio.sleep(0.5)
        assert setpoints == [2.0]
        assert len(readbacks) >= 3 and readbacks[-1] == pytest.approx(2.0, abs=0.002)
        await connector.unsubscribe(handle)
        count = len(drifting)
        await asyncio.sleep(0.3)
        assert len(drifting) == count
        with pytest.raises(KeyError):
            await connector.unsubscribe(handle)
        poller = connector._poller
        assert poller is not None and not poller.done()
        await connector.close()
        assert poller.done() and connector._poller is None

    run(scenario())


def test_a_failing_subscriber_does_not_stop_the_others(fast_machine: Path) -> None:
    async def scenario() -> None:
        connector = MockConnector(MockSettings(machine_file=fast_machine,
                                               update_interval=0.02))
        await connector.connect()
        seen: list[float] = []

        def broken(reading: Any) -> None:
            raise RuntimeError("subscriber bug")

        await connector.subscribe("T1:TEMP", broken)
        await connector.subscribe("T1:TEMP", lambda reading: seen.append(reading.value))
        await asyncio.sleep(0.3)
        await connector.close()
        assert len(seen) >= 2

    run(scenario())


def test_state_is_shared_by_one_home_and_separate_between_homes(tmp_path: Path) -> None:
    home_a, home_b = tmp_path / "a", tmp_path / "b"

    async def scenario() -> None:
        first = MockConnector(None, home=home_a)
        await first.connect()
        await first.write("HCM3:SP", -1.5)
        await first.write("SR:MODE", "Machine Development")
        await first.close()

        same_home = MockConnector({"noise": False}, home=home_a)
        await same_home.connect()
        assert (await same_home.read("HCM3:SP")).value == -1.5
        assert (await same_home.read("SR:MODE")).value == "Machine Development"
        assert -1.5 <= (await same_home.read("HCM3:RB")).value <= -0.25  # on its way

        other_home = MockConnector(None, home=home_b)
        await other_home.connect()
        assert (await other_home.read("HCM3:SP")).value == -0.25  # the declared value
        in_memory = MockConnector(None)  # no home: nothing persisted
        await in_memory.connect()
        await in_memory.write("HCM3:SP", 4.0)
        assert (await other_home.read("HCM3:SP")).value == -0.25

    run(scenario())
    state = json.loads((home_a / "mock-machine.json").read_text())
    assert [(row["channel"], row["value"]) for row in state["setpoints"]] == [
        ("HCM3:SP", -1.5), ("SR:MODE", "Machine Development")]
    assert not (home_b / "mock-machine.json").exists()


def test_a_write_in_another_process_is_seen_by_a_running_connector(tmp_path: Path) -> None:
    async def scenario() -> None:
        connector = MockConnector(None, home=tmp_path)
        await connector.connect()
        assert (await connector.read("VCM1:SP")).value == 0.0
        code = textwrap.dedent(f"""
            import asyncio
            from pathlib import Path
            from osprey_core.plugins.mock_connector import MockConnector

            async def main():
                connector = MockConnector(None, home=Path({str(tmp_path)!r}))
                await connector.connect()
                for value in (0.5, 1.0, 1.5):
                    await connector.write("VCM1:SP", value)
            asyncio.run(main())
        """)
        writers = [subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path)
                   for _ in range(3)]
        for writer in writers:
            assert writer.wait(timeout=60) == 0
        assert (await connector.read("VCM1:SP")).value == 1.5
        assert len(connector.machine.log.changes("VCM1:SP")) == 9  # none lost to a race

    run(scenario())


def test_a_corrupt_state_file_is_refused_and_kept(tmp_path: Path) -> None:
    state = tmp_path / "mock-machine.json"
    for content in ("{not json", json.dumps({"format": "other", "version": 1}),
                    json.dumps({"format": "osprey-mock-machine-state", "version": 1,
                                "setpoints": [{"channel": "A"}]})):
        state.write_text(content)

        async def scenario() -> None:
            connector = MockConnector(None, home=tmp_path)
            await connector.connect()

        with pytest.raises(ControlSystemError) as caught:
            run(scenario())
        assert str(state) in str(caught.value) and "corrupt" in str(caught.value)
        assert state.read_text() == content


def test_corruption_appearing_later_is_reported_not_replaced(tmp_path: Path) -> None:
    sim = machine(Clock(), home=tmp_path)
    sim.write("HCM1:SP", 1.0)
    (tmp_path / "mock-machine.json").write_text("garbage")
    with pytest.raises(ControlSystemError, match="corrupt"):
        sim.write("HCM1:SP", 2.0)
    with pytest.raises(ControlSystemError, match="corrupt"):
        sim.read("HCM1:SP")
    assert (tmp_path / "mock-machine.json").read_text() == "garbage"


def test_state_file_setting_overrides_the_home(tmp_path: Path) -> None:
    chosen = tmp_path / "elsewhere" / "ring.json"
    sim = open_machine({"state_file": chosen}, home=tmp_path / "home")
    sim.write("HCM1:SP", 0.75)
    assert chosen.is_file() and not (tmp_path / "home").exists()
    assert SetpointLog(chosen).value_at("HCM1:SP", math.inf, None) == 0.75


# -- the one write path with the mock connector ------------------------------------------


LIMITS = LimitsConfig.model_validate({
    "defaults": {"writable": False, "verification": "readback"},
    "patterns": {
        "?CM*:SP": {"writable": True, "min": -3, "max": 3, "max_step": 2.5,
                    "tolerance": {"absolute": 0.01}},
    },
    "channels": {
        "HCM1:SP": {"writable": True, "min": -3, "max": 3, "readback_channel": "HCM1:RB",
                    "tolerance": {"absolute": 0.01}},
        "HCM2:SP": {"writable": True, "min": -3, "max": 3, "readback_channel": "HCM2:RB",
                    "tolerance": {"absolute": 0.01}},
        "HCM3:SP": {"writable": True, "min": -3, "max": 3, "readback_channel": "HCM3:RB",
                    "tolerance": {"absolute": 0.01}},
        "VCM1:SP": {"writable": True, "min": -3, "max": 3, "readback_channel": "VCM1:RB",
                    "tolerance": {"absolute": 0.01}},
        "SR:MODE": {"writable": True, "type": "enum",
                    "allowed": ["Shutdown", "Machine Development", "User Operations"]},
        "SR:CURRENT": {"writable": True, "verification": "none"},
    },
})


def test_fifty_writes_verify_by_readback_every_time(tmp_path: Path) -> None:
    """The reference's mock failed readback verification ~92% of the time."""
    channels = ["HCM1:SP", "HCM2:SP", "HCM3:SP", "VCM1:SP"]
    results = []

    async def scenario() -> None:
        async with ControlSystem(MockConnector(None, home=tmp_path), LimitsDatabase(LIMITS),
                                 writes_enabled=True, verify_timeout=2.0) as system:
            for round_ in range(13):  # 52 writes, the four correctors at a time
                values = [round(((round_ * 7 + index * 3) % 5 - 2) * 0.3, 3)
                          for index in range(len(channels))]
                results.extend(await asyncio.gather(*(
                    system.write(channel, value, REQUEST)
                    for channel, value in zip(channels, values, strict=True))))

    run(scenario())
    assert len(results) == 52
    failures = [result.to_json() for result in results if not result.ok]
    assert failures == []
    assert all(result.verified is True and result.verification == "readback"
               and result.readback is not None and result.readback.channel.endswith(":RB")
               for result in results)


def test_write_path_refusals_with_the_mock(tmp_path: Path) -> None:
    async def scenario() -> dict[str, Any]:
        async with ControlSystem(MockConnector(None, home=tmp_path), LimitsDatabase(LIMITS),
                                 writes_enabled=True, verify_timeout=2.0) as system:
            return {
                "limit": await system.write("HCM1:SP", 3.5, REQUEST),
                "unlisted": await system.write("QF1:SP", 1.0, REQUEST),
                "server": await system.write("SR:CURRENT", 1.0, REQUEST),
                "mode": await system.write("SR:MODE", "Machine Development", REQUEST),
                "up": await system.write("HCM3:SP", 3.0, REQUEST),  # full-range steps settle
                "down": await system.write("HCM3:SP", -3.0, REQUEST),  # within verify_timeout
            }

    results = run(scenario())
    assert results["limit"].reason is Reason.ABOVE_MAX
    assert results["unlisted"].reason is Reason.UNLISTED_CHANNEL
    assert (results["server"].status, results["server"].reason) == (
        WriteStatus.BLOCKED, Reason.REJECTED_BY_SERVER)
    for key in ("mode", "up", "down"):
        assert results[key].ok and results[key].verified is True, results[key]
    assert results["down"].previous is not None and results["down"].previous.value == 3.0


# -- the archiver ------------------------------------------------------------------------


def test_archived_history_is_what_the_connector_read(tmp_path: Path) -> None:
    async def scenario() -> tuple[list[Any], datetime]:
        connector = MockConnector(ANY_NAME, home=tmp_path)  # LN:TEMP:3 is undeclared
        await connector.connect()
        written = datetime.now(UTC)
        await connector.write("HCM1:SP", 1.0)
        readings = []
        for _ in range(6):
            for channel in ("HCM1:SP", "HCM1:RB", "BPM2:X", "SR:CURRENT", "BPM:XALL",
                            "SR:MODE", "LN:TEMP:3"):
                readings.append(await connector.read(channel))
            await asyncio.sleep(0.15)
        await connector.close()
        return readings, written

    readings, written = run(scenario())
    archiver = MockArchiver(ANY_NAME, home=tmp_path)  # a separate instance, same home
    for reading in readings:
        history = run(archiver.retrieve([reading.channel], reading.timestamp,
                                        reading.timestamp))
        [sample] = history[reading.channel]
        assert sample.timestamp == reading.timestamp
        assert sample.value == reading.value, reading.channel
        assert (sample.status, sample.severity) == (reading.status, reading.severity)

    # Raw history over the write: the setpoint step at its exact time, the lagging readback.
    start = written - timedelta(seconds=3)
    end = datetime.now(UTC)
    history = run(archiver.retrieve(["HCM1:SP", "HCM1:RB"], start, end))
    setpoints = history["HCM1:SP"]
    assert [sample.timestamp for sample in setpoints] == sorted(
        sample.timestamp for sample in setpoints)
    assert setpoints[0].value == 0.0 and setpoints[-1].value == 1.0
    [step] = [sample for sample in setpoints if sample.value == 1.0][:1]
    assert written <= step.timestamp <= written + timedelta(seconds=1)
    readbacks = history["HCM1:RB"]
    assert readbacks[0].timestamp == start and abs(readbacks[0].value) < 0.01
    assert all(start <= sample.timestamp <= end for sample in readbacks)


def test_history_of_past_hours_follows_the_model(tmp_path: Path) -> None:
    clock = Clock(T0 + 7200)
    sim = machine(clock, noise=True, home=tmp_path)
    clock.now = T0 + 600
    sim.log.record("HCM2:SP", 2.0, T0 + 600)  # as if written then
    clock.now = T0 + 7200
    start, end = to_datetime(T0), to_datetime(T0 + 3600)
    history = retrieve_history(sim, ["SR:CURRENT", "HCM2:SP", "HCM2:RB"], start, end)
    currents = history["SR:CURRENT"]
    assert len(currents) == 1801  # 3600 s at a 2 s period (at most 2000 samples)
    for sample in currents[::97]:
        assert sample.value == sim.value("SR:CURRENT", to_seconds(sample.timestamp))
    # The sawtooth: a jump up at each injection, decay in between.
    jumps = [b.value - a.value for a, b in itertools.pairwise(currents)
             if b.value > a.value + 1]
    assert len(jumps) == 3600 // 180
    setpoints = history["HCM2:SP"]
    assert {sample.value for sample in setpoints} == {0.5, 2.0}
    assert to_datetime(T0 + 600) in [sample.timestamp for sample in setpoints]
    assert retrieve_history(sim, ["SR:CURRENT"], to_datetime(T0 + 8000),
                            to_datetime(T0 + 9000)) == {"SR:CURRENT": []}  # the future


def test_mean_bins_average_the_model(tmp_path: Path) -> None:
    clock = Clock(T0 + 7200)
    sim = machine(clock, noise=True)
    start, end = to_datetime(T0 + 30), to_datetime(T0 + 630)
    history = retrieve_history(sim, ["SR:CURRENT", "SR:MODE", "BPM:XALL"], start, end,
                               "mean_60")
    bins = history["SR:CURRENT"]
    assert len(bins) == 11  # a partial bin at each end
    assert all(start <= sample.timestamp <= end for sample in bins)
    assert bins[1].timestamp == to_datetime(T0 + 90)  # the middle of [60, 120)
    for sample in bins[1:-1]:
        middle = to_seconds(sample.timestamp)
        dense = fmean(sim.value("SR:CURRENT", middle - 30 + (k + 0.5) / 4) for k in range(240))
        assert sample.value == pytest.approx(dense, abs=0.05)
    assert {sample.value for sample in history["SR:MODE"]} == {"User Operations"}
    assert len(history["BPM:XALL"][0].value) == 4
    low = retrieve_history(sim, ["SR:CURRENT"], start, end, "min_60")["SR:CURRENT"]
    high = retrieve_history(sim, ["SR:CURRENT"], start, end, "max_60")["SR:CURRENT"]
    assert all(a.value <= m.value <= b.value for a, m, b in zip(low, bins, high, strict=True))


def test_archiver_refuses_bad_requests() -> None:
    archiver = MockArchiver(None)
    now = datetime.now(UTC)
    with pytest.raises(ValueError, match="timezone-aware"):
        run(archiver.retrieve(["SR:CURRENT"], datetime(2024, 1, 1), now))
    with pytest.raises(ValueError, match="after"):
        run(archiver.retrieve(["SR:CURRENT"], now, now - timedelta(1)))
    with pytest.raises(ValueError, match="operator"):
        run(archiver.retrieve(["SR:CURRENT"], now - timedelta(1), now, operator="median_x"))
    with pytest.raises(ChannelNotFoundError):
        run(archiver.retrieve(["SR:CURRENT", "no such"], now - timedelta(1), now))
    with pytest.raises(ValueError, match="bins"):
        run(archiver.retrieve(["SR:CURRENT"], now - timedelta(days=30), now,
                              operator="mean_1"))


def test_history_converts_to_a_dataframe() -> None:
    pytest.importorskip("pandas")
    archiver = MockArchiver(None)
    now = datetime.now(UTC)
    history = run(archiver.retrieve(["SR:CURRENT", "BPM1:X"], now - timedelta(minutes=10),
                                    now, operator="mean_60"))
    frame = samples_to_dataframe(history)
    assert set(frame["channel"]) == {"SR:CURRENT", "BPM1:X"}
    assert len(frame) == sum(len(samples) for samples in history.values())
    assert frame[frame["channel"] == "SR:CURRENT"]["value"].between(400, 510).all()


# -- plugin registration -----------------------------------------------------------------


@pytest.mark.exercises_hook("register_connectors")
def test_the_mock_connector_plugin_registers_it(osprey_host: Any,
                                                register_plugin: Any) -> None:
    import osprey_core.plugins.mock_connector as plugin

    info = register_plugin(plugin)
    assert osprey_host.connectors().get("mock") is MockConnector
    assert osprey_host.connectors().origin("mock") == info.name
    assert MockConnector.settings_model is MockSettings


@pytest.mark.exercises_hook("register_archivers")
def test_the_mock_archiver_plugin_registers_it(osprey_host: Any, register_plugin: Any) -> None:
    import osprey_core.plugins.mock_archiver as plugin

    register_plugin(plugin)
    assert osprey_host.archivers().get("mock") is MockArchiver
    assert MockArchiver.settings_model is MockSettings


@pytest.mark.exercises_hook("register_config_sections")
def test_the_mock_config_section(osprey_host: Any, register_plugin: Any,
                                 tmp_path: Path, fast_machine: Path) -> None:
    import osprey_core.plugins.mock_connector as plugin
    from osprey_core.config import load_config

    register_plugin(plugin)
    assert osprey_host.config_sections()["mock"][0] is MockSettings
    config_file = tmp_path / "osprey.yml"
    config_file.write_text(f"mock:\n  machine_file: {fast_machine}\n  update_interval: 0.5\n")
    section = load_config(osprey_host, config_file, environ={}).section("mock")
    assert section.machine_file == fast_machine and section.update_interval == 0.5
    assert load_config(osprey_host, None, environ={}).section("mock") == MockSettings()

    async def scenario() -> float:
        connector = MockConnector(section, home=tmp_path)
        await connector.connect()
        return (await connector.read("PS1:SP")).value

    assert run(scenario()) == 0.0
    config_file.write_text("mock:\n  nosie: false\n")
    with pytest.raises(ConfigError, match="nosie"):
        load_config(osprey_host, config_file, environ={})


def test_the_built_in_plugins_are_discovered_as_entry_points() -> None:
    from osprey_core.plugin_host import load_plugins

    host = load_plugins(environ={"OSPREY_STRICT_PLUGINS": "1"})
    assert host.connectors().origin("mock") == "mock_connector"
    assert host.archivers().origin("mock") == "mock_archiver"
    assert host.config_sections()["mock"][1] == "mock_connector"


def test_loading_the_mock_plugins_stays_light() -> None:
    probe = (
        "import json, sys\n"
        "import osprey_core.plugins.mock_connector, osprey_core.plugins.mock_archiver\n"
        "print(json.dumps(sorted({'pydantic', 'yaml', 'numpy', 'openai', 'epics', 'tango'}"
        " & set(sys.modules))))"
    )
    result = subprocess.run([sys.executable, "-P", "-c", probe], capture_output=True,
                            text=True, check=True, timeout=60)
    assert json.loads(result.stdout) == []


@pytest.mark.parametrize("any_name_reads", [False, True])
def test_a_typo_on_the_command_line_fails_with_a_suggestion_unless_any_name_reads(
        tmp_path: Path, any_name_reads: bool) -> None:
    config = tmp_path / "osprey.yml"
    config.write_text(json.dumps({"control_system": {"type": "mock"},
                                  "mock": {"any_name_reads": any_name_reads}}))
    result = osprey("channels", "read", "SR:CURRNET", "--json", cwd=tmp_path,
                    env=osprey_env(tmp_path / "home", OSPREY_CONFIG=str(config)))
    if any_name_reads:
        assert_exit(result, 0)
        assert "value" in json.loads(result.stdout)["SR:CURRNET"]
    else:
        assert result.returncode != 0 and "Traceback" not in result.stderr
        error = json.loads(result.stdout)["SR:CURRNET"]["error"]
        assert "did you mean SR:CURRENT?" in error and "mock.any_name_reads" in error
