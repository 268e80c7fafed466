"""Real EPICS IOCs for the tests: a caproto IOC and a pythonSoftIOC, each a subprocess.

Every IOC listens on its own free loopback port (``EPICS_CA_SERVER_PORT``), binds only to
127.0.0.1, sends beacons only to 127.0.0.1, and serves PVs under a random prefix, so test
sessions running side by side never see each other's channels. Servers stop on SIGINT
(they ignore SIGTERM for seconds).

Use the fixtures by importing them into a test module::

    from support.iocs import caproto_ioc, epics_client_env, softioc_ioc  # noqa: F401

``epics_client_env`` points this process's Channel Access clients (pyepics' initial
context, caproto's clients) at the session's IOCs before anything reads the variables.

Run as a script, this file *is* the IOC: ``python tests/support/iocs.py caproto|softioc PREFIX``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
LOOPBACK = "127.0.0.1"
START_TIMEOUT = 30.0

# -- the servers (run in the subprocess) ---------------------------------------------------

#: What the softIOC's property-test channel allows on the IOC side: deliberately wider
#: than the limits database of the property test, so only osprey can keep values inside.
SOFTIOC_PROP_RANGE = (-1000.0, 1000.0)


def _serve_caproto(prefix: str) -> None:
    from caproto import ChannelType
    from caproto.server import PVGroup, pvproperty, run

    class TestIOC(PVGroup):
        flt = pvproperty(name="FLOAT", value=1.5, units="mA", precision=3, record="ao",
                         doc="caproto test float", lower_ctrl_limit=-10.0,
                         upper_ctrl_limit=10.0, lower_disp_limit=-20.0, upper_disp_limit=20.0)
        integer = pvproperty(name="INT", value=3, dtype=int, units="counts")
        text = pvproperty(name="STRING", value="hello", dtype=ChannelType.STRING)
        mode = pvproperty(name="ENUM", value="OFF", dtype=ChannelType.ENUM,
                          enum_strings=("OFF", "ON", "STANDBY"))
        wave = pvproperty(name="ARRAY", value=[0.0, 1.0, 2.0, 3.0], max_length=8)
        chars = pvproperty(name="CHARS", value="osprey", dtype=ChannelType.CHAR,
                           max_length=40, report_as_string=True)
        read_only = pvproperty(name="READONLY", value=42.0, read_only=True)
        guarded = pvproperty(name="GUARDED", value=0.0)

        @guarded.putter
        async def guarded(self, instance: Any, value: float) -> float:
            if not 0.0 <= value <= 10.0:
                raise ValueError(f"{value} is outside 0..10")
            return value

    ioc = TestIOC(prefix=prefix)
    print("READY", flush=True)
    run(ioc.pvdb, interfaces=[LOOPBACK])


def _serve_softioc(prefix: str, count: int) -> None:
    from softioc import asyncio_dispatcher, builder, softioc

    dispatcher = asyncio_dispatcher.AsyncioDispatcher()
    builder.SetDeviceName(prefix.rstrip(":"))
    builder.aOut("AO", initial_value=1.0, DRVL=-10.0, DRVH=10.0, LOPR=-20.0, HOPR=20.0,
                 EGU="A", PREC=3, DESC="softIOC test ao")
    low, high = SOFTIOC_PROP_RANGE
    builder.aOut("PROP", initial_value=0.0, DRVL=low, DRVH=high, EGU="A", PREC=6)
    builder.aOut("ALARM", initial_value=0.0, HIGH=5.0, HSV="MINOR", HIHI=8.0, HHSV="MAJOR")
    builder.longOut("LONG", initial_value=7, DRVL=-100, DRVH=100, EGU="counts")
    builder.stringOut("STR", initial_value="hello")
    builder.mbbOut("MODE", "OFF", "ON", "STANDBY", initial_value=0)
    builder.WaveformOut("WAVE", [0.0, 1.0, 2.0, 3.0, 4.0])
    builder.longStringOut("LSTR", initial_value="a long string value", length=80)
    for index in range(count):
        builder.aIn(f"AI{index}", initial_value=float(index))
    builder.LoadDatabase()
    softioc.iocInit(dispatcher)
    print("READY", flush=True)
    softioc.non_interactive_ioc()


# -- starting and stopping ---------------------------------------------------------------

_port_lock = threading.Lock()
_ports_handed_out: set[int] = set()


def free_port() -> int:
    """A loopback port free for both TCP and UDP right now (CA servers use both)."""
    with _port_lock:
        for _ in range(200):
            with contextlib.ExitStack() as stack:
                tcp = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
                tcp.bind((LOOPBACK, 0))
                port = tcp.getsockname()[1]
                udp = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
                try:
                    udp.bind((LOOPBACK, port))
                except OSError:
                    continue
            if port not in _ports_handed_out:
                _ports_handed_out.add(port)
                return port
    raise RuntimeError("no free loopback port for an IOC")


class Repeater:
    """A Channel Access repeater bound to loopback only (caRepeater is not installed here).

    libca clients register with it (REPEATER_REGISTER) and it forwards the IOCs' beacons
    to them, as caRepeater does at a facility; without one, every new CA context tries to
    spawn caRepeater and prints that it cannot find it.
    """

    REGISTER, CONFIRM, BEACON = 24, 17, 13

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.socket.bind((LOOPBACK, self.port))
        self.socket.settimeout(0.2)
        self.clients: set[tuple[str, int]] = set()
        self.running = True
        self.thread = threading.Thread(target=self._serve, name="ca-repeater", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        import struct

        while self.running:
            try:
                data, source = self.socket.recvfrom(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            command = struct.unpack_from(">H", data)[0] if len(data) >= 16 else None
            if command == self.REGISTER or not data:  # empty: old clients' registration
                self.clients.add(source)
                confirm = struct.pack(">HHHHII", self.CONFIRM, 0, 0, 0, 0,
                                      int.from_bytes(socket.inet_aton(source[0]), "big"))
                with contextlib.suppress(OSError):
                    self.socket.sendto(confirm, source)
                continue
            if command is None:
                continue
            if command == self.BEACON and struct.unpack_from(">I", data, 12)[0] == 0:
                data = data[:12] + socket.inet_aton(source[0]) + data[16:]
            for client in list(self.clients):
                if client == source:
                    continue
                try:
                    self.socket.sendto(data, client)
                except OSError:  # the client has gone
                    self.clients.discard(client)

    def stop(self) -> None:
        self.running = False
        self.socket.close()
        self.thread.join(timeout=2)


def server_env(port: int, repeater_port: int) -> dict[str, str]:
    """Environment of an IOC: loopback only, its own ports, no PV Access."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("EPICS_CA", "EPICS_PVA", "OSPREY"))}
    env.update({
        "EPICS_CA_SERVER_PORT": str(port),
        "EPICS_CA_REPEATER_PORT": str(repeater_port),
        "EPICS_CAS_INTF_ADDR_LIST": LOOPBACK,
        "EPICS_CAS_BEACON_ADDR_LIST": LOOPBACK,
        "EPICS_CAS_AUTO_BEACON_ADDR_LIST": "NO",
        "EPICS_CAS_BEACON_PORT": str(repeater_port),
        "EPICS_CA_ADDR_LIST": LOOPBACK,
        "EPICS_CA_AUTO_ADDR_LIST": "NO",
        # pythonSoftIOC also loads the PV Access server (QSRV2): keep it off the network.
        "EPICS_IOC_IGNORE_SERVERS": "qsrv2",
        "EPICS_PVAS_INTF_ADDR_LIST": LOOPBACK,
        "EPICS_PVAS_SERVER_PORT": str(free_port()),
        "EPICS_PVAS_BROADCAST_PORT": str(free_port()),
        "EPICS_PVAS_AUTO_BEACON_ADDR_LIST": "NO",
        "EPICS_PVAS_BEACON_ADDR_LIST": LOOPBACK,
        "PYTHONUNBUFFERED": "1",
    })
    return env


