"""The embedding API: a facility tool runs, pauses, approves and resumes requests.

Every method exists twice: ``arun``/``aapprove``/... for asyncio code and ``run``/
``approve``/... for plain scripts. Before acting, each call marks runs whose process died
as interrupted and expires overdue approvals, so state read after a restart is current.
"""

from __future__ import annotations

import asyncio
import getpass
import itertools
import time
from collections.abc import Callable, Coroutine
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from osprey_core.hookspecs import hookimpl
from osprey_core.hookspecs.observers import ApprovalEvent, RunEvent
from osprey_core.models import (
    ApprovalRecord,
    ApprovalStatus,
    AuditRecord,
    EventRecord,
    Plan,
    RunRecord,
    StepRecord,
)
from osprey_core.orchestration.orchestrator import Orchestrator
from osprey_core.orchestration.runtime import Runtime
from osprey_core.run_machine import RunState

if TYPE_CHECKING:
    from osprey_core.config import OspreyConfig
    from osprey_core.planning import Planner
    from osprey_core.plugin_host import PluginHost

Observer = Callable[[RunEvent | ApprovalEvent], None]
_observer_ids = itertools.count(1)


def default_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "operator"


class _Forwarder:
    """An in-process plugin that hands observer hook calls to a callback."""

    def __init__(self, callback: Observer) -> None:
        self.callback = callback

    @hookimpl
    def on_run_event(self, event: RunEvent) -> None:
        self.callback(event)

    @hookimpl
    def on_approval_requested(self, event: ApprovalEvent) -> None:
        self.callback(event)

    @hookimpl
    def on_approval_decided(self, event: ApprovalEvent) -> None:
        self.callback(event)


