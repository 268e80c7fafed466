"""The run store on a PostgreSQL server, shared by every worker that names the same URL.

It is the SQLite :class:`~osprey_core.store.RunStore` with another engine underneath: the
same queries, the same records, the same compare-and-set. The queries are written in
SQLite's dialect; :func:`translate` rewrites the three things PostgreSQL spells otherwise
(``?`` placeholders, ``IS ?`` and ``rowid``). What differs is the engine's part:

* connections come from a ``psycopg_pool`` pool; a :meth:`PostgresRunStore.transaction`
  holds one for its whole length (per thread), and a run read inside it is locked
  (``SELECT ... FOR UPDATE``), so two workers moving the same run are serialised as
  SQLite's ``BEGIN IMMEDIATE`` serialises two processes;
* ``durable=False`` commits with ``synchronous_commit off`` (atomic, not yet flushed);
* an unreachable server is a :class:`StoreUnavailableError` naming host and port (never the
  password); the next operation after the server is back works again by itself;
* a statement that fails inside a transaction ends it (PostgreSQL aborts the rest), where
  SQLite would let the transaction go on: nothing here catches such an error and carries on.
"""

from __future__ import annotations

import functools
import json
import os
import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from osprey_core.models import RunRecord
from osprey_core.store import RunStore
from osprey_core.store_errors import StoreError, StoreUnavailableError, translating
from osprey_core.stores.postgres_schema import MIGRATION_LOCK, MIGRATIONS, VERSION_TABLE
from osprey_core.stores.watchdog import WATCHDOG

if TYPE_CHECKING:
    import psycopg
    from psycopg_pool import ConnectionPool

#: The key of a context value kept as JSON text, because ``jsonb`` refuses its content.
WRAPPED = "__osprey_json_text__"
#: SQLSTATEs of a server going away: shut down by an administrator, crashed, starting.
LOST = frozenset({"57P01", "57P02", "57P03"})
#: What an operator does about an unreachable server.
UNREACHABLE_HINT = ("nothing was changed. Check that the server is running and accepts "
                    "connections from this host, or fix store.url (OSPREY__STORE__URL)")


@functools.lru_cache(maxsize=512)
def translate(sql: str) -> str:
    """SQLite's dialect as PostgreSQL reads it: ``?`` -> ``%s`` (a literal ``%`` doubled),
    ``IS ?`` -> ``IS NOT DISTINCT FROM %s`` and ``rowid`` -> ``seq`` (the insertion-order
    column of the tables that are read in that order)."""
    sql = sql.replace("%", "%%")
    sql = re.sub(r"\bIS \?", "IS NOT DISTINCT FROM ?", sql)
    sql = re.sub(r"\browid\b", "seq", sql)
    return sql.replace("?", "%s")


def describe(url: str) -> tuple[str, dict[str, str]]:
    """``postgresql://user@host:port/db`` without its password, and the parts it names."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        parts = {key: str(value) for key, value in conninfo_to_dict(url).items()}
    except Exception as exc:  # psycopg.ProgrammingError: a malformed URL
        raise StoreError(f"store.url is not a PostgreSQL URL ({_scrub(str(exc), url)}); "
                         "write it as postgresql://USER@HOST:PORT/DATABASE") from None
    parts.setdefault("host", os.environ.get("PGHOST", "localhost"))
    parts.setdefault("port", os.environ.get("PGPORT", "5432"))
    parts.setdefault("dbname", os.environ.get("PGDATABASE", parts.get("user", "")))
    user = parts.get("user") or os.environ.get("PGUSER", "")
    where = (f"postgresql://{user + '@' if user else ''}{parts['host']}:{parts['port']}"
             f"/{parts['dbname']}")
    return where, parts


def _scrub(text: str, url: str) -> str:
    """``text`` with any password from ``url`` masked (libpq never prints it; belt and
    braces for whatever quotes the URL back)."""
    match = re.match(r"^[a-z]+://[^:/@]*:([^@]+)@", url)
    return text.replace(match.group(1), "***") if match else text


@functools.cache
def _iso_loader() -> type:
    """A ``timestamptz`` loader giving ``datetime.isoformat()`` text, as SQLite stores it."""
    from psycopg.types.datetime import TimestamptzLoader

    class IsoTimestamptzLoader(TimestamptzLoader):
        def load(self, data: Any) -> str:
            return super().load(data).isoformat()

    return IsoTimestamptzLoader


class _Rows:
    """A statement's rows, fetched at once so its connection can go back to the pool."""

    def __init__(self, rows: list[Any], rowcount: int) -> None:
        self.rows = rows
        self.rowcount = rowcount

    def fetchone(self) -> Any:
        return self.rows[0] if self.rows else None

    def fetchall(self) -> list[Any]:
        return list(self.rows)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.rows)


