"""The PostgreSQL stores a process keeps open between requests.

User memory and the logbook are opened on every request of the service (and by every
provider call of a run); connecting each time would cost tens of milliseconds and take
the migration lock. A process keeps each such store open, one small pool per store and
database, and hands it out again. At most :data:`KEPT` are kept (a test session goes
through many databases): the least recently used one is closed, and should a caller still
hold it, its next operation opens a new pool (as after an outage). Everything kept is
closed when the process exits.
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Callable, Hashable
from typing import Protocol, cast


class Closeable(Protocol):
    def close(self) -> None: ...


#: Stores (of every kind and database) a process keeps open at once.
KEPT = 8
_open: dict[Hashable, Closeable] = {}
_lock = threading.Lock()


def kept_open[Kept: Closeable](key: Hashable, make: Callable[[], Kept]) -> Kept:
    """The store kept under ``key``, made by ``make`` the first time (or after it was
    closed to make room)."""
    with _lock:
        store = _open.pop(key, None)  # re-inserted last: the most recently used
        if store is None:
            store = make()
        _open[key] = store
        while len(_open) > KEPT:
            _open.pop(next(iter(_open))).close()
        return cast(Kept, store)


def close_kept() -> None:
    """Close every store kept open (at exit; tests, between databases)."""
    with _lock:
        while _open:
            _open.popitem()[1].close()


def kept_count() -> int:
    return len(_open)


atexit.register(close_kept)
