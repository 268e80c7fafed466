"""Fakes for the other class families: code generators, logbook adapters, execution
backends and embedding models."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Self

from osprey_core.hookspecs.code_generators import CodeGenerator
from osprey_core.hookspecs.embedding_models import EmbeddingModel
from osprey_core.hookspecs.execution_backends import (
    ExecutionBackend,
    ExitReason,
    OutputCallback,
    SandboxJob,
    SandboxOutcome,
)
from osprey_core.hookspecs.logbook_adapters import LogbookAdapter
from osprey_core.testing.fakes.tracked import Tracked, named_subclass

if TYPE_CHECKING:
    import numpy as np


class FakeCodeGenerator(Tracked, CodeGenerator):
    """Returns scripted code, one entry per attempt, and records the feedback it got.

    Running past the end of the script raises, so a test notices an unexpected retry.
    """

    name = "fake_generator"
    description = "A fake code generator for tests."
    script: ClassVar[tuple[str, ...]] = ("result = None\n",)

    @classmethod
    def named(cls, name: str, *, script: Iterable[str] | None = None) -> type[Self]:
        attributes = {} if script is None else {"script": tuple(script)}
        return named_subclass(cls, name, attributes)

    def __init__(self, config: Any = None) -> None:
        self.config = config
        self.requests: list[Any] = []
        self.feedback: list[list[str]] = []
        self._track()

    async def generate(self, request: Any, feedback: list[str]) -> str:
        attempt = len(self.requests)
        if attempt >= len(self.script):
            raise RuntimeError(
                f"code generator '{self.name}' was asked for attempt {attempt + 1}, "
                f"but its script has only {len(self.script)}"
            )
        self.requests.append(request)
        self.feedback.append(list(feedback))
        return self.script[attempt]


class FakeLogbookAdapter(Tracked, LogbookAdapter):
    """Yields the configured entries (and ``BadRecord`` items) for any location.

    An exception instance among the entries is raised when reached, which is how a
    test simulates a source failing part-way through (``LogbookSourceError``).
    ``sources`` and ``since`` record what each read was asked for.
    """

    name = "fake_logbook"
    description = "A fake logbook adapter for tests."
    entries: ClassVar[tuple[Any, ...]] = ()

    @classmethod
    def named(cls, name: str, *, entries: Iterable[Any] | None = None) -> type[Self]:
        attributes = {} if entries is None else {"entries": tuple(entries)}
        return named_subclass(cls, name, attributes)

    def __init__(self, source: str = "fake", options: Any = None) -> None:
        super().__init__(source, options)
        self.sources: list[str] = []
        self.since: list[datetime | None] = []
        self._track()

    def iter_entries(self, location: str, *, since: datetime | None = None) -> Iterator[Any]:
        self.sources.append(location)
        self.since.append(since)
        for entry in self.entries:
            if isinstance(entry, BaseException):
                raise entry
            yield entry


class FakeExecutionBackend(Tracked, ExecutionBackend):
    """Runs nothing: records each job, leaves its code in the output folder and reports
    the configured outcome (``exit_reason``, ``stdout``), so tests can drive the execution
    service's retries and artifact handling without a sandbox."""

    name = "fake_backend"
    description = "A fake execution backend for tests (no isolation, runs nothing)."
    isolated = False
    exit_reason: ClassVar[ExitReason] = ExitReason.OK
    stdout: ClassVar[str] = ""

    @classmethod
    def named(cls, name: str, *, exit_reason: ExitReason | None = None,
              isolated: bool = False) -> type[Self]:
        attributes: dict[str, Any] = {"isolated": isolated}
        if exit_reason is not None:
            attributes["exit_reason"] = exit_reason
        return named_subclass(cls, name, attributes)

    def __init__(self, settings: Any = None, home: Any = None) -> None:
        super().__init__(settings, home)
        self.jobs: list[SandboxJob] = []
        self._track()

    async def run(self, job: SandboxJob, on_output: OutputCallback | None = None
                  ) -> SandboxOutcome:
        self.jobs.append(job)
        job.output_dir.mkdir(parents=True, exist_ok=True)
        (job.output_dir / "code.py").write_text(job.code, encoding="utf-8")
        if on_output is not None and self.stdout:
            on_output("stdout", self.stdout)
        return SandboxOutcome(self.exit_reason, 0 if self.exit_reason is ExitReason.OK else 1,
                              self.stdout, "", False, 0.0, self.name, self.isolated)


class FakeEmbeddingModel(Tracked, EmbeddingModel):
    """Deterministic bag-of-words vectors built by hashing, L2-normalised float32 rows.

    Texts that share words get a positive cosine similarity and identical texts get
    identical vectors, which is enough to test semantic search without a real model.
    The fingerprint names the class and its dimension, so two fakes never share vectors.
    """

    name = "fake_embedding"
    description = "A hashing embedding model for tests."
    size: ClassVar[int] = 16

    @classmethod
    def named(cls, name: str, *, dimension: int | None = None) -> type[Self]:
        if dimension is not None and dimension < 1:
            raise ValueError(f"embedding dimension must be positive, got {dimension}")
        attributes = {} if dimension is None else {"size": dimension}
        return named_subclass(cls, name, attributes)

    def __init__(self, settings: Any = None, *, llm: Any = None, environ: Any = None) -> None:
        super().__init__(settings, llm=llm, environ=environ)
        self.embedded: list[str] = []
        self._track()

    @property
    def dimension(self) -> int:
        return self.size

    @property
    def fingerprint(self) -> str:
        return f"fake-{self.name}-{self.size}"

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        import numpy as np

        self.embedded.extend(texts)
        vectors = np.zeros((len(texts), self.size), dtype=np.float32)
        for row, text in enumerate(texts):
            # An empty text still hashes to a unit vector, so every result is normalised.
            for token in text.lower().split() or [text]:
                digest = hashlib.blake2b(token.encode("utf-8"), digest_size=8).digest()
                index = int.from_bytes(digest[:4], "big") % self.size
                vectors[row, index] += 1.0 if digest[4] & 1 else -1.0
        norms = np.linalg.norm(vectors, axis=1)
        cancelled = norms == 0.0  # opposite-signed tokens in every bucket
        vectors[cancelled, 0] = norms[cancelled] = 1.0
        return vectors / norms[:, None]
