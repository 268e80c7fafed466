"""Property test: random values through the one write path never leave the limits on a real IOC.

Thousands of values (NaN, infinities, huge and tiny numbers, wrong types, steps beyond
``max_step``) go through :meth:`ControlSystem.write` and the EPICS connector to a
pythonSoftIOC ``ao`` whose own drive limits are far wider than the limits database, so
only osprey stands between the values and the record. After every attempt the IOC is read
with a separate client, and a monitor from that client records every value the record
ever took. Each example starts from a drawn state set by that client, so a failure replays
and shrinks.
"""

from __future__ import annotations

import asyncio
import importlib.util
import math
import threading
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("epics")
if importlib.util.find_spec("softioc") is None:  # never import it here: an in-process IOC
    pytest.skip("needs pythonSoftIOC", allow_module_level=True)  # changes libca
hypothesis = pytest.importorskip("hypothesis")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from support import iocs  # noqa: E402
from support.iocs import IOC, direct_read, direct_write  # noqa: E402

from osprey_core.control.epics import EpicsConnector, EpicsSettings  # noqa: E402
from osprey_core.control.limits import LimitsConfig, LimitsDatabase  # noqa: E402
from osprey_core.control.system import ControlSystem  # noqa: E402
from osprey_core.control.types import Reason, WriteRequest, WriteStatus  # noqa: E402

ca_repeater = iocs.ca_repeater
softioc_ioc = iocs.softioc_ioc
caproto_ioc = iocs.caproto_ioc
epics_client_env = iocs.epics_client_env

LOW, HIGH, MAX_STEP = -5.0, 5.0, 1.5
REQUEST = WriteRequest(actor="hypothesis", interface="property-test")

NOT_NUMBERS = st.one_of(
    st.none(), st.booleans(), st.text(max_size=6), st.binary(max_size=4),
    st.sampled_from(["1.0", "nan", "inf", " 2 ", "0x1", "", "-0"]),
    st.lists(st.floats(LOW, HIGH), max_size=3), st.tuples(st.integers(-3, 3)),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=2),
    st.complex_numbers(max_magnitude=3), st.sets(st.integers(0, 2), max_size=2),
)
ANY_FLOAT = st.floats()  # NaN, +-inf, +-1e308, subnormals, -0.0
SPECIAL = st.sampled_from([math.nan, -math.nan, math.inf, -math.inf, 1e308, -1e308, 5e-324,
                           -5e-324, 0.0, -0.0, LOW, HIGH, math.nextafter(HIGH, math.inf),
                           math.nextafter(LOW, -math.inf), 2**63, -(2**63), 10**300])
INTEGERS = st.one_of(st.integers(-8, 8), st.integers(-(10**30), 10**30))


#: Steps relative to the current value (drawn without looking at it, so hypothesis can
#: replay an example): just inside and just beyond max_step, and anything up to twice it.
STEPS = st.one_of(st.floats(-2 * MAX_STEP, 2 * MAX_STEP),
                  st.sampled_from(["+max", "-max", "+beyond", "-beyond"]))


def stepped(current: float, step: float | str) -> float:
    if isinstance(step, float):
        return current + step
    target = current + MAX_STEP if step.startswith("+") else current - MAX_STEP
    if step.endswith("beyond"):
        target = math.nextafter(target, math.inf if step.startswith("+") else -math.inf)
    return target


