"""What every run in this process shares (:class:`Runtime`), and who owns a run.

A run being worked on names its owner: host, pid, boot id and the process's start time,
and holds a lease the owner renews while it works. Only a run whose owner is gone is
recovered: on the owner's own host, the process is gone (a pid reused by another process is
not the owner); from any other host, nothing can be seen of the process, so its lease must
have run out.
"""

from __future__ import annotations

import copy
import functools
import os
import socket
import typing
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from osprey_core.approvals import Action, Ruling, rule
from osprey_core.errors import RunError
from osprey_core.hookspecs.capabilities import Capability, CapabilityInfo
from osprey_core.models import AuditRecord, RunRecord
from osprey_core.run_machine import new_machine
from osprey_core.settings import ApprovalMode, ApprovalSettings, LLMSettings, PlanningSettings
from osprey_core.store import RunStore

if TYPE_CHECKING:
    from osprey_core.config import OspreyConfig
    from osprey_core.control.system import ControlSystem
    from osprey_core.hookspecs.archivers import ArchiverConnector
    from osprey_core.planning import Planner
    from osprey_core.planning.base import PlanLimits
    from osprey_core.plugin_host import PluginHost, PluginView
    from osprey_core.providers import ProviderService

APPROVAL_MODES = frozenset(typing.get_args(ApprovalMode))


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@functools.cache
def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def process_start(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks after boot), ``None`` if it is gone or a
    zombie. With the pid and boot id it names one process: a reused pid starts later."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = stat[stat.rfind(")") + 2:].split()
    if not fields or fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


@functools.cache
def own_start() -> int | None:
    return process_start(os.getpid())


@functools.cache
def host_name() -> str:
    """This worker's host as owners are named: ``OSPREY_WORKER_HOST`` if set (give each
    container sharing a kernel its own), else the host name."""
    return os.environ.get("OSPREY_WORKER_HOST") or socket.gethostname()


def claim(run: RunRecord, now: datetime, lease: timedelta) -> None:
    """Make this process ``run``'s owner, with a lease until ``now + lease``."""
    run.owner_pid, run.owner_boot, run.owner_start = os.getpid(), boot_id(), own_start()
    run.owner_host, run.lease_until = host_name(), now + lease


def owner_alive(run: RunRecord, now: datetime) -> bool:
    """Is the owner of ``run`` still working on it? On its own host (or for a run written
    before hosts were named): same boot, same pid, same start time. Elsewhere: its lease
    has not run out."""
    if run.owner_pid is None:
        return False
    if run.owner_host is None or run.owner_host == host_name():
        if run.owner_boot != boot_id():
            return False
        started = process_start(run.owner_pid)
        if started is None:
            return False
        return run.owner_start is None or started == run.owner_start
    return run.lease_until is not None and run.lease_until > now


