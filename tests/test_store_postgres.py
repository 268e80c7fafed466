"""What only a shared PostgreSQL store adds: workers in separate processes racing for the
same decision, the server going away and coming back, moving an installation there
(``osprey store copy`` / ``migrate``), and the token store on both engines."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import threading
import time
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path

import pytest
from support.dist import osprey_env, run_osprey
from support.postgres import PostgresServer, StoreEngine, assert_outage_reported, with_password
from test_store import NOW, a_run, an_approval, an_audit, decided

from osprey_core.models import ApprovalStatus, EventRecord, Plan, PlanStep, StepRecord, StepStatus
from osprey_core.run_machine import RunState
from osprey_core.service.tokens import TokenStore
from osprey_core.store import RunStore
from osprey_core.store_errors import StoreError, StoreUnavailableError
from osprey_core.stores.factory import open_url
from osprey_core.stores.postgres import PostgresRunStore, translate
from osprey_core.stores.protocol import RunStoreProtocol, StoreConnection
from osprey_core.stores.transfer import copy_store, migrate_store

#: One worker process: open the store, say "ready", wait for "go", then try to decide
#: every approval named on argv in one transaction with the run's transition.
RACER = textwrap.dedent("""
    import sys
    from test_store import a_run, an_approval, decided
    from osprey_core.run_machine import RunState
    from osprey_core.store_errors import ConflictError
    from osprey_core.stores.postgres import PostgresRunStore

    store = PostgresRunStore(sys.argv[1])
    worker = sys.argv[2]
    print("ready", flush=True)
    sys.stdin.readline()
    for approval_id in sys.argv[3:]:
        run_id = "run-" + approval_id
        try:
            with store.transaction() as tx:
                run = tx.get_run(run_id)
                tx.close_approval(decided(an_approval(run_id, approval_id), worker))
                tx.update_run(run.model_copy(update={"state": RunState.EXECUTING}),
                              expect_state=RunState.AWAITING_STEP_APPROVAL)
            print("won", approval_id, flush=True)
        except ConflictError:
            print("lost", approval_id, flush=True)
    store.close()
""")


@pytest.fixture
def pg(postgres_url: str) -> PostgresRunStore:
    store = PostgresRunStore(postgres_url, connect_timeout=2)
    yield store
    store.close()


def test_both_engines_offer_the_store_contract(run_store_engine: StoreEngine) -> None:
    store = run_store_engine.open()
    try:
        assert isinstance(store, RunStoreProtocol)
        assert isinstance(store.conn, StoreConnection) and not store.conn.in_transaction
        with store.transaction():
            assert store.conn.in_transaction
    finally:
        store.close()


def test_the_sqlite_dialect_is_translated_for_postgresql() -> None:
    assert translate("UPDATE runs SET owner=? WHERE id=? AND owner IS ?") == (
        "UPDATE runs SET owner=%s WHERE id=%s AND owner IS NOT DISTINCT FROM %s")
    assert translate("SELECT data FROM approvals WHERE x LIKE '5%' ORDER BY rowid") == (
        "SELECT data FROM approvals WHERE x LIKE '5%%' ORDER BY seq")


def test_four_worker_processes_racing_for_each_decision_exactly_one_wins(
        pg: PostgresRunStore, postgres_url: str) -> None:
    ids = [f"apv-{number}" for number in range(12)]
    with pg.transaction() as tx:
        for approval_id in ids:
            tx.insert_run(a_run(f"run-{approval_id}", state=RunState.AWAITING_STEP_APPROVAL))
            tx.insert_approval(an_approval(f"run-{approval_id}", approval_id))
    tests = Path(__file__).parent
    workers = [subprocess.Popen([sys.executable, "-c", RACER, postgres_url, f"w{n}", *ids],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                cwd=tests, env={"PYTHONPATH": str(tests), "PATH": ""})
               for n in range(4)]
    for worker in workers:
        assert worker.stdout is not None and worker.stdout.readline() == "ready\n"
    for worker in workers:  # all connected: let them go together
        assert worker.stdin is not None
        worker.stdin.write("go\n")
        worker.stdin.flush()
    outcomes = [worker.communicate(timeout=60)[0].split("\n") for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0, 0, 0]

    wins = [line.split()[1] for lines in outcomes for line in lines if line.startswith("won")]
    losses = [line for lines in outcomes for line in lines if line.startswith("lost")]
    assert sorted(wins) == sorted(ids) and len(losses) == 3 * len(ids)
    for approval_id in ids:
        stored = pg.get_approval(approval_id)
        assert stored.status is ApprovalStatus.APPROVED and (stored.decided_by or "")[0] == "w"
        assert pg.get_run(f"run-{approval_id}").state is RunState.EXECUTING


def test_a_run_read_in_a_transaction_stays_locked_until_it_commits(
        pg: PostgresRunStore, postgres_url: str) -> None:
    """The second worker's read waits for the first's commit and sees its transition,
    as SQLite's BEGIN IMMEDIATE would make it."""
    with pg.transaction() as tx:
        tx.insert_run(a_run())
    other = PostgresRunStore(postgres_url)
    seen: list[RunState] = []
    try:
        with pg.transaction() as tx:
            run = tx.get_run("run-1")
            reader = threading.Thread(target=lambda: seen.append(_read_in_tx(other)))
            reader.start()
            while not pg_waiting_for_a_lock(postgres_url):
                assert reader.is_alive()
            tx.update_run(run.model_copy(update={"state": RunState.CLASSIFYING}),
                          expect_state=RunState.RECEIVED)
        reader.join(timeout=30)
    finally:
        other.close()
    assert seen == [RunState.CLASSIFYING]


