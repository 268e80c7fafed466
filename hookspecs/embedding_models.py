"""Embedding models: vectors for semantic logbook search.

A model is registered as a class and built from the settings when a logbook index needs
it, so a heavy model (torch, an HTTP client) is loaded only by the commands that search
by meaning. Vectors are float32 rows, L2-normalised, so a dot product is the cosine
similarity and an index can rank with one matrix product.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, ClassVar

from osprey_core.errors import OspreyError
from osprey_core.hookspecs import hookspec

if TYPE_CHECKING:
    import numpy as np

    from osprey_core.settings import EmbeddingSettings, LLMSettings


class EmbeddingError(OspreyError):
    """A model could not embed (endpoint down, malformed answer); the message says why."""


class EmbeddingUnavailable(EmbeddingError):
    """The model's optional dependencies are missing. Raised by the constructor, so
    hybrid search can fall back to keyword search with a notice instead of failing."""


class EmbeddingModel(ABC):
    """Turns texts into fixed-size unit vectors; chosen by ``logbook.embeddings.model``.

    Built with the ``logbook.embeddings`` settings, the ``llm`` settings (an endpoint
    model defaults to the chat server) and the environment (keys); ``None`` means the
    defaults and ``os.environ``, which is what tests and one-off scripts want.
    """

    name: ClassVar[str]
    description: ClassVar[str] = ""

    def __init__(self, settings: EmbeddingSettings | None = None, *,
                 llm: LLMSettings | None = None,
                 environ: Mapping[str, str] | None = None) -> None:
        self.settings = settings
        self.llm = llm
        self.environ = environ

    @property
    @abstractmethod
    def dimension(self) -> int:
        """Length of every vector this model returns."""

    @property
    @abstractmethod
    def fingerprint(self) -> str:
        """Identifies the vectors, not just the model name: weights, version and every
        setting that changes them (truncation, quantisation, endpoint). Indexes keep
        vectors per fingerprint and never compare vectors of two fingerprints. Letters,
        digits, ``.``, ``_`` and ``-`` only: it names a directory."""

    @abstractmethod
    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Vectors for documents: float32, shape ``(len(texts), dimension)``, each row of
        unit length, in the order of ``texts``. The model batches as it needs."""

    def embed_query(self, text: str) -> np.ndarray:
        """The vector of a search query, shape ``(dimension,)``. Models trained with a
        query prefix (``"query: "``) override this; the rest embed it as a document."""
        vector: np.ndarray = self.embed([text])[0]
        return vector


@hookspec
def register_embedding_models(register: Callable[[type[EmbeddingModel]], None]) -> None:
    """Register embedding-model classes by calling ``register(ModelClass)`` for each."""
