"""The app factory: one ``Osprey`` per app, the JSON API, and the parts built beside it.

Every router is included from :data:`ROUTERS`: a module named there exposes ``router``
(a FastAPI ``APIRouter``). Modules in :data:`OPTIONAL_ROUTERS` (the web console and the
chat endpoint) are included when they are installed; one that fails to import stops the
app, so a broken part is never silently missing.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import FastAPI

from osprey_core.service.context import ServiceState
from osprey_core.service.errors import install_handlers
from osprey_core.service.limits import BodyLimit
from osprey_core.service.logs import scrub_logs
from osprey_core.service.tokens import TokenStore

if TYPE_CHECKING:
    from osprey_core.api import Osprey
    from osprey_core.config import OspreyConfig

#: The JSON API, in the order its routes appear in the schema.
ROUTERS: list[str] = [
    "osprey_core.service.api_health",
    "osprey_core.service.api_runs",
    "osprey_core.service.api_approvals",
    "osprey_core.service.api_events",
    "osprey_core.service.api_channels",
    "osprey_core.service.api_logbook",
    "osprey_core.service.api_memory",
]
#: Parts built separately; included when their module exists.
OPTIONAL_ROUTERS: list[str] = [
    "osprey_core.service.console",
    "osprey_core.service.chat",
]

API_VERSION = "1"


def create_app(osprey_home: Path | None = None, *, config: OspreyConfig | None = None,
               osprey: Osprey | None = None) -> FastAPI:
    """The ASGI app over one :class:`~osprey_core.Osprey` (``osprey`` if given, else one
    made from ``config``, else from the configuration file and environment), with its
    home replaced by ``osprey_home`` when given. The app closes it when it stops."""
    if osprey is None:
        osprey = _open_osprey(osprey_home, config)
    settings = osprey.config.section("service")
    state = ServiceState(osprey=osprey, settings=settings,
                         tokens=TokenStore(osprey.runtime.store))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await osprey.aclose()

    app = FastAPI(title="osprey", version=API_VERSION, lifespan=lifespan,
                  description="The osprey HTTP API: runs, approvals, events, channels, "
                  "logbook and memory over the same Osprey API as the command line. "
                  "Authenticate with 'Authorization: Bearer <token>' (osprey tokens create).",
                  docs_url=None, redoc_url=None)
    app.state.osprey_service = state
    install_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    for name in ROUTERS + [name for name in OPTIONAL_ROUTERS if _installed(name)]:
        app.include_router(importlib.import_module(name).router)
    scrub_logs()
    return app


def _open_osprey(osprey_home: Path | None, config: OspreyConfig | None) -> Osprey:
    from osprey_core.api import Osprey
    from osprey_core.config import load_config
    from osprey_core.plugin_host import load_plugins

    host = load_plugins()
    config = config or load_config(host)
    if osprey_home is not None:
        config = dataclasses.replace(config, settings=config.settings.model_copy(
            update={"home": Path(osprey_home).absolute()}))
    return Osprey(host=host, config=config)


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None