def _read_in_tx(store: PostgresRunStore) -> RunState:
    with store.transaction() as tx:
        return tx.get_run("run-1").state


def pg_waiting_for_a_lock(url: str) -> bool:
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type="
                           "'Lock' AND datname=current_database()").fetchone()
    return bool(row and row[0])


def test_the_server_going_away_is_a_clear_error_and_its_return_needs_nothing(
        postgres_server: PostgresServer, postgres_url: str) -> None:
    url = with_password(postgres_url)
    store = PostgresRunStore(url, connect_timeout=2)
    try:
        with store.transaction() as tx:
            tx.insert_run(a_run())
        with postgres_server.stopped():
            with pytest.raises(StoreUnavailableError) as down:
                store.get_run("run-1")
            with pytest.raises(StoreUnavailableError), store.transaction() as tx:
                tx.insert_run(a_run("run-2"))
            with pytest.raises(StoreUnavailableError):
                PostgresRunStore(url, connect_timeout=2)
        assert_outage_reported(down.value, postgres_server)
        assert store.get_run("run-1") == a_run()  # the same store object, no manual step
        assert [run.id for run in store.list_runs()] == ["run-1"]  # run-2 never half-written
        with store.transaction() as tx:
            tx.insert_run(a_run("run-3"))
        assert {run.id for run in store.list_runs()} == {"run-1", "run-3"}
    finally:
        store.close()


def test_a_hung_server_fails_operations_at_their_deadline_and_is_used_again_after(
        postgres_server: PostgresServer, postgres_url: str) -> None:
    """SIGSTOP, not a shutdown: nothing closes, and without a deadline a statement would
    wait for ever. Bounds here are generous: they tell a deadline from no deadline."""
    store = PostgresRunStore(postgres_url, connect_timeout=2, operation_timeout=2)
    try:
        with store.transaction() as tx:
            tx.insert_run(a_run())
        with ExitStack() as hung:
            started = time.monotonic()
            with pytest.raises(StoreUnavailableError) as cut, store.transaction() as tx:
                tx.get_run("run-1")
                hung.enter_context(postgres_server.frozen())  # mid-transaction
                tx.insert_run(a_run("run-2"))
            in_flight = time.monotonic() - started
            started = time.monotonic()
            with pytest.raises(StoreUnavailableError) as refused:
                store.get_run("run-1")  # the next call: a pooled connection checked, a probe
            next_call = time.monotonic() - started
        assert "no answer within 2 s (store.operation_timeout)" in str(cut.value)
        assert f"PostgreSQL store at 127.0.0.1:{postgres_server.port}" in str(refused.value)
        assert in_flight < 10 and next_call < 15, (in_flight, next_call)
        assert store.get_run("run-1") == a_run()  # continued: the same store works again
        assert [run.id for run in store.list_runs()] == ["run-1"]  # run-2 never half-written
    finally:
        store.close()


def test_osprey_serve_answers_503_while_the_database_is_down_then_recovers(
        postgres_server: PostgresServer, postgres_url: str, tmp_path: Path) -> None:
    from support.service import running_server

    with running_server(tmp_path / "home", OSPREY__STORE__URL=postgres_url,
                        OSPREY__STORE__CONNECT_TIMEOUT="2") as server, \
            server.client(server.token("olga", "operator")) as client:
        assert client.get("/api/v1/runs").status_code == 200
        postgres_server.ctl("stop")
        try:
            down = client.get("/api/v1/runs")
        finally:
            postgres_server.ctl("start")
        assert down.status_code == 503, down.text
        error = down.json()["error"]
        assert error["code"] == "store_error"
        assert f"PostgreSQL store at 127.0.0.1:{postgres_server.port}" in error["message"]
        assert client.get("/api/v1/runs").status_code == 200  # no restart, no manual step


