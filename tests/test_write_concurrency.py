"""Concurrent writers cannot add up past ``max_step``: read-check-put is serialised per channel.

The IOC half runs a pythonSoftIOC whose ``ao`` record prints every value it processes
(``on_update``), so the test sees each put that reached the record, in order, no matter
which client made it. Writers read the channel, aim a step of nearly ``max_step`` up or
down from what they read, and write through :meth:`ControlSystem.write`; without a lock,
two writers that read the same value can both pass the check and together move the record
by twice the limit. Writers run as tasks on one event loop, as threads each with their own
loop, connector and control system, and as separate processes sharing a lock directory.

The other half checks the lock itself against in-memory connectors: bounded waiting ends
in ``busy``, a lock that cannot be taken blocks the write, both audited.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from osprey_core.control.limits import LimitsConfig, LimitsDatabase
from osprey_core.control.system import ControlSystem
from osprey_core.control.types import Reason, WriteAck, WriteRequest, WriteResult, WriteStatus
from osprey_core.models import AuditRecord
from osprey_core.testing.fakes import FakeConnector

REQUEST = WriteRequest(actor="hypothesis", interface="concurrency-test")
LOW, HIGH, MAX_STEP, INITIAL = -500.0, 500.0, 1.0, 0.0


class Recorder:
    """A thread-safe audit sink that keeps every record."""

    def __init__(self) -> None:
        self.records: list[AuditRecord] = []
        self.lock = threading.Lock()

    def __call__(self, record: AuditRecord) -> None:
        with self.lock:
            self.records.append(record)

    def actions(self) -> list[str]:
        with self.lock:
            return [record.action for record in self.records]


# -- the lock itself, against in-memory connectors --------------------------------------------

CHANNELS = {"HCM1:SP": 0.0}
LIMITS = {"channels": {"HCM1:SP": {"writable": True, "min": -10, "max": 10, "max_step": 2,
                                   "verification": "readback"}}}


class Gate(FakeConnector):
    """Holds every write until ``release`` is set (from any thread)."""

    name = "gate"
    initial_values = CHANNELS
    entered = threading.Event()
    release = threading.Event()

    async def write(self, channel: str, value: Any) -> WriteAck:
        await asyncio.sleep(0.01)  # a round trip: other tasks run meanwhile
        Gate.entered.set()
        while not Gate.release.is_set():
            await asyncio.sleep(0.005)
        return await super().write(channel, value)


@pytest.fixture
def gate() -> Iterator[type[Gate]]:
    Gate.entered.clear()
    Gate.release.clear()
    yield Gate
    Gate.release.set()


def gated_system(lock_dir: Path | None, *, lock_timeout: float = 5.0,
                 audit: Recorder | None = None) -> tuple[ControlSystem, Gate, Recorder]:
    recorder = audit or Recorder()
    connector = Gate(write_timeout=10.0)
    control = ControlSystem(connector, LimitsDatabase(LimitsConfig.model_validate(LIMITS)),
                            writes_enabled=True, verify_timeout=0.5, audit=recorder,
                            lock_dir=lock_dir, lock_timeout=lock_timeout)
    return control, connector, recorder


def busy(result: WriteResult) -> None:
    assert (result.status, result.reason) == (WriteStatus.BLOCKED, Reason.BUSY), result
    assert "HCM1:SP" in result.message


@pytest.mark.parametrize("with_lock_dir", [False, True])
def test_a_second_control_system_in_another_thread_waits_then_reports_busy(
        tmp_path: Path, gate: type[Gate], with_lock_dir: bool) -> None:
    lock_dir = tmp_path / "locks" if with_lock_dir else None
    first, first_connector, _ = gated_system(lock_dir)
    second, second_connector, audit = gated_system(lock_dir, lock_timeout=0.3)
    outcome: list[WriteResult] = []
    holder = threading.Thread(target=lambda: outcome.append(
        asyncio.run(first.write("HCM1:SP", 1.0, REQUEST))))
    holder.start()
    assert gate.entered.wait(5)
    started = time.monotonic()
    result = asyncio.run(second.write("HCM1:SP", 1.5, REQUEST))
    waited = time.monotonic() - started
    gate.release.set()
    holder.join(5)
    busy(result)
    assert 0.3 <= waited < 2.0
    assert audit.actions() == ["channel_write_blocked"]
    assert audit.records[0].details["reason"] == "busy"
    assert second_connector.writes == []
    assert outcome[0].ok and first_connector.writes == [("HCM1:SP", 1.0)]


def test_tasks_on_one_loop_take_turns_and_each_checks_the_value_left_by_the_last(
        gate: type[Gate]) -> None:
    gate.release.set()
    control, connector, _ = gated_system(None)

    async def both() -> list[WriteResult]:
        return list(await asyncio.gather(control.write("HCM1:SP", 2.0, REQUEST),
                                          control.write("HCM1:SP", -2.0, REQUEST)))

    results = asyncio.run(both())
    # whichever went first, the other is then 4 away: one ok, one step_too_large
    assert sorted(str(result.status) for result in results) == ["blocked", "ok"]
    assert next(r for r in results if not r.ok).reason is Reason.STEP_TOO_LARGE
    assert len(connector.writes) == 1


HOLD_LOCKS = textwrap.dedent("""
    import fcntl, os, sys, time
    files = [open(os.path.join(sys.argv[1], name), "a") for name in os.listdir(sys.argv[1])]
    for handle in files:
        fcntl.flock(handle, fcntl.LOCK_EX)
    print("HELD", len(files), flush=True)
    sys.stdin.readline()
