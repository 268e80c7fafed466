"""The memory store: entries, search, caps and export/import on both engines (files, and
PostgreSQL when ``store.url`` names it); file names for any user id, corruption (reported,
kept, repaired), the line cache, the lock and many processes adding at once on files.
PostgreSQL's own concurrency and outages are in test_memory_postgres.py."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any

import pytest
from support.postgres import MemoryEngine

from osprey_core.memory.errors import (
    InvalidMemoryError,
    InvalidUserError,
    MemoryCorruptError,
    MemoryLimitError,
    MemoryNotFoundError,
    MemoryStoreError,
)
from osprey_core.memory.naming import decode_stem, encode_user
from osprey_core.memory.store import MemoryStore
from osprey_core.settings import MemorySettings


@pytest.fixture
def store(tmp_path: Path) -> MemoryStore:
    """The file store (the tests about files)."""
    return MemoryStore(tmp_path / "home")


@pytest.fixture
def memory(memory_engine: MemoryEngine) -> Any:
    """A store with the default caps, on each engine."""
    return memory_engine.open()


# -- file names ---------------------------------------------------------------------------------

AWKWARD_USERS = ["a.b", "ab", "a/b", "../x", "..", ".", "A", "a", "_41", "a_41", "ünï", "日本",
                 "a b", " ", "\x00", "x" * 300, "x" * 301, "É" * 200, "a\\b", "C:", "-rf"]


def test_awkward_user_ids_get_distinct_reversible_files_inside_the_memory_dir(
        store: MemoryStore) -> None:
    for user in AWKWARD_USERS:
        store.add(user, f"memory of {user!r}")
    files = sorted(store.directory.glob("*.json"))
    assert len(files) == len(AWKWARD_USERS)
    for path in files:
        assert path.resolve().parent == store.directory.resolve()
        assert len(path.name.encode()) + len(".corrupt-20300101T000000.000000Z-99") <= 255
        assert not path.name.startswith(".")
    for user in AWKWARD_USERS:
        path = store.path_for(user)
        assert [entry.text for entry in store.entries(user)] == [f"memory of {user!r}"]
        assert json.loads(path.read_text(encoding="utf-8"))["user"] == user
        stem = path.name.removesuffix(".json")
        assert decode_stem(stem) in (user, None)  # None: long ids are hashed
        assert (decode_stem(stem) is None) == (len(stem) > 160 or stem.startswith("_h-"))
    assert encode_user("a.b") != encode_user("ab") and encode_user("A") != encode_user("a")
    assert encode_user("a.b").lower() != encode_user("ab").lower()


@pytest.mark.parametrize("user", ["", "\udcff"])
def test_an_empty_or_broken_user_id_is_refused(memory_engine: MemoryEngine, memory: Any,
                                                user: str) -> None:
    with pytest.raises(InvalidUserError):
        memory.add(user, "x")
    assert memory_engine.snapshot() in ({}, [])


def test_awkward_user_ids_are_kept_apart(memory_engine: MemoryEngine, memory: Any) -> None:
    users = [user for user in AWKWARD_USERS
             if memory_engine.name == "file" or "\x00" not in user]
    for user in users:
        memory.add(user, f"memory of {user!r}")
    for user in users:
        assert [entry.text for entry in memory.entries(user)] == [f"memory of {user!r}"]
    if memory_engine.name == "postgresql":  # text columns cannot hold NUL
        with pytest.raises(InvalidUserError, match="NUL character"):
            memory.add("a\x00b", "x")
        with pytest.raises(InvalidMemoryError, match="NUL character"):
            memory.add("ana", "a\x00b")
        assert memory.entries("ana") == []


@pytest.mark.parametrize("stem", ["_61", "a.b", "_2e", "A", "_FF"])
def test_names_that_no_user_id_produces_do_not_decode(stem: str) -> None:
    with pytest.raises(ValueError):
        decode_stem(stem)


# -- entries --------------------------------------------------------------------------------------


def test_add_get_update_delete_keep_ids_timestamps_and_source(memory: Any) -> None:
    first = memory.add("ana", "always plot in mm", ["plots", " units "], source="run-1")
    second = memory.add("ana", "my default BPM set is BPM01-BPM04")
    assert first.id != second.id and first.id.startswith("mem-")
    assert first.tags == ("plots", "units") and first.source == "run-1"
    assert second.source == "cli"
    assert first.created_at.tzinfo is UTC and first.created_at == first.updated_at
    assert memory.get("ana", first.id) == first
    changed = memory.update("ana", first.id, text="always plot in micrometres")
    assert (changed.text, changed.tags, changed.created_at) == (
        "always plot in micrometres", ("plots", "units"), first.created_at)
    assert changed.updated_at >= first.updated_at
    assert memory.update("ana", first.id, tags=[]).tags == ()
    assert memory.delete("ana", second.id) == second
    assert [entry.id for entry in memory.entries("ana")] == [first.id]
    with pytest.raises(MemoryNotFoundError, match="no memory with id 'mem-nope'"):
        memory.get("ana", "mem-nope")
    with pytest.raises(MemoryNotFoundError):
        memory.delete("ana", second.id)
    assert memory.entries("bob") == []


@pytest.mark.parametrize(("text", "tags"), [
    ("   ", []), ("ok", ["a,b"]), ("ok", [""]), ("ok", ["x" * 41]), ("ok", "abc")])
def test_blank_text_and_bad_tags_are_refused(memory: Any, text: str, tags: list[str]) -> None:
    with pytest.raises(InvalidMemoryError):
        memory.add("ana", text, tags)
    assert not memory.exists("ana")


def test_search_ranks_relevant_memories_first_and_falls_back_to_substrings(
        memory: Any) -> None:
    memory.add("ana", "always plot orbit data in mm")
    bpm = memory.add("ana", "my default BPM set is BPM01-BPM04", ["bpm"])
    memory.add("ana", "the coffee machine is on the second floor")
    corrector = memory.add("ana", "corrector HCM1 drifts when the BPM gain is high")
    hits = memory.search("ana", "which BPMs do I use by default?", limit=5)
    assert [hit.entry.id for hit in hits] == [bpm.id, corrector.id]
    assert hits[0].score > hits[1].score > 0
    [partial] = memory.search("ana", "EFAUL")  # no word in common: a substring match
    assert (partial.entry.id, partial.score) == (bpm.id, 0.0)
    assert memory.search("ana", "vacuum pumps") == []
    assert memory.search("ana", "the") == []  # only common words: nothing is relevant


# -- caps ---------------------------------------------------------------------------------------


def test_size_caps_refuse_clearly_and_write_nothing(memory_engine: MemoryEngine) -> None:
    settings = MemorySettings(max_entry_chars=50, max_entries=3, max_user_bytes=1024)
    store = memory_engine.open(settings)
    with pytest.raises(MemoryLimitError, match=r"51 characters; the limit is 50 \(memory"):
        store.add("ana", "x" * 51)
    entries = [store.add("ana", f"note {number}") for number in range(3)]
    before = memory_engine.snapshot()
    with pytest.raises(MemoryLimitError, match=r"would have 4 memories; the limit is 3"):
        store.add("ana", "one too many")
    with pytest.raises(MemoryLimitError, match="limit is 50"):
        store.update("ana", entries[0].id, text="y" * 51)
    assert memory_engine.snapshot() == before
    store.delete("ana", entries[0].id)
    deleted = memory_engine.snapshot()
    assert deleted != before  # the delete went through
    with pytest.raises(MemoryLimitError, match=r"would grow to \d+ bytes; the limit is 1024"):
        store.update("ana", entries[2].id, tags=[f"{number:02}" * 20 for number in range(20)])
    assert memory_engine.snapshot() == deleted
    if memory_engine.name == "file":
        assert len(store.path_for("ana").read_bytes()) <= 1024
    assert [entry.text for entry in store.entries("ana")] == ["note 1", "note 2"]


# -- export and import ----------------------------------------------------------------------------


def test_export_import_round_trip_keeps_ids_and_merges(memory: Any) -> None:
    kept = memory.add("ana", "always plot in mm", ["plots"])
    memory.add("ana", "my default BPM set is BPM01-BPM04")
    document = json.loads(json.dumps(memory.export("ana")))
    report = memory.import_entries("bob", document)
    assert sorted(report.added) == sorted(entry["id"] for entry in document["entries"])
    assert memory.entries("bob") == memory.entries("ana")
    again = memory.import_entries("bob", document)
    assert (again.added, again.reassigned) == ([], {})
    assert len(again.unchanged) == 2
    memory.update("bob", kept.id, text="always plot in micrometres")
    clash = memory.import_entries("bob", document)
    assert list(clash.reassigned) == [kept.id] and clash.added == [clash.reassigned[kept.id]]
    texts = sorted(entry.text for entry in memory.entries("bob"))
    assert texts == ["always plot in micrometres", "always plot in mm",
                     "my default BPM set is BPM01-BPM04"]


@pytest.mark.parametrize(("change", "error"), [
    (lambda doc: doc["entries"][1].update(text=""), "entry 2"),
    (lambda doc: doc["entries"][0].update(created_at="2030-01-01T00:00:00"), "entry 1"),
    (lambda doc: doc["entries"].append({"text": "x"}), "entry 3"),
    (lambda doc: doc.update(version=9), "version 9"),
    (lambda doc: doc.update(format="other"), "not an osprey-memory export"),
    (lambda doc: doc["entries"][0].update(text="y" * 3000), "entry 1 .*limit is 2000"),
])
def test_a_bad_import_changes_nothing(memory_engine: MemoryEngine, memory: Any, change,
                                      error: str) -> None:
    memory.add("ana", "first")
    memory.add("ana", "second")
    document = memory.export("ana")
    change(document)
    memory.add("bob", "bob's own")
    before = memory_engine.snapshot()
    with pytest.raises((InvalidMemoryError, MemoryLimitError), match=error):
        memory.import_entries("bob", document)
    assert memory_engine.snapshot() == before


def test_an_import_over_the_entry_cap_changes_nothing(memory_engine: MemoryEngine) -> None:
    store = memory_engine.open(MemorySettings(max_entries=3))
    for number in range(3):
        store.add("ana", f"note {number}")
    store.add("bob", "bob's own")
    before = memory_engine.snapshot()
    with pytest.raises(MemoryLimitError, match="would have 4 memories"):
        store.import_entries("bob", store.export("ana"))
    assert memory_engine.snapshot() == before


# -- corruption -----------------------------------------------------------------------------------


def _truncate(raw: bytes) -> bytes:
    return raw[: int(len(raw) * 0.7)]


DAMAGE = {
    "truncated": _truncate,
    "garbage": lambda raw: b"\x00\xff garbage \x89PNG" * 20,
    "empty": lambda raw: b"",
    "bad entry": lambda raw: raw.replace(b'"created_at":"', b'"created_at":"not a time', 1),
    "other user": lambda raw: raw.replace(b'"user": "ana"', b'"user": "bob"', 1),
    "invalid utf-8": lambda raw: raw.replace(b"note 3", b"note \xff", 1),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_file_is_reported_kept_and_refuses_writes_until_repaired(
        tmp_path: Path, damage: str) -> None:
    store = MemoryStore(tmp_path)
    entries = [store.add("ana", f"note {number}", [f"t{number}"]) for number in range(10)]
    path = store.path_for("ana")
    damaged = DAMAGE[damage](path.read_bytes())
    path.write_bytes(damaged)

    fresh = MemoryStore(tmp_path)  # a new process knows nothing cached
    for attempt in (
        lambda: fresh.entries("ana"),
        lambda: fresh.search("ana", "note"),
        lambda: fresh.add("ana", "new"),
        lambda: fresh.update("ana", entries[0].id, text="changed"),
        lambda: fresh.delete("ana", entries[0].id),
        lambda: fresh.import_entries("ana", store.export("bob")),
        lambda: store.add("ana", "new"),  # the process that wrote it, with its cache
    ):
        with pytest.raises(MemoryCorruptError) as caught:
            attempt()
        assert str(path) in str(caught.value) and "osprey memory repair --user ana" in str(
            caught.value)
        assert path.read_bytes() == damaged
    assert store.entries("bob") == []  # other users are unaffected
    store.add("bob", "fine")

    report = fresh.repair("ana")
    assert report.repaired and report.backup is not None
    assert report.backup.read_bytes() == damaged
    assert report.backup.name.startswith("ana.json.corrupt-")
    salvaged = fresh.entries("ana")
    if damage == "truncated":
        assert 5 <= len(salvaged) < 10
        assert salvaged == entries[:len(salvaged)]
    elif damage in ("bad entry", "invalid utf-8"):
        assert (len(salvaged), len(report.dropped)) == (9, 1)
    elif damage == "other user":
        assert salvaged == entries
    else:
        assert salvaged == []
    assert f"{report.kept} entries were salvaged" in report.describe()
    fresh.add("ana", "after the repair")
    assert len(fresh.entries("ana")) == len(salvaged) + 1
    assert not fresh.repair("ana").repaired  # valid now: nothing to do
    assert report.backup.read_bytes() == damaged


def test_an_operator_formatted_file_is_read_and_rewritten_canonically(
        store: MemoryStore) -> None:
    entry = store.add("ana", "always plot in mm")
    path = store.path_for("ana")
    path.write_text(json.dumps(json.loads(path.read_text()), indent=4), encoding="utf-8")
    assert store.entries("ana") == [entry]
    store.add("ana", "second")
    assert path.read_text(encoding="utf-8").count("\n") == 4  # header, 2 entries, footer


def test_a_change_by_another_process_is_seen_despite_the_line_cache(tmp_path: Path) -> None:
    mine, theirs = MemoryStore(tmp_path), MemoryStore(tmp_path)
    entry = mine.add("ana", "version one")
    assert theirs.entries("ana") == [entry]
    theirs.update("ana", entry.id, text="version two")
    assert [item.text for item in mine.entries("ana")] == ["version two"]
    path = mine.path_for("ana")
    path.write_bytes(path.read_bytes().replace(b'"source":"cli"', b'"source":""'))
    with pytest.raises(MemoryCorruptError, match="line 2: checksum mismatch"):
        mine.entries("ana")


def test_timestamps_are_utc_even_when_imported_with_an_offset(memory: Any) -> None:
    document = memory.export("ana")
    document["entries"] = [{"id": "mem-1", "text": "x", "tags": [], "source": "import",
                            "created_at": "2030-01-01T10:00:00+02:00",
                            "updated_at": "2030-01-01T10:00:00+02:00"}]
    memory.import_entries("ana", document)
    [entry] = memory.entries("ana")
    assert entry.created_at.utcoffset() == timedelta(0) and entry.created_at.hour == 8


# -- concurrency ----------------------------------------------------------------------------------

WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from osprey_core.memory.store import MemoryStore

    home, worker, count, go = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
    store = MemoryStore(home)
    deadline = time.monotonic() + 60
    while not go.exists():  # start together, so the adds really overlap
        if time.monotonic() > deadline:
            sys.exit("never started")
        time.sleep(0.005)
    for number in range(count):
        store.add("ana", f"worker {worker} note {number}", [f"w{worker}"])
""")


