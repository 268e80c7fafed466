"""The run store refuses damaged files and says so, survives read-only and full disks
with clear errors, and can be checked, backed up and restored (hardening issue, items 11
and 12)."""

from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path

import pytest
from support.dist import osprey_env
from support.mounts import needs_mounts, read_only, run_osprey

from osprey_core.errors import StorageError
from osprey_core.fileio import atomic_write_text
from osprey_core.store import RunStore, StoreDamagedError, StoreStorageError
from osprey_core.store_maintenance import backup_store, check_store, restore_store


def writable_machine_env(home: Path) -> dict[str, str]:
    """A simulated machine with one writable corrector, so a write pauses for approval
    instead of being refused before anyone is asked."""
    return osprey_env(home, OSPREY_STRICT_PLUGINS="1",
                      OSPREY__CONTROL_SYSTEM__WRITES_ENABLED="true",
                      OSPREY__CONTROL_SYSTEM__LIMITS='{channels: {"HCM1:SP": {writable: true, '
                                                    'type: float, min: -5.0, max: 5.0}}}')


def osprey(home: Path, *args: str, setup: str = "") -> tuple[int, str, str]:
    result = run_osprey(list(args), writable_machine_env(home), home.parent, setup)
    return result.returncode, result.stdout, result.stderr


def paused_run(home: Path) -> str:
    """A run waiting for approval of a write on the simulated machine; its approval id."""
    code, out, err = osprey(home, "run", "set HCM1:SP to 0.5 A", "--json")
    assert code == 3, err
    return json.loads(out)["approval_id"]


def assert_refused(result: tuple[int, str, str], *phrases: str) -> None:
    code, _, err = result
    assert code == 1, err
    assert "Traceback" not in err
    for phrase in phrases:
        assert phrase in err, err


# -- item 11: damaged or unexpectedly empty stores are refused, never recreated --------


def test_a_zero_length_store_is_refused_and_left_alone(home: Path) -> None:
    paused_run(home)
    db = home / "osprey.db"
    for side in ("osprey.db-wal", "osprey.db-shm"):
        (home / side).unlink(missing_ok=True)
    db.write_bytes(b"")

    assert_refused(osprey(home, "runs", "list"), f"the store {db} is empty (0 bytes)",
                   "osprey store restore")
    assert_refused(osprey(home, "run", "read SR:CURRENT"), "is empty (0 bytes)")
    assert db.read_bytes() == b""
    assert not (home / "osprey.db-wal").exists()


@pytest.mark.parametrize("damage", ["garbage", "truncated", "header"])
def test_a_damaged_store_is_refused_with_the_file_and_what_to_do(home: Path,
                                                                  damage: str) -> None:
    for _ in range(3):
        paused_run(home)
    db = home / "osprey.db"
    with sqlite3.connect(db) as conn:  # fold the WAL into the file
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = db.read_bytes()
    damaged = {"garbage": b"not a database at all" * 50,
               "truncated": data[: len(data) // 2],
               "header": b"SQLite format 2\x00" + data[16:]}[damage]
    db.write_bytes(damaged)

    assert_refused(osprey(home, "approvals", "list"), str(db), "osprey store check")
    assert db.read_bytes() == damaged
    code, _, err = osprey(home, "store", "check")
    assert code == 1 and "DAMAGED" not in err and "problem:" in err


def test_pages_damaged_inside_the_file_are_reported_not_raised(home: Path) -> None:
    for _ in range(4):
        paused_run(home)
    db = home / "osprey.db"
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(db.read_bytes())
    page = 4096
    for offset in range(2 * page, len(data) - page, page):
        data[offset:offset + 64] = b"\xff" * 64  # every page header after the first two
    db.write_bytes(bytes(data))

    code, _, err = osprey(home, "runs", "list")
    assert code == 1 and "Traceback" not in err
    assert "damaged" in err and str(db) in err
    report = check_store(db)
    assert not report.ok


def test_a_missing_store_is_not_recreated_when_its_data_is_still_there(home: Path) -> None:
    osprey(home, "run", "read SR:CURRENT")
    assert list((home / "plans").glob("*.json"))
    for name in ("osprey.db", "osprey.db-wal", "osprey.db-shm"):
        (home / name).unlink(missing_ok=True)

    assert_refused(osprey(home, "runs", "list"), "is missing, but", "plans")
    assert not (home / "osprey.db").exists()


def test_backup_and_restore_bring_back_a_paused_run(home: Path, tmp_path: Path) -> None:
    approval = paused_run(home)
    backup = tmp_path / "backups" / "before.db"
    code, out, err = osprey(home, "store", "backup", str(backup), "--json")
    assert code == 0, err
    assert json.loads(out)["counts"]["pending_approvals"] == 1
    assert_refused(osprey(home, "store", "backup", str(backup)), "exists")

    db = home / "osprey.db"
    db.write_bytes(b"")  # lost
    code, out, err = osprey(home, "store", "restore", str(backup), "--json")
    assert code == 0, err
    kept = Path(json.loads(out)["replaced_store_kept_as"])
    assert kept.read_bytes() == b""  # the store it replaced is kept, as it was

    code, out, err = osprey(home, "approvals", "approve", approval, "--json")
    assert code == 0, err  # the run goes on where it stopped, and finishes
    assert json.loads(out)["state"] == "done"
    assert check_store(db).ok


def test_a_damaged_backup_is_never_restored(home: Path, tmp_path: Path) -> None:
    paused_run(home)
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"SQLite format 3\x00" + b"\x00" * 200)
    before = (home / "osprey.db").read_bytes()
    with pytest.raises(StoreDamagedError, match="will not restore"):
        restore_store(home / "osprey.db", bad)
    assert (home / "osprey.db").read_bytes() == before
    with pytest.raises(StoreDamagedError, match="will not back up"):
        backup_store(bad, tmp_path / "copy.db")


