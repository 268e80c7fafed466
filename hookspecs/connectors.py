"""Control-system connectors: EPICS, Tango, LabVIEW, a simulated machine, ..."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from osprey_core.control.types import ChannelMetadata, ChannelValue, ReadBatch, WriteAck
from osprey_core.hookspecs import hookspec

if TYPE_CHECKING:
    from pydantic import BaseModel


class ControlSystemConnector(ABC):
    """Talks to one control system; chosen by ``control_system.type`` in the config.

    Registered as a class and built by the core with its settings (the config section
    named like the connector, validated by ``settings_model``) and the timeouts from
    ``control_system``. Connectors only move data: write safety (``writes_enabled``,
    limits, verification, audit) is applied by the core around every write, so no
    connector can skip it, and ``write`` is never called directly by anything else.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    #: Model of this connector's config section (top-level key = ``name``), if any.
    settings_model: ClassVar[type[BaseModel] | None] = None

    def __init__(
        self,
        settings: Any = None,
        *,
        connection_timeout: float = 2.0,
        read_timeout: float = 2.0,
        write_timeout: float = 5.0,
        home: Path | None = None,
    ) -> None:
        self.settings = settings
        #: OSPREY_HOME, for connectors that keep local state (the simulated machine does).
        self.home = home
        #: Seconds to wait for a channel to connect (a missing channel costs this long).
        self.connection_timeout = connection_timeout
        #: Seconds to wait for a value once connected.
        self.read_timeout = read_timeout
        self.write_timeout = write_timeout

    @abstractmethod
    async def connect(self) -> None:
        """Open sessions; called once before first use."""

    @abstractmethod
    async def close(self) -> None:
        """Release every connection and subscription."""

    @abstractmethod
    async def read(self, channel: str) -> ChannelValue:
        """Read one channel; raise ``ChannelNotFoundError`` / ``ReadTimeoutError``."""

    async def read_many(self, channels: Sequence[str]) -> ReadBatch:
        """Read channels concurrently; one missing channel does not spoil the rest."""
        import asyncio  # here: the hook specs load on every --help, asyncio costs ~20 ms

        results = await asyncio.gather(*(self.read(name) for name in channels),
                                       return_exceptions=True)
        batch = ReadBatch()
        for name, result in zip(channels, results, strict=True):
            if isinstance(result, BaseException):
                if not isinstance(result, Exception):
                    raise result
                batch.errors[name] = result
            else:
                batch.values[name] = result
        return batch

    @abstractmethod
    async def write(self, channel: str, value: Any) -> WriteAck:
        """Put ``value`` (already checked by the core); confirm completion if possible.

        Raise ``ServerRejectedError`` when the control system refuses the value.
        """

    @abstractmethod
    async def subscribe(self, channel: str, callback: Callable[[ChannelValue], None]) -> Any:
        """Call ``callback`` (on the event loop) on every change; return a handle."""

    @abstractmethod
    async def unsubscribe(self, handle: Any) -> None:
        """Stop the subscription behind ``handle``."""

    @abstractmethod
    async def metadata(self, channel: str) -> ChannelMetadata:
        """Units, precision, limits, description, alarm state and writability."""

    async def known_channels(self) -> list[str]:
        """Channel names this connector can list (for code generators); ``[]`` when the
        control system offers no directory (EPICS without a channel finder)."""
        return []

    def validate_name(self, channel: str) -> bool:
        """Whether ``channel`` is syntactically a valid name for this control system."""
        return bool(channel) and channel.isprintable() and not any(c.isspace() for c in channel)


@hookspec
def register_connectors(register: Callable[[type[ControlSystemConnector]], None]) -> None:
    """Register control-system connector classes by calling ``register(ConnectorClass)``."""
