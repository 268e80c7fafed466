"""Data providers: sources of context gathered in parallel before planning."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from osprey_core.hookspecs import hookspec


@dataclass(frozen=True)
class ProviderRequest:
    """What providers are asked about: one user request."""

    query: str
    user: str = "operator"
    session: str = "default"
    run_id: str | None = None
    #: The loaded configuration (``OspreyConfig``): home directory, provider settings.
    config: Any = None


@dataclass(frozen=True)
class ContextBlock:
    """Typed context from one provider; rendered into prompts as data, never instructions."""

    context_type: str
    title: str
    #: JSON data, one dict per item (a memory, a logbook entry, a channel summary).
    items: list[dict[str, Any]] = field(default_factory=list)
    #: Filled in by the core with the name of the provider that produced the block.
    provider: str = ""

    def render(self) -> str:
        """Prompt text: a fenced, labelled data block (quoted content, not instructions)."""
        import json

        lines = [f"[{self.context_type} from {self.provider or 'a provider'}: {self.title}]"]
        lines += [json.dumps(item, ensure_ascii=False, sort_keys=True) for item in self.items]
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {"provider": self.provider, "context_type": self.context_type,
                "title": self.title, "items": list(self.items)}


class DataProvider(ABC):
    """A source of context (user memory, logbook, archiver, facility database).

    ``should_respond`` must be cheap: it is asked for every request. ``retrieve`` runs
    concurrently with other providers under its own timeout, so one slow or broken
    provider only affects itself.
    """

    name: ClassVar[str]
    #: The context type this provider yields (e.g. ``"user_memory"``).
    context_type: ClassVar[str]

    def should_respond(self, request: ProviderRequest) -> bool:
        """Whether this provider has anything to say about ``request`` (default: yes)."""
        return True

    @abstractmethod
    async def retrieve(self, request: ProviderRequest) -> ContextBlock | None:
        """Fetch context for ``request``; return ``None`` when there is nothing."""


@hookspec
def register_data_providers(register: Callable[[DataProvider], None]) -> None:
    """Register data-provider instances by calling ``register(provider)`` for each."""
