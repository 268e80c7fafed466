"""The run store, on both engines (SQLite and a real PostgreSQL server): schema versions,
atomic transactions, compare-and-set, the audit log. Tests of the SQLite file itself say so."""

from __future__ import annotations

import contextlib
import math
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from support.postgres import StoreEngine

from osprey_core.models import (
    ApprovalKind,
    ApprovalRecord,
    ApprovalStatus,
    AuditRecord,
    EventRecord,
    RunRecord,
    StepRecord,
    StepStatus,
    sha256_of,
)
from osprey_core.run_machine import RunState
from osprey_core.store import ConflictError, RunStore, StoreDamagedError, StoreError
from osprey_core.store_schema import MIGRATIONS

NOW = datetime(2030, 1, 1, 8, 0, tzinfo=UTC)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "home" / "osprey.db"


@pytest.fixture
def store(run_store_engine: StoreEngine) -> Iterator[RunStore]:
    opened = run_store_engine.open()
    yield opened
    opened.close()


def a_run(run_id: str = "run-1", *, session: str = "s1",
          state: RunState = RunState.RECEIVED) -> RunRecord:
    return RunRecord(id=run_id, session=session, user="alice", query="set the magnet to 2",
                     state=state, created_at=NOW, updated_at=NOW)


def an_approval(run_id: str = "run-1", approval_id: str = "apv-1", *,
                session: str = "s1") -> ApprovalRecord:
    artifact = {"channel": "MAG:CURRENT", "value": 2.0}
    return ApprovalRecord(id=approval_id, run_id=run_id, session=session,
                          kind=ApprovalKind.STEP, step_index=0, action="channel_write",
                          artifact=artifact, artifact_sha256=sha256_of(artifact),
                          summary="write 2.0 to MAG:CURRENT", requested_by="alice",
                          created_at=NOW, expires_at=NOW + timedelta(hours=1))


def an_audit(action: str = "approval_requested") -> AuditRecord:
    return AuditRecord(at=NOW, actor="alice", interface="api", action=action, run_id="run-1")


def seed(store: RunStore, *approvals: ApprovalRecord) -> None:
    with store.transaction() as tx:
        tx.insert_run(a_run())
        for approval in approvals:
            tx.insert_approval(approval)


def decided(approval: ApprovalRecord, by: str,
            status: ApprovalStatus = ApprovalStatus.APPROVED) -> ApprovalRecord:
    return approval.model_copy(update={"status": status, "decided_by": by, "decided_at": NOW})


# -- schema ---------------------------------------------------------------------------


def test_new_store_is_at_the_current_schema_and_reopening_keeps_everything(
        run_store_engine: StoreEngine) -> None:
    first = run_store_engine.open()
    assert first.schema_version == len(MIGRATIONS) == 3
    seed(first, an_approval())
    with first.transaction() as tx:
        tx.append_audit(an_audit())
        tx.append_event(EventRecord(run_id="run-1", at=NOW, kind="submitted"))
    first.close()

    again = run_store_engine.open()
    try:
        assert again.schema_version == 3
        assert again.get_run("run-1") == a_run()
        assert again.get_approval("apv-1") == an_approval()
        assert [entry.action for entry in again.audit()] == ["approval_requested"]
        assert [event.kind for event in again.events("run-1")] == ["submitted"]
    finally:
        again.close()


def test_a_store_from_a_newer_osprey_is_refused_and_left_alone(
        run_store_engine: StoreEngine) -> None:
    run_store_engine.open().close()
    raw(run_store_engine, "UPDATE meta SET value='99' WHERE key='schema_version'"
        if run_store_engine.name == "sqlite" else
        "INSERT INTO schema_version (version) VALUES (99)")
    before = snapshot(run_store_engine)

    with pytest.raises(StoreError, match=r"has schema version 99, newer than this osprey-core "
                       r"understands \(3\); upgrade osprey-core"):
        run_store_engine.open()

    assert snapshot(run_store_engine) == before


