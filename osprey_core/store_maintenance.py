"""Looking after the run store file: a full check, a consistent backup, a verified restore.

Everything here works on the file without trusting it: a damaged store can be checked and
replaced, but is never modified, and nothing existing is ever overwritten (a replaced
store is kept beside the new one).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from osprey_core.errors import StorageError
from osprey_core.store_errors import (
    StoreDamagedError,
    StoreError,
    StoreStorageError,
    check_database_file,
    store_error,
)
from osprey_core.store_schema import MIGRATIONS

#: The tables a store of the current schema must have.
TABLES = ("meta", "runs", "steps", "approvals", "audit", "events", "run_plans", "run_context",
          "api_tokens")
#: How many of :data:`TABLES` each schema version has.
TABLES_IN_VERSION = {1: 6, 2: 8, 3: 9}


@dataclass
class StoreReport:
    """What ``osprey store check`` found; ``ok`` only when there is nothing to fix."""

    path: Path | str  # a file, or a PostgreSQL URL without its password
    problems: list[str] = field(default_factory=list)
    schema_version: int | None = None
    counts: dict[str, int] = field(default_factory=dict)
    size_bytes: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {"path": str(self.path), "ok": self.ok, "problems": self.problems,
                "schema_version": self.schema_version, "counts": self.counts,
                "size_bytes": self.size_bytes}


def check_store(path: Path) -> StoreReport:
    """A full check of the store at ``path``: file, SQLite integrity, schema, tables."""
    report = StoreReport(path)
    try:
        check_database_file(path)
        if not path.exists():
            report.problems.append(f"{path} does not exist (a new store is made on first use)")
            return report
        report.size_bytes = path.stat().st_size
        with _read_only(path) as conn:
            _check_contents(conn, report)
    except StoreError as exc:
        report.problems.append(str(exc))
    return report


def _check_contents(conn: sqlite3.Connection, report: StoreReport) -> None:
    try:
        findings = [row[0] for row in conn.execute("PRAGMA integrity_check(20)")]
        if findings != ["ok"]:
            report.problems.extend(f"integrity: {finding}" for finding in findings)
            return
        tables = {row[0] for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type='table'")}
        if "meta" in tables:
            row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            report.schema_version = int(row[0]) if row else None
        if report.schema_version is None:
            report.problems.append("no schema version: this is not an osprey store")
            return
        if report.schema_version > len(MIGRATIONS):
            report.problems.append(f"schema version {report.schema_version} is newer than "
                                   f"this osprey-core understands ({len(MIGRATIONS)})")
            return
        expected = TABLES[:TABLES_IN_VERSION.get(report.schema_version, len(TABLES))]
        report.problems.extend(f"table '{name}' is missing" for name in expected
                               if name not in tables)
        for name in expected:
            if name in tables and name != "meta":
                report.counts[name] = conn.execute(f"SELECT count(*) FROM {name}").fetchone()[0]
        if "approvals" in tables:
            report.counts["pending_approvals"] = conn.execute(
                "SELECT count(*) FROM approvals WHERE status='pending'").fetchone()[0]
    except sqlite3.Error as exc:
        report.problems.append(str(store_error(report.path, exc)))


@contextlib.contextmanager
def _read_only(path: Path) -> Any:
    """A connection that cannot change the file (it may still read the WAL beside it)."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    except sqlite3.Error as exc:
        raise store_error(path, exc) from exc
    try:
        yield conn
    finally:
        conn.close()


def default_backup_path(home: Path, now: datetime | None = None) -> Path:
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    return home / "backups" / f"osprey-{stamp}.db"


def backup_store(path: Path, destination: Path, *, overwrite: bool = False) -> StoreReport:
    """Copy the store to ``destination``: a consistent snapshot (SQLite's online backup,
    safe while other processes use the store), synced, checked, then renamed into place.
    Refuses a damaged source and never overwrites unless asked."""
    source = check_store(path)
    if not source.ok:
        raise StoreDamagedError("will not back up a damaged store: " + "; ".join(source.problems))
    if destination.exists() and not overwrite:
        raise StoreError(f"{destination} exists; choose another file or pass --force")
    partial = destination.with_name(f".{destination.name}.partial")
    try:
        destination.parent.mkdir(parents=True, exist_ok=True)
        partial.unlink(missing_ok=True)
        with _read_only(path) as live, contextlib.closing(sqlite3.connect(partial)) as copy:
            live.backup(copy)
            copy.execute("PRAGMA journal_mode=DELETE")
        _fsync(partial)
        copied = check_store(partial)
        if not copied.ok:
            raise StoreError("the backup copy failed its check: " + "; ".join(copied.problems))
        os.replace(partial, destination)
        _fsync(destination.parent)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise StorageError("write the backup", destination, exc) from None
    except (sqlite3.Error, StoreError) as exc:
        partial.unlink(missing_ok=True)
        if isinstance(exc, sqlite3.Error):
            raise store_error(destination, exc) from exc
        raise
    copied.path = destination
    return copied


def restore_store(path: Path, backup: Path) -> Path | None:
    """Replace the store with ``backup`` after checking it. The store being replaced
    (damaged, empty or not) is kept beside it as ``<name>.replaced-<time>``; its path is
    returned (``None`` when there was none). Stop other osprey processes first: one that
    still has the old file open would keep writing to it."""
    checked = check_store(backup)
    if not checked.ok:
        raise StoreDamagedError(f"will not restore {backup}: " + "; ".join(checked.problems))
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    kept: Path | None = None
    incoming = path.with_name(f".{path.name}.restoring")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(backup, incoming)
        _fsync(incoming)
        if path.exists():
            kept = path.with_name(f"{path.name}.replaced-{stamp}")
            os.replace(path, kept)
        for suffix in ("-wal", "-shm"):  # they belong to the file being replaced
            side = path.with_name(path.name + suffix)
            if side.exists():
                os.replace(side, path.with_name(f"{path.name}.replaced-{stamp}{suffix}"))
        os.replace(incoming, path)
        _fsync(path.parent)
    except OSError as exc:
        incoming.unlink(missing_ok=True)
        raise StoreStorageError(f"cannot restore {backup} to {path}: {exc}; the store "
                                f"{'is kept as ' + str(kept) if kept else 'was not changed'}"
                                ) from None
    return kept


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
