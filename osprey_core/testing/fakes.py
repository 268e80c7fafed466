"""In-memory test doubles for every osprey hook family.

Each fake is a working implementation of its base class (it keeps state, filters,
fires callbacks, fails on request) and records how it was used, so a test can drive
the core through the real registration path and then check what the core did.

Families the core receives as *instances* (capabilities, data providers, approval
policies) are configured through the constructor. Families it receives as *classes*
(code generators, connectors, archivers, logbook adapters, embedding models) are
configured through ``named(...)``, which returns a fresh subclass: the core builds the
instances itself, and each subclass keeps its own ``instances`` list so a test can
reach the objects the core built.

This module imports no test framework, so the fakes also work in demos and notebooks.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Self

from osprey_core.control.errors import ChannelNotFoundError, ControlSystemError
from osprey_core.control.types import ChannelMetadata, ChannelValue, Sample, WriteAck
from osprey_core.hookspecs import hookimpl
from osprey_core.hookspecs.approval_policies import ApprovalPolicy, Verdict, Vote
from osprey_core.hookspecs.archivers import ArchiverConnector
from osprey_core.hookspecs.capabilities import Capability
from osprey_core.hookspecs.code_generators import CodeGenerator
from osprey_core.hookspecs.connectors import ControlSystemConnector
from osprey_core.hookspecs.data_providers import DataProvider
from osprey_core.hookspecs.embedding_models import EmbeddingModel
from osprey_core.hookspecs.execution_backends import (
    ExecutionBackend,
    ExitReason,
    OutputCallback,
    SandboxJob,
    SandboxOutcome,
)
from osprey_core.hookspecs.logbook_adapters import LogbookAdapter
from osprey_core.hookspecs.observers import ApprovalEvent, RunEvent
from osprey_core.hookspecs.services import ServiceSpec

if TYPE_CHECKING:
    import numpy as np
    import typer
    from pydantic import BaseModel

__all__ = [
    "FakeApprovalPolicy",
    "FakeArchiver",
    "FakeCapability",
    "FakeCodeGenerator",
    "FakeConnector",
    "FakeDataProvider",
    "FakeEmbeddingModel",
    "FakeExecutionBackend",
    "FakeLogbookAdapter",
    "FakeObserver",
    "fake_plugin",
]


class _Tracked:
    """Gives every subclass its own list of the instances built from it.

    The core instantiates class-family plugins itself; this list is how a test gets
    hold of those instances without the fakes sharing state between tests.
    """

    instances: ClassVar[list[Any]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.instances = []

    def _track(self) -> None:
        type(self).instances.append(self)


def _subclass[T: type](base: T, name: str, attributes: dict[str, Any]) -> T:
    """A subclass of ``base`` registered under ``name`` with class attributes overridden."""
    suffix = "".join(part.capitalize() for part in name.replace(".", "_").replace("-", "_")
                     .split("_"))
    class_name = f"{base.__name__}_{suffix}"
    namespace = {"name": name, "__module__": base.__module__, "__qualname__": class_name}
    return type(class_name, (base,), {**namespace, **attributes})


# -- instance families -------------------------------------------------------------------


class FakeCapability(Capability):
    """A capability that records each step and returns a result or raises.

    ``handler`` (a function of the step) takes precedence over the constant ``result``;
    ``error`` makes every execution raise, to exercise the core's failure handling.
    ``matcher`` stands in for :meth:`match`, so offline planning can pick the fake.
    """

    def __init__(
        self,
        name: str = "fake_capability",
        *,
        description: str = "A fake capability for tests.",
        provides: Sequence[str] = (),
        requires: Sequence[str] = (),
        side_effects: bool = False,
        runs_code: bool = False,
        terminal: bool = False,
        approval_kind: str = "step",
        parameters: type[BaseModel] | None = None,
        matcher: Callable[[str], dict[str, Any] | None] | None = None,
        result: Any = None,
        handler: Callable[[Any], Any] | None = None,
        error: BaseException | None = None,
    ) -> None:
        self.name = name
        self.description = description
        self.provides = tuple(provides)
        self.requires = tuple(requires)
        self.side_effects = side_effects
        self.runs_code = runs_code
        self.terminal = terminal
        self.approval_kind = approval_kind
        self.parameters = parameters
        self.matcher = matcher
        self.result = result
        self.handler = handler
        self.error = error
        self.calls: list[Any] = []

    def match(self, query: str) -> dict[str, Any] | None:
        return self.matcher(query) if self.matcher is not None else None

    async def execute(self, step: Any) -> Any:
        self.calls.append(step)
        if self.error is not None:
            raise self.error
        return self.handler(step) if self.handler is not None else self.result


class FakeDataProvider(DataProvider):
    """A provider returning configured context, optionally slowly or with an error.

    ``delay`` (seconds) lets tests check per-provider timeouts and parallel fetching.
    """

    def __init__(
        self,
        name: str = "fake_provider",
        *,
        context_type: str = "fake_context",
        context: Any = None,
        delay: float = 0.0,
        error: BaseException | None = None,
        responds: bool | Callable[[Any], bool] = True,
    ) -> None:
        self.name = name
        self.context_type = context_type
        self.context = context
        self.delay = delay
        self.error = error
        self.responds = responds
        self.requests: list[Any] = []

    def should_respond(self, request: Any) -> bool:
        return self.responds(request) if callable(self.responds) else self.responds

    async def retrieve(self, request: Any) -> Any:
        self.requests.append(request)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.error is not None:
            raise self.error
        return self.context


class FakeApprovalPolicy(ApprovalPolicy):
    """A policy voting with a fixed :class:`Verdict` or one computed from the action."""

    def __init__(
        self,
        name: str = "fake_policy",
        *,
        verdict: Verdict | Callable[[Any], Verdict] = Verdict(Vote.ABSTAIN, "fake policy"),
        description: str = "A fake approval policy for tests.",
    ) -> None:
        self.name = name
        self.description = description
        self.verdict = verdict
        self.actions: list[Any] = []

    def evaluate(self, action: Any) -> Verdict:
        self.actions.append(action)
        return self.verdict if isinstance(self.verdict, Verdict) else self.verdict(action)


# -- class families ----------------------------------------------------------------------


class FakeCodeGenerator(_Tracked, CodeGenerator):
    """Returns scripted code, one entry per attempt, and records the feedback it got.

    Running past the end of the script raises, so a test notices an unexpected retry.
    """

    name = "fake_generator"
    description = "A fake code generator for tests."
    script: ClassVar[tuple[str, ...]] = ("result = None\n",)

    @classmethod
    def named(cls, name: str, *, script: Iterable[str] | None = None) -> type[Self]:
        attributes = {} if script is None else {"script": tuple(script)}
        return _subclass(cls, name, attributes)

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


class FakeConnector(_Tracked, ControlSystemConnector):
    """An in-memory control system: channels are a dict, subscriptions fire on change.

    Reads and writes before :meth:`connect` or of unknown channels fail, as they would
    on a real control system, so tests catch a core that skips either step. ``clamps``
    makes chosen channels clamp written values silently, like an IOC's drive limits,
    so only a readback reveals it.
    """

    name = "fake"
    description = "An in-memory control system for tests."
    initial_values: ClassVar[Mapping[str, Any]] = {}
    channel_metadata: ClassVar[Mapping[str, Mapping[str, Any]]] = {}
    clamps: ClassVar[Mapping[str, tuple[float, float]]] = {}

    @classmethod
    def named(
        cls,
        name: str,
        *,
        channels: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Mapping[str, Any]] | None = None,
        clamps: Mapping[str, tuple[float, float]] | None = None,
    ) -> type[Self]:
        attributes: dict[str, Any] = {}
        if channels is not None:
            attributes["initial_values"] = dict(channels)
        if metadata is not None:
            attributes["channel_metadata"] = {key: dict(value) for key, value in metadata.items()}
        if clamps is not None:
            attributes["clamps"] = dict(clamps)
        return _subclass(cls, name, attributes)

    def __init__(self, settings: Any = None, **timeouts: float) -> None:
        super().__init__(settings, **timeouts)
        self.channels: dict[str, Any] = dict(self.initial_values)
        self.writes: list[tuple[str, Any]] = []
        self.connected = False
        self._subscriptions: dict[int, tuple[str, Callable[[ChannelValue], None]]] = {}
        self._handles = itertools.count(1)
        self._track()

    def _check(self, channel: str) -> None:
        if not self.connected:
            raise ControlSystemError(f"connector '{self.name}' is not connected")
        if channel not in self.channels:
            raise ChannelNotFoundError(f"connector '{self.name}' has no channel '{channel}'",
                                       channel=channel)

    def _value(self, channel: str) -> ChannelValue:
        units = self.channel_metadata.get(channel, {}).get("units")
        return ChannelValue(channel, self.channels[channel], datetime.now(UTC), units=units)

    async def connect(self) -> None:
        self.connected = True

    async def close(self) -> None:
        self.connected = False
        self._subscriptions.clear()

    async def read(self, channel: str) -> ChannelValue:
        self._check(channel)
        return self._value(channel)

    async def write(self, channel: str, value: Any) -> WriteAck:
        self._check(channel)
        self.writes.append((channel, value))
        if channel in self.clamps:
            low, high = self.clamps[channel]
            value = min(max(value, low), high)
        self.set_value(channel, value)
        return WriteAck(confirmed=True)

    def set_value(self, channel: str, value: Any) -> None:
        """Change a value as the machine would (not recorded as a write); fires callbacks."""
        self.channels[channel] = value
        for subscribed, callback in list(self._subscriptions.values()):
            if subscribed == channel:
                callback(self._value(channel))

    async def subscribe(self, channel: str, callback: Callable[[ChannelValue], None]) -> int:
        self._check(channel)
        handle = next(self._handles)
        self._subscriptions[handle] = (channel, callback)
        return handle

    async def unsubscribe(self, handle: Any) -> None:
        if self._subscriptions.pop(handle, None) is None:
            raise KeyError(f"connector '{self.name}' has no subscription {handle!r}")

    async def metadata(self, channel: str) -> ChannelMetadata:
        self._check(channel)
        info = dict(self.channel_metadata.get(channel, {}))
        value = self.channels[channel]
        kind = info.pop("data_type", "string" if isinstance(value, str) else
                        "array" if isinstance(value, list) else "float")
        return ChannelMetadata(channel=channel, data_type=kind, **info)


class FakeArchiver(_Tracked, ArchiverConnector):
    """Serves ``(timestamp, value)`` samples from an in-memory history.

    ``retrieve`` returns, per channel, the samples with ``start <= timestamp <= end`` in
    time order; unknown channels and an inverted range raise.
    """

    name = "fake_archiver"
    description = "An in-memory archiver for tests."
    history: ClassVar[Mapping[str, tuple[tuple[datetime, Any], ...]]] = {}

    @classmethod
    def named(
        cls, name: str, *, history: Mapping[str, Iterable[tuple[datetime, Any]]] | None = None
    ) -> type[Self]:
        attributes: dict[str, Any] = {}
        if history is not None:
            attributes["history"] = {
                channel: tuple(sorted(samples, key=lambda sample: sample[0]))
                for channel, samples in history.items()
            }
        return _subclass(cls, name, attributes)

    def __init__(
        self, settings: Any = None, *, timeout: float = 30.0, home: Path | None = None
    ) -> None:
        super().__init__(settings, timeout=timeout, home=home)
        self.calls: list[tuple[tuple[str, ...], datetime, datetime, str | None]] = []
        self._track()

    async def retrieve(
        self,
        channels: Sequence[str],
        start: datetime,
        end: datetime,
        *,
        operator: str | None = None,
    ) -> dict[str, list[Sample]]:
        self.calls.append((tuple(channels), start, end, operator))
        if start > end:
            raise ValueError(f"archiver '{self.name}': start {start} is after end {end}")
        unknown = [channel for channel in channels if channel not in self.history]
        if unknown:
            raise ChannelNotFoundError(
                f"archiver '{self.name}' has no history for {', '.join(unknown)}")
        return {
            channel: [Sample(at, value) for at, value in self.history[channel]
                      if start <= at <= end]
            for channel in channels
        }


class FakeLogbookAdapter(_Tracked, LogbookAdapter):
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
        return _subclass(cls, name, attributes)

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


class FakeExecutionBackend(_Tracked, ExecutionBackend):
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
        return _subclass(cls, name, attributes)

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


class FakeEmbeddingModel(_Tracked, EmbeddingModel):
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
        return _subclass(cls, name, attributes)

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


# -- plugins -----------------------------------------------------------------------------


class FakeObserver:
    """An observer plugin recording every run and approval event it is told about.

    ``error`` makes each hook raise after recording, to check that observer failures
    never reach the code that emitted the event.
    """

    def __init__(self, *, error: Exception | None = None) -> None:
        self.error = error
        self.run_events: list[RunEvent] = []
        self.approvals_requested: list[ApprovalEvent] = []
        self.approvals_decided: list[ApprovalEvent] = []

    def _maybe_fail(self) -> None:
        if self.error is not None:
            raise self.error

    @hookimpl
    def on_run_event(self, event: RunEvent) -> None:
        self.run_events.append(event)
        self._maybe_fail()

    @hookimpl
    def on_approval_requested(self, event: ApprovalEvent) -> None:
        self.approvals_requested.append(event)
        self._maybe_fail()

    @hookimpl
    def on_approval_decided(self, event: ApprovalEvent) -> None:
        self.approvals_decided.append(event)
        self._maybe_fail()


class FakePlugin:
    """The object :func:`fake_plugin` returns; its hook implementations are attributes."""

    def __init__(self, name: str) -> None:
        self.__name__ = name

    def __repr__(self) -> str:
        return f"<FakePlugin {self.__name__!r}>"


def _registers(hook: str, items: Sequence[Any]) -> Callable[..., None]:
    def register_all(register: Callable[[Any], None]) -> None:
        for item in items:
            register(item)

    register_all.__name__ = hook
    return hookimpl(register_all)


def fake_plugin(
    *,
    name: str = "fake_plugin",
    capabilities: Sequence[Capability] = (),
    data_providers: Sequence[DataProvider] = (),
    code_generators: Sequence[type[CodeGenerator]] = (),
    execution_backends: Sequence[type[ExecutionBackend]] = (),
    connectors: Sequence[type[ControlSystemConnector]] = (),
    archivers: Sequence[type[ArchiverConnector]] = (),
    approval_policies: Sequence[ApprovalPolicy] = (),
    logbook_adapters: Sequence[type[LogbookAdapter]] = (),
    embedding_models: Sequence[type[EmbeddingModel]] = (),
    services: Sequence[ServiceSpec] = (),
    config_sections: Mapping[str, type[BaseModel]] | None = None,
    commands: Mapping[str, Callable[..., Any] | typer.Typer] | None = None,
) -> FakePlugin:
    """A plugin contributing exactly the given items.

    Only families with something to register get a hook implementation, so the hooks a
    host reports for the plugin (``osprey plugins --hook``) are the ones it really uses.
    ``commands`` maps a command name to a function (added with ``app.command``) or to a
    Typer app (added as a sub-app).
    """
    plugin = FakePlugin(name)
    families = {
        "register_capabilities": capabilities,
        "register_data_providers": data_providers,
        "register_code_generators": code_generators,
        "register_execution_backends": execution_backends,
        "register_connectors": connectors,
        "register_archivers": archivers,
        "register_approval_policies": approval_policies,
        "register_logbook_adapters": logbook_adapters,
        "register_embedding_models": embedding_models,
        "register_services": services,
    }
    hooks = {hook: _registers(hook, tuple(items)) for hook, items in families.items() if items}
    if config_sections:
        sections = dict(config_sections)

        @hookimpl
        def register_config_sections(register: Callable[[str, type[BaseModel]], None]) -> None:
            for section, model in sections.items():
                register(section, model)

        hooks["register_config_sections"] = register_config_sections
    if commands:
        entries = dict(commands)

        @hookimpl
        def register_commands(app: typer.Typer) -> None:
            import typer

            for command, target in entries.items():
                if isinstance(target, typer.Typer):
                    app.add_typer(target, name=command)
                else:
                    app.command(command)(target)

        hooks["register_commands"] = register_commands
    for hook, implementation in hooks.items():
        setattr(plugin, hook, implementation)
    return plugin