class Osprey:
    """One osprey instance: plugins, configuration and the durable run store."""

    def __init__(
        self,
        config_path: Path | None = None,
        *,
        host: PluginHost | None = None,
        config: OspreyConfig | None = None,
        clock: Callable[[], datetime] | None = None,
        planner_factory: Callable[[Runtime], Planner] | None = None,
    ) -> None:
        from osprey_core.config import load_config
        from osprey_core.plugin_host import load_plugins
        from osprey_core.stores.factory import open_run_store

        self.host = host or load_plugins()
        self.config = config or load_config(self.host, config_path)
        store = open_run_store(self.config.section("store"), self.config.home)
        runtime = Runtime(self.host, self.config, store, planner_factory=planner_factory)
        if clock is not None:
            runtime.clock = clock
        self.runtime = runtime
        self._orchestrator = Orchestrator(runtime)
        #: When this instance last recovered runs (``time.monotonic``), if it has.
        self._recovered_at: float | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._turn_lock: asyncio.Lock | None = None
        self._turn_loop: asyncio.AbstractEventLoop | None = None

    def close(self) -> None:
        """Release the control system and the store (``with Osprey() as osprey:``)."""
        try:
            if self._loop is not None:
                # The control system connected on this loop, if it was used: close it there.
                self._loop.run_until_complete(self.runtime.aclose())
        finally:
            self._release()

    async def aclose(self) -> None:
        """Release the control system on the running loop, where the async methods
        connected it, and the store (``async with Osprey() as osprey:``)."""
        try:
            await self.runtime.aclose()
        finally:
            self._release()

    def _release(self) -> None:
        if self._loop is not None:
            self._loop.close()
            self._loop = None
        self.runtime.store.close()

    def __enter__(self) -> Osprey:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self) -> Osprey:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- observing -----------------------------------------------------------------------

    def observe(self, callback: Observer) -> Callable[[], None]:
        """Call ``callback`` with every run and approval event; returns an unsubscribe."""
        name = f"osprey-api-observer-{next(_observer_ids)}"
        self.host.register(_Forwarder(callback), name=name)
        return lambda: self.host.unregister(name)

    # -- async API -----------------------------------------------------------------------

    def _turn(self) -> asyncio.Lock:
        """One call moves runs at a time: the orchestrator drives a single state machine, so
        a second run started while one moves would be queued and left unfinished. Callers
        that gather requests take turns instead (one lock per event loop)."""
        loop = asyncio.get_running_loop()
        if self._turn_lock is None or self._turn_loop is not loop:
            self._turn_lock, self._turn_loop = asyncio.Lock(), loop
        return self._turn_lock

    async def _prepare(self, *, expire: bool = False) -> None:
        """Recover runs whose process died (at first, then again once a lease has passed:
        a worker on another host is known dead only when its lease runs out; resume and
        cancel recover anyway; and while this process has runs it abandoned when the store
        failed under them) and, when listing or deciding, expire overdue approvals."""
        last = self._recovered_at
        if (last is None or self.runtime.abandoned
                or time.monotonic() - last >= self.runtime.lease.total_seconds()):
            await self._orchestrator.recover()
            self._recovered_at = time.monotonic()
        if expire:
            await self._orchestrator.expire_overdue()

    async def arun(self, query: str, *, session: str = "default", user: str | None = None,
                   planning: bool | None = None, interface: str = "api",
                   plan: Plan | None = None) -> RunRecord:
        """Run a request until it is done, fails, or pauses for an approval; ``plan``
        replaces the planner (it is validated and approved like any plan)."""
        async with self._turn():
            await self._prepare()
            return await self._orchestrator.submit(query, session=session,
                                                   user=user or default_user(),
                                                   planning=planning, interface=interface,
                                                   plan=plan)

    async def apending(self, *, session: str | None = None) -> list[ApprovalRecord]:
        async with self._turn():
            await self._prepare(expire=True)
        return self.runtime.store.list_approvals(status=ApprovalStatus.PENDING, session=session)

    async def aapprove(self, approval_id: str, *, user: str | None = None,
                       interface: str = "api", reason: str | None = None,
                       session: str | None = None) -> RunRecord:
        """Approve exactly the stored artifact, then run on until the next pause or the end."""
        async with self._turn():
            await self._prepare()
            return await self._orchestrator.decide(approval_id, approve=True,
                                                   actor=user or default_user(),
                                                   interface=interface, reason=reason,
                                                   session=session)

    async def areject(self, approval_id: str, *, user: str | None = None,
                      interface: str = "api", reason: str | None = None,
                      session: str | None = None) -> RunRecord:
        """Reject: the run ends as rejected; nothing is replanned."""
        async with self._turn():
            await self._prepare()
            return await self._orchestrator.decide(approval_id, approve=False,
                                                   actor=user or default_user(),
                                                   interface=interface, reason=reason,
                                                   session=session)

    async def aedit(self, approval_id: str, artifact: Any, *, user: str | None = None,
                    interface: str = "api", session: str | None = None) -> ApprovalRecord:
        """Replace a pending plan or an editable step artifact (code, a memory text);
        returns the new approval request it needs."""
        async with self._turn():
            await self._prepare()
            return await self._orchestrator.edit(approval_id, artifact,
                                                 actor=user or default_user(),
                                                 interface=interface, session=session)

    async def aresume(self, run_id: str, *, user: str | None = None, interface: str = "api",
                      indeterminate: Literal["applied", "not_applied"] | None = None
                      ) -> RunRecord:
        async with self._turn():
            await self._prepare(expire=True)
            return await self._orchestrator.resume(run_id, actor=user or default_user(),
                                                   interface=interface, indeterminate=indeterminate)

    async def acancel(self, run_id: str, *, user: str | None = None, interface: str = "api",
                      reason: str | None = None) -> RunRecord:
        async with self._turn():
            await self._prepare(expire=True)
            return await self._orchestrator.cancel(run_id, actor=user or default_user(),
                                                   interface=interface, reason=reason)

    # -- sync API ------------------------------------------------------------------------

    # Each mirrors its async twin keyword for keyword, so a misspelt keyword fails type
    # checking instead of at run time.

    def run(self, query: str, *, session: str = "default", user: str | None = None,
            planning: bool | None = None, interface: str = "api",
            plan: Plan | None = None) -> RunRecord:
        """Run a request until it is done, fails, or pauses for an approval."""
        return self._sync(self.arun(query, session=session, user=user, planning=planning,
                                    interface=interface, plan=plan))

    def pending(self, *, session: str | None = None) -> list[ApprovalRecord]:
        """Approvals still waiting for a decision (overdue ones expire first)."""
        return self._sync(self.apending(session=session))

    def approve(self, approval_id: str, *, user: str | None = None, interface: str = "api",
                reason: str | None = None, session: str | None = None) -> RunRecord:
        """Approve exactly the stored artifact, then run on until the next pause or the end."""
        return self._sync(self.aapprove(approval_id, user=user, interface=interface,
                                        reason=reason, session=session))

    def reject(self, approval_id: str, *, user: str | None = None, interface: str = "api",
               reason: str | None = None, session: str | None = None) -> RunRecord:
        """Reject: the run ends as rejected; nothing is replanned."""
        return self._sync(self.areject(approval_id, user=user, interface=interface,
                                       reason=reason, session=session))

    def edit(self, approval_id: str, artifact: Any, *, user: str | None = None,
             interface: str = "api", session: str | None = None) -> ApprovalRecord:
        """Replace a pending artifact; returns the new approval request it needs."""
        return self._sync(self.aedit(approval_id, artifact, user=user, interface=interface,
                                     session=session))

    def resume(self, run_id: str, *, user: str | None = None, interface: str = "api",
               indeterminate: Literal["applied", "not_applied"] | None = None) -> RunRecord:
        """Continue an interrupted run (``indeterminate`` settles a step that crashed
        midway: the operator says whether its effect happened)."""
        return self._sync(self.aresume(run_id, user=user, interface=interface,
                                       indeterminate=indeterminate))

    def cancel(self, run_id: str, *, user: str | None = None, interface: str = "api",
               reason: str | None = None) -> RunRecord:
        """Cancel a run that has not finished; pending approvals are withdrawn."""
        return self._sync(self.acancel(run_id, user=user, interface=interface, reason=reason))

    def refresh(self) -> None:
        """Recover interrupted runs and expire overdue approvals now."""
        self._sync(self.arefresh())

    async def arefresh(self) -> None:
        """Recover interrupted runs and expire overdue approvals now (async twin)."""
        async with self._turn():
            self._recovered_at = None
            await self._prepare(expire=True)

    def _sync[T](self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run on this instance's own event loop, reused across calls (``asyncio.run``
        and ``asyncio.Runner`` cost ~0.2 ms a call in loop and signal set-up). Not for
        use from inside a running event loop: use the ``a*`` methods there."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
            return self._loop.run_until_complete(coroutine)
        coroutine.close()
        raise RuntimeError("an event loop is running: use the async method (arun, aapprove, ...)")

    # -- reading the store ---------------------------------------------------------------

    def editable(self, approval: ApprovalRecord) -> bool:
        """Whether an operator may edit what ``approval`` waits for (plans always may)."""
        if approval.kind == "plan":
            return True
        plan = self.get_run(approval.run_id).plan
        if plan is None or approval.step_index is None:
            return False
        name = plan.steps[approval.step_index].capability
        capabilities = self.runtime.host.capabilities()
        return name in capabilities and capabilities.get(name).editable

    def get_run(self, run_id: str) -> RunRecord:
        return self.runtime.store.get_run(run_id)

    def runs(self, *, session: str | None = None, states: set[RunState] | None = None,
             limit: int = 100) -> list[RunRecord]:
        return self.runtime.store.list_runs(session=session, states=states, limit=limit)

    def approval(self, approval_id: str) -> ApprovalRecord:
        from osprey_core.errors import ApprovalError
        from osprey_core.store_errors import StoreError, StoreStorageError

        try:
            return self.runtime.store.get_approval(approval_id)
        except StoreStorageError:
            raise  # the store cannot answer: that says nothing about the approval
        except StoreError:
            raise ApprovalError(f"unknown approval '{approval_id}'") from None

    def approvals(self, *, status: ApprovalStatus | None = None, session: str | None = None,
                  run_id: str | None = None) -> list[ApprovalRecord]:
        return self.runtime.store.list_approvals(status=status, session=session, run_id=run_id)

    def steps(self, run_id: str) -> list[StepRecord]:
        return self.runtime.store.steps(run_id)

    def events(self, run_id: str) -> list[EventRecord]:
        return self.runtime.store.events(run_id)

    def audit(self, *, run_id: str | None = None) -> list[AuditRecord]:
        return self.runtime.store.audit(run_id=run_id)

    def plan_file(self, run_id: str) -> Path:
        return self.runtime.plan_file(run_id)
