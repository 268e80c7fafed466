"""Code generators: turn an analysis request into Python for the sandbox."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from osprey_core.hookspecs import hookspec

if TYPE_CHECKING:
    from osprey_core.settings import ExecutionSettings, LLMSettings


@dataclass(frozen=True)
class DryRun:
    """What a read-only trial run in the sandbox showed (for agentic generators)."""

    ok: bool
    exit_reason: str
    stdout: str
    stderr: str
    results: dict[str, Any]
    findings: list[dict[str, Any]]


@dataclass(frozen=True)
class GeneratorContext:
    """What the execution service hands a generator it builds for one request."""

    llm: LLMSettings
    execution: ExecutionSettings
    environ: Mapping[str, str] = field(default_factory=dict)
    #: Channel names the control system knows (``pattern`` is a glob, ``*`` = all).
    list_channels: Callable[[str], Awaitable[list[str]]] | None = None
    #: Runs code read-only in the sandbox (writes are blocked) and reports what happened.
    dry_run: Callable[[str], Awaitable[DryRun]] | None = None
    #: Plain-text description of the runtime API the code may call (for prompts).
    runtime_api: str = ""


class CodeGenerator(ABC):
    """Writes Python for a request; chosen by name in the configuration.

    Registered as a class: the execution service builds one per request with a
    :class:`GeneratorContext`, so generators may keep per-request state (conversation
    history, attempts).
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""

    def __init__(self, context: GeneratorContext | None = None) -> None:
        self.context = context

    @abstractmethod
    async def generate(self, request: Any, feedback: list[str]) -> str:
        """Return source code; ``feedback`` holds errors and findings of earlier attempts."""


@hookspec
def register_code_generators(register: Callable[[type[CodeGenerator]], None]) -> None:
    """Register code-generator classes by calling ``register(GeneratorClass)`` for each."""
