"""``osprey store check`` for a PostgreSQL store: the same report as for the SQLite file
(schema version, tables, counts), read without changing anything."""

from __future__ import annotations

from typing import Any

from osprey_core.store_errors import StoreError
from osprey_core.store_maintenance import TABLES, TABLES_IN_VERSION, StoreReport
from osprey_core.store_schema import MIGRATIONS

#: Tables of the stores that share the run store's database (user memory, the logbook).
SHARED_TABLES = ("memory_entries", "logbook_entries")


def check_postgres(url: str, **options: Any) -> StoreReport:
    """Check the store at ``url``; every problem is in the report (``ok`` when none)."""
    from osprey_core.stores.postgres import PostgresRunStore, describe

    report = StoreReport(describe(url)[0])
    try:
        store = PostgresRunStore(url, migrate=False, **options)
    except StoreError as exc:
        report.problems.append(str(exc))
        return report
    try:
        _check(store, report)
    except StoreError as exc:
        report.problems.append(str(exc))
    finally:
        store.close()
    return report


def _check(store: Any, report: StoreReport) -> None:
    version = store.schema_version
    report.size_bytes = int(store.conn.execute(
        "SELECT pg_database_size(current_database())").fetchone()[0])
    if not version:
        report.problems.append("no schema version: osprey has not set up this database "
                               "(osprey store migrate does)")
        return
    report.schema_version = version
    if version > len(MIGRATIONS):
        report.problems.append(f"schema version {version} is newer than this osprey-core "
                               f"understands ({len(MIGRATIONS)})")
        return
    present = {row[0] for row in store.conn.execute(
        "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")}
    expected = [name for name in TABLES[:TABLES_IN_VERSION.get(version, len(TABLES))]
                if name != "meta"]  # PostgreSQL keeps the version in schema_version
    report.problems.extend(f"table '{name}' is missing" for name in expected
                           if name not in present)
    for name in expected:
        if name in present:
            report.counts[name] = int(store.conn.execute(
                f"SELECT count(*) FROM {name}").fetchone()[0])
    for name in SHARED_TABLES:  # the other stores' tables, once migrated here
        if name in present:
            report.counts[name] = int(store.conn.execute(
                f"SELECT count(*) FROM {name}").fetchone()[0])
    if "approvals" in present:
        report.counts["pending_approvals"] = int(store.conn.execute(
            "SELECT count(*) FROM approvals WHERE status='pending'").fetchone()[0])