""")


def test_a_write_waits_for_another_process_holding_the_channel_lock(
        tmp_path: Path, gate: type[Gate]) -> None:
    gate.release.set()
    lock_dir = tmp_path / "locks"
    control, connector, audit = gated_system(lock_dir, lock_timeout=0.3)
    assert asyncio.run(control.write("HCM1:SP", 1.0, REQUEST)).ok  # creates the lock file
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCKS, str(lock_dir)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().split() == ["HELD", "1"]
        busy(asyncio.run(control.write("HCM1:SP", 2.0, REQUEST)))
    finally:
        holder.communicate("\n", timeout=10)
    assert asyncio.run(control.write("HCM1:SP", 2.0, REQUEST)).ok  # released with the process
    assert connector.writes == [("HCM1:SP", 1.0), ("HCM1:SP", 2.0)]
    assert audit.actions() == ["channel_write_started", "channel_write_ok",
                               "channel_write_blocked",
                               "channel_write_started", "channel_write_ok"]


def test_a_lock_that_cannot_be_taken_blocks_the_write(tmp_path: Path, gate: type[Gate]) -> None:
    gate.release.set()
    (tmp_path / "file").write_text("not a directory")
    control, connector, audit = gated_system(tmp_path / "file" / "locks")
    result = asyncio.run(control.write("HCM1:SP", 1.0, REQUEST))
    assert (result.status, result.reason) == (WriteStatus.BLOCKED, Reason.LOCK_ERROR), result
    assert "lock" in result.message
    assert connector.writes == []
    assert audit.actions() == ["channel_write_blocked"]


def test_a_cancelled_write_releases_the_lock(tmp_path: Path, gate: type[Gate]) -> None:
    control, connector, _ = gated_system(tmp_path / "locks", lock_timeout=0.5)

    async def cancel_then_write() -> WriteResult:
        hung = asyncio.create_task(control.write("HCM1:SP", 1.0, REQUEST))
        while not gate.entered.is_set():
            await asyncio.sleep(0.005)
        hung.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await hung
        gate.release.set()
        return await control.write("HCM1:SP", 1.5, REQUEST)

    assert asyncio.run(cancel_then_write()).ok
    assert connector.writes == [("HCM1:SP", 1.5)]


# -- against a real IOC ------------------------------------------------------------------------

softioc_available = importlib.util.find_spec("softioc") is not None \
    and importlib.util.find_spec("epics") is not None
needs_ioc = pytest.mark.skipif(not softioc_available, reason="needs pyepics and pythonSoftIOC")

#: The IOC: one ``ao`` whose own drive limits are far wider than the limits database, and
#: which prints every value it processes, in order.
IOC_SCRIPT = textwrap.dedent("""
    import sys
    from softioc import asyncio_dispatcher, builder, softioc

    dispatcher = asyncio_dispatcher.AsyncioDispatcher()
    builder.SetDeviceName(sys.argv[1])
    builder.aOut("STEP", initial_value=0.0, DRVL=-1000.0, DRVH=1000.0, PREC=6,
                 always_update=True, on_update=lambda value: print("SEEN", repr(value),
                                                                   flush=True))
    builder.LoadDatabase()
    softioc.iocInit(dispatcher)
    print("READY", flush=True)
    softioc.non_interactive_ioc()