@dataclass
class IOC:
    """One running IOC subprocess."""

    kind: str
    prefix: str
    port: int
    repeater_port: int
    process: subprocess.Popen[str]
    output: list[str] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def pv(self, suffix: str) -> str:
        return f"{self.prefix}{suffix}"

    def client_env(self) -> dict[str, str]:
        """Variables that point a Channel Access client at this IOC only."""
        return {"EPICS_CA_ADDR_LIST": self.address, "EPICS_CA_AUTO_ADDR_LIST": "NO",
                "EPICS_CA_REPEATER_PORT": str(self.repeater_port)}

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)


def start_ioc(kind: str, *, prefix: str | None = None, count: int = 0,
              repeater_port: int | None = None, port: int | None = None,
              timeout: float = START_TIMEOUT) -> IOC:
    """Start a ``caproto`` or ``softioc`` IOC and wait until it serves its PVs."""
    if kind not in ("caproto", "softioc"):
        raise ValueError(f"unknown IOC kind {kind!r}")
    prefix = prefix or f"OSPT{secrets.token_hex(3).upper()}:"
    port = port or free_port()
    # beacons go where this process's clients listen (the session repeater), by default
    repeater_port = repeater_port or int(os.environ.get("EPICS_CA_REPEATER_PORT", 0)) \
        or free_port()
    process = subprocess.Popen(
        [sys.executable, str(HERE), kind, prefix, str(count)],
        env=server_env(port, repeater_port), stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    ioc = IOC(kind, prefix, port, repeater_port, process)
    ready = threading.Event()

    def pump() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            ioc.output.append(line.rstrip())
            if line.startswith("READY"):
                ready.set()
        ready.set()

    threading.Thread(target=pump, name=f"ioc-{kind}-output", daemon=True).start()
    deadline = time.monotonic() + timeout
    try:
        if not ready.wait(timeout) or process.poll() is not None:
            raise RuntimeError(f"{kind} IOC did not start:\n" + "\n".join(ioc.output[-30:]))
        probe = ioc.pv("FLOAT" if kind == "caproto" else "AO")
        while not _answers(ioc, probe, timeout=min(2.0, max(0.1, deadline - time.monotonic()))):
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError(f"{kind} IOC does not answer on {ioc.address}:\n"
                                   + "\n".join(ioc.output[-30:]))
    except BaseException:
        ioc.stop()
        raise
    return ioc


def _answers(ioc: IOC, pv: str, *, timeout: float) -> bool:
    try:
        direct_read(ioc, pv, timeout=timeout)
    except Exception:
        return False
    return True


# -- an independent client (caproto's pure-Python sync client, not pyepics) ----------------

_env_lock = threading.Lock()


@contextlib.contextmanager
def _client_env(values: Mapping[str, str]) -> Iterator[None]:
    with _env_lock:
        saved = {key: os.environ.get(key) for key in values}
        os.environ.update(values)
        try:
            yield
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def direct_read(ioc: IOC, pv: str, *, timeout: float = 2.0) -> Any:
    """Read ``pv`` from ``ioc`` with caproto's own client: scalars as Python values."""
    from caproto.sync.client import read

    with _client_env(ioc.client_env()):
        response = read(pv, timeout=timeout, repeater=False)
    data = response.data
    values = [item.decode("latin-1") if isinstance(item, bytes) else item.item()
              if hasattr(item, "item") else item for item in data]
    return values[0] if len(values) == 1 else values


def direct_write(ioc: IOC, pv: str, value: Any, *, timeout: float = 2.0) -> None:
    """Write ``pv`` on ``ioc`` with caproto's own client (waits for completion)."""
    from caproto.sync.client import write

    with _client_env(ioc.client_env()):
        write(pv, value, notify=True, timeout=timeout, repeater=False)


# -- pytest fixtures ---------------------------------------------------------------------

try:
    import pytest
except ImportError:  # run as the IOC script without pytest around
    pytest = None  # type: ignore[assignment]

#: One repeater and one IOC of each kind per process. Test modules import the fixtures
#: below, which makes each module's copy a separate fixture for pytest; sharing the
#: servers here keeps them to one set per session (and pyepics' context, which reads
#: EPICS_CA_ADDR_LIST once, pointed at the right ones).
_shared: dict[str, Any] = {}


def _shared_server(key: str, start: Any) -> Iterator[Any]:
    if key not in _shared:
        _shared[key] = start()
    yield _shared[key]
    server = _shared.pop(key, None)  # the first teardown, at the end of the session
    if server is not None:
        server.stop()


if pytest is not None:

    @pytest.fixture(scope="session")
    def ca_repeater() -> Iterator[Repeater]:
        """The session's repeater: IOC beacons go to it, this process's clients use it."""
        for repeater in _shared_server("repeater", Repeater):
            os.environ["EPICS_CA_REPEATER_PORT"] = str(repeater.port)
            yield repeater

    @pytest.fixture(scope="session")
    def caproto_ioc(ca_repeater: Repeater) -> Iterator[IOC]:
        yield from _shared_server(
            "caproto", lambda: start_ioc("caproto", repeater_port=ca_repeater.port))

    @pytest.fixture(scope="session")
    def softioc_ioc(ca_repeater: Repeater) -> Iterator[IOC]:
        yield from _shared_server(
            "softioc", lambda: start_ioc("softioc", repeater_port=ca_repeater.port))

    @pytest.fixture(scope="session")
    def epics_client_env(ca_repeater: Repeater, caproto_ioc: IOC, softioc_ioc: IOC
                         ) -> dict[str, str]:
        """Point this process's CA clients (pyepics' initial context) at both IOCs.

        pyepics' libca reads these when its first context searches for a channel, so
        this runs before any test touches pyepics directly.
        """
        values = {
            "EPICS_CA_ADDR_LIST": f"{caproto_ioc.address} {softioc_ioc.address}",
            "EPICS_CA_AUTO_ADDR_LIST": "NO",
            "EPICS_CA_REPEATER_PORT": str(ca_repeater.port),
        }
        os.environ.update(values)
        return values


if __name__ == "__main__":
    _kind, _prefix, _count = sys.argv[1], sys.argv[2], int(sys.argv[3] if len(sys.argv) > 3
                                                          else 0)
    if _kind == "caproto":
        _serve_caproto(_prefix)
    else:
        _serve_softioc(_prefix, _count)
