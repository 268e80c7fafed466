"""Built-in plugin: ``channel_read``, ``channel_write`` and ``archiver_retrieval``.

They reach the machine only through the services the core hands each step: the
configured :class:`~osprey_core.control.system.ControlSystem` (the one write path, with
``writes_enabled``, the limits database, verification and the audit log) and the
configured archiver. ``channel_write`` has side effects: its ``prepare`` reads each
channel's current value, units and limits into the artifact a human approves, and its
``execute`` writes exactly the approved values, nothing recomputed.

The logic (and pydantic) lives in :mod:`osprey_core.control.capabilities`, imported
when the capabilities are built, so loading the plugin for ``osprey --help`` stays cheap.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from osprey_core.hookspecs import hookimpl
from osprey_core.hookspecs.capabilities import Capability, PreparedAction, StepContext

if TYPE_CHECKING:
    from rich.console import RenderableType


class ChannelRead(Capability):
    name = "channel_read"
    description = ("Read the current values of control-system channels (PVs, attributes) "
                   "by name, with units, alarm severity and timestamp: 'read SR:CURRENT', "
                   "'what is BPM1:X'.")
    provides = ("channel_values",)

    def __init__(self) -> None:
        from osprey_core.control import capabilities

        self.logic = capabilities
        self.parameters = capabilities.ReadParameters

    def match(self, query: str) -> dict[str, Any] | None:
        return self.logic.match_read(query)

    async def execute(self, step: StepContext) -> dict[str, Any]:
        return await self.logic.read_channels(step.services.control_system,
                                              step.parameters.channels)

    def render(self, result: Any) -> RenderableType | str:
        """One row per channel: value, units, alarm (if any), time in local time."""
        from osprey_core.display.channels import readings

        return readings(result)


class ChannelWrite(Capability):
    name = "channel_write"
    description = ("Set (write) control-system channels to new values, e.g. 'set HCM1:SP to "
                   "2.0 A' or 'set SR:MODE to USER'. Changes the machine: a human approves "
                   "the exact values first, and limits and verification apply.")
    provides = ("channel_writes",)
    side_effects = True
    approval_kind = "channel_write"

    def __init__(self) -> None:
        from osprey_core.control import capabilities

        self.logic = capabilities
        self.parameters = capabilities.WriteParameters

    def match(self, query: str) -> dict[str, Any] | None:
        return self.logic.match_write(query)

    async def prepare(self, step: StepContext) -> PreparedAction:
        """Channel, current and requested value, units, limits and verification."""
        return await self.logic.prepare_writes(step.services.control_system,
                                               step.parameters)

    async def execute(self, step: StepContext) -> list[dict[str, Any]]:
        return await self.logic.execute_writes(step.services.control_system, step)

    def render(self, result: Any) -> RenderableType | str:
        """Requested value, value before, readback and whether the write was verified."""
        from osprey_core.display.channels import writes

        return writes(result)


class ArchiverRetrieval(Capability):
    name = "archiver_retrieval"
    description = ("Retrieve the archived history of channels over a time range from the "
                   "archiver: 'history of SR:CURRENT over the last hour'.")
    provides = ("channel_history",)

    def __init__(self) -> None:
        from osprey_core.control import capabilities

        self.logic = capabilities
        self.parameters = capabilities.HistoryParameters

    def match(self, query: str) -> dict[str, Any] | None:
        return self.logic.match_history(query)

    async def execute(self, step: StepContext) -> dict[str, Any]:
        from osprey_core.control.history import retrieve_history

        return await retrieve_history(step.services.archiver, step.parameters)

    def render(self, result: Any) -> RenderableType | str:
        """Count, span, min/mean/max, first and last per channel; never the samples."""
        from osprey_core.display.channels import history

        return history(result)


@hookimpl
def register_capabilities(register: Callable[[Capability], None]) -> None:
    register(ChannelRead())
    register(ChannelWrite())
    register(ArchiverRetrieval())
