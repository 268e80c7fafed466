"""Control-system connectors: EPICS, Tango, LabVIEW, a simulated machine, ..."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from osprey_core.hookspecs import hookspec


class ControlSystemConnector(ABC):
    """Talks to one control system; chosen by ``control_system.type`` in the config.

    Registered as a class and built with its config section. Connectors only move data:
    write safety (``writes_enabled``, limits, verification, audit) is applied by the core
    around every write, so no connector can skip it.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""

    @abstractmethod
    async def connect(self) -> None:
        """Open connections or sessions; called once before first use."""

    @abstractmethod
    async def close(self) -> None:
        """Release every connection and subscription."""

    @abstractmethod
    async def read(self, channel: str) -> Any:
        """Read one channel's current value."""

    async def read_many(self, channels: Sequence[str]) -> dict[str, Any]:
        """Read several channels; connectors override this to batch."""
        return {channel: await self.read(channel) for channel in channels}

    @abstractmethod
    async def write(self, channel: str, value: Any) -> Any:
        """Write one value (already checked by the core's safety path)."""

    @abstractmethod
    async def subscribe(self, channel: str, callback: Callable[[Any], None]) -> Any:
        """Call ``callback`` on every change of ``channel``; return a handle."""

    @abstractmethod
    async def unsubscribe(self, handle: Any) -> None:
        """Stop the subscription behind ``handle``."""

    @abstractmethod
    async def metadata(self, channel: str) -> Any:
        """Units, precision, limits, description, alarm state and writability."""

    def validate_name(self, channel: str) -> bool:
        """Whether ``channel`` is syntactically a valid name for this control system."""
        return bool(channel) and channel.isprintable() and not channel.isspace()


@hookspec
def register_connectors(register: Callable[[type[ControlSystemConnector]], None]) -> None:
    """Register control-system connector classes by calling ``register(ConnectorClass)``."""
