"""Archiver connectors: historical channel data."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from osprey_core.control.types import Sample
from osprey_core.hookspecs import hookspec

if TYPE_CHECKING:
    from pydantic import BaseModel


class ArchiverConnector(ABC):
    """Retrieves channel history over a time range; chosen by ``archiver.type``.

    Registered as a class and built by the core with its settings (the config section
    named like the archiver, validated by ``settings_model``) and ``archiver.timeout``.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""
    #: Model of this archiver's config section (top-level key = ``name``), if any.
    settings_model: ClassVar[type[BaseModel] | None] = None

    def __init__(
        self, settings: Any = None, *, timeout: float = 30.0, home: Path | None = None
    ) -> None:
        self.settings = settings
        self.timeout = timeout
        #: OSPREY_HOME, for archivers that read local state (the simulated machine's log).
        self.home = home

    @abstractmethod
    async def retrieve(
        self,
        channels: Sequence[str],
        start: datetime,
        end: datetime,
        *,
        operator: str | None = None,
    ) -> dict[str, list[Sample]]:
        """Samples of each channel between ``start`` and ``end`` (timezone-aware).

        ``operator`` asks for server-side processing, e.g. ``"mean_60"`` for one-minute
        averaging bins (the Archiver Appliance's operator syntax). Unknown channels raise
        ``ChannelNotFoundError``; a channel with no samples in the range maps to ``[]``.
        """


@hookspec
def register_archivers(register: Callable[[type[ArchiverConnector]], None]) -> None:
    """Register archiver connector classes by calling ``register(ArchiverClass)``."""