def test_a_backup_taken_while_another_connection_writes_is_consistent(home: Path,
                                                                       tmp_path: Path) -> None:
    paused_run(home)
    store = RunStore(home / "osprey.db")
    try:
        with store.transaction():  # an uncommitted write in progress elsewhere
            report = backup_store(home / "osprey.db", tmp_path / "snap.db")
    finally:
        store.close()
    assert report.ok and report.counts["runs"] == 1


# -- item 12: read-only and full disks give clear errors and lose nothing -------------


@needs_mounts
def test_a_read_only_home(home: Path) -> None:
    approval = paused_run(home)
    before = (home / "osprey.db").read_bytes()

    result = osprey(home, "run", "read SR:CURRENT", setup=read_only(home))
    assert_refused(result, str(home / "osprey.db"), "read-only")
    result = osprey(home, "approvals", "reject", approval, setup=read_only(home))
    assert_refused(result, "read-only")
    assert (home / "osprey.db").read_bytes() == before
    code, out, _ = osprey(home, "approvals", "list", "--pending", "--json")
    assert code == 0 and [item["id"] for item in json.loads(out)] == [approval]


@needs_mounts
def test_a_full_disk_refuses_new_work_and_keeps_what_was_acknowledged(
        home: Path, tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    env = writable_machine_env(home)
    osprey_cmd = f"'{sys.executable}' -m osprey_core"
    script = "\n".join([
        f"mkdir -p '{home}'",
        f"mount -t tmpfs -o size=2m osprey-full '{home}'",
        f"{osprey_cmd} run 'set HCM1:SP to 0.5 A' --json > '{results}/paused.json' || true",
        f"dd if=/dev/zero of='{home}/filler' bs=4096 2>/dev/null || true",
        f"{osprey_cmd} run 'read SR:CURRENT' > '{results}/full.out' "
        f"2> '{results}/full.err' || echo $? > '{results}/full.code'",
        f"rm '{home}/filler'",
        f"{osprey_cmd} approvals list --pending --json > '{results}/after.json'",
    ])
    outcome = run_osprey(["version"], env, tmp_path, script)
    assert outcome.returncode == 0, outcome.stderr
    paused = json.loads((results / "paused.json").read_text())
    assert (results / "full.code").read_text().strip() == "1"
    error = (results / "full.err").read_text()
    assert "the disk is full" in error, error
    assert "Traceback" not in error
    pending = json.loads((results / "after.json").read_text())
    assert [item["id"] for item in pending] == [paused["approval_id"]]


def test_a_file_write_the_disk_refuses_names_the_path_and_keeps_the_old_content(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno
    import os

    target = tmp_path / "plans" / "run.json"
    atomic_write_text(target, "old")

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(StorageError, match=r"cannot write .*run\.json: No space left on "
                       r"device \(disk full\); nothing was changed"):
        atomic_write_text(target, "new")
    assert target.read_text() == "old"
    assert [path.name for path in target.parent.iterdir()] == ["run.json"]


def test_store_errors_are_store_errors(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreStorageError, match="cannot create the directory"):
        RunStore(blocker / "home" / "osprey.db")