def test_twenty_processes_adding_a_hundred_each_lose_nothing(tmp_path: Path) -> None:
    script, go = tmp_path / "writer.py", tmp_path / "go"
    script.write_text(WRITER, encoding="utf-8")
    home = tmp_path / "home"
    processes = [subprocess.Popen([sys.executable, str(script), str(home), str(worker), "100",
                                   str(go)], stderr=subprocess.PIPE, text=True)
                 for worker in range(20)]
    go.touch()
    for process in processes:
        _, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
    store = MemoryStore(home)
    entries = store.entries("ana")
    assert len(entries) == 2000 and len({entry.id for entry in entries}) == 2000
    assert {entry.text for entry in entries} == {
        f"worker {worker} note {number}" for worker in range(20) for number in range(100)}
    document = json.loads(store.path_for("ana").read_text(encoding="utf-8"))
    assert (document["format"], document["version"], document["user"]) == (
        "osprey-memory", 2, "ana")
    assert not [path for path in store.directory.iterdir() if path.suffix == ".tmp"]


def test_a_lock_held_too_long_fails_clearly_and_changes_nothing(
        store: MemoryStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import fcntl
    import os

    import osprey_core.memory.files as files_module

    store.add("ana", "first")
    before = store.path_for("ana").read_bytes()
    monkeypatch.setattr(files_module, "LOCK_TIMEOUT", 0.2)
    # Another open file description holding the lock, as a hung process would.
    holder = os.open(store.path_for("ana").with_suffix(".lock"), os.O_RDWR)
    fcntl.flock(holder, fcntl.LOCK_EX)
    try:
        with pytest.raises(MemoryStoreError, match=r"held by another process for over 0\.2 s; "
                                                   r"nothing was changed"):
            store.add("ana", "second")
    finally:
        os.close(holder)
    assert store.path_for("ana").read_bytes() == before
    assert [entry.text for entry in store.entries("ana")] == ["first"]
    store.add("ana", "second")  # released: writes go through again