@dataclass
class Runtime:
    """Services shared by every run in this process."""

    host: PluginHost
    config: OspreyConfig
    store: RunStore
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    planner_factory: Callable[[Runtime], Planner] | None = None
    #: Runs this process left mid-way because the store failed under them (a database
    #: that went away): their owner lives, but nothing works on them any more.
    abandoned: set[str] = field(default_factory=set)

    @functools.cached_property
    def machine(self) -> Any:
        """One state machine for every run: building one per run cost ~0.3 ms."""
        return new_machine()

    def __post_init__(self) -> None:
        # Nothing a plugin does from here on can change which capabilities and approval
        # policies exist; attempts are refused and audited.
        self.host.freeze()
        self.host.on_refused_change(self._audit_refused_change)

    @functools.cached_property
    def capability_info(self) -> dict[str, CapabilityInfo]:
        """The traits policies judge steps by, fixed at load: a step that changes a live
        capability object cannot make another capability look read-only."""
        return {capability.name: CapabilityInfo.of(capability)
                for capability in self.host.capabilities()}

    @functools.cached_property
    def plugin_view(self) -> PluginView:
        from osprey_core.plugin_host import PluginView

        return PluginView(self.host)

    @functools.cached_property
    def provider_config(self) -> OspreyConfig:
        """One private copy for the data providers, made once (a copy per request cost
        ~1 ms): what a provider does to it reaches neither the live settings nor a step."""
        return self.private_config()

    def private_config(self) -> OspreyConfig:
        """A fresh copy of the configuration for plugin code (a step, a provider): nothing
        it does to the copy reaches the live settings or any other step."""
        return copy.deepcopy(self.config)

    def provider_service(self, run: RunRecord) -> ProviderService:
        """The data providers, asked about ``run``'s request; they see the providers'
        private copy of the configuration, never the live one."""
        from osprey_core.hookspecs.data_providers import ProviderRequest
        from osprey_core.providers import ProviderService

        request = ProviderRequest(query=run.query, user=run.user, session=run.session,
                                  run_id=run.id, config=self.provider_config)
        return ProviderService(self.plugin_view.data_providers(),
                               self.config.section("providers"), request)

    def _audit_refused_change(self, message: str) -> None:
        entry = AuditRecord(at=self.now(), actor="system", interface="plugin_host",
                            action="plugin_change_refused", details={"reason": message})
        if self.store.conn.in_transaction:
            raise RunError(f"refused plugin change during a commit: {message}")
        with self.store.transaction() as store:
            store.append_audit(entry)

    def working(self, run: RunRecord, now: datetime) -> bool:
        """Is ``run``'s owner still working on it (:func:`owner_alive`)? Not if the owner
        is this process and it abandoned the run: recovery then interrupts it as it
        would a dead worker's, with a side-effecting step in doubt ``indeterminate``."""
        if (run.id in self.abandoned and run.owner_pid == os.getpid()
                and run.owner_host in (None, host_name()) and run.owner_boot == boot_id()):
            return False
        return owner_alive(run, now)

    @property
    def plans_dir(self) -> Path:
        return self.config.home / "plans"

    def now(self) -> datetime:
        return self.clock()

    def approval_settings(self) -> ApprovalSettings:
        """Read fresh each time, so a policy tightened while a run waits applies on resume.
        A capability's own setting (:meth:`Capability.approval_mode`) is its default mode;
        an ``approval.capabilities`` entry naming it wins."""
        settings: ApprovalSettings = self.config.section("approval")
        defaults = self.capability_modes
        if not defaults:
            return settings
        return settings.model_copy(update={"capabilities": {**defaults,
                                                            **settings.capabilities}})

    @functools.cached_property
    def capability_modes(self) -> dict[str, str]:
        """Each capability's own default mode, asked once, of a private copy of the
        settings. Anything but a known mode is ignored: the configured mode applies."""
        config = self.private_config()
        return {capability.name: mode for capability in self.host.capabilities()
                if (mode := capability.approval_mode(config)) in APPROVAL_MODES}

    @functools.cached_property
    def lease(self) -> timedelta:
        """How long a claim on a run lasts without renewal (``store.lease_seconds``)."""
        return timedelta(seconds=self.config.section("store").lease_seconds)

    def planning_settings(self) -> PlanningSettings:
        return self.config.section("planning")

    def plan_limits(self) -> PlanLimits:
        from osprey_core.planning.base import PlanLimits

        settings = self.planning_settings()
        return PlanLimits(settings.max_steps, settings.max_plan_bytes)

    def llm_settings(self) -> LLMSettings:
        return self.config.section("llm")

    def planner(self) -> Planner:
        if self.planner_factory is not None:
            return self.planner_factory(self)
        from osprey_core.planning import make_planner

        return make_planner(self.llm_settings(), self.host.capabilities())

    def capability(self, name: str) -> Capability:
        return self.host.capabilities().get(name)

    def info(self, name: str) -> CapabilityInfo:
        """The load-time traits of capability ``name`` (what policies judge)."""
        if name not in self.capability_info:
            self.capability(name)  # the registry's error, with a did-you-mean
        return self.capability_info[name]

    def rule(self, action: Action) -> Ruling:
        return rule(self.host.approval_policies(), action)

    def plan_file(self, run_id: str) -> Path:
        return self.plans_dir / f"{run_id}.json"

    @functools.cached_property
    def control_system(self) -> ControlSystem:
        """The configured control system, built on first use; its write attempts are
        audited in this runtime's store."""
        from osprey_core.control.service import build_control_system, store_audit_sink

        return build_control_system(self.config, self.host, audit=store_audit_sink(self.store))

    @functools.cached_property
    def archiver(self) -> ArchiverConnector:
        """The configured archiver connector, built on first use."""
        from osprey_core.control.service import build_archiver

        return build_archiver(self.config, self.host)

    async def aclose(self) -> None:
        """Close the control system's connections, if it was built."""
        control_system = self.__dict__.pop("control_system", None)
        if control_system is not None:
            await control_system.close()

