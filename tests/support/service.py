"""``osprey serve`` as the tests meet it: a real server process on a free loopback port.

:func:`running_server` starts ``python -m osprey_core serve --port 0`` with its own
``OSPREY_HOME`` (a simulated machine with one writable corrector, so writes pause for
approval), waits until it prints its URL and answers ``/healthz``, and stops it with
SIGINT at the end. Its stderr (uvicorn's and osprey's log lines) goes to a file the
tests can read. Tokens are made directly in the home's store, as ``osprey tokens
create`` would.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from test_hardening_store import writable_machine_env

from osprey_core.service.settings import Role

if TYPE_CHECKING:
    from osprey_core.store import RunStore

START_TIMEOUT = 60.0


@dataclass
class Server:
    url: str
    home: Path
    env: dict[str, str]
    log: Path
    process: subprocess.Popen[bytes]
    tokens: dict[str, str] = field(default_factory=dict, repr=False)

    def store(self) -> RunStore:
        """A connection of this process to the server's store (whichever engine)."""
        from support.postgres import open_store_of

        return open_store_of(self.env, self.home)  # type: ignore[no-any-return]

    def token(self, name: str, *roles: str) -> str:
        """A new token for ``name`` with ``roles`` (cached by name)."""
        if name not in self.tokens:
            from osprey_core.service.tokens import TokenStore

            store = self.store()
            try:
                _, secret = TokenStore(store).create(name, [Role(role) for role in roles],
                                                     created_by="tests")
            finally:
                store.close()
            self.tokens[name] = secret
        return self.tokens[name]

    def client(self, token: str | None = None, *, timeout: float | httpx.Timeout = 60,
               **kwargs: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=timeout, **kwargs)

    def logs(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> int:
        """SIGINT (Ctrl-C), then the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def server_env(home: Path, **settings: str) -> dict[str, str]:
    """The environment of the server and of CLI processes sharing its home."""
    return {**writable_machine_env(home), **settings}


@contextmanager
def running_server(home: Path, *args: str, **settings: str) -> Iterator[Server]:
    """A server on a free loopback port; ``settings`` are extra environment variables
    (``OSPREY__SERVICE__TRUSTED_PROXIES='[127.0.0.1]'``)."""
    home.mkdir(parents=True, exist_ok=True)
    env = server_env(home, **settings)
    log = home.parent / f"{home.name}-serve.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "osprey_core", "serve", "--port", "0", *args],
            env=env, cwd=home.parent, stdout=sink, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL)
    server = Server(url="", home=home, env=env, log=log, process=process)
    try:
        server.url = _wait_for_url(server)
        yield server
    finally:
        server.stop()


@contextmanager
def server_on(engine: str, home: Path, request: Any, **settings: str) -> Iterator[Server]:
    """:func:`running_server` with its store in ``engine`` (``sqlite`` in the home, or a
    fresh database of the session's PostgreSQL server, given to every process through
    ``OSPREY__STORE__URL``); ``request`` is the fixture's, to reach that server."""
    if engine == "sqlite":
        with running_server(home, **settings) as running:
            yield running
        return
    from support.postgres import shared_database

    with shared_database(request.getfixturevalue("postgres_server")) as url, \
            running_server(home, OSPREY__STORE__URL=url, **settings) as running:
        yield running
    assert not (home / "osprey.db").exists()  # the runs really went to PostgreSQL


def server_on_each_engine(name: str) -> Any:
    """A module-scoped ``server`` fixture, once per store engine (``server =
    server_on_each_engine("events")`` in a test module)."""
    import pytest

    @pytest.fixture(scope="module", params=["sqlite", "postgresql"])
    def server(request: Any, tmp_path_factory: Any) -> Iterator[Server]:
        with server_on(request.param, tmp_path_factory.mktemp(name) / "home",
                       request) as running:
            yield running

    return server


def _wait_for_url(server: Server) -> str:
    deadline = time.monotonic() + START_TIMEOUT
    url = None
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise AssertionError(f"osprey serve exited {server.process.returncode}:\n"
                                 f"{server.logs()}")
        if url is None and (found := re.search(r"osprey serving (http://\S+)", server.logs())):
            url = found.group(1)
        if url is not None:
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    return url
            except httpx.TransportError:
                pass
        time.sleep(0.05)
    raise AssertionError(f"osprey serve did not start in {START_TIMEOUT} s:\n{server.logs()}")


def cli(server: Server, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``osprey ARGS`` in a separate process sharing the server's home."""
    return subprocess.run([sys.executable, "-m", "osprey_core", *args], env=server.env,
                          cwd=server.home.parent, capture_output=True, text=True,
                          encoding="utf-8", timeout=timeout, check=False,
                          stdin=subprocess.DEVNULL)