def expected_refusal(value: Any, current: float) -> Reason | None:
    """What the limits database must answer, worked out independently of the core."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return Reason.WRONG_TYPE
    if not math.isfinite(value):
        return Reason.NOT_FINITE
    if value < LOW:
        return Reason.BELOW_MIN
    if value > HIGH:
        return Reason.ABOVE_MAX
    if abs(value - current) > MAX_STEP:
        return Reason.STEP_TOO_LARGE
    return None


class Observer:
    """A second CA client (pyepics' own context): direct reads and every monitor update."""

    def __init__(self, name: str) -> None:
        import epics

        self.history: list[float] = []
        self.lock = threading.Lock()
        self.reader = epics.PV(name, auto_monitor=False, connection_timeout=5.0)
        self.monitor = epics.PV(name, auto_monitor=True, connection_timeout=5.0,
                                callback=self._record)
        if not (self.reader.wait_for_connection(5.0) and self.monitor.wait_for_connection(5.0)):
            raise RuntimeError(f"the observer cannot reach {name}")

    def _record(self, value: float | None = None, **_: Any) -> None:
        if value is not None:
            with self.lock:
                self.history.append(float(value))

    def read(self) -> float:
        value = self.reader.get(use_monitor=False, timeout=2.0)
        if value is None:
            raise TimeoutError("direct read timed out")
        return float(value)

    def set(self, value: float) -> None:
        """Put the record in a known state, as an operator would (bypasses osprey)."""
        if self.reader.put(value, wait=True, timeout=2.0) != 1:
            raise TimeoutError("direct put timed out")

    def close(self) -> None:
        self.monitor.clear_callbacks()
        self.monitor.disconnect()
        self.reader.disconnect()


@pytest.fixture(scope="module")
def rig(epics_client_env: dict[str, str], softioc_ioc: IOC
        ) -> Iterator[tuple[asyncio.Runner, ControlSystem, Observer, IOC]]:
    name = softioc_ioc.pv("PROP")
    assert (LOW, HIGH) != iocs.SOFTIOC_PROP_RANGE  # the IOC itself would allow far more
    direct_write(softioc_ioc, name, 0.0)
    limits = LimitsDatabase(LimitsConfig.model_validate({"channels": {name: {
        "writable": True, "type": "float", "min": LOW, "max": HIGH, "max_step": MAX_STEP,
        "verification": "readback"}}}))
    connector = EpicsConnector(EpicsSettings(addr_list=[softioc_ioc.address],
                                             auto_addr_list=False),
                               connection_timeout=2.0, read_timeout=2.0, write_timeout=3.0)
    system = ControlSystem(connector, limits, writes_enabled=True, verify_timeout=1.0)
    observer = Observer(name)
    with asyncio.Runner() as runner:
        runner.run(system.connect())
        try:
            yield runner, system, observer, softioc_ioc
        finally:
            runner.run(system.close())
            observer.close()


@settings(max_examples=2000, deadline=None, database=None, derandomize=False,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                 HealthCheck.data_too_large])
@given(data=st.data())
def test_random_writes_never_put_an_out_of_limit_value_on_the_ioc(
        rig: tuple[asyncio.Runner, ControlSystem, Observer, IOC], data: st.DataObject) -> None:
    runner, system, observer, ioc = rig
    name = ioc.pv("PROP")
    # every example starts from a drawn state, so hypothesis can replay and shrink it
    start = data.draw(st.one_of(st.floats(LOW, HIGH), st.sampled_from([LOW, HIGH, 0.0])),
                      label="start")
    observer.set(start)
    before = observer.read()
    assert before == start
    drawn = data.draw(st.one_of(st.tuples(st.just("step"), STEPS),
                                st.tuples(st.just("step"), STEPS),
                                st.tuples(st.just("value"), st.floats(LOW - 1, HIGH + 1)),
                                st.tuples(st.just("value"), st.one_of(
                                    ANY_FLOAT, SPECIAL, INTEGERS, NOT_NUMBERS))), label="write")
    value = stepped(before, drawn[1]) if drawn[0] == "step" else drawn[1]
    result = runner.run(asyncio.wait_for(system.write(name, value, REQUEST), 10))
    after = observer.read()

    assert LOW <= after <= HIGH, f"{value!r} left {after} on the IOC"
    assert abs(after - before) <= MAX_STEP, f"{value!r} moved the IOC from {before} to {after}"
    refusal = expected_refusal(value, before)
    if refusal is None:
        assert result.ok, result
        assert result.verified is True
        assert after == float(value)
    else:
        assert (result.status, result.reason) == (WriteStatus.BLOCKED, refusal), result
        assert after == before, f"blocked {value!r} still changed the IOC"


def test_the_ioc_never_saw_a_value_outside_the_limits(
        rig: tuple[asyncio.Runner, ControlSystem, Observer, IOC]) -> None:
    """Runs after the property test: every monitor update the record ever sent."""
    runner, _system, observer, ioc = rig
    runner.run(asyncio.sleep(0.3))  # the last monitor updates
    with observer.lock:
        history = list(observer.history)
    if len(history) < 50:
        pytest.skip("meaningful after the property test (run the whole module)")
    assert all(LOW <= value <= HIGH for value in history), [
        value for value in history if not LOW <= value <= HIGH]
    assert LOW <= direct_read(ioc, ioc.pv("PROP")) <= HIGH  # and by caproto's client


@pytest.mark.parametrize("value", [0.5, math.nan, "1", None, 1e9])
def test_with_writes_disabled_nothing_reaches_the_ioc(
        rig: tuple[asyncio.Runner, ControlSystem, Observer, IOC], value: Any) -> None:
    runner, system, observer, ioc = rig
    before = observer.read()
    disabled = ControlSystem(system.connector, system.limits, writes_enabled=False)
    result = runner.run(disabled.write(ioc.pv("PROP"), value, REQUEST))
    assert (result.status, result.reason) == (WriteStatus.BLOCKED, Reason.WRITES_DISABLED)
    assert observer.read() == before


def test_an_unlisted_channel_is_not_writable(
        rig: tuple[asyncio.Runner, ControlSystem, Observer, IOC]) -> None:
    runner, system, _observer, ioc = rig
    before = direct_read(ioc, ioc.pv("AO"))
    result = runner.run(system.write(ioc.pv("AO"), before, REQUEST))
    assert (result.status, result.reason) == (WriteStatus.BLOCKED, Reason.UNLISTED_CHANNEL)
    assert direct_read(ioc, ioc.pv("AO")) == before


def test_an_integer_beyond_the_float_range_is_above_max() -> None:
    from osprey_core.control.limits import ChannelLimits, check_value

    limits = ChannelLimits(writable=True, type="float", min=LOW, max=HIGH)
    assert check_value(10**400, limits) == (Reason.ABOVE_MAX,
                                            f"{10**400} is above the maximum {HIGH}")
