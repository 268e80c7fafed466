"""EPICS connector speed against raw pyepics, on one pythonSoftIOC with 1000 channels.

Starts a softIOC subprocess (loopback only, free ports) serving an ``ao`` and 1000 ``ai``
records, then measures in this process:

(a) single-read latency (median): ``EpicsConnector.read`` and ``ControlSystem.read``
    against ``epics.caget`` on the same PV. Target: <= 1.2x raw caget. The connector
    always asks the IOC (a fresh value with timestamp and alarm), so the like-for-like
    baseline is ``caget(use_monitor=False)``; plain ``caget`` answers from pyepics' monitor
    cache without a network round trip and is printed for reference, with its ratio.
(b) 1000 channels in one ``read_many`` batch, connected (warm): median of ``--runs``
    batches. Target: <= 100 ms. The first (cold) batch, which connects, and pyepics'
    ``caget_many`` on the same names are printed beside it.

Needs pyepics and softioc (``pip install 'osprey-core[epics]' softioc``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import socket
import statistics
import subprocess
import sys
import textwrap
import time
from collections.abc import Awaitable, Callable

LATENCY_TARGET = 1.2
BATCH_TARGET_MS = 100.0
CHANNELS = 1000
PREFIX = "OSPBENCH"

IOC_SCRIPT = textwrap.dedent(f"""
    from softioc import asyncio_dispatcher, builder, softioc
    dispatcher = asyncio_dispatcher.AsyncioDispatcher()
    builder.SetDeviceName("{PREFIX}")
    builder.aOut("AO", initial_value=1.5, EGU="A", PREC=3)
    for index in range({CHANNELS}):
        builder.aIn(f"AI{{index}}", initial_value=float(index), EGU="mA")
    builder.LoadDatabase()
    softioc.iocInit(dispatcher)
    print("READY", flush=True)
    softioc.non_interactive_ioc()
""")


def free_port() -> int:
    """A loopback port free for TCP and UDP (a CA server binds both)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp, \
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            tcp.bind(("127.0.0.1", 0))
            port = tcp.getsockname()[1]
            try:
                udp.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


