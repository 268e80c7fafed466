"""Which store a logbook uses: one setting decides.

``store.url`` naming a PostgreSQL database puts the logbook there, beside the run store,
so every worker searches the same entries; otherwise it is the SQLite file
``logbook.path`` (default ``OSPREY_HOME/logbook.db``). The query layer is the same on
both (see :mod:`~osprey_core.logbook.indexes` for where each search arm works).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from osprey_core.config import OspreyConfig
    from osprey_core.logbook.indexes import IndexedStore


def may_hold_entries(config: OspreyConfig) -> bool:
    """Whether the configured logbook can hold entries without opening it: a PostgreSQL
    database may (asking would connect), an SQLite file only once it exists."""
    from osprey_core.stores.factory import is_postgres, store_url

    if is_postgres(store_url(config.section("store"), config.home)):
        return True
    return (config.section("logbook").path or config.home / "logbook.db").exists()


def open_store(config: OspreyConfig) -> IndexedStore:
    """The logbook store ``config`` names: the PostgreSQL database of ``store.url`` (kept
    open by the process between callers), else the SQLite file ``logbook.path`` (default
    ``OSPREY_HOME/logbook.db``)."""
    from osprey_core.stores.factory import (
        connection_options,
        is_postgres,
        require_driver,
        store_url,
    )

    settings = config.section("store")
    url = store_url(settings, config.home)
    if is_postgres(url):
        require_driver()
        from osprey_core.logbook.postgres import PostgresLogbook
        from osprey_core.stores.kept import kept_open

        options = connection_options(settings)
        shared = kept_open(("logbook", url, *options.values()),
                           lambda: PostgresLogbook(url, **options))
        return shared.borrowed()
    from osprey_core.logbook.store import SQLiteLogbook

    return SQLiteLogbook(config.section("logbook").path or config.home / "logbook.db")
