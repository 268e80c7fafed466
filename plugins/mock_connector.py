"""Built-in plugin: the ``mock`` connector, a simulated storage ring (the default).

The machine model lives in :mod:`osprey_core.control.simulation` and is imported on
:meth:`MockConnector.connect`, so loading this plugin costs neither pydantic nor yaml.
Also registers the ``mock`` config section, shared with the ``mock`` archiver.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from osprey_core.control.errors import ControlSystemError
from osprey_core.control.types import ChannelMetadata, ChannelValue, WriteAck, is_number
from osprey_core.hookspecs import hookimpl
from osprey_core.hookspecs.connectors import ControlSystemConnector

if TYPE_CHECKING:
    import asyncio

    from osprey_core.control.simulation import SimulatedMachine

log = logging.getLogger(__name__)


class LazySettingsModel:
    """``settings_model`` resolved on first access, keeping pydantic out of plugin loading."""

    def __get__(self, instance: object, owner: type) -> Any:
        from osprey_core.control.simulation import MockSettings

        return MockSettings


@dataclass(slots=True)
class _Subscription:
    channel: str
    callback: Callable[[ChannelValue], None]
    last: Any
    deadband: float


class MockConnector(ControlSystemConnector):
    """Reads, writes and monitors the simulated machine; see ``docs/control/mock.md``."""

    name = "mock"
    description = ("Simulated storage ring: declared channels with units, limits and "
                   "dynamics; writes persist under the home directory.")
    settings_model = LazySettingsModel()  # type: ignore[assignment]

    def __init__(self, settings: Any = None, *, connection_timeout: float = 2.0,
                 read_timeout: float = 2.0, write_timeout: float = 5.0,
                 home: Path | None = None) -> None:
        super().__init__(settings, connection_timeout=connection_timeout,
                         read_timeout=read_timeout, write_timeout=write_timeout, home=home)
        self.machine: SimulatedMachine | None = None
        self.update_interval = 0.1
        self._subscriptions: dict[int, _Subscription] = {}
        self._handles = itertools.count(1)
        self._poller: asyncio.Task[None] | None = None

    def validate_name(self, channel: str) -> bool:
        from osprey_core.control.simulation import valid_name

        return valid_name(channel)

    def _machine(self) -> SimulatedMachine:
        if self.machine is None:
            raise ControlSystemError("the mock connector is not connected")
        return self.machine

    async def connect(self) -> None:
        if self.machine is None:
            from osprey_core.control.simulation import coerce_settings, open_machine

            self.update_interval = coerce_settings(self.settings).update_interval
            self.machine = open_machine(self.settings, home=self.home)

    async def close(self) -> None:
        poller, self._poller = self._poller, None
        if poller is not None:
            import asyncio  # in the methods that need it: plugins load on every --help

            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
        self._subscriptions.clear()
        self.machine = None

    async def read(self, channel: str) -> ChannelValue:
        return self._machine().read(channel)

    async def write(self, channel: str, value: Any) -> WriteAck:
        stored = self._machine().write(channel, value)
        self._poll()  # subscribers see a write at once, not at the next tick
        return WriteAck(confirmed=True, message=f"{channel} set to {stored!r}")

    async def known_channels(self) -> list[str]:
        return sorted(self._machine().spec.channels)

    async def metadata(self, channel: str) -> ChannelMetadata:
        return self._machine().metadata(channel)

    async def subscribe(self, channel: str, callback: Callable[[ChannelValue], None]) -> int:
        machine = self._machine()
        current = machine.read(channel)
        handle = next(self._handles)
        self._subscriptions[handle] = _Subscription(
            channel, callback, current.value, machine.channel(channel).deadband)
        if self._poller is None or self._poller.done():
            import asyncio

            self._poller = asyncio.create_task(self._poll_forever(), name="mock-subscriptions")
        return handle

    async def unsubscribe(self, handle: Any) -> None:
        if self._subscriptions.pop(handle, None) is None:
            raise KeyError(f"the mock connector has no subscription {handle!r}")
        if not self._subscriptions and self._poller is not None:
            self._poller.cancel()
            self._poller = None

    async def _poll_forever(self) -> None:
        import asyncio

        while self._subscriptions:
            await asyncio.sleep(self.update_interval)
            self._poll()

    def _poll(self) -> None:
        """Call back every subscriber whose channel changed beyond its deadband."""
        if self.machine is None:
            return
        readings: dict[str, ChannelValue] = {}
        for handle, subscription in list(self._subscriptions.items()):
            if handle not in self._subscriptions:  # unsubscribed by an earlier callback
                continue
            try:
                reading = readings.get(subscription.channel) or self.machine.read(
                    subscription.channel)
            except Exception:  # e.g. a corrupt state file: report it, keep monitoring
                log.exception("mock connector: cannot update %s", subscription.channel)
                continue
            readings[subscription.channel] = reading
            if not _changed(subscription.last, reading.value, subscription.deadband):
                continue
            subscription.last = reading.value
            try:
                subscription.callback(reading)
            except Exception:
                log.exception("mock connector: subscriber of %s failed", subscription.channel)


def _changed(old: Any, new: Any, deadband: float) -> bool:
    if deadband and is_number(old) and is_number(new):
        return abs(new - old) > deadband
    return bool(old != new)


@hookimpl
def register_connectors(register: Callable[[type[ControlSystemConnector]], None]) -> None:
    register(MockConnector)


@hookimpl
def register_config_sections(register: Callable[[str, Any], None]) -> None:
    from osprey_core.control.simulation import MockSettings

    register("mock", MockSettings)
