"""What only user memory in PostgreSQL adds: workers in separate processes adding at once
(the cap holds, nothing is lost), the server going away and coming back (directly and
through ``osprey serve``), the memory table's own migrations, and moving an installation's
memory files there with ``osprey store copy``."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import psycopg
import pytest
from support.dist import osprey_env, run_osprey
from support.postgres import PostgresServer, assert_outage_reported, with_password

from osprey_core.memory.errors import MemoryCorruptError, MemoryStoreError
from osprey_core.memory.postgres import PostgresMemoryStore
from osprey_core.memory.store import MemoryStore
from osprey_core.settings import MemorySettings
from osprey_core.store_errors import StoreError, StoreUnavailableError
from osprey_core.stores.postgres_schema import PART_MIGRATIONS
from osprey_core.stores.transfer import copy_store, migrate_store

#: One worker process: connect, say "ready", wait for "go", add COUNT memories for "ana"
#: and print each id saved, or "refused" for each add the entry cap refused.
ADDER = textwrap.dedent("""
    import sys
    from osprey_core.memory.errors import MemoryLimitError
    from osprey_core.memory.postgres import PostgresMemoryStore
    from osprey_core.settings import MemorySettings

    url, worker, count, cap = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    store = PostgresMemoryStore.connect(url, MemorySettings(max_entries=cap))
    print("ready", flush=True)
    sys.stdin.readline()
    for number in range(count):
        try:
            print(store.add("ana", f"worker {worker} note {number}").id, flush=True)
        except MemoryLimitError:
            print("refused", flush=True)
    store.close()
