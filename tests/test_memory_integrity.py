"""Memory files keep what was written or say they cannot: every entry carries a checksum,
repair keeps only verified entries and accounts for every line it drops, and a disk that
refuses a read or a write (read-only, full, failing) ends in a clear error with the file
left as it was."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import stat
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.cli import assert_exit
from support.dist import osprey_env
from support.mounts import needs_mounts, read_only, run_osprey

from osprey_core.memory.errors import (
    MemoryCorruptError,
    MemoryLimitError,
    MemoryStorageError,
    MemoryStoreError,
)
from osprey_core.memory.models import CHECKSUM, VERSION, entry_checksum
from osprey_core.memory.store import MemoryStore, RepairReport
from osprey_core.settings import MemorySettings

OLD_HEADER = '{"format": "osprey-memory", "version": 1, "user": "ana", "entries": ['


@pytest.fixture
def store(tmp_path: Path) -> MemoryStore:
    return MemoryStore(tmp_path / "home")


def _lines(path: Path) -> list[bytes]:
    return path.read_bytes().split(b"\n")


def _entry_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line.rstrip(b",")) for line in _lines(path)[1:-2]]


def _non_empty(raw: bytes) -> int:
    return sum(1 for line in raw.split(b"\n") if line.strip())


def _leftovers(store: MemoryStore) -> list[str]:
    """Files in the memory directory other than memory files, lock files and backups."""
    return sorted(path.name for path in store.directory.iterdir()
                  if path.suffix not in (".json", ".lock") and ".corrupt-" not in path.name)


def _assert_accounted(report: RepairReport, damaged: bytes) -> None:
    """Every line that held something is the header or closing line, a kept entry or a
    dropped line; a line is reported once."""
    numbers = [item.line for item in report.dropped]
    assert len(numbers) == len(set(numbers))
    assert report.lines == _non_empty(damaged)
    assert report.framing + report.kept + len(report.dropped) == report.lines
    lines = damaged.split(b"\n")
    assert all(lines[number - 1].strip() for number in numbers)


# -- checksums ------------------------------------------------------------------------------


def test_every_entry_is_written_with_a_checksum_of_all_its_fields(store: MemoryStore) -> None:
    store.add("ana", "always plot in µm", ["plots"])
    store.add("ana", "line one\nline two \"quoted\"", source="run-1")
    path = store.path_for("ana")
    assert json.loads(path.read_bytes())["version"] == VERSION == 2
    written = _entry_lines(path)
    assert [item["text"] for item in written] == ["always plot in µm",
                                                 "line one\nline two \"quoted\""]
    for item, entry in zip(written, store.entries("ana"), strict=True):
        fields = {key: value for key, value in item.items() if key != CHECKSUM}
        assert fields == entry.to_json()
        assert item[CHECKSUM] == entry_checksum(fields)
        assert len(item[CHECKSUM]) == 64
    # Any field change changes the checksum; key order and formatting do not.
    fields = store.entries("ana")[0].to_json()
    assert entry_checksum(dict(reversed(fields.items()))) == entry_checksum(fields)
    for key, value in (("text", "always plot in mm"), ("id", "mem-00000000"),
                       ("tags", []), ("source", "cli2"),
                       ("created_at", "2031-01-01T00:00:00Z")):
        assert entry_checksum({**fields, key: value}) != entry_checksum(fields)


# A change that leaves the line valid JSON and a valid entry: only the checksum tells.
ALTERATIONS: dict[str, Callable[[dict[str, Any]], None]] = {
    "text": lambda item: item.update(text=item["text"].replace("BPM04", "BPM05")),
    "id": lambda item: item.update(id=item["id"][:-1] + ("0" if item["id"][-1] != "0"
                                                         else "1")),
    "timestamp": lambda item: item.update(created_at="2001-01-01T00:00:00Z"),
    "tags": lambda item: item.update(tags=["orbit"]),
    "source": lambda item: item.update(source="run-forged"),
    "checksum": lambda item: item.update({CHECKSUM: "0" * 64}),
    "no checksum": lambda item: item.pop(CHECKSUM),
}


@pytest.mark.parametrize("alteration", list(ALTERATIONS))
def test_an_entry_altered_on_disk_makes_the_file_damaged(tmp_path: Path,
                                                         alteration: str) -> None:
    store = MemoryStore(tmp_path)
    store.add("ana", "always plot in mm")
    store.add("ana", "my default BPM set is BPM01-BPM04", ["bpm"])
    store.add("ana", "third")
    path = store.path_for("ana")
    lines = _lines(path)
    item = json.loads(lines[2].rstrip(b","))
    ALTERATIONS[alteration](item)
    lines[2] = json.dumps(item, ensure_ascii=False, separators=(",", ":")).encode() + b","
    damaged = b"\n".join(lines)
    path.write_bytes(damaged)

    for reader in (MemoryStore(tmp_path), store):  # a new process, and the writer's cache
        with pytest.raises(MemoryCorruptError) as caught:
            reader.entries("ana")
        message = str(caught.value)
        assert str(path) in message and "line 3" in message
        assert "osprey memory repair --user ana" in message
        assert ("no checksum" if alteration == "no checksum" else "checksum") in message
        with pytest.raises(MemoryCorruptError):
            reader.add("ana", "refused")
        assert path.read_bytes() == damaged

    report = MemoryStore(tmp_path).repair("ana")
    assert report.repaired and report.kept == 2
    [dropped] = report.dropped
    assert dropped.line == 3
    assert dropped.reason == ("no_checksum" if alteration == "no checksum"
                              else "checksum_mismatch")
    assert [entry.text for entry in store.entries("ana")] == ["always plot in mm", "third"]
    _assert_accounted(report, damaged)


def test_a_hand_formatted_file_is_still_verified(store: MemoryStore) -> None:
    entry = store.add("ana", "always plot in mm")
    path = store.path_for("ana")
    document = json.loads(path.read_bytes())
    path.write_text(json.dumps(document, indent=4), encoding="utf-8")
    assert store.entries("ana") == [entry]
    document["entries"][0]["text"] = "always plot in inches"
    path.write_text(json.dumps(document, indent=4), encoding="utf-8")
    with pytest.raises(MemoryCorruptError, match="entry 1: checksum mismatch"):
        MemoryStore(store.directory.parent).entries("ana")


# -- files written before checksums -----------------------------------------------------------


def _legacy_file(path: Path, items: list[dict[str, Any]]) -> bytes:
    """A memory file exactly as osprey wrote it before entries had checksums."""
    lines = [json.dumps(item, ensure_ascii=False, separators=(",", ":")) for item in items]
    raw = "\n".join([OLD_HEADER, ",\n".join(lines), "]}", ""]).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(raw)
    return raw


def _legacy_items(count: int) -> list[dict[str, Any]]:
    return [{"id": f"mem-{number:08x}", "text": f"old note {number}", "tags": ["old"],
             "created_at": "2029-05-01T08:00:00Z", "updated_at": "2029-05-02T08:00:00Z",
             "source": "cli"} for number in range(count)]


def test_a_file_written_before_checksums_is_read_and_gains_them_on_the_next_write(
        store: MemoryStore) -> None:
    path = store.path_for("ana")
    raw = _legacy_file(path, _legacy_items(3))
    old = store.entries("ana")
    assert [entry.to_json() for entry in old] == _legacy_items(3)
    assert path.read_bytes() == raw  # reading never rewrites
    store.add("ana", "new note")
    assert json.loads(path.read_bytes())["version"] == VERSION
    written = _entry_lines(path)
    assert all(item[CHECKSUM] == entry_checksum(
        {key: value for key, value in item.items() if key != CHECKSUM}) for item in written)
    assert MemoryStore(store.directory.parent).entries("ana")[:3] == old


def test_an_old_file_at_the_size_cap_can_still_be_shrunk(tmp_path: Path) -> None:
    path = MemoryStore(tmp_path).path_for("ana")
    raw = _legacy_file(path, _legacy_items(10))
    store = MemoryStore(tmp_path, MemorySettings(max_user_bytes=len(raw)))
    with pytest.raises(MemoryLimitError, match="max_user_bytes"):
        store.add("ana", "one more")  # checksums alone would take it over the cap
    store.delete("ana", "mem-00000000")
    assert len(store.entries("ana")) == 9
    assert all(CHECKSUM in item for item in _entry_lines(path))


def test_repairing_an_old_file_keeps_its_entries_as_unverified_and_says_so(
        store: MemoryStore) -> None:
    path = store.path_for("ana")
    raw = _legacy_file(path, _legacy_items(4))
    damaged = raw.replace(b"old note 2", b"old note \xff", 1)
    path.write_bytes(damaged)
    report = store.repair("ana")
    assert report.kept == 3
    assert [(item.line, item.reason) for item in report.dropped] == [(4, "bad_utf8")]
    assert [(item.line, item.id) for item in report.unverified] == [
        (2, "mem-00000000"), (3, "mem-00000001"), (5, "mem-00000003")]
    assert "written before entries had checksums" in report.describe()
    _assert_accounted(report, damaged)
    assert [entry.text for entry in store.entries("ana")] == [
        "old note 0", "old note 1", "old note 3"]
    assert all(CHECKSUM in item for item in _entry_lines(path))


def test_a_line_without_checksum_in_a_checksummed_file_is_dropped(store: MemoryStore) -> None:
    store.add("ana", "checked")
    path = store.path_for("ana")
    lines = _lines(path)
    forged = json.dumps(_legacy_items(1)[0], separators=(",", ":")).encode()
    damaged = b"\n".join([lines[0], lines[1] + b",", forged, *lines[2:]])
    path.write_bytes(damaged)
    report = store.repair("ana")
    assert (report.kept, report.unverified) == (1, ())
    assert [(item.line, item.reason) for item in report.dropped] == [(3, "no_checksum")]


# -- the repair report --------------------------------------------------------------------------


def test_repair_reports_every_dropped_line_with_its_reason(store: MemoryStore) -> None:
    entries = [store.add("ana", f"note {number}", [f"t{number}"]) for number in range(8)]
    path = store.path_for("ana")
    lines = _lines(path)  # 1 header, 2-9 entries, 10 "]}", then ""

    def item(number: int) -> dict[str, Any]:
        return json.loads(lines[number].rstrip(b","))

    invalid = {**item(5), "source": ""}  # checksum right, but no entry has an empty source
    invalid[CHECKSUM] = entry_checksum({k: v for k, v in invalid.items() if k != CHECKSUM})
    lines[2] = lines[2].replace(b"note 1", b"note \xfe")
    lines[3] = lines[3][:40]
    lines[4] = lines[4].replace(b"note 3", b"note X")
    lines[5] = json.dumps(invalid, separators=(",", ":")).encode() + b","
    lines[6] = b"[1, 2],"
    damaged = b"\n".join([*lines[:9], lines[7], b"", b"   ", *lines[9:]])  # entry 6 twice
    path.write_bytes(damaged)

    report = store.repair("ana")
    assert [(item.line, item.reason) for item in report.dropped] == [
        (3, "bad_utf8"), (4, "unparsable_json"), (5, "checksum_mismatch"),
        (6, "schema_invalid"), (7, "schema_invalid"), (10, "duplicate_id")]
    assert report.dropped[2].id == entries[3].id
    assert report.dropped[5].id == entries[6].id and "line 8" in report.dropped[5].detail
    assert (report.kept, report.framing, report.lines) == (3, 2, 11)
    _assert_accounted(report, damaged)
    assert store.entries("ana") == [entries[0], entries[6], entries[7]]
    assert report.backup is not None and report.backup.read_bytes() == damaged
    text = report.describe()
    for number in (3, 4, 5, 6, 7, 10):
        assert f"line {number}:" in text
    assert "3 entries were salvaged" in text and "6 lines were dropped" in text
    as_json = report.to_json()
    assert as_json["kept"] == 3 and as_json["lines"] == 11 and as_json["framing"] == 2
    assert as_json["dropped"][2] == {"line": 5, "reason": "checksum_mismatch",
                                     "id": entries[3].id,
                                     "detail": report.dropped[2].detail}


def test_a_damaged_header_is_reported_and_the_entries_kept(store: MemoryStore) -> None:
    entries = [store.add("ana", f"note {number}") for number in range(3)]
    path = store.path_for("ana")
    damaged = path.read_bytes().replace(b'"user": "ana"', b'"user": "bob"', 1)
    path.write_bytes(damaged)
    report = store.repair("ana")
    assert [(item.line, item.reason) for item in report.dropped] == [(1, "bad_header")]
    assert "'bob'" in report.dropped[0].detail
    assert store.entries("ana") == entries
    _assert_accounted(report, damaged)


def _damage(raw: bytes, data: st.DataObject) -> bytes:
    """``raw`` with one to four random byte flips, truncations or garbage insertions."""
    damaged = bytearray(raw)
    for _ in range(data.draw(st.integers(1, 4), label="changes")):
        kind = data.draw(st.sampled_from(["flip", "truncate", "insert"]), label="kind")
        if kind == "flip" and damaged:
            where = data.draw(st.integers(0, len(damaged) - 1), label="flip at")
            damaged[where] ^= data.draw(st.integers(1, 255), label="mask")
        elif kind == "truncate" and damaged:
            del damaged[data.draw(st.integers(0, len(damaged) - 1), label="cut at"):]
        else:
            where = data.draw(st.integers(0, len(damaged)), label="insert at")
            damaged[where:where] = data.draw(st.binary(min_size=1, max_size=24),
                                             label="garbage")
    return bytes(damaged)


def _check_damage(home: Path, damaged: bytes, originals: list[Any]) -> None:
    """Reading either refuses the file or returns exactly what was written; repair keeps
    only entries that were written and accounts for every line."""
    store = MemoryStore(home)
    path = store.path_for("ana")
    path.write_bytes(damaged)
    try:
        read = store.entries("ana")
    except MemoryCorruptError:
        pass
    else:
        assert read == originals
        assert not store.repair("ana").repaired
        return
    report = store.repair("ana")
    assert report.repaired and report.backup is not None
    assert report.backup.read_bytes() == damaged
    kept = MemoryStore(home).entries("ana")
    assert len(kept) == report.kept and report.unverified == ()
    assert all(entry in originals for entry in kept)
    _assert_accounted(report, damaged)
    report.backup.unlink()


TEXT = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=60).filter(
    str.strip)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(texts=st.lists(TEXT, min_size=1, max_size=6), data=st.data())
def test_random_damage_never_yields_an_altered_entry(texts: list[str],
                                                     data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as directory:
        home = Path(directory)
        store = MemoryStore(home)
        for number, text in enumerate(texts):
            store.add("ana", text, [f"t{number}"])
        originals = store.entries("ana")
        raw = store.path_for("ana").read_bytes()
        _check_damage(home, _damage(raw, data), originals)


def test_a_single_bit_flip_anywhere_never_yields_an_altered_entry(tmp_path: Path) -> None:
    store = MemoryStore(tmp_path)
    store.add("ana", "my default BPM set is BPM01-BPM04", ["bpm"])
    store.add("ana", "always plot in µm", source="run-1")
    originals = store.entries("ana")
    raw = store.path_for("ana").read_bytes()
    for where in range(len(raw)):
        for mask in (0x01, 0x20):
            damaged = bytearray(raw)
            damaged[where] ^= mask
            _check_damage(tmp_path, bytes(damaged), originals)


def test_cli_repair_prints_every_dropped_line(tmp_path: Path) -> None:
    store = MemoryStore(tmp_path / "home")
    for number in range(4):
        store.add("ana", f"note {number}")
    path = store.path_for("ana")
    damaged = path.read_bytes().replace(b"note 1", b"note 7", 1)
    path.write_bytes(damaged)
    env = osprey_env(tmp_path / "home", OSPREY_STRICT_PLUGINS="1")
    result = run_osprey(["memory", "repair", "--user", "ana", "--json"], env, tmp_path)
    assert_exit(result, 0)
    report = json.loads(result.stdout)
    assert (report["user"], report["kept"], report["lines"]) == ("ana", 3, 6)
    assert [(item["line"], item["reason"]) for item in report["dropped"]] == [
        (3, "checksum_mismatch")]
    path.write_bytes(damaged)
    result = run_osprey(["memory", "repair", "--user", "ana"], env, tmp_path)
    assert_exit(result, 0)
    assert "line 3: checksum mismatch" in result.stdout


# -- storage errors: injected at each step of a write -------------------------------------------


def _fd_path(descriptor: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{descriptor}")
    except OSError:
        return ""


def _is_directory(descriptor: int) -> bool:
    return stat.S_ISDIR(os.fstat(descriptor).st_mode)


class Failing:
    """Makes one OS call of the store's writes fail with ``code``, as a full or read-only
    disk would."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, stage: str, code: int) -> None:
        self.hits = 0
        real = {name: getattr(os, name) for name in ("open", "write", "fsync", "replace",
                                                     "mkdir")}
        targets: dict[str, tuple[str, Callable[..., bool]]] = {
            "directory": ("mkdir", lambda path, *a, **k: str(path).endswith("memory")),
            "lock file": ("open", lambda path, *a, **k: str(path).endswith(".lock")),
            "temp file": ("open", lambda path, *a, **k: str(path).endswith(".tmp")),
            "write": ("write", lambda fd, *a: _fd_path(fd).endswith(".tmp")),
            "fsync": ("fsync", lambda fd: not _is_directory(fd)),
            "rename": ("replace", lambda source, *a, **k: str(source).endswith(".tmp")),
            "directory open": ("open", lambda path, *a, **k: os.path.isdir(path)),
            "directory fsync": ("fsync", _is_directory),
        }
        name, matches = targets[stage]

        def fake(*args: Any, **kwargs: Any) -> Any:
            if matches(*args, **kwargs):
                self.hits += 1
                raise OSError(code, os.strerror(code))
            return real[name](*args, **kwargs)

        monkeypatch.setattr(os, name, fake)