def start_ioc(port: int, beacon_port: int) -> subprocess.Popen[str]:
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("EPICS_CA", "EPICS_PVA"))}
    env.update({"EPICS_CA_SERVER_PORT": str(port), "EPICS_CAS_INTF_ADDR_LIST": "127.0.0.1",
                "EPICS_CAS_BEACON_ADDR_LIST": "127.0.0.1",
                "EPICS_CAS_AUTO_BEACON_ADDR_LIST": "NO",
                "EPICS_CAS_BEACON_PORT": str(beacon_port),
                "EPICS_CA_REPEATER_PORT": str(beacon_port),
                "EPICS_CA_ADDR_LIST": "127.0.0.1", "EPICS_CA_AUTO_ADDR_LIST": "NO",
                "EPICS_IOC_IGNORE_SERVERS": "qsrv2", "PYTHONUNBUFFERED": "1"})
    process = subprocess.Popen([sys.executable, "-c", IOC_SCRIPT], env=env,
                               stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith("READY"):
            return process
        if time.monotonic() > deadline:
            break
    stop_ioc(process)
    sys.exit("the softIOC did not start (is softioc installed?)")


def stop_ioc(process: subprocess.Popen[str]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)  # softIOC ignores SIGTERM for seconds
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def median_us(call: Callable[[], object], count: int) -> float:
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1e6


async def amedian_us(call: Callable[[], Awaitable[object]], count: int) -> float:
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        await call()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1e6


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


async def measure_connector(address: str, names: list[str], reads: int, runs: int
                            ) -> dict[str, float]:
    from osprey_core.control.epics import EpicsConnector, EpicsSettings
    from osprey_core.control.limits import LimitsConfig, LimitsDatabase
    from osprey_core.control.system import ControlSystem

    connector = EpicsConnector(EpicsSettings(addr_list=[address], auto_addr_list=False),
                               connection_timeout=5.0, read_timeout=5.0)
    system = ControlSystem(connector, LimitsDatabase(LimitsConfig()), writes_enabled=False)
    pv = f"{PREFIX}:AO"
    figures: dict[str, float] = {}
    async with system:
        value = await system.read(pv)
        if value.value != 1.5 or value.units != "A":
            sys.exit(f"unexpected reading {value}")
        for _ in range(200):  # warm-up
            await connector.read(pv)
        figures["connector"] = await amedian_us(lambda: connector.read(pv), reads)
        figures["system"] = await amedian_us(lambda: system.read(pv), reads)
        started = time.perf_counter()
        batch = await connector.read_many(names)
        figures["cold_ms"] = (time.perf_counter() - started) * 1e3
        if batch.errors or len(batch.values) != len(names):
            sys.exit(f"batch read failed: {len(batch.errors)} errors, e.g. "
                     f"{next(iter(batch.errors.values()), None)}")
        durations = []
        for _ in range(runs):
            started = time.perf_counter()
            batch = await connector.read_many(names)
            durations.append((time.perf_counter() - started) * 1e3)
            if len(batch.values) != len(names):
                sys.exit(f"batch read lost channels: {len(batch.errors)} errors")
        figures["batch_ms"] = statistics.median(durations)
        figures["batch_best_ms"] = min(durations)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20, help="warm batches of 1000 reads")
    parser.add_argument("--reads", type=int, default=3000, help="single reads per figure")
    args = parser.parse_args()

    port, beacon_port = free_port(), free_port()
    process = start_ioc(port, beacon_port)
    address = f"127.0.0.1:{port}"
    try:
        # pyepics' own context reads these when it first searches: set them before
        os.environ.update({"EPICS_CA_ADDR_LIST": address, "EPICS_CA_AUTO_ADDR_LIST": "NO",
                           "EPICS_CA_REPEATER_PORT": str(beacon_port)})
        import epics

        pv = f"{PREFIX}:AO"
        names = [f"{PREFIX}:AI{index}" for index in range(CHANNELS)]
        if epics.caget(pv, connection_timeout=10.0) != 1.5:
            sys.exit("pyepics cannot read the softIOC")
        for _ in range(200):
            epics.caget(pv, use_monitor=False)
        fresh = median_us(lambda: epics.caget(pv, use_monitor=False), args.reads)
        cached = median_us(lambda: epics.caget(pv), args.reads)
        epics.caget_many(names, connection_timeout=10.0)
        raw_batches = []
        for _ in range(max(3, args.runs // 4)):
            started = time.perf_counter()
            epics.caget_many(names)
            raw_batches.append((time.perf_counter() - started) * 1e3)
        raw_batch = statistics.median(raw_batches)

        figures = asyncio.run(measure_connector(address, names, args.reads, args.runs))
    finally:
        stop_ioc(process)

    connector, system = figures["connector"], figures["system"]
    print(f"EPICS channel access on a local softIOC, {args.reads} single reads each, "
          f"{args.runs} warm batches of {CHANNELS}")
    print(f"{'single read (median)':44}{'us':>9}{'ratio':>9}")
    print(f"{'raw caget(use_monitor=False): fresh value':44}{fresh:9.1f}{1.0:9.2f}")
    print(f"{'EpicsConnector.read (fresh value + alarm)':44}{connector:9.1f}"
          f"{connector / fresh:9.2f}")
    print(f"{'ControlSystem.read':44}{system:9.1f}{system / fresh:9.2f}")
    print(f"{'raw caget(): monitor cache, no round trip':44}{cached:9.1f}"
          f"{connector / cached:9.2f}  (connector / cached caget)")
    print(f"{'batch of 1000 channels':44}{'ms':>9}")
    print(f"{'EpicsConnector.read_many, warm (median)':44}{figures['batch_ms']:9.1f}")
    print(f"{'EpicsConnector.read_many, warm (best)':44}{figures['batch_best_ms']:9.1f}")
    print(f"{'EpicsConnector.read_many, cold (connects)':44}{figures['cold_ms']:9.1f}")
    print(f"{'raw caget_many, warm (median)':44}{raw_batch:9.1f}")
    print(f"read latency vs raw caget(use_monitor=False) <= {LATENCY_TARGET}x: "
          f"{connector / fresh:.2f}x {verdict(connector <= LATENCY_TARGET * fresh)}")
    print(f"read latency vs raw caget() from the monitor cache <= {LATENCY_TARGET}x: "
          f"{connector / cached:.2f}x {verdict(connector <= LATENCY_TARGET * cached)} "
          "(not like for like: the connector never serves a cached value)")
    print(f"1000 channels in one batch <= {BATCH_TARGET_MS:.0f} ms: "
          f"{figures['batch_ms']:.1f} ms {verdict(figures['batch_ms'] <= BATCH_TARGET_MS)}")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
