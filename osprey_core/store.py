"""The run store: runs, steps, approvals, an append-only audit log and events in SQLite.

Each table keeps a few indexed columns for queries and the full record as JSON, which is
validated by its pydantic model on the way in and on the way out. Writes that must be
atomic together (a pause and its approval request, a decision and the run transition)
go through one :meth:`RunStore.transaction`, an ``IMMEDIATE`` transaction, so two
processes deciding the same approval are serialised and only one compare-and-set wins.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel

from osprey_core.errors import OspreyError, os_error_text
from osprey_core.models import (
    ApprovalRecord,
    ApprovalStatus,
    AuditRecord,
    EventRecord,
    Plan,
    RunRecord,
    StepRecord,
)
from osprey_core.run_machine import RunState

M = TypeVar("M", bound=BaseModel)


class StoreError(OspreyError):
    """The store refused an operation (unknown id, lost race, newer schema)."""


class ConflictError(StoreError):
    """A compare-and-set lost: someone else changed the record first."""


class StoreDamagedError(StoreError):
    """The database file is damaged, truncated or not osprey's: osprey refuses to work on
    it (and never replaces it) until it is restored from a backup or moved away."""


class StoreStorageError(StoreError):
    """The disk refused the database (read-only, full, locked, failing)."""


#: The first 16 bytes of every SQLite database file.
SQLITE_MAGIC = b"SQLite format 3\x00"
#: What to do about a damaged store, said once for every message that needs it.
RESTORE_HINT = ("nothing was changed. Run 'osprey store check' for details; restore a backup "
                "with 'osprey store restore BACKUP', or move the file away to start a new, "
                "empty store")


def check_database_file(path: Path, evidence: Callable[[], Path | None] | None = None,
                        hint: str = RESTORE_HINT) -> None:
    """Refuse, before SQLite touches it, a database file that is empty, truncated or not
    a database, and a missing one whose data evidently existed (its ``-wal`` file, or
    whatever ``evidence`` finds): SQLite would silently create a fresh, empty database
    in its place."""
    try:
        with path.open("rb") as handle:
            header = handle.read(100)
            size = os.fstat(handle.fileno()).st_size
    except FileNotFoundError:
        wal = path.with_name(path.name + "-wal")
        left = wal if wal.exists() else (evidence() if evidence is not None else None)
        if left is not None:
            raise StoreDamagedError(
                f"the store {path} is missing, but {left} is left from it: it was deleted or "
                f"moved, and osprey will not start an empty one in its place; {hint}"
                ) from None
        return
    except OSError as exc:
        raise StoreStorageError(f"cannot read the store {path}: {os_error_text(exc)}") from None
    if size == 0:
        raise StoreDamagedError(f"the store {path} is empty (0 bytes), though an "
                                f"existing store never is; {hint}")
    if not header.startswith(SQLITE_MAGIC) or len(header) < 100:
        raise StoreDamagedError(f"the store {path} is not an SQLite database (its first bytes "
                                f"are {header[:16]!r}); {hint}")
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    if header[24:28] == header[92:96] and pages * page_size > size:
        raise StoreDamagedError(f"the store {path} is truncated: it is {size} bytes but says "
                                f"it holds {pages} pages of {page_size}; {hint}")


def _file_system_state(path: Path) -> str:
    """``read-only``, ``full`` or ``''`` for the file system holding ``path``: SQLite often
    reports either as a bare 'disk I/O error' or 'unable to open database file'."""
    try:
        stats = os.statvfs(path.parent)
    except OSError:
        return ""
    if stats.f_flag & os.ST_RDONLY:
        return "read-only"
    if stats.f_bavail * stats.f_frsize < 64 * 1024:
        return "full"
    return ""


def store_error(path: Path, exc: sqlite3.Error, hint: str = RESTORE_HINT) -> StoreError:
    """An SQLite error as an operator reads it: which file, what is wrong, what to do."""
    text = str(exc)
    lowered = text.lower()
    state = _file_system_state(path)
    if state == "read-only":
        lowered += " read-only"
    elif state == "full":
        lowered += " full"
    if any(word in lowered for word in ("malformed", "not a database", "encrypted")):
        return StoreDamagedError(f"the store {path} is damaged ({text}); {hint}")
    if "readonly" in lowered or "read-only" in lowered:
        return StoreStorageError(f"cannot write the store {path}: it is read-only ({text}); "
                                 "nothing was changed. Check the file system and the "
                                 "permissions of its directory (the store needs to write "
                                 "beside the file even to read it)")
    if "full" in lowered:
        return StoreStorageError(f"cannot write the store {path}: the disk is full ({text}); "
                                 "nothing was changed. Free some space and try again")
    if "unable to open" in lowered:
        return StoreStorageError(f"cannot open the store {path} ({text}): check that its "
                                 "directory exists and is writable")
    if "locked" in lowered or "busy" in lowered:
        return StoreStorageError(f"the store {path} is locked by another process ({text}); "
                                 "nothing was changed. Try again")
    return StoreError(f"the store {path} failed: {text}")


def translating[**P, R](method: Callable[P, R]) -> Callable[P, R]:
    """Turn any SQLite error inside ``method`` into a :class:`StoreError` naming the file."""

    @functools.wraps(method)
    def translated(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except sqlite3.Error as exc:
            store: Any = args[0]
            raise store_error(store.path, exc, getattr(store, "damage_hint", RESTORE_HINT)
                              ) from exc

    return translated


SCHEMA_V1 = (
    """CREATE TABLE runs (id TEXT PRIMARY KEY, session TEXT NOT NULL, state TEXT NOT NULL,
        created_at TEXT NOT NULL, updated_at TEXT NOT NULL, data TEXT NOT NULL)""",
    "CREATE INDEX runs_session ON runs(session)",
    "CREATE INDEX runs_state ON runs(state)",
    """CREATE TABLE steps (run_id TEXT NOT NULL REFERENCES runs(id), idx INTEGER NOT NULL,
        status TEXT NOT NULL, idempotency_key TEXT NOT NULL UNIQUE, data TEXT NOT NULL,
        PRIMARY KEY (run_id, idx))""",
    """CREATE TABLE approvals (id TEXT PRIMARY KEY, run_id TEXT NOT NULL REFERENCES runs(id),
        session TEXT NOT NULL, status TEXT NOT NULL, expires_at TEXT NOT NULL,
        data TEXT NOT NULL)""",
    "CREATE INDEX approvals_status ON approvals(status)",
    "CREATE INDEX approvals_run ON approvals(run_id)",
    """CREATE TABLE audit (id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL,
        action TEXT NOT NULL, run_id TEXT, approval_id TEXT, data TEXT NOT NULL)""",
    "CREATE INDEX audit_run ON audit(run_id)",
    """CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END""",
    """CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit
        BEGIN SELECT RAISE(ABORT, 'the audit log is append-only'); END""",
    """CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL,
        at TEXT NOT NULL, kind TEXT NOT NULL, data TEXT NOT NULL)""",
    "CREATE INDEX events_run ON events(run_id)",
)


def _split_runs(conn: sqlite3.Connection) -> None:
    """Version 2: a run's plan and its context values get tables of their own, so saving a
    run after each step rewrites a small row, not every earlier step's output; and the
    process working on a run (its owner) gets a column that compare-and-set can check."""
    for statement in (
        "ALTER TABLE runs ADD COLUMN owner TEXT",
        """CREATE TABLE run_plans (run_id TEXT PRIMARY KEY REFERENCES runs(id),
            sha256 TEXT NOT NULL, data TEXT NOT NULL)""",
        """CREATE TABLE run_context (run_id TEXT NOT NULL REFERENCES runs(id),
            key TEXT NOT NULL, data TEXT NOT NULL, PRIMARY KEY (run_id, key))""",
    ):
        conn.execute(statement)
    for run_id, data in conn.execute("SELECT id, data FROM runs").fetchall():
        record = json.loads(data)
        plan, context = record.pop("plan", None), record.pop("context", {}) or {}
        if plan is not None:
            conn.execute("INSERT INTO run_plans VALUES (?, ?, ?)",
                         [run_id, record.get("plan_sha256") or "", json.dumps(plan)])
        conn.executemany("INSERT INTO run_context VALUES (?, ?, ?)",
                         [(run_id, key, json.dumps(value)) for key, value in context.items()])
        conn.execute("UPDATE runs SET data=?, owner=? WHERE id=?",
                     [json.dumps(record), owner_key(RunRecord.model_validate(
                         {**record, "plan": plan, "context": context})), run_id])


Migration = tuple[str, ...] | Callable[[sqlite3.Connection], None]
#: Schema migrations in order; version N runs ``MIGRATIONS[N - 1]``. Only ever append.
#: (Statements run one by one: ``executescript`` would commit the open transaction.)
MIGRATIONS: list[Migration] = [SCHEMA_V1, _split_runs]
#: Run fields kept in tables of their own (see :func:`_split_runs`).
SPLIT_FIELDS = frozenset({"plan", "context"})


def owner_key(run: RunRecord) -> str | None:
    """The identity of the process working on ``run``: boot id, pid and the process's
    start time, so a reused pid or a reboot never passes for the same process."""
    if run.owner_pid is None:
        return None
    return f"{run.owner_boot}/{run.owner_pid}/{run.owner_start}"


class RunStore:
    """Plain ``sqlite3`` in autocommit mode, with our own transactions.

    (sqlite-utils' write helpers commit by themselves, which would split our
    transactions, and importing it loads numpy: ~150 ms on every command.)
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreStorageError(f"cannot create the directory of the store {path}: "
                                    f"{os_error_text(exc)}") from None
        check_database_file(path, functools.partial(_saved_plans, path.parent / "plans"))
        self._synchronous = ""
        self.conn = self._connect()

    @translating
    def _connect(self) -> sqlite3.Connection:
        self.conn = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                                    check_same_thread=False)
        try:
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except BaseException:
            self.conn.close()
            raise
        return self.conn

    def close(self) -> None:
        self.conn.close()

    def _migrate(self) -> None:
        with self.transaction():
            self.conn.execute(
                "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
            )
            row = self.conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            current = int(row[0]) if row else 0
            if current > len(MIGRATIONS):
                raise StoreError(
                    f"{self.path} has schema version {current}, newer than this osprey-core "
                    f"understands ({len(MIGRATIONS)}); upgrade osprey-core"
                )
            for migration in MIGRATIONS[current:]:
                if callable(migration):
                    migration(self.conn)
                    continue
                for statement in migration:
                    self.conn.execute(statement)
            self.conn.execute(
                "INSERT INTO meta VALUES ('schema_version', ?) "
                "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                [str(len(MIGRATIONS))],
            )

    @property
    @translating
    def schema_version(self) -> int:
        return int(self.conn.execute("SELECT value FROM meta WHERE key='schema_version'")
                   .fetchone()[0])

    @contextmanager
    def transaction(self, *, durable: bool = True) -> Iterator[RunStore]:
        """One IMMEDIATE transaction: all writes inside commit together or not at all.

        ``durable`` commits are synced to disk before returning (they survive a power
        cut); the others are atomic and survive a crash of this process, and become
        durable with the next durable commit. Pauses, decisions, side effects and the
        end of a run are durable.
        """
        conn = self.conn
        if conn.in_transaction:
            raise StoreError("nested store transactions are not supported")
        try:
            level = "FULL" if durable else "NORMAL"
            if level != self._synchronous:
                conn.execute(f"PRAGMA synchronous={level}")
                self._synchronous = level
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise store_error(self.path, exc) from exc
        try:
            yield self
        except BaseException:
            if conn.in_transaction:  # SQLite may have rolled back by itself (disk full)
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            raise
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            raise store_error(self.path, exc) from exc

    # -- runs ------------------------------------------------------------------------

    @translating
    def insert_run(self, run: RunRecord) -> None:
        self.conn.execute(
            "INSERT INTO runs (id, session, state, created_at, updated_at, data, owner) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [run.id, run.session, run.state, _iso(run.created_at), _iso(run.updated_at),
             _run_row(run), owner_key(run)],
        )
        if run.plan is not None:
            self.put_plan(run.id, run.plan)
        for key, value in run.context.items():
            self.put_context(run.id, key, value)

    @translating
    def update_run(self, run: RunRecord, *, expect_state: RunState | None = None,
                   expect_owner: str | Literal[False] | None = False) -> None:
        """Write ``run``'s row (not its plan or context: see :meth:`put_plan` and
        :meth:`put_context`); with ``expect_state`` / ``expect_owner`` only if the stored
        state and owner still match (compare-and-set)."""
        sql = "UPDATE runs SET state=?, updated_at=?, data=?, owner=? WHERE id=?"
        params: list[object] = [run.state, _iso(run.updated_at), _run_row(run), owner_key(run),
                                run.id]
        if expect_state is not None:
            sql += " AND state=?"
            params.append(expect_state)
        if expect_owner is not False:
            sql += " AND owner IS ?"
            params.append(expect_owner)
        if self.conn.execute(sql, params).rowcount != 1:
            if expect_state is None and expect_owner is False:
                raise StoreError(f"unknown run '{run.id}'")
            actual = self.get_run(run.id)
            if expect_state is not None and actual.state != expect_state:
                raise ConflictError(f"run '{run.id}' is {actual.state}, not {expect_state}")
            raise ConflictError(f"run '{run.id}' is now held by another process "
                                f"(pid {actual.owner_pid})")

    @translating
    def put_plan(self, run_id: str, plan: Plan) -> None:
        """Store a run's plan (written when it is made or edited, not after each step)."""
        self.conn.execute(
            "INSERT INTO run_plans VALUES (?, ?, ?) ON CONFLICT(run_id) DO UPDATE SET "
            "sha256=excluded.sha256, data=excluded.data",
            [run_id, plan.sha256(), plan.model_dump_json()])

    @translating
    def put_context(self, run_id: str, key: str, value: Any) -> None:
        """Store one context value of a run (the request, gathered context, a step's output)."""
        self.conn.execute(
            "INSERT INTO run_context VALUES (?, ?, ?) ON CONFLICT(run_id, key) DO UPDATE SET "
            "data=excluded.data", [run_id, key, json.dumps(value, ensure_ascii=False)])

    @translating
    def get_run(self, run_id: str) -> RunRecord:
        runs = self._runs("SELECT id, data FROM runs WHERE id=?", [run_id])
        if not runs:
            raise StoreError(f"unknown run '{run_id}'")
        return runs[0]

    @translating
    def list_runs(
        self, *, session: str | None = None, states: set[RunState] | None = None,
        limit: int = 100,
    ) -> list[RunRecord]:
        where, params = _filters(session=session, state=states)
        sql = f"SELECT id, data FROM runs {where} ORDER BY created_at DESC, id LIMIT ?"
        return self._runs(sql, [*params, limit])

    def _runs(self, sql: str, params: list[object]) -> list[RunRecord]:
        """Runs with their plans and context, reassembled from their three tables."""
        rows = self.conn.execute(sql, params).fetchall()
        if not rows:
            return []
        records = {run_id: json.loads(data) for run_id, data in rows}
        for record in records.values():
            record.setdefault("context", {})
        for chunk in _chunks(list(records), 500):
            marks = ", ".join("?" for _ in chunk)
            for run_id, data in self.conn.execute(
                    f"SELECT run_id, data FROM run_plans WHERE run_id IN ({marks})", chunk):
                records[run_id]["plan"] = json.loads(data)
            for run_id, key, data in self.conn.execute(
                    f"SELECT run_id, key, data FROM run_context WHERE run_id IN ({marks}) "
                    "ORDER BY rowid", chunk):
                records[run_id]["context"][key] = json.loads(data)
        return [RunRecord.model_validate(records[run_id]) for run_id, _ in rows]

    # -- steps -----------------------------------------------------------------------

    @translating
    def save_step(self, step: StepRecord) -> None:
        self.conn.execute(
            "INSERT INTO steps VALUES (?, ?, ?, ?, ?) ON CONFLICT(run_id, idx) DO UPDATE SET "
            "status=excluded.status, data=excluded.data",
            [step.run_id, step.index, step.status, step.idempotency_key, step.model_dump_json()],
        )

    @translating
    def steps(self, run_id: str) -> list[StepRecord]:
        return self._many(StepRecord, "SELECT data FROM steps WHERE run_id=? ORDER BY idx",
                          [run_id])

    # -- approvals -------------------------------------------------------------------

    @translating
    def insert_approval(self, approval: ApprovalRecord) -> None:
        self.conn.execute(
            "INSERT INTO approvals VALUES (?, ?, ?, ?, ?, ?)",
            [approval.id, approval.run_id, approval.session, approval.status,
             _iso(approval.expires_at), approval.model_dump_json()],
        )

    @translating
    def close_approval(self, approval: ApprovalRecord) -> None:
        """Record a decision on a pending approval; loses (ConflictError) if already closed."""
        cursor = self.conn.execute(
            "UPDATE approvals SET status=?, data=? WHERE id=? AND status=?",
            [approval.status, approval.model_dump_json(), approval.id, ApprovalStatus.PENDING],
        )
        if cursor.rowcount != 1:
            current = self.get_approval(approval.id)
            raise ConflictError(
                f"approval '{approval.id}' was already {current.status}"
                + (f" by {current.decided_by}" if current.decided_by else "")
            )

    @translating
    def get_approval(self, approval_id: str) -> ApprovalRecord:
        return self._one(ApprovalRecord, "SELECT data FROM approvals WHERE id=?", approval_id,
                         f"approval '{approval_id}'")

    @translating
    def list_approvals(
        self, *, status: ApprovalStatus | None = None, session: str | None = None,
        run_id: str | None = None,
    ) -> list[ApprovalRecord]:
        where, params = _filters(status=status, session=session, run_id=run_id)
        return self._many(ApprovalRecord, f"SELECT data FROM approvals {where} ORDER BY rowid",
                          params)

    # -- audit and events ------------------------------------------------------------

    @translating
    def append_audit(self, record: AuditRecord) -> None:
        self.conn.execute(
            "INSERT INTO audit (at, action, run_id, approval_id, data) VALUES (?, ?, ?, ?, ?)",
            [_iso(record.at), record.action, record.run_id, record.approval_id,
             record.model_dump_json(exclude={"id"})],
        )

    @translating
    def audit(self, *, run_id: str | None = None) -> list[AuditRecord]:
        where, params = _filters(run_id=run_id)
        rows = self.conn.execute(f"SELECT id, data FROM audit {where} ORDER BY id", params)
        return [AuditRecord.model_validate_json(data).model_copy(update={"id": row_id})
                for row_id, data in rows.fetchall()]

    @translating
    def append_event(self, event: EventRecord) -> None:
        self.conn.execute(
            "INSERT INTO events (run_id, at, kind, data) VALUES (?, ?, ?, ?)",
            [event.run_id, _iso(event.at), event.kind, event.model_dump_json(exclude={"id"})],
        )

    @translating
    def events(self, run_id: str) -> list[EventRecord]:
        rows = self.conn.execute("SELECT id, data FROM events WHERE run_id=? ORDER BY id",
                               [run_id])
        return [EventRecord.model_validate_json(data).model_copy(update={"id": row_id})
                for row_id, data in rows.fetchall()]

    # -- helpers ---------------------------------------------------------------------

    def _one(self, model: type[M], sql: str, key: str, label: str) -> M:
        row = self.conn.execute(sql, [key]).fetchone()
        if row is None:
            raise StoreError(f"unknown {label}")
        return model.model_validate_json(row[0])

    def _many(self, model: type[M], sql: str, params: list[object]) -> list[M]:
        return [model.model_validate_json(row[0]) for row in self.conn.execute(sql, params)]


def _filters(**columns: object) -> tuple[str, list[object]]:
    clauses, params = [], []
    for column, value in columns.items():
        if value is None:
            continue
        if isinstance(value, set):
            clauses.append(f"{column} IN ({', '.join('?' for _ in value)})")
            params.extend(sorted(value))
        else:
            clauses.append(f"{column}=?")
            params.append(value)
    return ("WHERE " + " AND ".join(clauses) if clauses else "", params)


def _saved_plans(plans: Path) -> Path | None:
    """``plans/`` when it holds plans: the run store they came from existed."""
    return plans if plans.is_dir() and any(plans.glob("*.json")) else None


def _iso(moment: datetime) -> str:
    return moment.isoformat()


def _run_row(run: RunRecord) -> str:
    return run.model_dump_json(exclude=set(SPLIT_FIELDS))


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]