class PostgresConnection:
    """``store.conn``: the transaction's connection on this thread, else one borrowed from
    the pool for a single autocommitted statement."""

    def __init__(self, store: PostgresRunStore) -> None:
        self.store = store

    @property
    def in_transaction(self) -> bool:
        return self.store.current() is not None

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> _Rows:
        return self._run("execute", sql, parameters)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]], /) -> _Rows:
        return self._run("executemany", sql, rows)

    def _run(self, how: str, sql: str, parameters: Sequence[Any]) -> _Rows:
        held = self.store.current()
        if held is not None:
            return _statement(held, how, sql, parameters, self.store)
        with self.store.borrow() as conn:
            return _statement(conn, how, sql, parameters, self.store)


def _statement(conn: psycopg.Connection[Any], how: str, sql: str,
               parameters: Sequence[Any], store: PostgresRunStore) -> _Rows:
    import psycopg

    try:
        with conn.cursor() as cursor:
            getattr(cursor, how)(translate(sql), parameters)
            rows = cursor.fetchall() if cursor.description is not None else []
            return _Rows(rows, cursor.rowcount)
    except psycopg.Error as exc:
        raise store.error(exc) from exc


class PostgresRunStore(RunStore):
    """Runs, steps, approvals, audit and events in one PostgreSQL database."""

    threaded = True  # a transaction holds a connection of its thread's own

    def __init__(self, url: str, *, connect_timeout: float = 10.0, pool_size: int = 8,
                 operation_timeout: float = 30.0, migrate: bool = True) -> None:
        """Connect (failing at once, with the reason, if the server cannot be reached) and,
        unless ``migrate`` is false, bring the schema up to date. An operation (a
        statement, or a transaction) still waiting on the server after
        ``operation_timeout`` seconds has its connection cut (see
        :mod:`~osprey_core.stores.watchdog`)."""
        self.url = url
        self.path, self.parts = describe(url)
        self.timeout = connect_timeout
        self.operation_timeout = operation_timeout
        self.pool_size = pool_size
        self._local = threading.local()
        self._pool_lock = threading.Lock()
        self._conn = PostgresConnection(self)
        #: The last call found the server away: probe it before waiting on the pool.
        self._away = False
        with self._probe() as conn:  # the real reason when the server is unreachable
            if migrate:
                self._migrate_on(conn)
        self._pool = self._new_pool()

    # -- connections ---------------------------------------------------------------------

    @property  # type: ignore[override]
    def conn(self) -> PostgresConnection:
        return self._conn

    def current(self) -> psycopg.Connection[Any] | None:
        """The connection of this thread's open transaction, if any."""
        return getattr(self._local, "conn", None)

    def _connect_options(self) -> dict[str, Any]:
        """Autocommit outside transactions; TCP keepalives, so a server that vanished
        without closing the connection (a cut network) is noticed in about 25 s while the
        connection is idle, and within the connect timeout while a statement it was sent
        goes unacknowledged (``tcp_user_timeout``, instead of the kernel's ~15 min)."""
        seconds = max(2, round(self.timeout))
        return {"autocommit": True, "connect_timeout": seconds, "keepalives": 1,
                "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3,
                "tcp_user_timeout": 1000 * seconds}

    @staticmethod
    def _configure(conn: psycopg.Connection[Any]) -> None:
        """Rows come back as SQLite gives them: records as their JSON text (validated by
        their models) and times as ISO text in UTC, so raw SQL (the service's event
        stream, the token store) reads the same values from either engine."""
        from psycopg.types.string import TextLoader

        conn.adapters.register_loader("jsonb", TextLoader)
        conn.adapters.register_loader("json", TextLoader)
        conn.adapters.register_loader("timestamptz", _iso_loader())
        conn.execute("SET TIME ZONE 'UTC'")

    @contextmanager
    def _probe(self) -> Iterator[psycopg.Connection[Any]]:
        """One direct connection: it fails with libpq's own reason (refused, no such
        database, authentication), where a pool would only time out."""
        import psycopg

        try:
            conn = psycopg.connect(self.url, **self._connect_options())
        except psycopg.Error as exc:
            raise self.error(exc) from None
        try:
            self._configure(conn)
            yield conn
        except psycopg.Error as exc:
            raise self.error(exc) from exc
        finally:
            conn.close()

    def _new_pool(self) -> ConnectionPool[Any]:
        from psycopg_pool import ConnectionPool

        pool: ConnectionPool[Any] = ConnectionPool(
            self.url, min_size=1, max_size=self.pool_size, kwargs=self._connect_options(),
            configure=self._configure, timeout=self.timeout, name="osprey-store", open=False)
        pool.open(wait=False)
        return pool

    @contextmanager
    def borrow(self, *, deadline: bool = True) -> Iterator[psycopg.Connection[Any]]:
        """A live connection from the pool. A connection that fails its check, or none
        coming in time, means the server went away: it is probed directly, so an outage
        is reported at once with libpq's reason (and, until it answers again, every later
        call probes first instead of waiting on the pool); when it answers, a fresh pool
        replaces the one full of dead connections (or waiting out a reconnection
        backoff). The block must end within ``store.operation_timeout`` unless
        ``deadline`` is false (migrations, a whole store's copy)."""
        from psycopg_pool import PoolClosed, PoolTimeout

        if self._away:
            self._renew(self._pool)
        pool = self._pool
        try:
            conn = pool.getconn()
        except (PoolTimeout, PoolClosed):  # closed: another thread just renewed it
            conn = None
        if conn is not None and not self._answers(conn):
            pool.putconn(conn)
            conn = None
        if conn is None:
            self._renew(pool)
            pool = self._pool
            try:
                conn = pool.getconn()
            except (PoolTimeout, PoolClosed) as exc:
                raise self.unavailable(f"no connection within {self.timeout:g} s") from exc
        try:
            with WATCHDOG.deadline(conn, self.operation_timeout if deadline else None) as alarm:
                try:
                    yield conn
                except Exception as exc:
                    if alarm.fired:
                        raise self.unavailable(
                            f"no answer within {self.operation_timeout:g} s "
                            "(store.operation_timeout); the connection was cut") from exc
                    raise
        finally:
            pool.putconn(conn)

    def _answers(self, conn: psycopg.Connection[Any]) -> bool:
        """Whether a pooled connection still works, asked within the connect timeout."""
        from psycopg_pool import ConnectionPool

        with WATCHDOG.deadline(conn, self.timeout):
            try:
                ConnectionPool.check_connection(conn)
            except Exception:  # any failure: the connection is dead
                return False
        return True

    def _renew(self, pool: ConnectionPool[Any]) -> None:
        """Probe the server (:class:`StoreUnavailableError` while it is away); when it
        answers, replace ``pool`` unless another thread already has."""
        try:
            with self._probe():
                pass
        except StoreUnavailableError:
            self._away = True
            raise
        with self._pool_lock:
            self._away = False
            if self._pool is pool:
                self._pool = self._new_pool()
                pool.close(timeout=0)

    def close(self) -> None:
        self._pool.close()

    # -- errors --------------------------------------------------------------------------

    def unavailable(self, reason: str) -> StoreUnavailableError:
        # libpq repeats the address the message names anyway: keep only its reason.
        reason = re.sub(r'^(connection failed: )?connection to server at "[^"]*"'
                        r'( \([^)]*\))?, port \d+ failed: ', "", reason)
        return StoreUnavailableError(
            f"cannot reach the PostgreSQL store at {self.parts['host']}:{self.parts['port']} "
            f"(database {self.parts['dbname']}): {_scrub(reason, self.url)}; {UNREACHABLE_HINT}")

    def error(self, exc: Exception) -> StoreError:
        """A psycopg error as an operator reads it: which server, what is wrong."""
        import psycopg

        text = _scrub(str(exc).strip().splitlines()[0] if str(exc).strip() else
                      type(exc).__name__, self.url)
        code = getattr(exc, "sqlstate", None) or ""
        if (isinstance(exc, psycopg.InterfaceError) or code.startswith("08") or code in LOST
                or (isinstance(exc, psycopg.OperationalError) and not code)):
            self._away = True  # the connection is gone: the next call probes first
            return self.unavailable(text)
        if isinstance(exc, psycopg.OperationalError):
            return self.unavailable(text)
        return StoreError(f"the store {self.path} failed: {text}")

    # -- schema and transactions --------------------------------------------------------

    def _migrate_on(self, conn: psycopg.Connection[Any]) -> None:
        """Bring the schema up to date in one transaction; workers starting together
        take turns (an advisory lock); a newer schema is refused, untouched."""
        with conn.transaction():
            conn.execute(MIGRATION_LOCK)
            conn.execute(VERSION_TABLE)
            row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_version")
            current = int(row.fetchone()[0])  # type: ignore[index]
            if current > len(MIGRATIONS):
                raise StoreError(
                    f"{self.path} has schema version {current}, newer than this osprey-core "
                    f"understands ({len(MIGRATIONS)}); upgrade osprey-core")
            for number, statements in enumerate(MIGRATIONS[current:], start=current + 1):
                for statement in statements:
                    conn.execute(statement)  # type: ignore[arg-type]
                conn.execute("INSERT INTO schema_version (version) VALUES (%s)", [number])

    def migrate(self) -> None:
        """Bring the schema up to date (``osprey store migrate``)."""
        import psycopg

        with self.borrow(deadline=False) as conn:
            try:
                self._migrate_on(conn)
            except psycopg.Error as exc:
                raise self.error(exc) from exc

    @property
    def schema_version(self) -> int:
        """The schema's version; 0 for a database osprey has not set up yet."""
        if self.conn.execute("SELECT to_regclass('schema_version')").fetchone()[0] is None:
            return 0
        row = self.conn.execute("SELECT coalesce(max(version), 0) FROM schema_version")
        return int(row.fetchone()[0])

    @contextmanager
    def transaction(self, *, durable: bool = True, deadline: bool = True) -> Iterator[RunStore]:
        """One transaction on one connection: everything inside commits together or not
        at all; ``durable=False`` skips waiting for the flush (still atomic); without
        ``deadline`` it may outlast ``store.operation_timeout`` (a whole store's copy)."""
        import psycopg

        if self.current() is not None:
            raise StoreError("nested store transactions are not supported")
        with self.borrow(deadline=deadline) as conn:
            try:
                with conn.transaction():
                    if not durable:
                        conn.execute("SET LOCAL synchronous_commit TO off")
                    self._local.conn = conn
                    try:
                        yield self
                    finally:
                        self._local.conn = None
            except psycopg.Error as exc:
                raise self.error(exc) from exc

    _LEASE_SET = "jsonb_set(data, '{lease_until}', to_jsonb(?::text))"

    def _context_text(self, value: Any) -> str:
        """``jsonb`` refuses NaN, infinities and NUL characters, which a channel read or a
        step's output may hold and SQLite keeps: such a value is stored as its JSON text
        under :data:`WRAPPED` (and so is a value that looks like that wrapper)."""
        text = json.dumps(value, ensure_ascii=False)
        try:
            json.dumps(value, allow_nan=False)
            storable = "\\u0000" not in text
        except ValueError:
            storable = False
        if storable and not (isinstance(value, dict) and list(value) == [WRAPPED]):
            return text
        return json.dumps({WRAPPED: text})

    def _context_value(self, text: str) -> Any:
        value = json.loads(text)
        if isinstance(value, dict) and list(value) == [WRAPPED]:
            return json.loads(value[WRAPPED])
        return value

    @translating
    def get_run(self, run_id: str) -> RunRecord:
        """As SQLite's, and inside a transaction the run's row stays locked until it ends:
        whoever reads a run to move it moves it alone."""
        if self.current() is None:
            return super().get_run(run_id)
        runs = self._runs("SELECT id, data FROM runs WHERE id=? FOR UPDATE", [run_id])
        if not runs:
            raise StoreError(f"unknown run '{run_id}'")
        return runs[0]
