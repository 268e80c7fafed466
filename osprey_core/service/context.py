"""What every route reaches: the one ``Osprey`` of the app, its settings and tokens.

Routers get it with ``Depends(service_state)``; the app factory puts it on
``app.state.osprey_service``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastapi import Request

if TYPE_CHECKING:
    from osprey_core.api import Osprey
    from osprey_core.service.settings import ServiceSettings
    from osprey_core.service.tokens import TokenStore


@dataclass
class ServiceState:
    osprey: Osprey
    settings: ServiceSettings
    tokens: TokenStore


def service_state(request: Request) -> ServiceState:
    """The app's shared state (a FastAPI dependency)."""
    state: ServiceState = request.app.state.osprey_service
    return state
