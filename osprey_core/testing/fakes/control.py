"""Fake control system and archiver: channels with metadata, limits on request, monitors,
history, and a record of every read and write."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar, Self

from osprey_core.control.errors import ChannelNotFoundError, ControlSystemError
from osprey_core.control.types import ChannelMetadata, ChannelValue, Sample, WriteAck
from osprey_core.hookspecs.archivers import ArchiverConnector
from osprey_core.hookspecs.connectors import ControlSystemConnector
from osprey_core.testing.fakes.tracked import Tracked, named_subclass


class FakeConnector(Tracked, ControlSystemConnector):
    """An in-memory control system: channels are a dict, subscriptions fire on change.

    Reads and writes before :meth:`connect` or of unknown channels fail, as they would
    on a real control system, so tests catch a core that skips either step. ``clamps``
    makes chosen channels clamp written values silently, like an IOC's drive limits,
    so only a readback reveals it.
    """

    name = "fake"
    description = "An in-memory control system for tests."
    initial_values: ClassVar[Mapping[str, Any]] = {}
    channel_metadata: ClassVar[Mapping[str, Mapping[str, Any]]] = {}
    clamps: ClassVar[Mapping[str, tuple[float, float]]] = {}

    @classmethod
    def named(
        cls,
        name: str,
        *,
        channels: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Mapping[str, Any]] | None = None,
        clamps: Mapping[str, tuple[float, float]] | None = None,
    ) -> type[Self]:
        attributes: dict[str, Any] = {}
        if channels is not None:
            attributes["initial_values"] = dict(channels)
        if metadata is not None:
            attributes["channel_metadata"] = {key: dict(value) for key, value in metadata.items()}
        if clamps is not None:
            attributes["clamps"] = dict(clamps)
        return named_subclass(cls, name, attributes)

    def __init__(self, settings: Any = None, **timeouts: float) -> None:
        super().__init__(settings, **timeouts)
        self.channels: dict[str, Any] = dict(self.initial_values)
        self.writes: list[tuple[str, Any]] = []
        self.connected = False
        self._subscriptions: dict[int, tuple[str, Callable[[ChannelValue], None]]] = {}
        self._handles = itertools.count(1)
        self._track()

    def _check(self, channel: str) -> None:
        if not self.connected:
            raise ControlSystemError(f"connector '{self.name}' is not connected")
        if channel not in self.channels:
            raise ChannelNotFoundError(f"connector '{self.name}' has no channel '{channel}'",
                                       channel=channel)

    def _value(self, channel: str) -> ChannelValue:
        units = self.channel_metadata.get(channel, {}).get("units")
        return ChannelValue(channel, self.channels[channel], datetime.now(UTC), units=units)

    async def connect(self) -> None:
        self.connected = True

    async def close(self) -> None:
        self.connected = False
        self._subscriptions.clear()

    async def read(self, channel: str) -> ChannelValue:
        self._check(channel)
        return self._value(channel)

    async def write(self, channel: str, value: Any) -> WriteAck:
        self._check(channel)
        self.writes.append((channel, value))
        if channel in self.clamps:
            low, high = self.clamps[channel]
            value = min(max(value, low), high)
        self.set_value(channel, value)
        return WriteAck(confirmed=True)

    def set_value(self, channel: str, value: Any) -> None:
        """Change a value as the machine would (not recorded as a write); fires callbacks."""
        self.channels[channel] = value
        for subscribed, callback in list(self._subscriptions.values()):
            if subscribed == channel:
                callback(self._value(channel))

    async def subscribe(self, channel: str, callback: Callable[[ChannelValue], None]) -> int:
        self._check(channel)
        handle = next(self._handles)
        self._subscriptions[handle] = (channel, callback)
        return handle

    async def unsubscribe(self, handle: Any) -> None:
        if self._subscriptions.pop(handle, None) is None:
            raise KeyError(f"connector '{self.name}' has no subscription {handle!r}")

    async def metadata(self, channel: str) -> ChannelMetadata:
        self._check(channel)
        info = dict(self.channel_metadata.get(channel, {}))
        value = self.channels[channel]
        kind = info.pop("data_type", "string" if isinstance(value, str) else
                        "array" if isinstance(value, list) else "float")
        return ChannelMetadata(channel=channel, data_type=kind, **info)


class FakeArchiver(Tracked, ArchiverConnector):
    """Serves ``(timestamp, value)`` samples from an in-memory history.

    ``retrieve`` returns, per channel, the samples with ``start <= timestamp <= end`` in
    time order; unknown channels and an inverted range raise.
    """

    name = "fake_archiver"
    description = "An in-memory archiver for tests."
    history: ClassVar[Mapping[str, tuple[tuple[datetime, Any], ...]]] = {}

    @classmethod
    def named(
        cls, name: str, *, history: Mapping[str, Iterable[tuple[datetime, Any]]] | None = None
    ) -> type[Self]:
        attributes: dict[str, Any] = {}
        if history is not None:
            attributes["history"] = {
                channel: tuple(sorted(samples, key=lambda sample: sample[0]))
                for channel, samples in history.items()
            }
        return named_subclass(cls, name, attributes)

    def __init__(
        self, settings: Any = None, *, timeout: float = 30.0, home: Path | None = None
    ) -> None:
        super().__init__(settings, timeout=timeout, home=home)
        self.calls: list[tuple[tuple[str, ...], datetime, datetime, str | None]] = []
        self._track()

    async def retrieve(
        self,
        channels: Sequence[str],
        start: datetime,
        end: datetime,
        *,
        operator: str | None = None,
    ) -> dict[str, list[Sample]]:
        self.calls.append((tuple(channels), start, end, operator))
        if start > end:
            raise ValueError(f"archiver '{self.name}': start {start} is after end {end}")
        unknown = [channel for channel in channels if channel not in self.history]
        if unknown:
            raise ChannelNotFoundError(
                f"archiver '{self.name}' has no history for {', '.join(unknown)}")
        return {
            channel: [Sample(at, value) for at, value in self.history[channel]
                      if start <= at <= end]
            for channel in channels
        }
