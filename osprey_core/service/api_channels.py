"""Channel reads through the configured control system (the one the runs use)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from osprey_core.control.errors import ControlSystemError
from osprey_core.service.auth import Identity, require
from osprey_core.service.context import ServiceState, service_state
from osprey_core.service.errors import ServiceError
from osprey_core.service.settings import Role

router = APIRouter(prefix="/api/v1/channels", tags=["channels"])


@router.get("/{name:path}", responses={
    400: {"description": "invalid channel name"}, 401: {"description": "no or bad credentials"},
    403: {"description": "role missing"}, 502: {"description": "the read failed"}})
async def read(name: str, who: Identity = Depends(require(Role.VIEWER)),
               state: ServiceState = Depends(service_state)) -> dict[str, Any]:
    """The channel's value, units, alarm severity and timestamp (as ``osprey channels read
    --json``)."""
    from osprey_core.control.capabilities import read_channels

    system = state.osprey.runtime.control_system
    try:
        system.check_name(name)
    except ControlSystemError as exc:
        raise ServiceError(400, "invalid_channel", str(exc)) from None
    try:
        values = await read_channels(system, [name])
    except ControlSystemError as exc:
        raise ServiceError(502, "channel_read_failed", str(exc)) from None
    return {"channel": name, **values[name]}