STAGES = ["lock file", "temp file", "write", "fsync", "rename", "directory open",
          "directory fsync"]
CAUSES = {errno.ENOSPC: "No space left on device (disk full)",
          errno.EROFS: "Read-only file system",
          errno.EACCES: "Permission denied",
          errno.EIO: "Input/output error"}


@pytest.mark.parametrize("code", list(CAUSES), ids=errno.errorcode.get)
@pytest.mark.parametrize("stage", STAGES)
def test_a_failed_write_names_the_file_and_cause_and_changes_nothing(
        store: MemoryStore, monkeypatch: pytest.MonkeyPatch, stage: str, code: int) -> None:
    first = store.add("ana", "already saved")
    path = store.path_for("ana")
    before = path.read_bytes()
    failing = Failing(monkeypatch, stage, code)
    with pytest.raises(MemoryStorageError) as caught:
        store.add("ana", "not saved")
    monkeypatch.undo()
    assert failing.hits == 1
    message = str(caught.value)
    assert f"cannot save memory to {path}" in message and CAUSES[code] in message
    assert caught.value.path == path and caught.value.errno == code
    assert isinstance(caught.value, MemoryStoreError) and caught.value.exit_code == 1
    assert _leftovers(store) == []
    if stage.startswith("directory"):
        # The new file is in place already; it may not survive a power cut, and says so.
        assert "is in place but may not survive a power cut" in message
        assert [entry.text for entry in MemoryStore(store.directory.parent).entries("ana")] == [
            "already saved", "not saved"]
    else:
        assert message.endswith("nothing was changed")
        assert path.read_bytes() == before
        assert MemoryStore(store.directory.parent).entries("ana") == [first]
    store.add("ana", "the disk is fine again")  # nothing stays stuck


