"""One place that opens the memory store an installation is configured for: the table in
the PostgreSQL database ``store.url`` names, else the files under ``<home>/memory/``.

A process keeps one PostgreSQL memory store (one small pool) per database and hands it out
with each caller's caps, so the provider, the capabilities and the service, which ask on
every request, do not connect each time. At most :data:`KEPT` databases are kept (a test
session goes through many): the least recently used one's pool is closed, and should a
caller still hold it, its next operation opens a new one (as after an outage). The pools
are closed when the process exits.
"""

from __future__ import annotations

import atexit
import threading
from typing import TYPE_CHECKING

from osprey_core.stores.factory import is_postgres, store_url

if TYPE_CHECKING:
    from osprey_core.config import OspreyConfig
    from osprey_core.memory.postgres import PostgresMemoryStore
    from osprey_core.memory.protocol import MemoryBackend

#: Databases whose memory store a process keeps open at once.
KEPT = 4
_shared: dict[tuple[str, float, int], PostgresMemoryStore] = {}
_lock = threading.Lock()


def open_memory_store(config: OspreyConfig) -> MemoryBackend:
    """The memory of every user of this installation, with its ``memory:`` caps."""
    settings = config.section("memory")
    store = config.section("store")
    url = store_url(store, config.home)
    if not is_postgres(url):
        from osprey_core.memory.store import MemoryStore

        return MemoryStore(config.home, settings)
    key = (url, store.connect_timeout, store.pool_size)
    with _lock:
        shared = _shared.pop(key, None)  # re-inserted last: the most recently used
        if shared is None:
            from osprey_core.memory.postgres import PostgresMemoryStore

            shared = PostgresMemoryStore.connect(
                url, connect_timeout=store.connect_timeout, pool_size=store.pool_size)
        _shared[key] = shared
        while len(_shared) > KEPT:
            _shared.pop(next(iter(_shared))).close()
        return shared.using(settings)


def close_memory_stores() -> None:
    """Close every pool :func:`open_memory_store` opened (at exit; tests between
    databases)."""
    with _lock:
        while _shared:
            _shared.popitem()[1].close()


atexit.register(close_memory_stores)