""")

#: One writer process: ``python -c WRITER ADDRESS CHANNEL LOCK_DIR PLAN_JSON``; prints how
#: many puts it started.
WRITER = textwrap.dedent("""
    import asyncio, json, sys
    from pathlib import Path
    from osprey_core.control.epics import EpicsConnector, EpicsSettings
    from osprey_core.control.limits import LimitsConfig, LimitsDatabase
    from osprey_core.control.system import ControlSystem
    from osprey_core.control.types import WriteRequest

    address, channel, lock_dir, plan = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
    started = []

    async def main():
        connector = EpicsConnector(EpicsSettings(addr_list=[address], auto_addr_list=False),
                                   connection_timeout=5.0, read_timeout=5.0,
                                   write_timeout=5.0)
        limits = LimitsDatabase(LimitsConfig.model_validate(json.loads(sys.argv[5])))
        async with ControlSystem(connector, limits, writes_enabled=True, verify_timeout=2.0,
                                 audit=lambda r: started.append(r.action),
                                 lock_dir=Path(lock_dir), lock_timeout=30.0) as system:
            print("CONNECTED", flush=True)
            sys.stdin.readline()
            request = WriteRequest(actor="writer", interface="process")
            for step in json.loads(plan):
                current = (await system.read(channel)).value
                await system.write(channel, current + step, request)

    asyncio.run(main())
    print(json.dumps({"started": started.count("channel_write_started")}), flush=True)