def test_a_first_save_into_a_home_that_cannot_hold_it(store: MemoryStore,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    Failing(monkeypatch, "directory", errno.EROFS)
    path = re.escape(str(store.path_for("ana")))
    with pytest.raises(MemoryStorageError, match=f"cannot save memory to {path} .*Read-only "
                       "file system"):
        store.add("ana", "x")


@pytest.mark.parametrize("stage", ["lock file", "temp file", "write", "fsync", "rename"])
def test_a_failed_repair_leaves_the_damaged_file_and_no_backup(
        store: MemoryStore, monkeypatch: pytest.MonkeyPatch, stage: str) -> None:
    for number in range(3):
        store.add("ana", f"note {number}")
    path = store.path_for("ana")
    damaged = path.read_bytes()[:-30]
    path.write_bytes(damaged)
    Failing(monkeypatch, stage, errno.ENOSPC)
    with pytest.raises(MemoryStorageError, match=f"cannot repair {re.escape(str(path))}"
                       ".*disk full"):
        store.repair("ana")
    monkeypatch.undo()
    assert path.read_bytes() == damaged
    assert sorted(item.name for item in store.directory.iterdir()) == ["ana.json", "ana.lock"]
    assert store.repair("ana").repaired


def test_a_backup_that_cannot_be_made_stops_the_repair(store: MemoryStore,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    store.add("ana", "note")
    path = store.path_for("ana")
    path.write_bytes(path.read_bytes()[:-5])

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.EPERM, os.strerror(errno.EPERM))

    def partial_copy(source: Path, target: Path, **kwargs: Any) -> None:
        Path(target).write_bytes(b"{")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "link", refuse)
    monkeypatch.setattr(shutil, "copy2", partial_copy)
    with pytest.raises(MemoryStorageError, match=r"cannot repair .*disk full.*nothing was "
                       r"changed"):
        store.repair("ana")
    assert sorted(item.name for item in store.directory.iterdir()) == ["ana.json", "ana.lock"]


