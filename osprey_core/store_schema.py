"""The run store's schema and its migrations (only ever appended), and the owner key that
compare-and-set checks."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable

from osprey_core.models import RunRecord

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


#: Version 3: API tokens of ``osprey serve`` (only their sha256 is kept; see
#: :mod:`osprey_core.service.tokens`). New tables only: nothing stored earlier changes.
API_TOKENS = (
    """CREATE TABLE api_tokens (id TEXT PRIMARY KEY, name TEXT NOT NULL,
        sha256 TEXT NOT NULL UNIQUE, roles TEXT NOT NULL, created_at TEXT NOT NULL,
        created_by TEXT NOT NULL, expires_at TEXT, revoked_at TEXT, last_used_at TEXT)""",
)

Migration = tuple[str, ...] | Callable[[sqlite3.Connection], None]
#: Schema migrations in order; version N runs ``MIGRATIONS[N - 1]``. Only ever append.
#: (Statements run one by one: ``executescript`` would commit the open transaction.)
MIGRATIONS: list[Migration] = [SCHEMA_V1, _split_runs, API_TOKENS]
#: Run fields kept in tables of their own (see :func:`_split_runs`).
SPLIT_FIELDS = frozenset({"plan", "context"})


def owner_key(run: RunRecord) -> str | None:
    """The identity of the process working on ``run``: boot id, pid and the process's
    start time, so a reused pid or a reboot never passes for the same process, and its
    host when known (containers on one host share a boot id)."""
    if run.owner_pid is None:
        return None
    key = f"{run.owner_boot}/{run.owner_pid}/{run.owner_start}"
    return key if run.owner_host is None else f"{key}@{run.owner_host}"
