"""Logbook adapters: read a facility's electronic logbook export into entries."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

from osprey_core.hookspecs import hookspec


class LogbookAdapter(ABC):
    """Parses one logbook format (JSON export, a facility database dump, ...)."""

    name: ClassVar[str]
    description: ClassVar[str] = ""

    @abstractmethod
    def iter_entries(self, source: str) -> Iterator[Any]:
        """Yield entries from ``source`` (a path or URL); bad records raise with location."""


@hookspec
def register_logbook_adapters(register: Callable[[type[LogbookAdapter]], None]) -> None:
    """Register logbook adapter classes by calling ``register(AdapterClass)`` for each."""
