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
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel

from osprey_core.errors import os_error_text
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
from osprey_core.store_errors import (
    ConflictError,
    StoreDamagedError,
    StoreError,
    StoreStorageError,
    check_database_file,
    store_error,
    translating,
)
from osprey_core.store_schema import MIGRATIONS, SPLIT_FIELDS, owner_key

#: The store's errors live with the other stores' in :mod:`osprey_core.store_errors`.
__all__ = [
    "ConflictError",
    "RunStore",
    "StoreDamagedError",
    "StoreError",
    "StoreStorageError",
    "owner_key",
]

M = TypeVar("M", bound=BaseModel)


class RunStore:
    """Plain ``sqlite3`` in autocommit mode, with our own transactions.

    (sqlite-utils' write helpers commit by themselves, which would split our
    transactions, and importing it loads numpy: ~150 ms on every command.)
    """

    #: Whether threads may call it at once (each with its own transaction): not this one
    #: connection, shared by every caller in the process.
    threaded = False

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
    def transaction(self, *, durable: bool = True, deadline: bool = True) -> Iterator[RunStore]:
        """One IMMEDIATE transaction: all writes inside commit together or not at all.

        ``durable`` commits are synced to disk before returning (they survive a power
        cut); the others are atomic and survive a crash of this process, and become
        durable with the next durable commit. Pauses, decisions, side effects and the
        end of a run are durable. ``deadline`` matters to a database server (see
        :mod:`~osprey_core.stores.watchdog`); a file in this process has none to miss.
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
    def renew_lease(self, run_id: str, owner: str | None, state: RunState,
                    until: datetime) -> bool:
        """Extend the lease of ``owner`` on a run in ``state`` to ``until`` (a heartbeat);
        false if the run has moved on or another process holds it now."""
        return self.conn.execute(
            f"UPDATE runs SET data={self._LEASE_SET} WHERE id=? AND state=? AND owner IS ?",
            [until.isoformat(), run_id, state, owner]).rowcount == 1

    #: How this engine writes ``lease_until`` into a run's JSON record.
    _LEASE_SET = "json_set(data, '$.lease_until', ?)"

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
            "data=excluded.data", [run_id, key, self._context_text(value)])

    def _context_text(self, value: Any) -> str:
        """A context value as stored (the PostgreSQL engine wraps what ``jsonb`` refuses)."""
        return json.dumps(value, ensure_ascii=False)

    def _context_value(self, text: str) -> Any:
        return json.loads(text)

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
                records[run_id]["context"][key] = self._context_value(data)
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