def test_an_unreadable_file_is_a_storage_error_not_corruption(
        store: MemoryStore, monkeypatch: pytest.MonkeyPatch) -> None:
    store.add("ana", "note")
    path = store.path_for("ana")

    def refuse(self: Path) -> bytes:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(Path, "read_bytes", refuse)
    with pytest.raises(MemoryStorageError, match=f"cannot read memory from "
                       f"{re.escape(str(path))}: Input/output error") as caught:
        MemoryStore(store.directory.parent).entries("ana")
    assert not isinstance(caught.value, MemoryCorruptError)


def test_a_save_in_a_run_fails_its_step_with_the_storage_message(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from test_memory_capability import Desk

    from osprey_core.run_machine import RunState

    desk = Desk(tmp_path, approve_saves=False)
    try:
        desk.store.add("ana", "already saved")
        path = desk.store.path_for("ana")
        before = path.read_bytes()
        real_open = os.open

        def full(name: Any, *args: Any, **kwargs: Any) -> int:
            if str(name).startswith(str(desk.store.directory)) and str(name).endswith(".tmp"):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real_open(name, *args, **kwargs)

        monkeypatch.setattr(os, "open", full)
        run = desk.run("remember that the septum is cabled to rack 3")
        monkeypatch.undo()
        assert run.state is RunState.FAILED
        assert f"cannot save memory to {path}" in (run.error or "")
        assert "disk full" in (run.error or "")
        [step] = [record for record in desk.osprey.steps(run.id)
                  if record.capability == "memory_save"]
        assert step.status == "failed" and "No space left on device" in (step.error or "")
        assert path.read_bytes() == before
    finally:
        desk.osprey.close()


def test_export_to_a_place_that_cannot_hold_it_is_a_clear_error(tmp_path: Path) -> None:
    env = osprey_env(tmp_path / "home", OSPREY_STRICT_PLUGINS="1")
    MemoryStore(tmp_path / "home").add("ana", "note")
    blocker = tmp_path / "a-file"
    blocker.write_text("", encoding="utf-8")
    result = run_osprey(["memory", "export", str(blocker / "out.json"), "--user", "ana"], env,
                     tmp_path)
    assert_exit(result, 1)
    assert f"cannot write the export to {blocker / 'out.json'}" in result.stderr


def test_text_that_is_not_valid_unicode_is_refused_clearly(store: MemoryStore) -> None:
    with pytest.raises(MemoryStoreError, match="not valid Unicode"):
        store.add("ana", "bad \udcff text")
    with pytest.raises(MemoryStoreError, match="not valid Unicode"):
        store.add("ana", "fine", ["bad \udcff"])


# -- storage errors: real read-only and full file systems ---------------------------------------


@needs_mounts
def test_a_read_only_memory_directory(tmp_path: Path) -> None:
    home = tmp_path / "home"
    store = MemoryStore(home)
    saved = [store.add("ana", "my default BPM set is BPM01-BPM04"), store.add("ana", "mm")]
    path = store.path_for("ana")
    before = path.read_bytes()
    env = osprey_env(home, OSPREY_STRICT_PLUGINS="1")
    directory = store.directory
    mounts = read_only(directory)

    result = run_osprey(["memory", "add", "new", "--user", "ana"], env, tmp_path, mounts)
    assert_exit(result, 1)
    assert f"Error: cannot save memory to {path}" in result.stderr
    assert "Read-only file system" in result.stderr and "nothing was changed" in result.stderr
    result = run_osprey(["memory", "list", "--user", "ana", "--json"], env, tmp_path, mounts)
    assert_exit(result, 0)  # reading needs no lock and no write
    assert [item["id"] for item in json.loads(result.stdout)] == [entry.id for entry in saved]
    assert path.read_bytes() == before


FILL = """
import json, sys
from pathlib import Path
from osprey_core.memory.errors import MemoryStorageError
from osprey_core.memory.store import MemoryStore

store = MemoryStore(Path(sys.argv[1]))
path, saved = store.path_for("ana"), []
while True:
    before = path.read_bytes() if path.exists() else b""
    try:
        saved.append(store.add("ana", "x" * 1900).id)
    except MemoryStorageError as exc:
        print(json.dumps({"error": str(exc), "saved": saved, "intact": path.read_bytes() == before,
                          "files": sorted(p.name for p in store.directory.iterdir())}))
        break
"""


@needs_mounts
def test_a_full_disk(tmp_path: Path) -> None:
    home = tmp_path / "home"
    memory = home / "memory"
    memory.mkdir(parents=True)
    env = osprey_env(home, OSPREY_STRICT_PLUGINS="1")
    small = f"mount -t tmpfs -o size=64k osprey-test '{memory}'"
    script = tmp_path / "fill.py"
    script.write_text(FILL, encoding="utf-8")
    steps = (f"{small}\n"
             f"{sys.executable} '{script}' '{home}' > '{tmp_path / 'fill.json'}'\n"
             f"{sys.executable} -m osprey_core memory add '{'y' * 1900}' --user ana "
             f"> '{tmp_path / 'add.out'}' 2> '{tmp_path / 'add.err'}' || echo $? > "
             f"'{tmp_path / 'add.code'}'")
    result = run_osprey(["memory", "list", "--user", "ana", "--json"], env, tmp_path, steps)
    assert_exit(result, 0)
    fill = json.loads((tmp_path / "fill.json").read_text(encoding="utf-8"))
    assert len(fill["saved"]) >= 5
    assert f"cannot save memory to {memory / 'ana.json'}" in fill["error"]
    assert "No space left on device (disk full)" in fill["error"]
    assert fill["intact"] and fill["files"] == ["ana.json", "ana.lock"]
    # The command line says the same, without a traceback, and every save it
    # acknowledged before is still there.
    assert (tmp_path / "add.code").read_text(encoding="utf-8").strip() == "1"
    error = (tmp_path / "add.err").read_text(encoding="utf-8")
    assert "No space left on device" in error and "Traceback" not in error
    assert [item["id"] for item in json.loads(result.stdout)] == fill["saved"]
