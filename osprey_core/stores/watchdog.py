"""A deadline on every PostgreSQL store operation.

A server that stops answering without closing anything (a frozen process, a host paused
by its hypervisor, a network that drops packets while the far kernel still acknowledges
them) would hold a caller for ever: libpq waits on the socket with no limit, and neither
TCP keepalives nor ``tcp_user_timeout`` fire while the far side's kernel answers. So each
operation is given a deadline, and one watcher thread per process shuts down the socket of
a connection whose operation outlives it. The waiting call then fails at once ("server
closed the connection"), the store reports it as unavailable and the pool drops the
connection. A healthy server is never cut: only an operation that has waited the whole
``store.operation_timeout`` is.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any


@dataclass
class Alarm:
    """One armed deadline; ``fired`` once the watcher has cut its connection."""

    deadline: float
    conn: Any
    fired: bool = False


class Watchdog:
    """Deadlines of the operations in flight, and the thread that enforces them."""

    def __init__(self) -> None:
        self._wake = threading.Condition()
        self._armed: dict[int, Alarm] = {}
        self._keys = itertools.count()
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def deadline(self, conn: Any, seconds: float | None) -> Iterator[Alarm]:
        """Cut ``conn`` (a psycopg connection) if the block still runs after ``seconds``
        (``None``: no deadline)."""
        if seconds is None:
            yield Alarm(float("inf"), conn)
            return
        key, alarm = next(self._keys), Alarm(time.monotonic() + seconds, conn)
        with self._wake:
            self._armed[key] = alarm
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._watch, name="osprey-store-watchdog",
                                                daemon=True)
                self._thread.start()
            self._wake.notify()
        try:
            yield alarm
        finally:
            with self._wake:
                self._armed.pop(key, None)

    def _watch(self) -> None:
        with self._wake:
            while True:
                now = time.monotonic()
                for key, alarm in list(self._armed.items()):
                    if alarm.deadline <= now:
                        del self._armed[key]
                        alarm.fired = True
                        cut(alarm.conn)
                nearest = min((alarm.deadline for alarm in self._armed.values()), default=None)
                self._wake.wait(None if nearest is None else max(0.0, nearest - now))


def cut(conn: Any) -> None:
    """Shut the connection's socket down under the thread waiting on it (shutting down a
    duplicate of the descriptor shuts the socket itself, and the owner's close stays its
    own)."""
    with contextlib.suppress(Exception):  # already closed: nothing to cut
        duplicate = socket.socket(fileno=os.dup(conn.pgconn.socket))
        try:
            duplicate.shutdown(socket.SHUT_RDWR)
        finally:
            duplicate.close()


#: The process's watcher (one thread, started by the first deadline).
WATCHDOG = Watchdog()