def test_a_bad_url_is_refused_without_its_password() -> None:
    with pytest.raises(StoreError, match=r"not 'mysql:\.\.\.'"):
        open_url("mysql://root:pw@db/x")
    with pytest.raises(StoreUnavailableError, match=r"127\.0\.0\.1:1 ") as refused:
        open_url("postgresql://u:hunter2@127.0.0.1:1/x", connect_timeout=2)
    assert "hunter2" not in str(refused.value)


def test_tokens_live_in_either_engine(run_store_engine: StoreEngine) -> None:
    store = run_store_engine.open()
    try:
        tokens = TokenStore(store)
        record, secret = tokens.create("console", ["approver"], created_by="alice", now=NOW,
                                       expires_in=timedelta(days=1))
        assert tokens.verify(secret, now=NOW + timedelta(hours=1)) == record.model_copy(
            update={"last_used_at": NOW + timedelta(hours=1)})
        assert tokens.verify(secret, now=NOW + timedelta(days=2)) is None
        tokens.revoke(record.id, actor="bob", now=NOW)
        assert tokens.verify(secret, now=NOW) is None
        assert [entry.action for entry in store.audit()] == ["token_created", "token_revoked"]
        # Raw SQL reads what SQLite stored: ISO text for times, JSON text for records.
        assert store.conn.execute("SELECT created_at, roles FROM api_tokens").fetchall() == [
            (NOW.isoformat(), '["approver"]')]
    finally:
        store.close()


def test_the_services_raw_sql_reads_either_engine(run_store_engine: StoreEngine) -> None:
    from osprey_core.service.api_health import exposition

    store = run_store_engine.open()
    try:
        with store.transaction() as tx:
            tx.insert_run(a_run(state=RunState.AWAITING_STEP_APPROVAL))
            tx.insert_approval(an_approval())
        metrics = exposition(store, NOW)
    finally:
        store.close()
    assert 'osprey_runs{state="awaiting_step_approval"} 1' in metrics
    assert "osprey_pending_approvals 1" in metrics


def test_threads_sharing_one_store_each_get_their_own_transaction(pg: PostgresRunStore) -> None:
    """A transaction belongs to its thread: others run beside it on other connections."""
    inside, release = threading.Event(), threading.Event()

    def hold() -> None:
        with pg.transaction() as tx:
            tx.insert_run(a_run("run-held"))
            inside.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    assert inside.wait(30)
    assert not pg.conn.in_transaction  # this thread has none of its own
    with pg.transaction() as tx:
        tx.insert_run(a_run("run-beside"))
    assert [run.id for run in pg.list_runs()] == ["run-beside"]  # the held one is unseen
    release.set()
    holder.join(30)
    assert {run.id for run in pg.list_runs()} == {"run-beside", "run-held"}


# -- moving an installation ------------------------------------------------------------


def filled(path: Path) -> RunStore:
    """A SQLite store with something in every table."""
    store = RunStore(path)
    TokenStore(store).create("ci", ["viewer"], created_by="alice", now=NOW)
    plan = Plan(steps=[PlanStep(output="magnet", capability="set_magnet",
                                parameters={"value": 2.0})])
    with store.transaction() as tx:
        for number in range(3):
            run = a_run(f"run-{number}", state=RunState.AWAITING_STEP_APPROVAL)
            tx.insert_run(run.model_copy(update={"plan": plan, "context": {
                "query": f"q{number}", "beam": {"z": 1, "a": [1.5, None, "é"]}}}))
            tx.insert_approval(an_approval(f"run-{number}", f"apv-{number}"))
            tx.save_step(StepRecord(run_id=f"run-{number}", index=0, capability="set_magnet",
                                    status=StepStatus.SUCCEEDED,
                                    idempotency_key=f"run-{number}:0"))
            tx.append_event(EventRecord(run_id=f"run-{number}", at=NOW, kind="submitted"))
        tx.close_approval(decided(an_approval("run-0", "apv-0"), "bob"))
        tx.append_audit(an_audit())
    return store


def everything(store: RunStore) -> tuple[object, ...]:
    runs = store.list_runs()
    return (runs, store.list_approvals(), store.audit(), TokenStore(store).list(),
            [store.steps(run.id) for run in runs], [store.events(run.id) for run in runs])


