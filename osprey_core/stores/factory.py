"""One place that opens the run store an installation is configured for."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from osprey_core.store_errors import StoreError

if TYPE_CHECKING:
    from osprey_core.store import RunStore
    from osprey_core.stores.settings import StoreSettings

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def is_postgres(url: str) -> bool:
    return url.startswith(POSTGRES_SCHEMES)


def store_url(settings: StoreSettings, home: Path) -> str:
    """``store.url``, else ``sqlite:`` and the file in ``home``."""
    url = settings.url.get_secret_value().strip() if settings.url is not None else ""
    return url or f"sqlite:{home / 'osprey.db'}"


def connection_options(settings: StoreSettings) -> dict[str, float]:
    """How every store of an installation connects to its PostgreSQL database."""
    return {"connect_timeout": settings.connect_timeout, "pool_size": settings.pool_size,
            "operation_timeout": settings.operation_timeout}


def open_run_store(settings: StoreSettings, home: Path) -> RunStore:
    """The SQLite store in ``home`` unless ``store.url`` names another database."""
    return open_url(store_url(settings, home), **connection_options(settings))


def open_url(url: str, *, connect_timeout: float = 10.0, pool_size: int = 8,
             operation_timeout: float = 30.0) -> RunStore:
    """``sqlite:PATH`` or ``postgresql://...`` opened (and migrated to this version)."""
    if url.startswith("sqlite:"):
        from osprey_core.store import RunStore

        return RunStore(Path(url.removeprefix("sqlite:")).expanduser())
    if is_postgres(url):
        require_driver()
        from osprey_core.stores.postgres import PostgresRunStore

        return PostgresRunStore(url, connect_timeout=connect_timeout, pool_size=pool_size,
                                operation_timeout=operation_timeout)
    scheme = url.partition(":")[0] or url
    raise StoreError(f"a store is named 'sqlite:PATH' or 'postgresql://USER@HOST:PORT/DB', "
                     f"not '{scheme}:...'")


def require_driver() -> None:
    """psycopg and its pool, or a StoreError saying how to install them (every store that
    opens a PostgreSQL database asks first)."""
    try:
        import psycopg  # noqa: F401
        import psycopg_pool  # noqa: F401
    except ImportError as exc:
        raise StoreError(f"store.url names a PostgreSQL database, but {exc.name} is not "
                         "installed: pip install 'osprey-core[postgres]'") from None
