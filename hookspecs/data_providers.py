"""Data providers: sources of context gathered in parallel before planning."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

from osprey_core.hookspecs import hookspec


class DataProvider(ABC):
    """A source of context (user memory, logbook, archiver, facility database).

    ``should_respond`` must be cheap: it is asked for every request. ``retrieve`` runs
    concurrently with other providers under its own timeout, so one slow or broken
    provider only affects itself.
    """

    name: ClassVar[str]
    #: The context type this provider yields (e.g. ``"user_memory"``).
    context_type: ClassVar[str]

    def should_respond(self, request: Any) -> bool:
        """Whether this provider has anything to say about ``request`` (default: yes)."""
        return True

    @abstractmethod
    async def retrieve(self, request: Any) -> Any:
        """Fetch context for ``request``; return ``None`` when there is nothing."""


@hookspec
def register_data_providers(register: Callable[[DataProvider], None]) -> None:
    """Register data-provider instances by calling ``register(provider)`` for each."""