def test_copy_sqlite_to_postgresql_and_back_keeps_every_row(tmp_path: Path,
                                                            postgres_url: str) -> None:
    source = filled(tmp_path / "a.db")
    before = everything(source)
    source.close()

    report = copy_store(f"sqlite:{tmp_path / 'a.db'}", postgres_url)
    assert report.counts == {"runs": 3, "run_plans": 3, "run_context": 6, "steps": 3,
                             "approvals": 3, "audit": 2, "events": 3, "api_tokens": 1}
    copied = PostgresRunStore(postgres_url)
    try:
        assert everything(copied) == before
        with copied.transaction() as tx:  # numbering goes on after the copied ids
            tx.append_audit(an_audit("after_the_copy"))
        assert [entry.id for entry in copied.audit()] == [1, 2, 3]
    finally:
        copied.close()
    with pytest.raises(StoreError, match=r"not empty \(3 runs, .*3 audit"):
        copy_store(f"sqlite:{tmp_path / 'a.db'}", postgres_url)

    back = copy_store(postgres_url, f"sqlite:{tmp_path / 'b.db'}")
    assert back.counts["audit"] == 3
    again = RunStore(tmp_path / "b.db")
    try:
        runs, approvals, audit, tokens, steps, events = everything(again)
        assert (runs, approvals, tokens, steps, events) == (before[0], before[1], before[3],
                                                            before[4], before[5])
        assert audit[:2] == before[2]
    finally:
        again.close()


def test_osprey_store_migrate_and_copy_commands(tmp_path: Path, postgres_url: str) -> None:
    home = tmp_path / "home"
    filled(home / "osprey.db").close()
    env = osprey_env(home)

    migrated = run_osprey("store", "migrate", "--url", postgres_url, "--json", env=env,
                          cwd=tmp_path)
    assert migrated.returncode == 0, migrated.stderr
    assert json.loads(migrated.stdout)["schema_version_before"] == 0
    assert json.loads(migrated.stdout)["schema_version"] == 3

    copied = run_osprey("store", "copy", "--to", postgres_url, env=env, cwd=tmp_path)
    assert copied.returncode == 0, copied.stderr
    assert "runs" in copied.stdout and "api_tokens" in copied.stdout
    assert "memory entries" in copied.stdout

    on_postgres = osprey_env(home, OSPREY__STORE__URL=postgres_url)
    listed = run_osprey("runs", "list", "--json", env=on_postgres, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert sorted(run["id"] for run in json.loads(listed.stdout)) == ["run-0", "run-1", "run-2"]
    again = run_osprey("store", "migrate", env=on_postgres, cwd=tmp_path)
    for part, version in (("runs", 3), ("memory", 1), ("logbook", 1)):
        assert f": {part}: already at schema version {version}" in again.stdout
    refused = run_osprey("store", "copy", "--to", postgres_url, env=env, cwd=tmp_path)
    assert refused.returncode == 1 and "it is not empty" in refused.stderr
    checked = run_osprey("store", "check", "--json", env=on_postgres, cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    report = json.loads(checked.stdout)
    assert report["ok"] and report["schema_version"] == 3 and report["size_bytes"] > 0
    assert report["counts"] == {"runs": 3, "steps": 3, "approvals": 3, "audit": 2,
                                "events": 3, "run_plans": 3, "run_context": 6,
                                "api_tokens": 1, "pending_approvals": 2,
                                "memory_entries": 0, "logbook_entries": 0}
    assert "password" not in report["path"] and report["path"].startswith("postgresql://")
    backup = run_osprey("store", "backup", env=on_postgres, cwd=tmp_path)
    assert backup.returncode == 1 and "pg_dump" in backup.stderr


def test_store_check_reports_a_database_osprey_never_set_up(postgres_url: str,
                                                            tmp_path: Path) -> None:
    env = osprey_env(tmp_path / "home", OSPREY__STORE__URL=postgres_url)
    checked = run_osprey("store", "check", env=env, cwd=tmp_path)
    assert checked.returncode == 1
    assert "no schema version: osprey has not set up this database" in checked.stderr


def test_migrate_refuses_a_newer_postgresql_store(pg: PostgresRunStore, postgres_url: str) -> None:
    pg.conn.execute("INSERT INTO schema_version (version) VALUES (99)")
    with pytest.raises(StoreError, match="has schema version 99, newer than this osprey-core"):
        migrate_store(postgres_url)
    assert pg.schema_version == 99