def raw(engine: StoreEngine, statement: str) -> None:
    """``statement`` through a plain connection of the engine's own driver, as anyone with
    the file or the database's address would try it (the engine's error propagates)."""
    if engine.path is not None:
        with contextlib.closing(sqlite3.connect(engine.path)) as conn, conn:
            conn.execute(statement)
        return
    import psycopg

    with psycopg.connect(engine.url, autocommit=True) as conn:
        conn.execute(statement)  # type: ignore[arg-type]


def snapshot(engine: StoreEngine) -> object:
    """Everything stored, to compare before and after a refusal."""
    if engine.path is not None:
        return engine.path.read_bytes()
    import psycopg

    with psycopg.connect(engine.url) as conn:
        return conn.execute("SELECT version FROM schema_version ORDER BY version").fetchall()


# SQLite only: a file that is not a database has no PostgreSQL counterpart.
def test_a_file_that_is_not_a_database_is_never_replaced(path: Path) -> None:
    path.parent.mkdir(parents=True)
    path.write_bytes(b"definitely not sqlite" * 100)

    with pytest.raises(StoreDamagedError, match="is not an SQLite database"):
        RunStore(path)

    assert path.read_bytes() == b"definitely not sqlite" * 100


# -- the audit log --------------------------------------------------------------------


@pytest.mark.parametrize("statement", [
    "UPDATE audit SET action='nothing_happened'",
    "UPDATE audit SET data='{}' WHERE id=1",
    "DELETE FROM audit",
    "DELETE FROM audit WHERE id=1",
])
def test_the_audit_log_is_append_only(store: RunStore, run_store_engine: StoreEngine,
                                      statement: str) -> None:
    with store.transaction() as tx:
        tx.append_audit(an_audit())
    before = store.audit()

    with pytest.raises((sqlite3.IntegrityError, StoreError),
                       match="the audit log is append-only"):
        store.conn.execute(statement)
    # Also from a plain connection, as anyone with the file or the database would try it.
    with pytest.raises(Exception, match="the audit log is append-only") as refused:
        raw(run_store_engine, statement)
    assert not isinstance(refused.value, StoreError)  # the engine itself refused

    assert store.audit() == before
    with store.transaction() as tx:
        tx.append_audit(an_audit("approval_approved"))
    assert [entry.action for entry in store.audit()] == ["approval_requested",
                                                         "approval_approved"]
    assert [entry.id for entry in store.audit()] == [1, 2]


# -- transactions and compare-and-set -------------------------------------------------


def test_a_failed_transaction_writes_nothing(store: RunStore) -> None:
    with pytest.raises(RuntimeError, match="crash mid-transaction"), store.transaction() as tx:
        tx.insert_run(a_run())
        tx.insert_approval(an_approval())
        tx.append_audit(an_audit())
        raise RuntimeError("crash mid-transaction")

    assert store.list_runs() == []
    assert store.list_approvals() == []
    assert store.audit() == []


def test_nested_transactions_are_refused(store: RunStore) -> None:
    with pytest.raises(StoreError, match="nested store transactions are not supported"), \
            store.transaction(), store.transaction():
        pass  # pragma: no cover - never reached
    with store.transaction() as tx:  # the outer one rolled back; the store is usable
        tx.insert_run(a_run())
    assert store.get_run("run-1").state is RunState.RECEIVED


def test_run_update_is_a_compare_and_set_on_the_state(store: RunStore) -> None:
    seed(store)
    moved = a_run(state=RunState.CLASSIFYING)
    with store.transaction() as tx:
        tx.update_run(moved, expect_state=RunState.RECEIVED)

    stale = a_run(state=RunState.CANCELLED)
    with pytest.raises(ConflictError, match="run 'run-1' is classifying, not received"), \
            store.transaction() as tx:
        tx.update_run(stale, expect_state=RunState.RECEIVED)
    assert store.get_run("run-1").state is RunState.CLASSIFYING
    with pytest.raises(StoreError, match="unknown run 'run-2'"), store.transaction() as tx:
        tx.update_run(a_run("run-2"))


