"""Archiver connectors: historical channel data."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, ClassVar

from osprey_core.hookspecs import hookspec


class ArchiverConnector(ABC):
    """Retrieves channel history over a time range; chosen by ``archiver.type``."""

    name: ClassVar[str]
    description: ClassVar[str] = ""

    @abstractmethod
    async def retrieve(
        self,
        channels: Sequence[str],
        start: datetime,
        end: datetime,
        *,
        operator: str | None = None,
    ) -> dict[str, Any]:
        """History of each channel between ``start`` and ``end`` (timezone-aware, UTC).

        ``operator`` asks for server-side processing such as averaging bins.
        """


@hookspec
def register_archivers(register: Callable[[type[ArchiverConnector]], None]) -> None:
    """Register archiver connector classes by calling ``register(ArchiverClass)``."""
