"""What every route reaches: the one ``Osprey`` of the app, its settings and tokens.

Routers get it with ``Depends(service_state)``; the app factory puts it on
``app.state.osprey_service``.

**Moving runs is serialised** (``async with state.driving() as osprey:``). One ``Osprey``
is not safe for concurrent async runs: its runtime has one ``transitions`` state machine
shared by every run's controller, built with ``queued=True``, and that queue is one deque
for *all* models. A trigger arriving while another run's transition is in progress is
appended and returns at once, before it ran; the run is then processed inside the other
request's task, and when its controller leaves the machine its queued trigger is dropped,
leaving the run stuck. So every call that moves a run (``arun``, ``aapprove``,
``areject``, ``aedit``, ``aresume``, ``acancel``, ``arefresh``, ``apending``: the last
two recover and expire through the same machine) holds one lock. Reads of the store need
no lock: store transactions never span an ``await``, so a reader never sees half a commit.
Reads go through :meth:`ServiceState.read`: off the event loop where the store allows
several threads (PostgreSQL), so a database that is slow to answer, or away, holds up
that request alone, never ``/healthz`` or the others. Other processes (the CLI) are kept
apart by the store itself (IMMEDIATE transactions, compare-and-set on state and owner).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fastapi import Request

if TYPE_CHECKING:
    from osprey_core.api import Osprey
    from osprey_core.service.settings import ServiceSettings
    from osprey_core.service.tokens import TokenStore


@dataclass
class ServiceState:
    osprey: Osprey
    settings: ServiceSettings
    tokens: TokenStore
    #: Set when the server begins to stop: open event streams end instead of holding
    #: the shutdown up.
    stopping: bool = False
    _drive: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)
    _holder: asyncio.Task[object] | None = field(default=None, repr=False)

    @asynccontextmanager
    async def driving(self) -> AsyncIterator[Osprey]:
        """The ``Osprey``, held alone for a call that moves runs (see the module doc).
        Re-entrant within one task, so a helper that takes it may be called by a route
        that already holds it."""
        task = asyncio.current_task()
        if task is not None and task is self._holder:
            yield self.osprey
            return
        async with self._drive:
            self._holder = task
            try:
                yield self.osprey
            finally:
                self._holder = None

    async def read[T](self, call: Callable[[], T]) -> T:
        """``call()``, a read of the store, in a worker thread when the store takes calls
        from several threads at once; on the loop otherwise (SQLite: one connection)."""
        if self.osprey.runtime.store.threaded:
            return await asyncio.to_thread(call)
        return call()

    async def refresh(self) -> Osprey:
        """The ``Osprey`` after recovering runs of dead processes and expiring overdue
        approvals (as the CLI's list and show commands do first), unless a run is moving
        right now: then what is stored is shown as it is, so reading never waits for a
        run, and the next quiet moment catches up. (Deciding an overdue request is refused
        either way: the orchestrator checks the deadline itself.)"""
        if not self._drive.locked():
            async with self.driving() as osprey:
                await osprey.arefresh()
        return self.osprey


def service_state(request: Request) -> ServiceState:
    """The app's shared state (a FastAPI dependency)."""
    state: ServiceState = request.app.state.osprey_service
    return state
