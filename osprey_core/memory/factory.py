"""One place that opens the memory store an installation is configured for: the table in
the PostgreSQL database ``store.url`` names, else the files under ``<home>/memory/``.

A process keeps one PostgreSQL memory store (one small pool) per database open (see
:mod:`osprey_core.stores.kept`) and hands it out with each caller's caps, so the provider,
the capabilities and the service, which ask on every request, do not connect each time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from osprey_core.stores.factory import connection_options, is_postgres, store_url

if TYPE_CHECKING:
    from osprey_core.config import OspreyConfig
    from osprey_core.memory.protocol import MemoryBackend


def open_memory_store(config: OspreyConfig) -> MemoryBackend:
    """The memory of every user of this installation, with its ``memory:`` caps."""
    settings = config.section("memory")
    store = config.section("store")
    url = store_url(store, config.home)
    if not is_postgres(url):
        from osprey_core.memory.store import MemoryStore

        return MemoryStore(config.home, settings)
    from osprey_core.memory.postgres import PostgresMemoryStore
    from osprey_core.stores.kept import kept_open

    options = connection_options(store)
    shared = kept_open(("memory", url, *options.values()),
                       lambda: PostgresMemoryStore.connect(url, **options))
    return shared.using(settings)
