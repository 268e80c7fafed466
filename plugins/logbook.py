"""Built-in plugin: the logbook for the agent and the operator.

* ``logbook_search`` (capability, read-only): entries matching a query, ranked by keyword,
  meaning or both, with filters; the answering step reads them;
* ``logbook`` (data provider, off unless ``logbook.provider: true``): the few most relevant
  entries offered to the planner before every plan;
* ``osprey logbook ...`` (commands): ingest, watch, search, ask, show, status, reembed, purge.

The logic lives in :mod:`osprey_core.logbook.agent` and :mod:`osprey_core.cli.logbook`,
imported when used, so loading the plugin stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer

from osprey_core.hookspecs import hookimpl
from osprey_core.hookspecs.capabilities import Capability, StepContext
from osprey_core.hookspecs.data_providers import ContextBlock, DataProvider, ProviderRequest
from osprey_core.threads import in_thread

if TYPE_CHECKING:
    from rich.console import RenderableType


class LogbookSearch(Capability):
    name = "logbook_search"
    description = ("Search the electronic logbook for entries about a fault, device, channel "
                   "or event, e.g. 'has the RF cavity tripped before?' or 'what did the last "
                   "shift write about the orbit feedback?'. Returns matching entries with "
                   "time, author and a snippet; filters by author, logbook, tag and time.")
    provides = ("logbook_entries",)

    def __init__(self) -> None:
        from osprey_core.logbook import agent

        self.logic = agent
        self.parameters = agent.SearchParameters

    def match(self, query: str) -> dict[str, Any] | None:
        return self.logic.match_search(query)

    async def execute(self, step: StepContext) -> Any:
        services = step.services
        return await in_thread(self.logic.search, services.config,
                                       services.plugins, step.parameters)

    def render(self, result: Any) -> RenderableType | str:
        """Entry id, time, author, title and snippet per hit."""
        from osprey_core.display.records import logbook_hits

        return logbook_hits(result)


class LogbookProvider(DataProvider):
    name = "logbook"
    context_type = "logbook_entries"

    def should_respond(self, request: ProviderRequest) -> bool:
        from osprey_core.logbook.agent import provider_responds

        return provider_responds(request)

    async def retrieve(self, request: ProviderRequest) -> ContextBlock | None:
        from osprey_core.logbook.agent import provider_block

        return await in_thread(provider_block, request, None)


@hookimpl
def register_capabilities(register: Any) -> None:
    register(LogbookSearch())


@hookimpl
def register_data_providers(register: Any) -> None:
    register(LogbookProvider())


@hookimpl
def register_commands(app: typer.Typer) -> None:
    from osprey_core.cli.logbook import logbook_app

    app.add_typer(logbook_app, name="logbook")