""")


def limits_for(channel: str) -> dict[str, Any]:
    return {"channels": {channel: {"writable": True, "type": "float", "min": LOW,
                                   "max": HIGH, "max_step": MAX_STEP,
                                   "verification": "readback",
                                   "tolerance": {"absolute": 1e-9}}}}


class LoggingIOC:
    """The IOC subprocess and the values its record was given, parsed from its output."""

    def __init__(self, repeater_port: int) -> None:
        from support import iocs

        port = iocs.free_port()
        prefix = f"OSPW{os.getpid() % 10000}{port}:"
        self.process = subprocess.Popen(
            [sys.executable, "-c", IOC_SCRIPT, prefix.rstrip(":")],
            env=iocs.server_env(port, repeater_port), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.ioc = iocs.IOC("softioc", prefix, port, repeater_port, self.process)
        self.channel = self.ioc.pv("STEP")
        self.lines: list[str] = []
        self.ready = threading.Event()
        threading.Thread(target=self._pump, daemon=True).start()
        if not self.ready.wait(30) or self.process.poll() is not None:
            self.ioc.stop()
            raise RuntimeError("the logging IOC did not start:\n" + "\n".join(self.lines))
        deadline = time.monotonic() + 30
        while not self._answers():
            if time.monotonic() > deadline:
                self.ioc.stop()
                raise RuntimeError("the logging IOC does not answer")

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip())
            if line.startswith("READY"):
                self.ready.set()
        self.ready.set()

    def _answers(self) -> bool:
        from support import iocs

        try:
            iocs.direct_read(self.ioc, self.channel, timeout=1.0)
        except Exception:
            return False
        return True

    def seen(self) -> list[float]:
        return [float(line.split()[1]) for line in list(self.lines)
                if line.startswith("SEEN ")]

    def wait_for(self, count: int, timeout: float = 10.0) -> list[float]:
        """The values seen, once there are at least ``count`` (the log lags the puts)."""
        deadline = time.monotonic() + timeout
        while len(values := self.seen()) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        return values


@pytest.fixture(scope="module")
def logging_ioc(request: pytest.FixtureRequest) -> Iterator[LoggingIOC]:
    if not softioc_available:
        pytest.skip("needs pyepics and pythonSoftIOC")
    repeater = request.getfixturevalue("ca_repeater")
    ioc = LoggingIOC(repeater.port)
    yield ioc
    ioc.ioc.stop()


if softioc_available:
    from support import iocs

    ca_repeater = iocs.ca_repeater


def too_large(values: Sequence[float], before: float) -> list[tuple[float, float]]:
    """Consecutive values on the IOC more than ``max_step`` apart."""
    pairs = zip([before, *values], values, strict=False)
    return [(a, b) for a, b in pairs if abs(b - a) > MAX_STEP]


class Round:
    """One run of concurrent writers: the IOC values they produced, checked at the end."""

    def __init__(self, ioc: LoggingIOC) -> None:
        self.ioc = ioc
        self.offset = len(ioc.seen())
        self.before = ioc.seen()[-1] if self.offset else INITIAL

    def check(self, puts: int) -> list[float]:
        assert puts > 0, "no write got through: nothing was tested"
        values = self.ioc.wait_for(self.offset + puts)[self.offset:]
        assert len(values) == puts, f"the IOC logged {len(values)} values for {puts} puts"
        bad = too_large(values, self.before)
        assert not bad, (f"{len(bad)} of {len(values)} steps reached the IOC beyond max_step "
                         f"{MAX_STEP}: {bad[:5]}")
        return values


def epics_system(ioc: LoggingIOC, audit: Recorder, lock_dir: Path | None) -> ControlSystem:
    from osprey_core.control.epics import EpicsConnector, EpicsSettings

    connector = EpicsConnector(EpicsSettings(addr_list=[ioc.ioc.address], auto_addr_list=False),
                               connection_timeout=5.0, read_timeout=5.0, write_timeout=5.0)
    return ControlSystem(connector, LimitsDatabase(LimitsConfig.model_validate(
        limits_for(ioc.channel))), writes_enabled=True, verify_timeout=2.0, audit=audit,
        lock_dir=lock_dir, lock_timeout=30.0)


async def follow(system: ControlSystem, channel: str, steps: Sequence[float]) -> None:
    """Read, then write the value read plus the next step: a writer working from a
    reading it took itself, as an agent does."""
    for step in steps:
        current = (await system.read(channel)).value
        await system.write(channel, current + step, REQUEST)


#: Steps of nearly max_step, up or down: two of them from one reading add up past it.
STEP = st.builds(lambda sign, size: sign * size, st.sampled_from([-1.0, 1.0]),
                 st.floats(0.6 * MAX_STEP, MAX_STEP))
PLANS = st.lists(st.lists(STEP, min_size=10, max_size=16), min_size=8, max_size=8)
#: No shrinking: interleavings do not replay, so a smaller plan would not fail the same way.
IOC_SETTINGS = settings(max_examples=4, deadline=None, database=None,
                        phases=[Phase.generate],
                        suppress_health_check=[HealthCheck.function_scoped_fixture,
                                               HealthCheck.too_slow])


def started(audit: Recorder) -> int:
    return audit.actions().count("channel_write_started")


@needs_ioc
@pytest.mark.parametrize("shared", [True, False], ids=["one-system", "system-per-task"])
@IOC_SETTINGS
@given(plans=PLANS)
def test_tasks_on_one_loop_never_step_past_max_step(logging_ioc: LoggingIOC, shared: bool,
                                                    plans: list[list[float]]) -> None:
    round_ = Round(logging_ioc)
    audit = Recorder()

    async def run() -> None:
        systems = [epics_system(logging_ioc, audit, None)
                   for _ in range(1 if shared else len(plans))]
        for system in systems:
            await system.connect()
        try:
            await asyncio.gather(*(follow(systems[index % len(systems)], logging_ioc.channel,
                                          plan) for index, plan in enumerate(plans)))
        finally:
            for system in systems:
                await system.close()

    asyncio.run(asyncio.wait_for(run(), 60))
    round_.check(started(audit))


@needs_ioc
@pytest.mark.parametrize("with_lock_dir", [False, True], ids=["process-lock", "lock-dir"])
@IOC_SETTINGS
@given(plans=PLANS)
def test_threads_with_their_own_loops_never_step_past_max_step(
        logging_ioc: LoggingIOC, tmp_path: Path, with_lock_dir: bool,
        plans: list[list[float]]) -> None:
    round_ = Round(logging_ioc)
    audit = Recorder()
    lock_dir = tmp_path / "locks" if with_lock_dir else None
    barrier = threading.Barrier(len(plans))
    errors: list[BaseException] = []

    def writer(plan: list[float]) -> None:
        async def run() -> None:
            async with epics_system(logging_ioc, audit, lock_dir) as system:
                await asyncio.to_thread(barrier.wait, 30)
                await follow(system, logging_ioc.channel, plan)

        try:
            asyncio.run(asyncio.wait_for(run(), 60))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(plan,)) for plan in plans]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(90)
    assert not errors, errors
    round_.check(started(audit))


@needs_ioc
def test_processes_sharing_a_lock_dir_never_step_past_max_step(
        logging_ioc: LoggingIOC, tmp_path: Path) -> None:
    import random

    round_ = Round(logging_ioc)
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    env = {**os.environ, "EPICS_CA_REPEATER_PORT": str(logging_ioc.ioc.repeater_port)}
    writers = []
    for _ in range(3):
        plan = [rng.choice([-1, 1]) * rng.uniform(0.6, 1.0) * MAX_STEP for _ in range(120)]
        writers.append(subprocess.Popen(
            [sys.executable, "-c", WRITER, logging_ioc.ioc.address, logging_ioc.channel,
             str(tmp_path / "locks"), json.dumps(plan),
             json.dumps(limits_for(logging_ioc.channel))],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
            cwd=tmp_path))
    try:
        for process in writers:  # all connected, then all go at once
            assert process.stdout is not None
            assert process.stdout.readline().strip() == "CONNECTED", f"seed {seed}"
        for process in writers:
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        outputs = [process.communicate(timeout=60)[0] for process in writers]
    finally:
        for process in writers:
            if process.poll() is None:
                process.kill()
    assert all(process.returncode == 0 for process in writers), outputs
    puts = sum(json.loads(output.strip().splitlines()[-1])["started"] for output in outputs)
    assert puts > 0, f"seed {seed}"
    round_.check(puts)
