"""Embedding models: vectors for semantic logbook search."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import ClassVar

from osprey_core.hookspecs import hookspec


class EmbeddingModel(ABC):
    """Turns texts into fixed-size vectors; loaded lazily because models are heavy."""

    name: ClassVar[str]
    description: ClassVar[str] = ""

    @property
    @abstractmethod
    def dimension(self) -> int:
        """Length of every vector this model returns."""

    @abstractmethod
    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One vector per text, in order."""


@hookspec
def register_embedding_models(register: Callable[[type[EmbeddingModel]], None]) -> None:
    """Register embedding-model classes by calling ``register(ModelClass)`` for each."""