def test_a_decision_is_single_use_across_connections(
        store: RunStore, run_store_engine: StoreEngine) -> None:
    approval = an_approval()
    seed(store, approval)
    other = run_store_engine.open()
    try:
        with store.transaction() as tx:
            tx.close_approval(decided(approval, "alice"))
        with pytest.raises(ConflictError, match="approval 'apv-1' was already approved by "
                           "alice"), other.transaction() as tx:
            tx.close_approval(decided(approval, "bob", ApprovalStatus.REJECTED))
    finally:
        other.close()

    stored = store.get_approval("apv-1")
    assert (stored.status, stored.decided_by) == (ApprovalStatus.APPROVED, "alice")


def test_a_lost_decision_rolls_back_the_writes_beside_it(store: RunStore) -> None:
    approval = an_approval()
    seed(store, approval)
    with store.transaction() as tx:
        tx.close_approval(decided(approval, "alice"))

    with pytest.raises(ConflictError), store.transaction() as tx:
        tx.append_audit(an_audit("approval_approved"))
        tx.update_run(a_run(state=RunState.EXECUTING))
        tx.close_approval(decided(approval, "bob"))

    assert store.audit() == []
    assert store.get_run("run-1").state is RunState.RECEIVED


# -- reading --------------------------------------------------------------------------


def test_unknown_ids_are_store_errors(store: RunStore) -> None:
    with pytest.raises(StoreError, match="unknown run 'run-x'"):
        store.get_run("run-x")
    with pytest.raises(StoreError, match="unknown approval 'apv-x'"):
        store.get_approval("apv-x")


def test_listing_filters_by_session_state_status_and_run(store: RunStore) -> None:
    with store.transaction() as tx:
        tx.insert_run(a_run("run-1", session="s1"))
        tx.insert_run(a_run("run-2", session="s2", state=RunState.AWAITING_STEP_APPROVAL))
        tx.insert_approval(an_approval("run-1", "apv-1", session="s1"))
        tx.insert_approval(an_approval("run-2", "apv-2", session="s2"))
        tx.close_approval(decided(an_approval("run-1", "apv-1"), "alice"))
        tx.save_step(StepRecord(run_id="run-1", index=0, capability="set_magnet",
                                status=StepStatus.SUCCEEDED, idempotency_key="run-1:0"))

    assert [run.id for run in store.list_runs(session="s2")] == ["run-2"]
    assert [run.id for run in store.list_runs(
        states={RunState.AWAITING_STEP_APPROVAL, RunState.DONE})] == ["run-2"]
    assert [a.id for a in store.list_approvals(status=ApprovalStatus.PENDING)] == ["apv-2"]
    assert [a.id for a in store.list_approvals(session="s1")] == ["apv-1"]
    assert [a.id for a in store.list_approvals(run_id="run-2")] == ["apv-2"]
    assert [(s.index, s.status) for s in store.steps("run-1")] == [(0, StepStatus.SUCCEEDED)]
    assert store.steps("run-2") == []


def test_a_step_is_one_row_per_run_and_index(store: RunStore) -> None:
    seed(store)
    running = StepRecord(run_id="run-1", index=0, capability="set_magnet",
                         status=StepStatus.RUNNING, side_effects=True, idempotency_key="run-1:0")
    with store.transaction() as tx:
        tx.save_step(running)
        tx.save_step(running.model_copy(update={"status": StepStatus.SUCCEEDED,
                                                "result": {"written": 2.0}}))

    [saved] = store.steps("run-1")
    assert (saved.status, saved.result) == (StepStatus.SUCCEEDED, {"written": 2.0})


def test_context_values_json_databases_refuse_come_back_exactly(store: RunStore) -> None:
    """A channel read of NaN, an infinite limit, a NUL in a string: SQLite keeps them as
    they are; PostgreSQL's jsonb refuses them, so that engine keeps them as JSON text."""
    values = {"nan": float("nan"), "limits": [float("-inf"), float("inf")], "raw": "a\x00b",
              "wrapper_shaped": {"__osprey_json_text__": "[1]"}, "plain": {"b": 1, "a": [2]}}
    seed(store)
    with store.transaction() as tx:
        for key, value in values.items():
            tx.put_context("run-1", key, value)

    context = store.get_run("run-1").context
    assert math.isnan(context.pop("nan"))
    assert context == {key: value for key, value in values.items() if key != "nan"}
