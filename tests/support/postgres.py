"""A real PostgreSQL server for the tests, and the run-store engines they run against.

The session starts Debian's PostgreSQL 15 once (initdb + pg_ctl, as the ``postgres`` user
when the tests run as root, which initdb requires) in a private directory on a free
127.0.0.1 port, and stops it at the end (``pg_ctl stop -m fast``). Each test gets a
database of its own (``CREATE DATABASE``, dropped after the test). Registered as a pytest
plugin by ``tests/conftest.py``; psycopg is imported only when a fixture runs.

The server runs with ``fsync=off``: the tests check what the store does, not the disk.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

BIN = Path("/usr/lib/postgresql/15/bin")
USER = "osprey"
#: The file naming the test process that started a server (see :func:`reap_orphans`).
OWNER = "owner"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class PostgresServer:
    """One running cluster: its directory, port, and the databases made in it."""

    directory: Path
    port: int
    counter: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    #: Flush to disk as a production server does (the benchmarks); the tests do not.
    fsync: bool = False

    def _command(self, *args: str) -> list[str]:
        as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        return [*as_postgres, *args]

    def ctl(self, action: str, *, check: bool = True,
            mode: str = "fast") -> subprocess.CompletedProcess[str]:
        """``pg_ctl start`` / ``stop -m MODE`` (the tests that take the server away;
        ``immediate`` stops it as a crash would)."""
        data = str(self.directory / "data")
        if action == "start":
            args = [str(BIN / "pg_ctl"), "-D", data, "-w", "-l", str(self.directory / "log"),
                    "-o", f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 "
                    + ("" if self.fsync else "-c fsync=off -c full_page_writes=off"), "start"]
        else:
            args = [str(BIN / "pg_ctl"), "-D", data, "-w", "-m", mode, "stop"]
        done = subprocess.run(self._command(*args), capture_output=True, text=True, timeout=60)
        if check and done.returncode:
            log = (self.directory / "log").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"pg_ctl {action} failed: {done.stderr}{done.stdout}\n{log}")
        return done

    @contextmanager
    def frozen(self) -> Iterator[None]:
        """The server and every backend stopped with SIGSTOP for the block's length (a hung
        server: connections stay open and the kernel still acknowledges what is sent),
        continued after it whatever happens inside."""
        postmaster = int((self.directory / "data" / "postmaster.pid").read_text().split()[0])
        children = subprocess.run(["pgrep", "-P", str(postmaster)], capture_output=True,
                                  text=True, check=False).stdout.split()
        pids = [postmaster, *map(int, children)]
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        try:
            yield
        finally:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)

    @contextmanager
    def stopped(self) -> Iterator[None]:
        """The server down for the block's length, and started again after it, whatever
        happens inside (the tests of an outage)."""
        self.ctl("stop")
        try:
            yield
        finally:
            self.ctl("start")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(sql)  # type: ignore[arg-type]

    def new_database(self) -> str:
        name = f"osprey_test_{next(self.counter)}"
        self.admin(f"CREATE DATABASE {name}")
        return name

    def drop_database(self, name: str) -> None:
        self.admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _stamp(pid: int) -> str:
    """A process as ``pid start-time``: a reused pid does not pass for the same process."""
    from osprey_core.orchestration.runtime import process_start

    return f"{pid} {process_start(pid)}"


def reap_orphans() -> None:
    """Stop the servers of earlier test sessions that were killed before their teardown
    (``timeout`` or SIGKILL skips pytest's finalizers), so they do not pile up. Only
    directories this fixture stamped with its owner are touched, and only when that
    process is gone."""
    for directory in Path(tempfile.gettempdir()).glob("osprey-pg-*"):
        try:
            stamp = (directory / OWNER).read_text().strip()
        except OSError:
            continue  # not ours, or still being set up
        if _stamp(int(stamp.split()[0])) != stamp:
            PostgresServer(directory, 0).ctl("stop", check=False)
            shutil.rmtree(directory, ignore_errors=True)


def start_server(*, fsync: bool = False) -> PostgresServer:
    """initdb and start a cluster in a fresh directory the ``postgres`` user owns (pytest's
    own temp dirs are private to root, so that user could not enter them)."""
    if not (BIN / "initdb").exists():
        pytest.fail(f"{BIN / 'initdb'} is missing: install Debian's postgresql "
                    "(apt-get install -y postgresql; nox -s tests does it)")
    reap_orphans()
    directory = Path(tempfile.mkdtemp(prefix="osprey-pg-"))
    if os.geteuid() == 0:
        shutil.chown(directory, "postgres", "postgres")
    server = PostgresServer(directory, free_port(), fsync=fsync)
    done = subprocess.run(server._command(str(BIN / "initdb"), "-D", str(directory / "data"),
                                          "-A", "trust", "-U", USER, "-E", "UTF8",
                                          "--no-sync"),
                          capture_output=True, text=True, timeout=120)
    if done.returncode:
        raise RuntimeError(f"initdb failed: {done.stderr}")
    server.ctl("start")
    (directory / OWNER).write_text(_stamp(os.getpid()) + "\n")
    return server


#: A password put into test URLs (the server trusts loopback and ignores it) to check that
#: no message ever shows it.
PASSWORD = "sekret-pw"


def with_password(url: str) -> str:
    return url.replace(f"{USER}@", f"{USER}:{PASSWORD}@")


def assert_outage_reported(error: BaseException, server: PostgresServer) -> None:
    """What every store says when the server is away: which server, that nothing was
    changed, what to check, and never the password."""
    message = str(error)
    assert f"PostgreSQL store at 127.0.0.1:{server.port}" in message, message
    assert "nothing was changed" in message and "OSPREY__STORE__URL" in message, message
    assert PASSWORD not in message


@contextmanager
def own_server() -> Iterator[PostgresServer]:
    """A server for as long as the block runs, then stopped and removed."""
    server = start_server()
    try:
        yield server
    finally:
        server.ctl("stop", check=False)
        shutil.rmtree(server.directory, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    with own_server() as server:
        yield server


@contextmanager
def shared_database(server: PostgresServer) -> Iterator[str]:
    """A fresh, empty database for as long as the block runs (a module's, a test's)."""
    name = server.new_database()
    try:
        yield server.url(name)
    finally:
        from osprey_core.stores.kept import close_kept

        close_kept()  # pools this process kept on the database (memory, the logbook)
        server.drop_database(name)


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh, empty database of its own for one test."""
    with shared_database(postgres_server) as url:
        yield url


@dataclass
class StoreEngine:
    """Where one test's run store lives, in one engine; ``open()`` as often as needed
    (each call is another connection, as another process would have)."""

    name: str
    url: str  # sqlite:PATH or postgresql://...
    path: Path | None = None  # the SQLite file

    def open(self, **options: Any) -> Any:
        from osprey_core.stores.factory import open_url

        return open_url(self.url, **options)

    def logbook(self) -> Any:
        """The logbook store of this engine: the file ``logbook.db`` beside the run
        store's, or the same PostgreSQL database (another connection each call)."""
        if self.path is not None:
            from osprey_core.logbook.store import SQLiteLogbook

            return SQLiteLogbook(self.path.with_name("logbook.db"))
        from osprey_core.logbook.postgres import PostgresLogbook

        return PostgresLogbook(self.url)


@pytest.fixture(params=["sqlite", "postgresql"])
def run_store_engine(request: pytest.FixtureRequest, tmp_path: Path) -> StoreEngine:
    """The run store's contract, once per engine."""
    if request.param == "sqlite":
        path = tmp_path / "home" / "osprey.db"
        return StoreEngine("sqlite", f"sqlite:{path}", path)
    return StoreEngine("postgresql", request.getfixturevalue("postgres_url"))


def open_store_of(environ: Mapping[str, str], home: Path) -> Any:
    """Another connection to the store that processes with ``environ`` (their
    ``OSPREY__*`` overrides) and ``home`` use, whichever engine it is."""
    from osprey_core.stores.factory import open_url

    return open_url(environ.get("OSPREY__STORE__URL") or f"sqlite:{home / 'osprey.db'}")


def lab_on(lab: Any, engine: StoreEngine) -> Iterator[Any]:
    """A fixture body: ``lab`` (a :class:`support.orchestration.Lab`) with its runs in
    ``engine`` (every process it starts is given the same ``store.url``); afterwards,
    checks that they really went there and not to a file beside them."""
    if engine.name != "sqlite":
        lab.environ["OSPREY__STORE__URL"] = engine.url
    yield lab
    assert (lab.home / "osprey.db").exists() is (engine.name == "sqlite")


@dataclass
class MemoryEngine:
    """Where one test's user memory lives: the files under ``home``, or the PostgreSQL
    database ``url`` (what ``store.url`` would name)."""

    name: str
    home: Path
    url: str | None = None
    opened: list[Any] = field(default_factory=list)

    def open(self, settings: Any = None) -> Any:
        """A memory store on this engine (``settings``: ``MemorySettings``)."""
        if self.url is None:
            from osprey_core.memory.store import MemoryStore

            return MemoryStore(self.home, settings)
        from osprey_core.memory.postgres import PostgresMemoryStore

        store = PostgresMemoryStore.connect(self.url, settings)
        self.opened.append(store)
        return store

    def config(self) -> dict[str, Any]:
        """The ``store`` section of an ``osprey.yml`` that keeps memory here."""
        return {} if self.url is None else {"url": self.url}

    def environ(self) -> dict[str, str]:
        """The same for processes started with this environment."""
        return {} if self.url is None else {"OSPREY__STORE__URL": self.url}

    def snapshot(self) -> Any:
        """Everything stored, byte for byte or row for row: equal snapshots mean that
        nothing was written in between."""
        if self.url is None:
            folder = self.home / "memory"
            return {path.name: path.read_bytes() for path in sorted(folder.glob("*.json"))
                    } if folder.exists() else {}
        import psycopg

        with psycopg.connect(self.url) as conn:
            if conn.execute("SELECT to_regclass('memory_entries')").fetchone()[0] is None:
                return []
            return conn.execute("SELECT * FROM memory_entries ORDER BY user_id, seq").fetchall()


@pytest.fixture(params=["file", "postgresql"])
def memory_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MemoryEngine]:
    """The memory store's contract, once per engine. Tests about the files themselves
    (damaged files and their repair, flock, checksums, file names: test_memory_integrity.py
    and the file-only tests of the other memory suites) take no engine."""
    home = tmp_path / "home"
    if request.param == "file":
        yield MemoryEngine("file", home)
        return
    engine = MemoryEngine("postgresql", home, request.getfixturevalue("postgres_url"))
    yield engine
    from osprey_core.stores.kept import close_kept

    for store in engine.opened:
        store.close()
    close_kept()
