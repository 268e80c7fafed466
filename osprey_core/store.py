"""The run store: runs, steps, approvals, an append-only audit log and events in SQLite.

Each table keeps a few indexed columns for queries and the full record as JSON, which is
validated by its pydantic model on the way in and on the way out. Writes that must be
atomic together (a pause and its approval request, a decision and the run transition)
go through one :meth:`RunStore.transaction`, an ``IMMEDIATE`` transaction, so two
processes deciding the same approval are serialised and only one compare-and-set wins.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel

from osprey_core.errors import OspreyError
from osprey_core.models import (
    ApprovalRecord,
    ApprovalStatus,
    AuditRecord,
    EventRecord,
    RunRecord,
    StepRecord,
)
from osprey_core.run_machine import RunState

M = TypeVar("M", bound=BaseModel)


class StoreError(OspreyError):
    """The store refused an operation (unknown id, lost race, newer schema)."""


class ConflictError(StoreError):
    """A compare-and-set lost: someone else changed the record first."""


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


#: Schema migrations in order; version N runs ``MIGRATIONS[N - 1]``. Only ever append.
#: (Statements run one by one: ``executescript`` would commit the open transaction.)
MIGRATIONS: list[tuple[str, ...]] = [SCHEMA_V1]


class RunStore:
    """Plain ``sqlite3`` in autocommit mode, with our own transactions.

    (sqlite-utils' write helpers commit by themselves, which would split our
    transactions, and importing it loads numpy: ~150 ms on every command.)
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.conn = sqlite3.connect(path, timeout=30, isolation_level=None,
                                    check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA foreign_keys=ON")
        self._synchronous = ""
        self._migrate()

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
            for statements in MIGRATIONS[current:]:
                for statement in statements:
                    self.conn.execute(statement)
            self.conn.execute(
                "INSERT INTO meta VALUES ('schema_version', ?) "
                "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
                [str(len(MIGRATIONS))],
            )

    @property
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
        level = "FULL" if durable else "NORMAL"
        if level != self._synchronous:
            conn.execute(f"PRAGMA synchronous={level}")
            self._synchronous = level
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield self
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    # -- runs ------------------------------------------------------------------------

    def insert_run(self, run: RunRecord) -> None:
        self.conn.execute(
            "INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?)",
            [run.id, run.session, run.state, _iso(run.created_at), _iso(run.updated_at),
             run.model_dump_json()],
        )

    def update_run(self, run: RunRecord, *, expect_state: RunState | None = None) -> None:
        """Write ``run``; with ``expect_state`` only if the stored state still matches."""
        sql = "UPDATE runs SET state=?, updated_at=?, data=? WHERE id=?"
        params: list[object] = [run.state, _iso(run.updated_at), run.model_dump_json(), run.id]
        if expect_state is not None:
            sql += " AND state=?"
            params.append(expect_state)
        if self.conn.execute(sql, params).rowcount != 1:
            if expect_state is None:
                raise StoreError(f"unknown run '{run.id}'")
            actual = self.get_run(run.id).state
            raise ConflictError(f"run '{run.id}' is {actual}, not {expect_state}")

    def get_run(self, run_id: str) -> RunRecord:
        return self._one(RunRecord, "SELECT data FROM runs WHERE id=?", run_id, f"run '{run_id}'")

    def list_runs(
        self, *, session: str | None = None, states: set[RunState] | None = None,
        limit: int = 100,
    ) -> list[RunRecord]:
        where, params = _filters(session=session, state=states)
        sql = f"SELECT data FROM runs {where} ORDER BY created_at DESC, id LIMIT ?"
        return self._many(RunRecord, sql, [*params, limit])

    # -- steps -----------------------------------------------------------------------

    def save_step(self, step: StepRecord) -> None:
        self.conn.execute(
            "INSERT INTO steps VALUES (?, ?, ?, ?, ?) ON CONFLICT(run_id, idx) DO UPDATE SET "
            "status=excluded.status, data=excluded.data",
            [step.run_id, step.index, step.status, step.idempotency_key, step.model_dump_json()],
        )

    def steps(self, run_id: str) -> list[StepRecord]:
        return self._many(StepRecord, "SELECT data FROM steps WHERE run_id=? ORDER BY idx",
                          [run_id])

    # -- approvals -------------------------------------------------------------------

    def insert_approval(self, approval: ApprovalRecord) -> None:
        self.conn.execute(
            "INSERT INTO approvals VALUES (?, ?, ?, ?, ?, ?)",
            [approval.id, approval.run_id, approval.session, approval.status,
             _iso(approval.expires_at), approval.model_dump_json()],
        )

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

    def get_approval(self, approval_id: str) -> ApprovalRecord:
        return self._one(ApprovalRecord, "SELECT data FROM approvals WHERE id=?", approval_id,
                         f"approval '{approval_id}'")

    def list_approvals(
        self, *, status: ApprovalStatus | None = None, session: str | None = None,
        run_id: str | None = None,
    ) -> list[ApprovalRecord]:
        where, params = _filters(status=status, session=session, run_id=run_id)
        return self._many(ApprovalRecord, f"SELECT data FROM approvals {where} ORDER BY rowid",
                          params)

    # -- audit and events ------------------------------------------------------------

    def append_audit(self, record: AuditRecord) -> None:
        self.conn.execute(
            "INSERT INTO audit (at, action, run_id, approval_id, data) VALUES (?, ?, ?, ?, ?)",
            [_iso(record.at), record.action, record.run_id, record.approval_id,
             record.model_dump_json(exclude={"id"})],
        )

    def audit(self, *, run_id: str | None = None) -> list[AuditRecord]:
        where, params = _filters(run_id=run_id)
        rows = self.conn.execute(f"SELECT id, data FROM audit {where} ORDER BY id", params)
        return [AuditRecord.model_validate_json(data).model_copy(update={"id": row_id})
                for row_id, data in rows.fetchall()]

    def append_event(self, event: EventRecord) -> None:
        self.conn.execute(
            "INSERT INTO events (run_id, at, kind, data) VALUES (?, ?, ?, ?)",
            [event.run_id, _iso(event.at), event.kind, event.model_dump_json(exclude={"id"})],
        )

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


def _iso(moment: datetime) -> str:
    return moment.isoformat()
