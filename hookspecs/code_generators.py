"""Code generators: turn an analysis request into Python for the sandbox."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar

from osprey_core.hookspecs import hookspec


class CodeGenerator(ABC):
    """Writes Python for a request; chosen by name in the configuration.

    Registered as a class: the execution service builds one per run with its settings,
    so generators may keep per-run state (conversation history, attempts).
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""

    @abstractmethod
    async def generate(self, request: Any, feedback: list[str]) -> str:
        """Return source code; ``feedback`` holds errors and findings of earlier attempts."""


@hookspec
def register_code_generators(register: Callable[[type[CodeGenerator]], None]) -> None:
    """Register code-generator classes by calling ``register(GeneratorClass)`` for each."""