""")


@pytest.fixture
def memory(postgres_url: str) -> PostgresMemoryStore:
    store = PostgresMemoryStore.connect(postgres_url, connect_timeout=2)
    yield store
    store.close()


def _race(tmp_path: Path, url: str, workers: int, count: int, cap: int) -> list[str]:
    """What every worker printed, once all of them started adding at the same moment."""
    script = tmp_path / "adder.py"
    script.write_text(ADDER, encoding="utf-8")
    processes = [subprocess.Popen([sys.executable, str(script), url, str(worker), str(count),
                                   str(cap)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True)
                 for worker in range(workers)]
    for process in processes:  # every worker is connected before any adds
        assert process.stdout is not None and process.stdout.readline() == "ready\n"
    for process in processes:
        assert process.stdin is not None
        process.stdin.write("go\n")
        process.stdin.flush()
    printed = []
    for process in processes:
        out, err = process.communicate(timeout=180)
        assert process.returncode == 0, err
        printed += out.split()
    return printed


def test_workers_adding_at_once_never_exceed_the_cap_nor_lose_an_entry(
        tmp_path: Path, postgres_url: str, memory: PostgresMemoryStore) -> None:
    printed = _race(tmp_path, postgres_url, workers=6, count=25, cap=100)
    saved = [word for word in printed if word != "refused"]
    assert len(saved) == 100 and printed.count("refused") == 50
    stored = memory.entries("ana")
    assert sorted(entry.id for entry in stored) == sorted(saved)  # every acknowledged add
    assert len({entry.text for entry in stored}) == 100


def test_workers_adding_at_once_under_no_cap_keep_every_entry(
        tmp_path: Path, postgres_url: str, memory: PostgresMemoryStore) -> None:
    printed = _race(tmp_path, postgres_url, workers=4, count=30, cap=5000)
    assert "refused" not in printed and len(set(printed)) == 120
    assert {entry.text for entry in memory.entries("ana")} == {
        f"worker {worker} note {number}" for worker in range(4) for number in range(30)}


def test_the_server_going_away_is_a_clear_error_and_its_return_needs_nothing(
        postgres_server: PostgresServer, postgres_url: str) -> None:
    url = with_password(postgres_url)
    store = PostgresMemoryStore.connect(url, connect_timeout=2)
    try:
        kept = store.add("ana", "always plot in mm")
        with postgres_server.stopped():
            for attempt in (lambda: store.entries("ana"), lambda: store.add("ana", "lost?"),
                            lambda: store.delete("ana", kept.id)):
                with pytest.raises(StoreUnavailableError) as down:
                    attempt()
            with pytest.raises(StoreUnavailableError):
                PostgresMemoryStore.connect(url, connect_timeout=2)
        assert_outage_reported(down.value, postgres_server)
        assert store.entries("ana") == [kept]  # the same object works again; nothing lost
        store.add("ana", "after the outage")
        assert [entry.text for entry in store.entries("ana")] == [
            "always plot in mm", "after the outage"]
    finally:
        store.close()


def test_osprey_serve_answers_503_for_memory_while_the_database_is_down(
        postgres_server: PostgresServer, postgres_url: str, tmp_path: Path) -> None:
    from support.service import cli, running_server

    home = tmp_path / "home"
    with running_server(home, OSPREY__STORE__URL=postgres_url,
                        OSPREY__STORE__CONNECT_TIMEOUT="2") as server, \
            server.client(server.token("olga", "operator")) as olga:
        saved = olga.post("/api/v1/memory", json={"text": "BPM 3 reads 0.2 mm high"}).json()
        with postgres_server.stopped():
            down = olga.post("/api/v1/memory", json={"text": "lost?"})
        assert down.status_code == 503, down.text
        assert down.json()["error"]["code"] == "store_error"
        assert f"127.0.0.1:{postgres_server.port}" in down.json()["error"]["message"]
        assert [item["id"] for item in olga.get("/api/v1/memory").json()] == [saved["id"]]
        listed = cli(server, "memory", "list", "--user", "olga", "--json")
        assert [item["id"] for item in json.loads(listed.stdout)] == [saved["id"]]
    assert not (home / "memory").exists()  # in the database, not in files


def test_the_memory_table_migrates_once_and_a_newer_one_is_refused(postgres_url: str) -> None:
    first = migrate_store(postgres_url)
    latest = len(PART_MIGRATIONS["memory"])
    assert first.parts["memory"] == (0, latest)
    again = migrate_store(postgres_url)
    assert again.parts["memory"] == (latest, latest) and again.after == first.after
    store = PostgresMemoryStore.connect(postgres_url)  # connecting migrates too: no change
    store.add("ana", "kept across migrations")
    store.close()
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("INSERT INTO part_schema_version (part, version) VALUES ('memory', 99)")
    with pytest.raises(StoreError, match="memory schema version 99, newer than this"):
        PostgresMemoryStore.connect(postgres_url)
    with pytest.raises(StoreError, match="memory schema version 99"):
        migrate_store(postgres_url)
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("DELETE FROM part_schema_version WHERE version = 99")
        texts = conn.execute("SELECT text FROM memory_entries").fetchall()
    assert texts == [("kept across migrations",)]


def test_repair_has_nothing_to_do_and_says_where_memory_is(tmp_path: Path,
                                                         postgres_url: str) -> None:
    env = osprey_env(tmp_path / "home", OSPREY__STORE__URL=postgres_url, USER="ana",
                     LOGNAME="ana")
    run_osprey("memory", "add", "always plot in mm", env=env, cwd=tmp_path)
    repaired = run_osprey("memory", "repair", "--json", env=env, cwd=tmp_path)
    assert repaired.returncode == 0, repaired.stderr
    report = json.loads(repaired.stdout)
    assert (report["repaired"], report["kept"]) == (False, 1)
    assert "nothing to repair" in report["problem"] and report["path"] == postgres_url


def test_store_copy_moves_the_memory_files_of_the_home(tmp_path: Path,
                                                       postgres_url: str) -> None:
    from osprey_core.store import RunStore

    home = tmp_path / "home"
    RunStore(home / "osprey.db").close()
    files = MemoryStore(home, MemorySettings())
    for user in ("ana", "bob", "x" * 300):  # the last one's file name is hashed
        files.add(user, f"{user[:5]} plots in mm", ["plots"])
        files.add(user, f"{user[:5]} uses BPM01-BPM04")
    report = copy_store(f"sqlite:{home / 'osprey.db'}", postgres_url)
    assert report.memory_entries == 6 and report.to_json()["memory_entries"] == 6
    moved = PostgresMemoryStore.connect(postgres_url)
    try:
        for user in ("ana", "bob", "x" * 300):
            assert moved.entries(user) == files.entries(user)
    finally:
        moved.close()
    with pytest.raises(StoreError, match=r"not empty \(6 memory_entries\)"):
        copy_store(f"sqlite:{home / 'osprey.db'}", postgres_url)

    back = tmp_path / "back"
    assert copy_store(postgres_url, f"sqlite:{back / 'osprey.db'}").memory_entries == 6
    for user in ("ana", "bob", "x" * 300):  # written as files again, with checksums
        assert MemoryStore(back).entries(user) == files.entries(user)
    with pytest.raises(MemoryStoreError, match="holds memory files already"):
        copy_store(postgres_url, f"sqlite:{home / 'other.db'}")  # a copy never merges
    assert not (home / "other.db").exists()


def test_store_copy_refuses_a_damaged_memory_file_and_writes_nothing(
        tmp_path: Path, postgres_url: str) -> None:
    from osprey_core.store import RunStore

    home = tmp_path / "home"
    RunStore(home / "osprey.db").close()
    files = MemoryStore(home)
    files.add("ana", "fine")
    files.add("bob", "damaged")
    path = files.path_for("bob")
    path.write_bytes(path.read_bytes().replace(b"damaged", b"DAMAGED"))
    with pytest.raises(MemoryCorruptError, match="osprey memory repair --user bob"):
        copy_store(f"sqlite:{home / 'osprey.db'}", postgres_url)
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT to_regclass('runs')").fetchone() == (None,)


def test_a_process_keeps_a_few_pools_and_an_evicted_one_still_works(
        postgres_server: PostgresServer, tmp_path: Path) -> None:
    from osprey_core.config import load_config
    from osprey_core.memory import factory
    from osprey_core.plugin_host import load_plugins
    from osprey_core.stores import kept

    host = load_plugins(environ={"OSPREY_LOAD_PLUGINS": "", "OSPREY_STRICT_PLUGINS": "1"})
    names = [postgres_server.new_database() for _ in range(kept.KEPT + 1)]
    try:
        stores = []
        for name in names:
            path = tmp_path / f"{name}.yml"
            path.write_text(json.dumps({"home": "home", "store": {
                "url": postgres_server.url(name)}}), encoding="utf-8")
            store = factory.open_memory_store(load_config(host, path, environ={}))
            store.add("ana", f"kept in {name}")
            stores.append(store)
        assert kept.kept_count() == kept.KEPT  # the first one's pool was closed
        assert [entry.text for entry in stores[0].entries("ana")] == [f"kept in {names[0]}"]
        stores[0].db.close()  # the pool its next operation opened
    finally:
        kept.close_kept()
        for name in names:
            postgres_server.drop_database(name)
