"""Fake observers and whole fake plugins made from any of the fakes."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from osprey_core.hookspecs import hookimpl
from osprey_core.hookspecs.approval_policies import ApprovalPolicy
from osprey_core.hookspecs.archivers import ArchiverConnector
from osprey_core.hookspecs.capabilities import Capability
from osprey_core.hookspecs.code_generators import CodeGenerator
from osprey_core.hookspecs.connectors import ControlSystemConnector
from osprey_core.hookspecs.data_providers import DataProvider
from osprey_core.hookspecs.embedding_models import EmbeddingModel
from osprey_core.hookspecs.execution_backends import ExecutionBackend
from osprey_core.hookspecs.logbook_adapters import LogbookAdapter
from osprey_core.hookspecs.observers import ApprovalEvent, RunEvent
from osprey_core.hookspecs.services import ServiceSpec

if TYPE_CHECKING:
    import typer
    from pydantic import BaseModel


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
